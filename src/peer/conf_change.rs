//! Membership changes (AddNode / RemoveNode) of one region: proposing them
//! through raft-rs's `propose_conf_change` and applying them once committed.
//!
//! One change at a time (Raft thesis §4.1): raft-rs silently turns a second
//! conf change proposed while one is unapplied into an empty entry, so such a
//! proposal is refused here, with an error, before it reaches raft.

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType as RaftCcType, Entry};
use tracing::{info, warn};

use super::Peer;
use crate::error::{Error, RegionError, Result};
use crate::proto::metapb::{Peer as PeerMeta, Region};
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminResponse, ChangePeerResponse, ConfChangeType, RaftCmdRequest,
    RaftCmdResponse, RaftResponseHeader,
};
use crate::proto::raft_serverpb::{PeerState, RegionLocalState};
use crate::storage::state;

/// What applying one conf change entry did.
pub(crate) struct ConfChangeApplied {
    pub response: RaftCmdResponse,
    /// The region's new meta, when membership changed.
    pub region: Option<Region>,
}

/// Another peer of `region` on the store `target` would be added to.
fn other_peer_on_store<'a>(region: &'a Region, target: &PeerMeta) -> Option<&'a PeerMeta> {
    region
        .peers
        .iter()
        .find(|p| p.store_id == target.store_id && p.id != target.id)
}

fn change_of(req: &RaftCmdRequest) -> Result<(ConfChangeType, PeerMeta)> {
    let cp = req
        .admin_request
        .as_ref()
        .and_then(|a| a.change_peer.as_ref())
        .ok_or_else(|| RegionError::InvalidRequest("ChangePeer without a change".into()))?;
    let peer = cp
        .peer
        .filter(|p| p.id != 0 && p.store_id != 0)
        .ok_or_else(|| RegionError::InvalidRequest("ChangePeer without a valid peer".into()))?;
    Ok((cp.change_type(), peer))
}

impl Peer {
    /// Proposes a ChangePeer command; returns its (index, term).
    pub(crate) fn propose_conf_change(&mut self, req: &RaftCmdRequest) -> Result<(u64, u64)> {
        let (change, target) = change_of(req)?;
        let raft = &self.raft.raft;
        if raft.pending_conf_index > raft.raft_log.applied {
            return Err(Error::Region(RegionError::ServerIsBusy(format!(
                "a conf change is pending (index {} not yet applied); retry later",
                raft.pending_conf_index
            ))));
        }
        let region = self.region();
        if change == ConfChangeType::AddNode {
            if let Some(other) = other_peer_on_store(region, &target) {
                return Err(Error::Region(RegionError::InvalidRequest(format!(
                    "store {} already holds peer {} of region {}; one store holds at most one replica of a region",
                    target.store_id, other.id, region.id
                ))));
            }
        }
        if change == ConfChangeType::RemoveNode && target.id == self.meta.id {
            if region.peers.len() == 1 {
                return Err(Error::Region(RegionError::InvalidRequest(
                    "cannot remove the last peer of a region".into(),
                )));
            }
            // A leader never removes itself: it hands leadership to the most
            // up-to-date follower, which removes it as a follower. The
            // scheduler re-sends the operator to the new leader.
            // Only a follower that needs no snapshot can take over quickly.
            let truncated = self.storage().truncated_index();
            let to = region
                .peers
                .iter()
                .filter(|p| p.id != self.meta.id)
                .filter_map(|p| raft.prs().get(p.id).map(|pr| (p.id, pr.matched)))
                .filter(|(_, matched)| *matched > truncated)
                .max_by_key(|(_, matched)| *matched)
                .map(|(id, _)| id);
            if let Some(busy) = raft.lead_transferee {
                return Err(Error::Region(RegionError::ServerIsBusy(format!(
                    "peer {} is the leader and is handing over to {busy} before its removal; retry later",
                    self.meta.id
                ))));
            }
            let Some(to) = to else {
                return Err(Error::Region(RegionError::ServerIsBusy(format!(
                    "peer {} is the leader and no follower is caught up to take over; retry later",
                    self.meta.id
                ))));
            };
            self.raft.transfer_leader(to);
            return Err(Error::Region(RegionError::ServerIsBusy(format!(
                "peer {} is the leader: transferring leadership to {to} before removing it",
                self.meta.id
            ))));
        }
        let cc = ConfChange {
            change_type: match change {
                ConfChangeType::AddNode => RaftCcType::AddNode,
                ConfChangeType::RemoveNode => RaftCcType::RemoveNode,
            },
            node_id: target.id,
            ..Default::default()
        };
        let index = self.raft.raft.raft_log.last_index() + 1;
        let term = self.term();
        self.raft.propose_conf_change(req.encode_to_vec(), cc)?;
        if self.raft.raft.raft_log.last_index() != index {
            return Err(Error::Region(RegionError::ServerIsBusy(
                "conf change dropped by raft".into(),
            )));
        }
        Ok((index, term))
    }

