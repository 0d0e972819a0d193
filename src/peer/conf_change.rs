//! Membership changes of one region: proposing them through raft-rs and
//! applying them once committed.
//!
//! Two kinds of change exist (roles in `region/roles.rs`):
//! - a simple one (`ChangePeer`, raft `ConfChange`): add a learner, promote
//!   a learner, demote a voter to a learner, or remove a peer;
//! - a joint one (`ChangePeerV2`, raft `ConfChangeV2`): several promotions
//!   and demotions at once through a joint configuration (Raft thesis §4.3),
//!   which raft-rs leaves on its own with an empty `ConfChangeV2` once the
//!   leader applied it.
//!
//! One change at a time (Raft thesis §4.1): raft-rs silently turns a second
//! conf change proposed while one is unapplied (or one proposed inside a
//! joint configuration) into an empty entry, so such a proposal is refused
//! here, with an error, before it reaches raft.
//!
//! A voter of a two-voter region is never removed by a simple change: if
//! that voter leads, commits its own removal and is destroyed before the
//! other learns of the commit, the survivor still needs its vote and the
//! region has no leader (tikv/tikv#10595). It is demoted to a learner first,
//! which keeps it alive and able to vote until the survivor catches up.

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType as RaftCcType, ConfChangeV2,
    Entry, EntryType,
};
use tracing::{info, warn};

use super::Peer;
use crate::error::{Error, RegionError, Result};
use crate::proto::metapb::{Peer as PeerMeta, Region};
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminResponse, ChangePeerResponse, ChangePeerV2Response, ConfChangeType,
    RaftCmdRequest, RaftCmdResponse, RaftResponseHeader,
};
use crate::proto::raft_serverpb::{PeerState, RegionLocalState};
use crate::region::roles;
use crate::storage::state;

/// What applying one conf change entry did.
pub(crate) struct ConfChangeApplied {
    pub response: RaftCmdResponse,
    /// The region's new meta, when membership changed.
    pub region: Option<Region>,
}

/// One membership change of a command.
type Change = (ConfChangeType, PeerMeta);

/// Another peer of `region` on the store `target` would be added to.
pub(super) fn other_peer_on_store<'a>(
    region: &'a Region,
    target: &PeerMeta,
) -> Option<&'a PeerMeta> {
    region
        .peers
        .iter()
        .find(|p| p.store_id == target.store_id && p.id != target.id)
}

/// The changes of a ChangePeer or ChangePeerV2 command, and whether it is
/// the latter.
fn changes_of(req: &RaftCmdRequest) -> Result<(Vec<Change>, bool)> {
    let bad = |m: &str| Error::Region(RegionError::InvalidRequest(m.into()));
    let admin = req
        .admin_request
        .as_ref()
        .ok_or_else(|| bad("a membership change without an admin request"))?;
    let (list, v2) = match admin.cmd_type() {
        AdminCmdType::ChangePeerV2 => {
            let v2 = admin
                .change_peer_v2
                .as_ref()
                .ok_or_else(|| bad("ChangePeerV2 without changes"))?;
            (v2.changes.clone(), true)
        }
        _ => (
            vec![admin
                .change_peer
                .ok_or_else(|| bad("ChangePeer without a change"))?],
            false,
        ),
    };
    let mut changes = Vec::with_capacity(list.len());
    for cp in &list {
        let peer = cp
            .peer
            .filter(|p| p.id != 0 && p.store_id != 0)
            .ok_or_else(|| bad("ChangePeer without a valid peer"))?;
        if changes.iter().any(|(_, p): &Change| p.id == peer.id) {
            return Err(bad("a membership change names one peer twice"));
        }
        changes.push((cp.change_type(), peer));
    }
    if changes.is_empty() {
        return Err(bad("ChangePeerV2 without changes"));
    }
    Ok((changes, v2))
}

fn raft_type(c: ConfChangeType) -> RaftCcType {
    match c {
        ConfChangeType::AddNode => RaftCcType::AddNode,
        ConfChangeType::RemoveNode => RaftCcType::RemoveNode,
        ConfChangeType::AddLearnerNode => RaftCcType::AddLearnerNode,
    }
}

