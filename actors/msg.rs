//! Every message the actors exchange, with who sends it, who receives it, what
//! it answers and whether it may be dropped.

use actix::prelude::*;

use crate::peer::Callback;
use crate::peer::Inbound;
use crate::proto::metapb::{Region, RegionEpoch};
use crate::proto::raft_cmdpb::{RaftCmdRequest, Session};
use crate::proto::schedulerpb::{RegionHeartbeatRequest, StoreStats};

/// A raft message from another store.
/// Sender: the transport, through the `Router`. Receiver: the region's
/// `PeerActor`, or the `StoreActor` when the store has no peer for it.
/// Answers nothing. May be dropped: raft retransmits.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StepRaft(pub Inbound);

/// A client command for a region.
/// Sender: a client (test kit, server). Receiver: `PeerActor`.
/// Answered exactly once through `cb`, possibly with a region error.
/// Never dropped silently: a peer that stops answers every pending command.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Propose {
    pub request: RaftCmdRequest,
    /// The client session of a write, if it has one (exactly-once).
    pub session: Option<Session>,
    pub cb: Callback,
}

/// Make Ready `number` of a peer durable.
/// Sender: `PeerActor`. Receiver: `WriterActor`, which answers with
/// [`Persisted`] once a flush covers it. Never dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PersistReady {
    pub number: u64,
    pub peer: Recipient<Persisted>,
}

/// Ready `number` (and every one before it) is durable.
/// Sender: `WriterActor`. Receiver: `PeerActor`. Never dropped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Persisted {
    pub number: u64,
}

/// A region's meta changed on this store (snapshot applied, conf change, split).
/// Sender: `PeerActor`. Receiver: `StoreActor`, which updates its range map.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RegionChanged {
    pub region: Region,
}

/// A leader's report of its region.
/// Sender: `PeerActor`. Receiver: `SchedulerClientActor`. May be dropped:
/// the next one follows within a heartbeat interval.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RegionHeartbeat(pub RegionHeartbeatRequest);

/// A store's report of itself.
/// Sender: `StoreActor`. Receiver: `SchedulerClientActor`. May be dropped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StoreHeartbeat(pub StoreStats);

/// How sending a snapshot to `to_peer` ended.
/// Sender: the transport. Receiver: the sending `PeerActor`, which tells raft
/// (`report_snapshot`) so a lost snapshot is retried instead of waited for
/// forever. May be dropped only if the peer is gone.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SnapshotReport {
    pub to_peer: crate::PeerId,
    pub finished: bool,
}

/// The result of a snapshot generation the peer handed out as a task.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotGenerated(pub crate::Result<raft::eraftpb::Snapshot>);

/// A snapshot ingest a peer handed out finished (or failed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotApplied(pub crate::Result<()>);

/// What a peer reports of itself.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// The region as this peer has applied it (range, epoch, peers).
    pub region: Region,
    /// The reporting peer's own id.
    pub peer_id: crate::PeerId,
    /// Whether the peer currently leads its region.
    pub is_leader: bool,
    /// The peer id of the region's leader as this peer knows it; 0 when no
    /// leader is known.
    pub leader_id: crate::PeerId,
    /// The peer's current raft term.
    pub term: u64,
    /// The index of the last log entry the peer has applied.
    pub applied_index: u64,
    /// The index up to which the peer's log has been compacted away (or
    /// covered by a snapshot); 0 when nothing was.
    pub truncated_index: u64,
    /// The last index of the peer's raft log, persisted or not.
    pub last_index: u64,
    /// The term of the entry at `last_index`.
    pub last_term: u64,
    /// The highest index this peer knows committed.
    pub commit_index: u64,
}

/// Asks a peer for its status.
/// Sender: test kit, playground, status pages. Receiver: `PeerActor`.
/// Answers a [`PeerStatus`]; fails only if the actor is gone.
#[derive(Message, Debug)]
#[rtype(result = "PeerStatus")]
pub struct GetPeerStatus;

/// A peer destroyed itself (removed from its region, or found stale).
/// Sender: `PeerActor`, right before it stops. Receiver: `StoreActor`, which
/// drops it from the region and range maps. Never dropped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerDestroyed {
    pub region: Region,
    pub peer_id: crate::PeerId,
}

/// An operator from the scheduler for a region's leader to carry out.
/// Sender: `SchedulerClientActor`. Receiver: `PeerActor`. May be dropped:
/// the scheduler re-sends it with every heartbeat until it is done.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SchedulerOperator(pub crate::proto::schedulerpb::RegionHeartbeatResponse);

