//! Durable state of a store: the sled engines, each region's `PeerStorage`
//! (raft-rs's view of the log) and snapshots.

pub(crate) mod durable;
pub(crate) mod engine;
pub(crate) mod peer_storage;
pub(crate) mod sessions;
pub mod snap_apply;
pub(crate) mod snapshot;
pub(crate) mod state;
pub mod tasks;

pub use engine::Engines;
pub use peer_storage::{write_initial_states, PeerStorage};
pub use snapshot::SnapManager;

/// The log index and term every bootstrapped region starts at. A peer created
/// from a message starts at 0 and can only be caught up by a snapshot, which is
/// why the bootstrap index must be above 0 (TinyKV and TiKV use 5 too).
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
/// The term of the entry at [`RAFT_INIT_LOG_INDEX`] that every
/// bootstrapped region starts with.
pub const RAFT_INIT_LOG_TERM: u64 = 5;
