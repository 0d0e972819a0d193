//! The networked service: gRPC services over the same actors and scheduler
//! logic the in-process cluster uses.

// tonic's handlers return `Result<_, Status>`; helpers returning the same
// keep `?` working, and a Status on an error path costs nothing worth boxing.
#![allow(clippy::result_large_err)]

pub(crate) mod kv_service;
pub mod local;
pub mod node;
mod raft_service;
pub mod scheduler_service;
pub(crate) mod transport;

/// Largest gRPC message a node sends or accepts (a batch of raft messages,
/// a snapshot chunk, a client batch).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
