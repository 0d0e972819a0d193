//! Scheduler operators on the leader: each heartbeat answer names what the
//! region should become, and the leader proposes the next step towards it.
//! The steps keep every change safe (`conf_change.rs`):
//! - AddPeer: the new peer joins as a learner, and is promoted once its log
//!   has caught up, so a lagging replica never counts towards quorum;
//! - RemovePeer: a voter is demoted to a learner first, then removed;
//! - ReplacePeer: the new peer joins as a learner; once caught up, one joint
//!   change promotes it and demotes the old one; then the old one goes.
//!
//! Each step is derived from the region as it is, so a re-sent operator
//! (operators are re-sent until the scheduler sees them done) proposes
//! nothing twice, and a leader elected midway continues where the last
//! one stopped.

use tracing::{info, warn};

use super::conf_change::other_peer_on_store;
use super::Peer;
use crate::proto::metapb::{Peer as PeerMeta, PeerRole};
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, ChangePeerRequest, ChangePeerV2Request, ConfChangeType,
    RaftCmdRequest, TransferLeaderRequest,
};
use crate::proto::schedulerpb::{Operator, OperatorKind};
use crate::region::roles;
use crate::PeerId;

/// How many entries a learner may trail the leader's commit and still be
/// promoted: under steady writes a caught-up replica is always a few
/// entries behind (the ones in flight).
pub(crate) const PROMOTE_LAG_ENTRIES: u64 = 256;

/// What a leader does next for an operator.
enum Step {
    Propose(AdminRequest),
    /// Hand leadership over before a change that takes this peer out.
    HandOver,
    /// Wait for a learner's log to catch up.
    CatchUp(PeerId),
    Nothing,
}

fn change(change_type: ConfChangeType, peer: PeerMeta) -> ChangePeerRequest {
    ChangePeerRequest {
        change_type: change_type as i32,
        peer: Some(peer),
    }
}

fn simple(change_type: ConfChangeType, peer: PeerMeta) -> Step {
    Step::Propose(AdminRequest {
        cmd_type: AdminCmdType::ChangePeer as i32,
        change_peer: Some(change(change_type, peer)),
        ..Default::default()
    })
}

impl Peer {
    /// Whether `id`'s log is close enough to the leader's to count towards
    /// quorum: raft streams entries to it (no snapshot pending) and it
    /// trails the commit index by at most [`PROMOTE_LAG_ENTRIES`].
    pub(crate) fn caught_up(&self, id: PeerId) -> bool {
        let raft = &self.raft.raft;
        let truncated = self.storage().truncated_index();
        raft.prs().get(id).is_some_and(|pr| {
            pr.state == raft::ProgressState::Replicate
                && pr.matched >= truncated
                && raft.raft_log.committed.saturating_sub(pr.matched) <= PROMOTE_LAG_ENTRIES
        })
    }

    /// Turns a scheduler operator into this leader's next command for it,
    /// or None if there is nothing to propose now (done, waiting for a
    /// learner, or handing leadership over).
    pub fn request_for_operator(&mut self, op: &Operator) -> Option<RaftCmdRequest> {
        let admin = match self.operator_step(op) {
            Step::Propose(admin) => admin,
            Step::HandOver => {
                let mut next = self.region().clone();
                let me = self.meta;
                // The change that takes this leader out: its demotion.
                let _ =
                    roles::apply_changes(&mut next, &[(ConfChangeType::AddLearnerNode, me)], false);
                let e = self.hand_over_before_leaving(&next);
                info!(error = %e, "operator takes the leader out");
                return None;
            }
            Step::CatchUp(id) => {
                // Asked again at the next heartbeat; the tick brings that
                // heartbeat forward once the learner has caught up.
                self.awaiting_promotion = Some(id);
                return None;
            }
            Step::Nothing => return None,
        };
        Some(self.admin_command(self.region().region_epoch, admin))
    }

