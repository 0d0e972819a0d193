//! Split: cutting a region in two at a key. The leader decides when (split
//! check), the scheduler hands out the new ids (AskSplit), and every replica
//! applies the Split admin command at the same log position: the old region
//! keeps `[start, split_key)` and its id, a new region gets `[split_key,
//! end)` with one new peer on each of the same stores, and both epochs'
//! versions move by one. Data is not moved: both halves share the store's
//! kv tree.

use tracing::{info, warn};

use super::{error_response, Peer};
use crate::error::{Error, RegionError, Result};
use crate::proto::metapb::{Peer as PeerMeta, PeerRoleEntry, Region, RegionEpoch};
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, AdminResponse, RaftCmdRequest, RaftCmdResponse, RaftResponseHeader,
    SplitRequest, SplitResponse,
};
use crate::proto::raft_serverpb::{PeerState, RegionLocalState};
use crate::proto::schedulerpb::AskSplitResponse;
use crate::region::{epoch, exceeds_end_key};
use crate::storage::engine::delete_data_range;
use crate::storage::peer_storage::write_initial_apply_states;
use crate::storage::state;

/// A split this replica applied, for the store to record.
#[derive(Debug, Clone)]
pub struct SplitApplied {
    /// The old region after the split: same id, range cut to
    /// `[start, split_key)`, version one higher.
    pub left: Region,
    /// The new region, unless this store's peer of it was already removed
    /// (the new region moved on without this store while it lagged).
    pub right: Option<Region>,
    /// This replica led the old region: its new sibling should campaign.
    pub was_leader: bool,
}

/// How many ticks a split asked for by the checker blocks asking again for
/// the same region version (the first may still be in flight).
const SPLIT_RETRY_TICKS: u64 = 40;

impl Peer {
    /// On the leader's split-check tick: should the checker measure the
    /// region now? When its size is unknown, when enough was written since
    /// the last measurement, or when what was written may have pushed it
    /// past the maximum (a region that just crossed it is split promptly
    /// even if the writes then stop).
    pub(crate) fn split_check_due(&mut self) -> bool {
        let interval = self.cfg.ticks_of(self.cfg.split_region_check_tick_interval);
        if !self.ticks.is_multiple_of(interval) {
            return false;
        }
        let hint = self.size_diff_hint;
        let due = match self.approximate_size {
            None => true,
            Some(size) => {
                hint >= self.cfg.region_split_check_diff()
                    || (hint > 0 && size + hint > self.cfg.region_max_size_bytes)
            }
        };
        if due {
            self.size_diff_hint = 0;
        }
        due
    }

    /// Takes the checker's measurement. Returns the split key to pursue, if
    /// the region is too large and no split for this version is under way.
    pub fn on_split_check_result(
        &mut self,
        checked: &RegionEpoch,
        size: u64,
        split_key: Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let current = epoch(self.region());
        if checked.version != current.version {
            // Measured a range this region no longer has.
            return None;
        }
        self.approximate_size = Some(size);
        let key = split_key?;
        if let Some((version, at)) = self.split_asked {
            if version == current.version && self.ticks < at + SPLIT_RETRY_TICKS {
                return None;
            }
        }
        self.split_asked = Some((current.version, self.ticks));
        Some(key)
    }

    /// Step 1 of a split: this replica must lead, the region's version must
    /// still be the one the key was chosen under, and the key must fall
    /// strictly inside the region. Returns the region to ask ids for.
    pub fn check_split(&self, checked: Option<&RegionEpoch>, split_key: &[u8]) -> Result<Region> {
        if !self.is_leader() {
            return Err(self.not_leader().into());
        }
        let region = self.region();
        if let Some(e) = checked {
            crate::region::check_epoch(Some(e), region, false, true)?;
        }
        check_split_key(region, split_key)?;
        check_not_joint(region)?;
        Ok(region.clone())
    }

    /// Step 2: proposes the Split admin command under the epoch of step 1,
    /// with the ids the scheduler handed out.
    pub fn propose_split(
        &mut self,
        region: &Region,
        split_key: Vec<u8>,
        ids: AskSplitResponse,
        cb: super::Callback,
    ) -> super::Effects {
        let req = self.split_request(region, split_key, ids);
        if !self.is_leader() || self.check_command(&req).is_err() {
            // The region changed while the ids were asked for (a conf
            // change, usually): the next check chooses again at once
            // instead of waiting out SPLIT_RETRY_TICKS.
            self.split_refused();
        }
        self.propose(req, cb);
        self.take_effects()
    }

    /// A split this leader asked for will not happen: the next check round
    /// measures the region again (as if enough had been written) and may
    /// ask at once.
    pub(crate) fn split_refused(&mut self) {
        self.split_asked = None;
        self.size_diff_hint = self.size_diff_hint.max(self.cfg.region_split_check_diff());
    }

