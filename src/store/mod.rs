//! The store-level decisions, pure like `Peer`: which peers a store runs
//! when it starts, which message may create a peer, what a split applied
//! here starts, over the store's range map (`meta.rs`). `StoreActor` and
//! the simulator both carry them out; neither decides them.

mod admission;
mod meta;

use std::sync::Arc;

use crate::config::Config;
use crate::storage::{Engines, SnapManager};
use crate::StoreId;

pub use admission::{on_split_applied, regions_to_start, unrouted_message, SplitStart, Unrouted};
pub use meta::{SharedStoreMeta, StoreMeta};

/// What every peer of one store shares: who the store is, how it is
/// configured, where its data lives, and its range map.
#[derive(Clone)]
pub struct StoreEnv {
    /// The store every peer here belongs to.
    pub store_id: StoreId,
    /// The store's configuration (ticks, limits, sizes).
    pub cfg: Arc<Config>,
    /// The store's sled database (kv and raft trees).
    pub engines: Engines,
    /// Where the store's snapshot files live.
    pub snap_mgr: SnapManager,
    /// Written by the store's supervisor only; peers read it and reserve
    /// snapshot ranges in it.
    pub meta: SharedStoreMeta,
}