/// The raft-rs form of a ChangePeer (its one change).
fn simple_conf_change(changes: &[Change]) -> ConfChange {
    let (change, target) = changes[0];
    ConfChange {
        change_type: raft_type(change),
        node_id: target.id,
        ..Default::default()
    }
}

/// The raft-rs form of a ChangePeerV2: several changes enter a joint
/// configuration left automatically; a single one is a simple change.
fn conf_change_v2(changes: &[Change]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    for (c, p) in changes {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(raft_type(*c));
        single.node_id = p.id;
        cc.mut_changes().push(single);
    }
    cc
}

impl Peer {
    /// Whether raft's own configuration is joint.
    pub(super) fn raft_in_joint(&self) -> bool {
        !self
            .raft
            .raft
            .prs()
            .conf()
            .to_conf_state()
            .voters_outgoing
            .is_empty()
    }

    /// Proposes a ChangePeer or ChangePeerV2 command; returns its (index, term).
    pub(crate) fn propose_conf_change(&mut self, req: &RaftCmdRequest) -> Result<(u64, u64)> {
        let (changes, v2) = changes_of(req)?;
        let raft = &self.raft.raft;
        if raft.pending_conf_index > raft.raft_log.applied {
            return Err(Error::Region(RegionError::ServerIsBusy(format!(
                "a conf change is pending (index {} not yet applied); retry later",
                raft.pending_conf_index
            ))));
        }
        let region = self.region();
        if roles::in_joint(region) || self.raft_in_joint() {
            return Err(Error::Region(RegionError::ServerIsBusy(format!(
                "region {} is leaving a joint configuration; retry later",
                region.id
            ))));
        }
        let invalid = |m: String| Err(Error::Region(RegionError::InvalidRequest(m)));
        for (change, target) in &changes {
            let member = roles::role(region, target.id).is_some();
            if *change != ConfChangeType::RemoveNode && !member {
                if let Some(other) = other_peer_on_store(region, target) {
                    return invalid(format!(
                        "store {} already holds peer {} of region {}; one store holds at most one replica of a region",
                        target.store_id, other.id, region.id
                    ));
                }
            }
            let voters = roles::voters(region).count();
            if *change == ConfChangeType::RemoveNode
                && roles::is_voter(region, target.id)
                && voters <= 2
            {
                return invalid(format!(
                    "peer {} is one of {voters} voters: demote it to a learner (AddLearnerNode) before removing it",
                    target.id
                ));
            }
        }
        let mut next = region.clone();
        if let Err(e) = roles::apply_changes(&mut next, &changes, v2 && changes.len() > 1) {
            return invalid(format!("region {}: {e}", region.id));
        }
        // A leader never removes or demotes itself: it hands leadership to
        // the most up-to-date voter that stays, which then carries out the
        // change. The scheduler re-sends the operator to the new leader. (A
        // leader that is a learner, demoted by a change another leader
        // proposed, hands over too before its removal.)
        let me = self.meta.id;
        if !roles::is_voter(&next, me) {
            return Err(self.hand_over_before_leaving(&next));
        }
        let index = self.raft.raft.raft_log.last_index() + 1;
        let term = self.term();
        if v2 {
            self.raft
                .propose_conf_change(req.encode_to_vec(), conf_change_v2(&changes))?;
        } else {
            self.raft
                .propose_conf_change(req.encode_to_vec(), simple_conf_change(&changes))?;
        }
        if self.raft.raft.raft_log.last_index() != index
            || self.raft.raft.raft_log.term(index).ok() != Some(term)
        {
            return Err(Error::Region(RegionError::ServerIsBusy(
                "conf change dropped by raft".into(),
            )));
        }
        Ok((index, term))
    }