    /// Applies a committed conf change entry. Epoch mismatches and duplicates
    /// (the scheduler re-sends operators) change nothing and raft is not told.
    pub(crate) fn apply_conf_change_entry(
        &mut self,
        entry: &Entry,
        wb: &mut sled::Batch,
    ) -> Result<ConfChangeApplied> {
        let mut cc = ConfChange::default();
        cc.merge_from_bytes(&entry.data)?;
        let req = RaftCmdRequest::decode(entry.context.as_ref())?;
        let unchanged = |resp| ConfChangeApplied {
            response: resp,
            region: None,
        };
        if let Err(e) = self.check_command(&req) {
            return Ok(unchanged(super::error_response(e)));
        }
        let (change, target) = change_of(&req)?;
        let mut region = self.region().clone();
        let existing = region.peers.iter().position(|p| p.id == target.id);
        if change == ConfChangeType::AddNode && existing.is_none() {
            // Refused at propose time too; this covers an entry proposed
            // before another peer on the same store was added.
            if let Some(other) = other_peer_on_store(&region, &target) {
                warn!(
                    peer = target.id,
                    store = target.store_id,
                    other = other.id,
                    "AddNode for a store already holding a replica of the region; skipped"
                );
                let e = RegionError::InvalidRequest(format!(
                    "store {} already holds peer {} of region {}",
                    target.store_id, other.id, region.id
                ));
                return Ok(unchanged(super::error_response(e)));
            }
        }
        match (change, existing) {
            (ConfChangeType::AddNode, None) => region.peers.push(target),
            (ConfChangeType::RemoveNode, Some(i)) => {
                region.peers.remove(i);
            }
            _ => {
                info!(?change, peer = target.id, "duplicate conf change skipped");
                return Ok(unchanged(self.ok_change_response(region)));
            }
        }
        let epoch = region.region_epoch.get_or_insert_with(Default::default);
        epoch.conf_ver += 1;
        let state = RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(region.clone()),
        };
        state::put_region_state(wb, region.id, &state);
        let removes_leader =
            change == ConfChangeType::RemoveNode && target.id == self.meta.id && self.is_leader();
        // A leader that applies its own removal keeps raft's configuration
        // as it was while it stays (`leave.rs`): raft-rs drops a removed
        // peer's own progress, and a leader without one panics the next time
        // its commit could advance (on an append response, or when entries
        // it appended are persisted). Found by the simulator.
        if removes_leader {
            info!("own removal applied while leading; raft keeps the old configuration until this peer leaves");
        } else if let Err(e) = self.raft.apply_conf_change(&cc) {
            // The region meta and raft's configuration would disagree.
            panic!(
                "region {} peer {}: raft refused committed conf change {cc:?}: {e}",
                region.id, self.meta.id
            );
        }
        match change {
            ConfChangeType::AddNode => {
                self.peer_cache.insert(target.id, target);
                let conf_ver = region.region_epoch.as_ref().map_or(0, |e| e.conf_ver);
                self.raft.mut_store().note_peer_added(target.id, conf_ver);
            }
            ConfChangeType::RemoveNode => {
                self.peer_cache.remove(&target.id);
                if target.id == self.meta.id {
                    self.start_leaving(entry.index);
                }
            }
        }
        info!(
            ?change,
            peer = target.id,
            store = target.store_id,
            conf_ver = region.region_epoch.as_ref().map_or(0, |e| e.conf_ver),
            "conf change applied"
        );
        self.raft.mut_store().region = region.clone();
        crate::metrics::CONF_CHANGES.inc();
        self.heartbeat_now = true;
        Ok(ConfChangeApplied {
            response: self.ok_change_response(region.clone()),
            region: Some(region),
        })
    }

    fn ok_change_response(&self, region: Region) -> RaftCmdResponse {
        RaftCmdResponse {
            header: Some(RaftResponseHeader {
                error: None,
                current_term: self.term(),
            }),
            admin_response: Some(AdminResponse {
                cmd_type: AdminCmdType::ChangePeer as i32,
                change_peer: Some(ChangePeerResponse {
                    region: Some(region),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Logs a conf change entry that cannot be decoded; raft is not told.
    pub(crate) fn skip_bad_conf_change(&self, index: u64, e: &Error) {
        warn!(index, error = %e, "skipping undecodable conf change entry");
    }
}

impl Peer {
    /// Turns a scheduler operator into a command for this leader, or None if
    /// it is already done (operators are re-sent until the scheduler sees
    /// them done, so duplicates are normal).
    pub fn request_for_operator(
        &self,
        op: &crate::proto::schedulerpb::Operator,
    ) -> Option<RaftCmdRequest> {
        use crate::proto::raft_cmdpb::{
            AdminRequest, ChangePeerRequest, RaftRequestHeader, TransferLeaderRequest,
        };
        use crate::proto::schedulerpb::OperatorKind;
        let target = op.peer?;
        let region = self.region();
        let member = region.peers.iter().any(|p| p.id == target.id);
        if op.kind() == OperatorKind::AddPeer && !member {
            if let Some(other) = other_peer_on_store(region, &target) {
                warn!(
                    peer = target.id,
                    store = target.store_id,
                    other = other.id,
                    "operator would place a second replica on a store; ignored"
                );
                return None;
            }
        }
        let admin = match op.kind() {
            OperatorKind::AddPeer if !member => AdminRequest {
                cmd_type: AdminCmdType::ChangePeer as i32,
                change_peer: Some(ChangePeerRequest {
                    change_type: ConfChangeType::AddNode as i32,
                    peer: Some(target),
                }),
                ..Default::default()
            },
            OperatorKind::RemovePeer if member => AdminRequest {
                cmd_type: AdminCmdType::ChangePeer as i32,
                change_peer: Some(ChangePeerRequest {
                    change_type: ConfChangeType::RemoveNode as i32,
                    peer: Some(target),
                }),
                ..Default::default()
            },
            OperatorKind::TransferLeader if member && target.id != self.meta.id => AdminRequest {
                cmd_type: AdminCmdType::TransferLeader as i32,
                transfer_leader: Some(TransferLeaderRequest { peer: Some(target) }),
                ..Default::default()
            },
            _ => return None,
        };
        Some(RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                peer: Some(self.meta),
                region_epoch: region.region_epoch,
                term: self.term(),
            }),
            requests: vec![],
            admin_request: Some(admin),
        })
    }
}