    fn split_request(
        &self,
        region: &Region,
        split_key: Vec<u8>,
        ids: AskSplitResponse,
    ) -> RaftCmdRequest {
        let admin = AdminRequest {
            cmd_type: AdminCmdType::Split as i32,
            split: Some(SplitRequest {
                split_key,
                new_region_id: ids.new_region_id,
                new_peer_ids: ids.new_peer_ids,
            }),
            ..Default::default()
        };
        self.admin_command(region.region_epoch, admin)
    }

    /// Step 3, on every replica: the epoch was re-checked by the caller; the
    /// key and the ids are checked here, then both region states (and the
    /// new region's initial apply state) join the apply batch `wb`.
    pub(crate) fn apply_split(
        &mut self,
        req: &RaftCmdRequest,
        wb: &mut sled::Batch,
    ) -> Result<RaftCmdResponse> {
        let Some(split) = req.admin_request.as_ref().and_then(|a| a.split.as_ref()) else {
            return Ok(error_response(RegionError::InvalidRequest(
                "Split without a body".into(),
            )));
        };
        let region = self.region().clone();
        if let Err(e) = check_split_key(&region, &split.split_key) {
            return Ok(error_response(e));
        }
        if let Err(e) = check_split_ids(&region, split) {
            return Ok(error_response(e));
        }
        if let Err(e) = check_not_joint(&region) {
            return Ok(error_response(e));
        }
        let (left, right) = split_region(&region, split);
        let kv = self.storage().engines.kv.clone();
        let existing = state::region_state(&kv, right.id)?;
        let right_here = match existing {
            None => true,
            Some(s) if s.state == PeerState::Tombstone as i32 => {
                // This store's peer of the new region was created elsewhere
                // and already removed while this replica lagged behind: the
                // new region lives on without this store, and nobody here
                // owns its range any more.
                info!(
                    region_id = right.id,
                    "new region was removed from this store already"
                );
                delete_data_range(&kv, &right.start_key, &right.end_key, wb)?;
                false
            }
            Some(_) => {
                // A live region with the new id: the ids were not fresh.
                // Splitting would leave the right half to nobody.
                warn!(
                    region_id = right.id,
                    "split's new region id is in use here; refused"
                );
                return Ok(error_response(RegionError::InvalidRequest(format!(
                    "split's new region id {} is in use",
                    right.id
                ))));
            }
        };
        let left_state = RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(left.clone()),
            applying: None,
        };
        state::put_region_state(wb, left.id, &left_state);
        if right_here {
            write_initial_apply_states(&right, wb);
            // A retry of a write applied before the split may reach either
            // half: both keep the sessions (the caller committed the batch
            // before this, so the tree holds them all).
            let sessions = crate::storage::sessions::load_sessions(&kv, region.id)?;
            crate::storage::sessions::put_sessions(right.id, &sessions, wb);
        }
        info!(
            split_key = ?String::from_utf8_lossy(&split.split_key),
            left = left.id,
            right = right.id,
            version = epoch(&left).version,
            "split applied"
        );
        self.raft.mut_store().region = left.clone();
        crate::metrics::SPLITS.inc();
        // Both halves are measured afresh; the leader reports at once.
        self.approximate_size = None;
        self.size_diff_hint = 0;
        self.heartbeat_now = true;
        self.splits.push(SplitApplied {
            left: left.clone(),
            right: right_here.then(|| right.clone()),
            was_leader: self.is_leader(),
        });
        Ok(RaftCmdResponse {
            header: Some(RaftResponseHeader {
                error: None,
                current_term: self.term(),
            }),
            admin_response: Some(AdminResponse {
                cmd_type: AdminCmdType::Split as i32,
                split: Some(SplitResponse {
                    regions: vec![left, right],
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// The new ids must be fresh: non-zero, one per peer, distinct, and none
/// of them the region's own id or one of its peers' ids.
fn check_split_ids(region: &Region, split: &SplitRequest) -> Result<()> {
    let ids = &split.new_peer_ids;
    let bad = |why: &str| {
        Err(Error::Region(RegionError::InvalidRequest(format!(
            "split of region {}: {why} (new region {}, new peers {ids:?})",
            region.id, split.new_region_id
        ))))
    };
    if ids.len() != region.peers.len() {
        return bad("one new peer id per peer is needed");
    }
    let mut all: Vec<u64> = ids.clone();
    all.push(split.new_region_id);
    if all.contains(&0) {
        return bad("ids must not be 0");
    }
    all.sort_unstable();
    all.dedup();
    if all.len() != ids.len() + 1 {
        return bad("ids must be distinct");
    }
    if split.new_region_id == region.id || region.peers.iter().any(|p| ids.contains(&p.id)) {
        return bad("ids must be new");
    }
    Ok(())
}

/// A region in a joint configuration is not split: both halves would have
/// to leave it, each through its own Raft group. It leaves within a few
/// round trips; the split is asked again.
fn check_not_joint(region: &Region) -> Result<()> {
    if crate::region::roles::in_joint(region) {
        return Err(Error::Region(RegionError::ServerIsBusy(format!(
            "region {} is in a joint configuration; split it once it left",
            region.id
        ))));
    }
    Ok(())
}

/// `start < split_key < end`, with an empty end as +infinity.
fn check_split_key(region: &Region, split_key: &[u8]) -> Result<()> {
    if split_key.is_empty() || split_key <= region.start_key.as_slice() {
        return Err(Error::Region(RegionError::InvalidRequest(format!(
            "split key {:?} is not after the start of region {}",
            String::from_utf8_lossy(split_key),
            region.id
        ))));
    }
    if exceeds_end_key(split_key, &region.end_key) {
        return Err(Error::Region(RegionError::KeyNotInRegion {
            key: split_key.to_vec(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        }));
    }
    Ok(())
}

/// The two halves: the old region keeps its id and the left part; the new
/// one gets the right part and the new ids, peer for peer on the same stores.
fn split_region(region: &Region, split: &SplitRequest) -> (Region, Region) {
    let mut e = epoch(region);
    e.version += 1;
    let left = Region {
        end_key: split.split_key.clone(),
        region_epoch: Some(e),
        ..region.clone()
    };
    let right = Region {
        id: split.new_region_id,
        start_key: split.split_key.clone(),
        end_key: region.end_key.clone(),
        region_epoch: Some(e),
        peers: region
            .peers
            .iter()
            .zip(&split.new_peer_ids)
            .map(|(p, id)| PeerMeta {
                id: *id,
                store_id: p.store_id,
            })
            .collect(),
        // Each new peer has the role its old one had (a learner stays one).
        roles: region
            .roles
            .iter()
            .filter_map(|r| {
                let i = region.peers.iter().position(|p| p.id == r.peer_id)?;
                Some(PeerRoleEntry {
                    peer_id: *split.new_peer_ids.get(i)?,
                    role: r.role,
                })
            })
            .collect(),
    };
    (left, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_share_the_range_and_bump_the_version() {
        let region = Region {
            id: 1,
            start_key: b"a".to_vec(),
            end_key: vec![],
            region_epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 4,
            }),
            peers: vec![
                PeerMeta { id: 1, store_id: 1 },
                PeerMeta { id: 7, store_id: 3 },
            ],
            roles: vec![],
        };
        assert!(check_split_key(&region, b"a").is_err());
        assert!(check_split_key(&region, b"").is_err());
        assert!(check_split_key(&region, b"m").is_ok());
        let split = SplitRequest {
            split_key: b"m".to_vec(),
            new_region_id: 10,
            new_peer_ids: vec![11, 12],
        };
        assert!(check_split_ids(&region, &split).is_ok());
        for (new_region_id, new_peer_ids) in [
            (1, vec![11, 12]),  // the region's own id
            (10, vec![11, 7]),  // a current peer's id
            (10, vec![11, 11]), // duplicates
            (10, vec![11, 10]), // the new region's id as a peer id
            (10, vec![0, 12]),  // zero
            (10, vec![11]),     // too few
        ] {
            let bad = SplitRequest {
                new_region_id,
                new_peer_ids,
                ..split.clone()
            };
            assert!(check_split_ids(&region, &bad).is_err(), "{bad:?}");
        }
        let (l, r) = split_region(&region, &split);
        assert_eq!(
            (l.start_key.as_slice(), l.end_key.as_slice()),
            (&b"a"[..], &b"m"[..])
        );
        assert_eq!(
            (r.start_key.as_slice(), r.end_key.as_slice()),
            (&b"m"[..], &b""[..])
        );
        assert_eq!(l.region_epoch, r.region_epoch);
        assert_eq!(epoch(&l).version, 5);
        assert_eq!(epoch(&l).conf_ver, 3);
        assert_eq!(
            r.peers,
            vec![
                PeerMeta {
                    id: 11,
                    store_id: 1
                },
                PeerMeta {
                    id: 12,
                    store_id: 3
                },
            ]
        );
        let bounded = Region {
            end_key: b"m".to_vec(),
            ..region
        };
        assert!(matches!(
            check_split_key(&bounded, b"m"),
            Err(Error::Region(RegionError::KeyNotInRegion { .. }))
        ));
    }
}
