//! The one reader and writer of a region's three local states, so their
//! keys, trees and encodings are decided in one place:
//!
//! - the raft state (`RaftLocalState`: hard state, last index and term), in
//!   the raft tree, beside the log it describes;
//! - the apply state (`RaftApplyState`: applied index, truncated state,
//!   commit), in the kv tree, written in the same batch as the data it
//!   covers;
//! - the region state (`RegionLocalState`: the region's meta, and whether
//!   the peer here is live or a tombstone), in the kv tree.
//!
//! Reads go to a tree; writes go into a `sled::Batch` the caller commits
//! with the rest of its change, because each state is only meaningful
//! together with the data written beside it. Durability is the store
//! writer's flush, as for every other write (see `engine.rs`).

use prost::Message as _;

use super::engine::get_msg;
use crate::error::Result;
use crate::keys;
use crate::proto::raft_serverpb::{RaftApplyState, RaftLocalState, RegionLocalState};
use crate::RegionId;

/// The region's raft state, if it has one (from the raft tree).
pub fn raft_state(raft: &sled::Tree, region_id: RegionId) -> Result<Option<RaftLocalState>> {
    get_msg(raft, &keys::raft_state_key(region_id))
}

/// Writes the region's raft state into `wb` (a raft-tree batch).
pub fn put_raft_state(wb: &mut sled::Batch, region_id: RegionId, state: &RaftLocalState) {
    wb.insert(keys::raft_state_key(region_id), state.encode_to_vec());
}

/// Deletes the region's raft state in `wb` (a raft-tree batch).
pub fn delete_raft_state(wb: &mut sled::Batch, region_id: RegionId) {
    wb.remove(keys::raft_state_key(region_id));
}

/// The region's apply state, if it has one (from the kv tree).
pub fn apply_state(kv: &sled::Tree, region_id: RegionId) -> Result<Option<RaftApplyState>> {
    get_msg(kv, &keys::apply_state_key(region_id))
}

/// Writes the region's apply state into `wb` (a kv-tree batch).
pub fn put_apply_state(wb: &mut sled::Batch, region_id: RegionId, state: &RaftApplyState) {
    wb.insert(keys::apply_state_key(region_id), state.encode_to_vec());
}

/// Deletes the region's apply state in `wb` (a kv-tree batch).
pub fn delete_apply_state(wb: &mut sled::Batch, region_id: RegionId) {
    wb.remove(keys::apply_state_key(region_id));
}

/// The region's state on this store, if it has one (from the kv tree).
pub fn region_state(kv: &sled::Tree, region_id: RegionId) -> Result<Option<RegionLocalState>> {
    get_msg(kv, &keys::region_state_key(region_id))
}

/// Writes the region's state into `wb` (a kv-tree batch).
pub fn put_region_state(wb: &mut sled::Batch, region_id: RegionId, state: &RegionLocalState) {
    wb.insert(keys::region_state_key(region_id), state.encode_to_vec());
}

/// Deletes the region's state in `wb` (a kv-tree batch).
pub fn delete_region_state(wb: &mut sled::Batch, region_id: RegionId) {
    wb.remove(keys::region_state_key(region_id));
}

/// Every region state on this store (live and tombstones), in region id
/// order.
pub fn region_states(kv: &sled::Tree) -> Result<Vec<RegionLocalState>> {
    let (lo, hi) = keys::region_meta_range();
    let mut out = Vec::new();
    for kv in kv.range(lo..hi) {
        let (_, v) = kv?;
        out.push(RegionLocalState::decode(v.as_ref())?);
    }
    Ok(out)
}
