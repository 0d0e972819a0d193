//! Every message the actors exchange, with who sends it, who receives it, what
//! it answers and whether it may be dropped.

use actix::prelude::*;

use crate::peer::Callback;
use crate::proto::metapb::Region;
use crate::proto::raft_cmdpb::RaftCmdRequest;
use crate::proto::raft_serverpb::RaftMessage;
use crate::proto::schedulerpb::{RegionHeartbeatRequest, StoreStats};

/// A raft message from another store.
/// Sender: the transport, through the `Router`. Receiver: the region's
/// `PeerActor`, or the `StoreActor` when the store has no peer for it.
/// Answers nothing. May be dropped: raft retransmits.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StepRaft(pub RaftMessage);

/// A client command for a region.
/// Sender: a client (test kit, server). Receiver: `PeerActor`.
/// Answered exactly once through `cb`, possibly with a region error.
/// Never dropped silently: a peer that stops answers every pending command.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Propose {
    pub request: RaftCmdRequest,
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

/// What a peer reports of itself.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub region: Region,
    pub peer_id: crate::PeerId,
    pub is_leader: bool,
    pub leader_id: crate::PeerId,
    pub term: u64,
    pub applied_index: u64,
    pub truncated_index: u64,
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