    /// Starts handing leadership to the most up-to-date voter of `next`
    /// (the membership after a change that takes this leader out) and
    /// returns the retryable error the change is refused with meanwhile.
    pub(super) fn hand_over_before_leaving(&mut self, next: &Region) -> Error {
        let busy = |m: String| Error::Region(RegionError::ServerIsBusy(m));
        let me = self.meta.id;
        if let Some(to) = self.raft.raft.lead_transferee {
            return busy(format!(
                "peer {me} is the leader and is handing over to {to} before it leaves; retry later"
            ));
        }
        // Only a voter that needs no snapshot can take over quickly.
        let truncated = self.storage().truncated_index();
        let to = roles::voters(next)
            .filter(|p| p.id != me)
            .filter_map(|p| self.raft.raft.prs().get(p.id).map(|pr| (p.id, pr.matched)))
            .filter(|(_, matched)| *matched > truncated)
            .max_by_key(|(_, matched)| *matched)
            .map(|(id, _)| id);
        let Some(to) = to else {
            return busy(format!(
                "peer {me} is the leader and no voter that stays is caught up to take over; retry later"
            ));
        };
        self.raft.transfer_leader(to);
        busy(format!(
            "peer {me} is the leader: transferring leadership to {to} before it leaves"
        ))
    }

    /// Applies a committed conf change entry (either kind). Epoch
    /// mismatches and duplicates (the scheduler re-sends operators) change
    /// nothing and raft is not told.
    pub(crate) fn apply_conf_change_entry(
        &mut self,
        entry: &Entry,
        wb: &mut sled::Batch,
    ) -> Result<ConfChangeApplied> {
        let unchanged = |resp| ConfChangeApplied {
            response: resp,
            region: None,
        };
        let v2 = entry.get_entry_type() == EntryType::EntryConfChangeV2;
        let cc_v2 = if v2 {
            let mut cc = ConfChangeV2::default();
            cc.merge_from_bytes(&entry.data)?;
            Some(cc)
        } else {
            None
        };
        if let Some(cc) = cc_v2.as_ref().filter(|cc| cc.leave_joint()) {
            return Ok(self.apply_leave_joint(cc, wb));
        }
        let req = RaftCmdRequest::decode(entry.context.as_ref())?;
        if let Err(e) = self.check_command(&req) {
            return Ok(unchanged(super::error_response(e)));
        }
        let (changes, _) = changes_of(&req)?;
        let joint = cc_v2.as_ref().is_some_and(|cc| cc.enter_joint().is_some());
        let mut region = self.region().clone();
        for (change, target) in &changes {
            let member = roles::role(&region, target.id).is_some();
            if *change == ConfChangeType::RemoveNode || member {
                continue;
            }
            // Refused at propose time too; this covers an entry proposed
            // before another peer on the same store was added.
            if let Some(other) = other_peer_on_store(&region, target) {
                warn!(
                    peer = target.id,
                    store = target.store_id,
                    other = other.id,
                    "adding a peer on a store already holding a replica of the region; skipped"
                );
                let e = RegionError::InvalidRequest(format!(
                    "store {} already holds peer {} of region {}",
                    target.store_id, other.id, region.id
                ));
                return Ok(unchanged(super::error_response(e)));
            }
        }
        match roles::apply_changes(&mut region, &changes, joint) {
            Ok(true) => {}
            Ok(false) => {
                info!(?changes, "duplicate conf change skipped");
                return Ok(unchanged(self.ok_change_response(region, v2)));
            }
            Err(e) => {
                warn!(?changes, error = %e, "conf change does not fit the membership; skipped");
                let e = RegionError::InvalidRequest(format!("region {}: {e}", region.id));
                return Ok(unchanged(super::error_response(e)));
            }
        }
        let me = self.meta.id;
        let removes_leader = self.is_leader()
            && changes
                .iter()
                .any(|(c, t)| *c == ConfChangeType::RemoveNode && t.id == me);
        // A leader that applies its own removal keeps raft's configuration
        // as it was while it stays (`leave.rs`): raft-rs drops a removed
        // peer's own progress, and a leader without one panics the next time
        // its commit could advance (on an append response, or when entries
        // it appended are persisted). Found by the simulator.
        let told = if removes_leader {
            info!("own removal applied while leading; raft keeps the old configuration until this peer leaves");
            Ok(())
        } else if let Some(cc) = &cc_v2 {
            self.raft.apply_conf_change(cc).map(drop)
        } else {
            self.raft
                .apply_conf_change(&simple_conf_change(&changes))
                .map(drop)
        };
        if let Err(e) = told {
            // raft checks the same rules as `roles::apply_changes`, so this
            // is a bug; region meta and raft keep agreeing (neither changes)
            // and the region goes on.
            warn!(?changes, error = %e, "raft refused a committed conf change; skipped");
            crate::metrics::FAILED_CONF_CHANGES.inc();
            let e = RegionError::InvalidRequest(format!("raft refused the change: {e}"));
            return Ok(unchanged(super::error_response(e)));
        }
        for (change, target) in &changes {
            if *change == ConfChangeType::RemoveNode {
                self.peer_cache.remove(&target.id);
            } else {
                self.peer_cache.insert(target.id, *target);
            }
        }
        self.note_membership(&region, wb, &changes);
        if changes
            .iter()
            .any(|(c, t)| *c == ConfChangeType::RemoveNode && t.id == me)
        {
            self.start_leaving(entry.index);
        }
        Ok(ConfChangeApplied {
            response: self.ok_change_response(region.clone(), v2),
            region: Some(region),
        })
    }