    fn operator_step(&self, op: &Operator) -> Step {
        let Some(target) = op.peer else {
            return Step::Nothing;
        };
        let region = self.region();
        // raft-rs leaves a joint configuration on its own (`on_tick` makes
        // sure); nothing else is proposed before that.
        if roles::in_joint(region) {
            return Step::Nothing;
        }
        let me = self.meta.id;
        match op.kind() {
            OperatorKind::AddPeer => self.step_towards_voter(target),
            OperatorKind::RemovePeer => self.step_towards_removal(target),
            OperatorKind::ReplacePeer => {
                let Some(old) = op.replaced.filter(|o| o.id != target.id) else {
                    return Step::Nothing;
                };
                let new_role = roles::role(region, target.id);
                let old_role = roles::role(region, old.id);
                match (new_role, old_role) {
                    // The new peer first joins, as a learner.
                    (None, _) | (Some(PeerRole::Learner), None | Some(PeerRole::Learner)) => {
                        self.step_towards_voter(target)
                    }
                    (Some(PeerRole::Learner), Some(_)) if !self.caught_up(target.id) => {
                        Step::CatchUp(target.id)
                    }
                    // A leader that goes needs a voter that stays to take over;
                    // with none, the new peer is promoted on its own first.
                    (Some(PeerRole::Learner), Some(_)) if old.id == me => {
                        let others = roles::voters(region).filter(|p| p.id != me).count();
                        if others == 0 {
                            simple(ConfChangeType::AddNode, target)
                        } else {
                            Step::HandOver
                        }
                    }
                    (Some(PeerRole::Learner), Some(_)) => Step::Propose(AdminRequest {
                        cmd_type: AdminCmdType::ChangePeerV2 as i32,
                        change_peer_v2: Some(ChangePeerV2Request {
                            changes: vec![
                                change(ConfChangeType::AddNode, target),
                                change(ConfChangeType::AddLearnerNode, old),
                            ],
                        }),
                        ..Default::default()
                    }),
                    // The new peer votes: the old one is taken out.
                    (Some(_), Some(_)) => self.step_towards_removal(old),
                    (Some(_), None) => Step::Nothing,
                }
            }
            OperatorKind::TransferLeader
                if target.id != me && roles::is_voter(region, target.id) =>
            {
                Step::Propose(AdminRequest {
                    cmd_type: AdminCmdType::TransferLeader as i32,
                    transfer_leader: Some(TransferLeaderRequest { peer: Some(target) }),
                    ..Default::default()
                })
            }
            _ => Step::Nothing,
        }
    }

    /// The next step to make `target` a voter: add it as a learner, then
    /// promote it once caught up.
    fn step_towards_voter(&self, target: PeerMeta) -> Step {
        let region = self.region();
        match roles::role(region, target.id) {
            None => {
                if let Some(other) = other_peer_on_store(region, &target) {
                    warn!(
                        peer = target.id,
                        store = target.store_id,
                        other = other.id,
                        "operator would place a second replica on a store; ignored"
                    );
                    return Step::Nothing;
                }
                simple(ConfChangeType::AddLearnerNode, target)
            }
            Some(PeerRole::Learner) if self.caught_up(target.id) => {
                simple(ConfChangeType::AddNode, target)
            }
            Some(PeerRole::Learner) => Step::CatchUp(target.id),
            Some(_) => Step::Nothing,
        }
    }

    /// The next step to take `target` out: demote a voter, remove a learner.
    /// The leader hands over before it goes; as the only voter, it first
    /// promotes a caught-up learner to hand over to.
    fn step_towards_removal(&self, target: PeerMeta) -> Step {
        let region = self.region();
        let me = self.meta.id;
        match roles::role(region, target.id) {
            None => Step::Nothing,
            Some(_) if target.id == me => {
                if roles::voters(region).any(|p| p.id != me) {
                    return Step::HandOver;
                }
                let heir = region
                    .peers
                    .iter()
                    .find(|p| roles::is_learner(region, p.id) && self.caught_up(p.id));
                match heir {
                    Some(p) => simple(ConfChangeType::AddNode, *p),
                    None => Step::Nothing,
                }
            }
            Some(PeerRole::Learner) => simple(ConfChangeType::RemoveNode, target),
            // Demoting first leaves the removal to the remaining voters'
            // quorum; with three voters or more and one of those lagging,
            // that step would wait for it, while a removal is committed by
            // the old configuration's quorum (only one of two voters must
            // never be removed that way).
            Some(_)
                if roles::voters(region).count() > 2
                    && roles::voters(region)
                        .any(|p| p.id != target.id && p.id != me && !self.caught_up(p.id)) =>
            {
                simple(ConfChangeType::RemoveNode, target)
            }
            Some(_) => simple(ConfChangeType::AddLearnerNode, target),
        }
    }

    /// A leader's periodic membership duties: make sure a joint
    /// configuration is left, hand leadership over when this peer no longer
    /// votes, and bring the next heartbeat forward when a learner waiting
    /// for promotion has caught up.
    pub(super) fn tick_membership(&mut self) {
        let raft = &self.raft.raft;
        let idle = raft.pending_conf_index <= raft.raft_log.applied;
        // raft-rs proposes the leave itself when it applies the joint entry
        // as leader; a leader elected after that point never does.
        if idle && roles::in_joint(self.region()) && self.raft_in_joint() {
            info!("leaving the joint configuration");
            let cc = raft::eraftpb::ConfChangeV2::default();
            if let Err(e) = self.raft.propose_conf_change(vec![], cc) {
                warn!(error = %e, "could not propose leaving the joint configuration");
            }
            return;
        }
        if idle && !roles::is_voter(self.region(), self.meta.id) && !self.is_leaving() {
            // Demoted while leading (a demotion another leader proposed).
            let region = self.region().clone();
            let e = self.hand_over_before_leaving(&region);
            info!(error = %e, "leader is no longer a voter");
            return;
        }
        if let Some(id) = self.awaiting_promotion {
            if !roles::is_learner(self.region(), id) {
                self.awaiting_promotion = None;
            } else if self.caught_up(id) {
                self.awaiting_promotion = None;
                self.heartbeat_now = true;
            }
        }
    }
}