/// Measure a region and find where to split it.
/// Sender: a leader's `PeerActor`, every split-check interval while its
/// region may have grown. Receiver: `SplitCheckActor`, which answers the
/// peer with [`SplitCheckResult`]. May be dropped: the next check follows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SplitCheck {
    /// The region as the leader saw it; its epoch travels with the answer.
    pub region: Region,
    pub split_size: u64,
    pub max_size: u64,
    pub reply: Recipient<SplitCheckResult>,
}

/// What the split checker measured.
/// Sender: `SplitCheckActor`. Receiver: the asking `PeerActor`. May be dropped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SplitCheckResult {
    /// The epoch of the region that was scanned.
    pub region_epoch: RegionEpoch,
    pub size: u64,
    pub split_key: Option<Vec<u8>>,
}

/// Split the region at `split_key` (a manual split, or a checker's or
/// scheduler's proposal).
/// Sender: the test kit, the playground, the scheduler client (Split
/// operator). Receiver: the region's `PeerActor`; if it is not the leader or
/// the epoch moved, `cb` gets NotLeader / EpochNotMatch. `cb`, if any, is
/// answered once the split is applied (or fails).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SplitRegion {
    /// The epoch the split key was chosen under; None: the current one.
    pub region_epoch: Option<RegionEpoch>,
    pub split_key: Vec<u8>,
    pub cb: Option<Callback>,
}

/// Ask the scheduler for the ids of a split's new region and peers.
/// Sender: a leader's `PeerActor`. Receiver: `SchedulerClientActor`, which
/// answers the peer with [`ProposeSplit`], or `cb` with the error.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AskSplit {
    /// The region as checked, with the epoch the split must be proposed under.
    pub region: Region,
    pub split_key: Vec<u8>,
    pub cb: Option<Callback>,
    pub reply: Recipient<ProposeSplit>,
}

/// Ask the scheduler for a region's latest meta (stale-peer GC, see
/// `peer/stale.rs`). Sender: a `PeerActor` that heard no leader for long.
/// Receiver: `SchedulerClientActor`, which answers the peer with
/// [`SchedulerRegion`]; on an error the peer asks again later.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckMembership {
    pub region_id: crate::RegionId,
    pub reply: Recipient<SchedulerRegion>,
}

/// The scheduler's answer to [`CheckMembership`]: the region as it last
/// heard of it, or None if it knows none.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SchedulerRegion(pub Option<Region>);

/// A peer hit an error it cannot go on from (an I/O error while persisting
/// or applying a Ready, a snapshot that cannot be ingested): it answered its
/// pending commands Undetermined and stopped, leaving its state on disk.
/// Sender: `PeerActor`. Receiver: `StoreActor`, which restarts the region's
/// peer from disk after a pause, or after too many failures leaves the
/// region failed (logged, `tessel_failed_regions`). The store and its other
/// regions keep serving. Never dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerFailed {
    pub region_id: crate::RegionId,
    pub peer_id: u64,
    pub error: String,
}

/// Propose the Split admin command with these ids.
/// Sender: `SchedulerClientActor`. Receiver: the `PeerActor` that asked.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProposeSplit {
    pub region: Region,
    pub split_key: Vec<u8>,
    pub ids: crate::proto::schedulerpb::AskSplitResponse,
    pub cb: Option<Callback>,
}

/// A peer applied a split.
/// Sender: the old region's `PeerActor`. Receiver: `StoreActor`, which
/// records both halves and starts the new region's peer (replacing an
/// uninitialized one). Never dropped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RegionSplit {
    pub left: Region,
    /// None when this store's peer of the new region was already removed
    /// from it (its tombstone is newer than the split).
    pub right: Option<Region>,
    /// The old peer led its region: the new one campaigns at once.
    pub campaign: bool,
}

/// Both halves of a split, reported by the old region's leader.
/// Sender: `PeerActor`. Receiver: `SchedulerClientActor`. May be dropped:
/// the halves' heartbeats carry the same news.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReportSplit {
    pub left: Region,
    pub right: Region,
}

/// The store of `to_peer` could not be reached; raft should stop streaming
/// appends to it until it answers again (`report_unreachable`).
/// Sender: a network transport. Receiver: `PeerActor`. May be dropped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerUnreachable {
    pub to_peer: crate::PeerId,
}
