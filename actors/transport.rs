//! How raft messages reach other stores: `Transport` is what a peer sees.
//! Two networks implement it: the gRPC one of a node
//! (`server/transport.rs`) and the test kit's in-process one
//! (`testkit/network.rs`).

use crate::proto::raft_serverpb::RaftMessage;

/// Sends raft messages to other stores. Sending never blocks and may lose
/// messages; raft retransmits.
pub trait Transport: Send + Sync + 'static {
    /// Queues `msg` for its store; it may be lost.
    fn send(&self, msg: RaftMessage);
}