    /// Applies the empty `ConfChangeV2` raft-rs proposes to leave a joint
    /// configuration. It carries no command (and no epoch to check): once
    /// the joint configuration is applied, leaving it is the only way on.
    fn apply_leave_joint(&mut self, cc: &ConfChangeV2, wb: &mut sled::Batch) -> ConfChangeApplied {
        let mut region = self.region().clone();
        if !self.raft_in_joint() || !roles::leave_joint(&mut region) {
            info!("leave of a joint configuration already left; skipped");
            return ConfChangeApplied {
                response: self.ok_change_response(region, true),
                region: None,
            };
        }
        if let Err(e) = self.raft.apply_conf_change(cc) {
            // Raft is joint (checked above): leaving cannot fail.
            warn!(error = %e, "raft refused to leave its joint configuration; skipped");
            crate::metrics::FAILED_CONF_CHANGES.inc();
            return ConfChangeApplied {
                response: self.ok_change_response(self.region().clone(), true),
                region: None,
            };
        }
        self.note_membership(&region, wb, &[]);
        ConfChangeApplied {
            response: self.ok_change_response(region.clone(), true),
            region: Some(region),
        }
    }

    /// Records an applied membership: the epoch's conf_ver moves by one,
    /// the region state joins the apply batch, and the scheduler hears.
    fn note_membership(&mut self, region: &Region, wb: &mut sled::Batch, changes: &[Change]) {
        let mut region = region.clone();
        let epoch = region.region_epoch.get_or_insert_with(Default::default);
        epoch.conf_ver += 1;
        let conf_ver = epoch.conf_ver;
        let state = RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(region.clone()),
            applying: None,
        };
        state::put_region_state(wb, region.id, &state);
        for (change, target) in changes {
            if *change != ConfChangeType::RemoveNode {
                self.raft.mut_store().note_peer_added(target.id, conf_ver);
            }
        }
        info!(
            ?changes,
            joint = roles::in_joint(&region),
            conf_ver,
            "conf change applied"
        );
        self.raft.mut_store().region = region;
        crate::metrics::CONF_CHANGES.inc();
        self.heartbeat_now = true;
    }

    fn ok_change_response(&self, region: Region, v2: bool) -> RaftCmdResponse {
        let admin = if v2 {
            AdminResponse {
                cmd_type: AdminCmdType::ChangePeerV2 as i32,
                change_peer_v2: Some(ChangePeerV2Response {
                    region: Some(region),
                }),
                ..Default::default()
            }
        } else {
            AdminResponse {
                cmd_type: AdminCmdType::ChangePeer as i32,
                change_peer: Some(ChangePeerResponse {
                    region: Some(region),
                }),
                ..Default::default()
            }
        };
        RaftCmdResponse {
            header: Some(RaftResponseHeader {
                error: None,
                current_term: self.term(),
            }),
            admin_response: Some(admin),
            ..Default::default()
        }
    }

    /// Logs a conf change entry that cannot be decoded; raft is not told.
    pub(crate) fn skip_bad_conf_change(&self, index: u64, e: &Error) {
        warn!(index, error = %e, "skipping undecodable conf change entry");
    }
}
