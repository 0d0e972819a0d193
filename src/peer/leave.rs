//! A leader that applies its own removal stays until the peers it leaves
//! behind know the removal committed.
//!
//! raft-rs applies a membership change when it is applied, not when it is
//! appended. If the leader of {A, B} commits "remove A" and is destroyed at
//! once, B may hold the entry without knowing it committed: B still counts A
//! as a voter, cannot win an election without A's vote, and A is gone. The
//! region is then dead with one healthy replica. The leader never proposes
//! its own removal (it hands leadership over first, see `conf_change.rs`),
//! but a removal proposed by one leader can be committed by the next, which
//! may be the peer removed.
//!
//! So such a leader keeps leading the new configuration, of which it is not
//! a member. Every heartbeat it sends carries `commit = min(matched,
//! committed)`; one whose commit covers the removal is tagged with
//! [`LEAVE_CONTEXT`], which followers echo in their response. Once the
//! echoing peers form a quorum of the remaining voters, that quorum will
//! apply the removal and can elect a leader among themselves: the peer is
//! destroyed. If it loses leadership first, the next leader holds the entry
//! (it committed) and may need this peer's vote or acknowledgement to
//! commit in its own term if it has not applied the removal yet, so the peer
//! waits as a follower until that leader's messages show the commit, or for
//! [`FOLLOWER_GRACE_ELECTIONS`] election timeouts.

use std::collections::HashSet;

use raft::eraftpb::{self, MessageType};
use tracing::info;

use super::Peer;
use crate::PeerId;

/// The heartbeat context marking "this heartbeat's commit covers my
/// removal". Read-index contexts are never this value (see `read.rs`).
pub(crate) const LEAVE_CONTEXT: &[u8] = b"tessel:leaving";

/// How many election timeouts a removed peer that lost leadership waits for
/// the new leader's commit before it goes anyway.
const FOLLOWER_GRACE_ELECTIONS: u64 = 10;

/// A removed leader's wait for its last duty.
#[derive(Debug)]
pub(crate) struct Leaving {
    /// The index of the entry that removed this peer.
    index: u64,
    /// Remaining voters that answered a heartbeat covering `index`.
    informed: HashSet<PeerId>,
    /// Ticks spent not leading since the removal.
    follower_ticks: u64,
}

impl Peer {
    /// Called when this peer applies its own removal at `index`: leaves at
    /// once unless it leads peers that may not know the removal committed.
    pub(crate) fn start_leaving(&mut self, index: u64) {
        if !self.is_leader() {
            self.pending_remove = true;
            return;
        }
        info!(
            index,
            "removed while leading: staying until the remaining peers know it committed"
        );
        self.leaving = Some(Leaving {
            index,
            informed: HashSet::new(),
            follower_ticks: 0,
        });
    }

    /// Whether this peer applied its own removal and waits to leave.
    pub fn is_leaving(&self) -> bool {
        self.leaving.is_some()
    }

    /// Tags an outgoing heartbeat whose commit covers the removal.
    pub(crate) fn tag_leave_heartbeat(&self, m: &mut eraftpb::Message) {
        let Some(l) = &self.leaving else { return };
        if m.get_msg_type() == MessageType::MsgHeartbeat
            && m.commit >= l.index
            && m.context.is_empty()
        {
            m.context = LEAVE_CONTEXT.to_vec().into();
        }
    }

    /// Looks at an incoming message for evidence that the remaining peers
    /// know the removal committed.
    pub(crate) fn observe_for_leave(&mut self, m: &eraftpb::Message) {
        let Some(l) = &mut self.leaving else { return };
        let done = match m.get_msg_type() {
            MessageType::MsgHeartbeatResponse if m.context.as_ref() == LEAVE_CONTEXT => {
                l.informed.insert(m.from);
                // The remaining voters: the region as applied (raft's own
                // configuration still lists this peer, see `conf_change.rs`).
                let voters: Vec<u64> = crate::region::roles::voters(&self.raft.store().region)
                    .map(|p| p.id)
                    .collect();
                let informed = voters.iter().filter(|id| l.informed.contains(id)).count();
                informed * 2 > voters.len()
            }
            // A leader of this term or a newer one knows the removal
            // committed: it will apply it and needs this peer no more.
            MessageType::MsgAppend | MessageType::MsgHeartbeat => {
                m.term >= self.raft.raft.term && m.commit >= l.index
            }
            _ => false,
        };
        if done {
            info!(
                index = l.index,
                "the remaining peers know of the removal: leaving"
            );
            self.pending_remove = true;
        }
    }

    /// One tick of the wait. Returns true while the peer is leaving (the
    /// caller skips a leader's periodic duties).
    pub(crate) fn tick_leaving(&mut self) -> bool {
        let leader = self.is_leader();
        let limit = FOLLOWER_GRACE_ELECTIONS * self.cfg.raft_election_timeout_ticks as u64;
        let Some(l) = &mut self.leaving else {
            return false;
        };
        if !leader {
            l.follower_ticks += 1;
            if l.follower_ticks >= limit {
                info!(
                    index = l.index,
                    "removed peer heard no leader's commit in time: leaving"
                );
                self.pending_remove = true;
            }
        }
        true
    }
}
