//! The gRPC glue: the Kv, Raft and Scheduler services and the gRPC
//! transport between stores, thin translations onto the same actors and
//! scheduler logic the in-process cluster uses. What assembles them into
//! processes is `process/`.

// tonic's handlers return `Result<_, Status>`; helpers returning the same
// keep `?` working, and a Status on an error path costs nothing worth boxing.
#![allow(clippy::result_large_err)]

pub(crate) mod kv_service;
pub(crate) mod raft_service;
pub(crate) mod scheduler_service;
pub(crate) mod transport;

/// Largest gRPC message a node sends or accepts (a batch of raft messages,
/// a snapshot chunk, a client batch).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
