//! `Effects`: what one input to the core asks the world to do.
//!
//! Every `Peer::on_*` call returns one `Effects` value and nothing leaves
//! the core any other way: the actor (or the simulator) carries it out and
//! decides nothing. Within one value the order of execution is fixed:
//!
//! 1. `persist` goes to the store writer. The raft writes it covers are
//!    already in sled, not yet durable; messages that must wait for them
//!    (votes, append responses) are held by the core and come out of a
//!    later `on_persisted`.
//! 2. `messages` go to the transport, in order.
//! 3. `replies` answer commands, in the order they were decided.
//! 4. `region_changed`, then `splits` go to the store's range map (and a
//!    split led here to the scheduler), then `heartbeat`, `split_check` and
//!    `check_membership`.
//! 5. `tasks` (snapshot generation, log deletion) start, off the thread
//!    that runs the peer; a generated snapshot comes back through
//!    `Peer::on_snapshot_generated`.
//! 6. `destroy` last: the peer applied its own removal (or was told it was
//!    removed) and is to be destroyed once the rest has gone out.
//!
//! What is not here, on purpose: the sled writes themselves. A Ready's raft
//! batch and its apply batch are written by the core through the store's
//! tree handles, in that order, within the one call that decides them;
//! only their durability (the fsync) leaves as `persist`. Two reasons.
//! sled logs both trees in one ordered log and recovers a prefix of it, so
//! the order of the writes is the crash-consistency contract (a hard
//! state's commit is in the log before any apply state that relies on it);
//! handing the batches out would let an executor reorder them. And apply
//! reads its own writes in the middle of a batch (reads, splits, session
//! checks; see `apply.rs`). The writes are in-memory appends to sled's log;
//! what blocks (the fsync), crosses the network or takes a thread is an
//! effect.

use crate::proto::metapb::Region;
use crate::proto::raft_cmdpb::RaftCmdResponse;
use crate::proto::raft_serverpb::RaftMessage;
use crate::proto::schedulerpb::RegionHeartbeatRequest;

use super::{Callback, SplitApplied};
use crate::storage::tasks::Task;

/// The outputs of one input to a `Peer`, in execution order (module docs).
#[derive(Default)]
#[must_use = "effects do nothing until they are executed"]
pub struct Effects {
    /// Make Ready `number` (and every earlier one) durable, then call
    /// `Peer::on_persisted(number)`.
    pub persist: Option<u64>,
    /// Raft messages for other stores, in order.
    pub messages: Vec<RaftMessage>,
    /// Answers to commands, each sent exactly once.
    pub replies: Vec<(Callback, RaftCmdResponse)>,
    /// The region's meta changed (a snapshot installed it, a conf change):
    /// the store's range map must follow.
    pub region_changed: Option<Region>,
    /// Splits applied, in log order.
    pub splits: Vec<SplitApplied>,
    /// Report the region to the scheduler (the leader's periodic heartbeat,
    /// or at once after a role or region change).
    pub heartbeat: Option<RegionHeartbeatRequest>,
    /// Ask the split checker to measure the region.
    pub split_check: bool,
    /// Ask the scheduler for the region's latest meta and hand it to
    /// `Peer::on_scheduler_region`: this peer has heard from no leader for
    /// `max_leader_missing_duration` and may have been removed.
    pub check_membership: bool,
    /// Background work to start (see `storage/tasks.rs`).
    pub tasks: Vec<Task>,
    /// Destroy this peer (`Peer::destroy`) after executing the rest.
    pub destroy: bool,
    /// Stop this peer without touching its state: it was replaced by its
    /// region's split (`Peer::superseded`). Nothing else is set.
    pub stop: bool,
}

impl Effects {
    /// Only `stop`.
    pub fn stop() -> Effects {
        Effects {
            stop: true,
            ..Default::default()
        }
    }
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("persist", &self.persist)
            .field("messages", &self.messages.len())
            .field("replies", &self.replies.len())
            .field(
                "region_changed",
                &self.region_changed.as_ref().map(|r| r.id),
            )
            .field("splits", &self.splits.len())
            .field("heartbeat", &self.heartbeat.is_some())
            .field("split_check", &self.split_check)
            .field("check_membership", &self.check_membership)
            .field("tasks", &self.tasks)
            .field("destroy", &self.destroy)
            .field("stop", &self.stop)
            .finish()
    }
}
