//! `StoreMeta`: the store's regions in a [`RegionMap`] (by id, and by range
//! for the initialized ones), shared read-mostly between the store actor and
//! its peers, plus the ranges reserved by accepted snapshots.
//!
//! Only the `StoreActor` changes regions and ranges, in the order it receives
//! the peers' reports, so a range is always claimed by at most one region.
//! Peers read it to refuse snapshots whose range another region here still
//! holds, and reserve the range of a snapshot they accept until the store
//! records it (`pending_snapshots`): two snapshots stepped before either is
//! applied can then not both claim one range.
//!
//! The view lags what peers have applied, never leads it, and in the safe
//! direction: a split's left half still covers the right half until the
//! store records both, so a snapshot or a new peer for the right half waits.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::error;

use crate::proto::metapb::Region;
use crate::region::{ranges_overlap, RegionMap};
use crate::RegionId;

/// The store's `StoreMeta`, shared by the store actor and its peers.
pub type SharedStoreMeta = Arc<Mutex<StoreMeta>>;

/// The store's regions and the ranges they claim (see the module docs).
#[derive(Debug, Default)]
pub struct StoreMeta {
    /// Every region with a peer on this store, initialized or not; the
    /// initialized ones claim ranges that never overlap.
    regions: RegionMap<Region>,
    /// Ranges of snapshots accepted by a peer and not yet recorded.
    pending_snapshots: HashMap<RegionId, Region>,
}

impl StoreMeta {
    /// The latest recorded meta of region `region_id`.
    pub fn region(&self, region_id: RegionId) -> Option<&Region> {
        self.regions.get(region_id)
    }

    /// Whether this store has a peer of region `region_id`.
    pub fn contains(&self, region_id: RegionId) -> bool {
        self.regions.contains(region_id)
    }

    /// How many regions have a peer here.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region has a peer here.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Records a region's latest meta (an uninitialized one has no range);
    /// a snapshot reservation for it is fulfilled. A range overlapping
    /// another region's is a broken invariant (the store records a split's
    /// left half before its right, and admission refuses overlapping
    /// snapshots): it is reported and the older claim kept, so the view
    /// still lags in the safe direction.
    pub fn set_region(&mut self, region: Region) {
        self.pending_snapshots.remove(&region.id);
        if let Err((region, overlapped)) = self.regions.try_insert(region) {
            error!(
                region_id = region.id,
                ?overlapped,
                "region meta overlaps other regions of this store; keeping the older claim"
            );
        }
    }

    /// Forgets region `region_id` (its peer was destroyed) and any
    /// reservation it held.
    pub fn remove_region(&mut self, region_id: RegionId) -> Option<Region> {
        self.pending_snapshots.remove(&region_id);
        self.regions.remove(region_id)
    }

    /// Regions other than `except` whose range, held or reserved for a
    /// snapshot, overlaps `[start, end)`.
    pub fn overlapping(&self, start: &[u8], end: &[u8], except: RegionId) -> Vec<RegionId> {
        let held = self.regions.overlapping(start, end).map(|r| r.id);
        let reserved = self
            .pending_snapshots
            .values()
            .filter(|r| ranges_overlap(&r.start_key, &r.end_key, start, end))
            .map(|r| r.id);
        let mut ids: Vec<RegionId> = held.chain(reserved).filter(|id| *id != except).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Reserves the range of a snapshot `region`'s peer is about to step.
    pub fn reserve_snapshot(&mut self, region: Region) {
        self.pending_snapshots.insert(region.id, region);
    }

    /// Drops a reservation whose snapshot raft did not take.
    pub fn cancel_snapshot(&mut self, region_id: RegionId) {
        self.pending_snapshots.remove(&region_id);
    }

    /// The region split off the right of `region`, if this store holds it:
    /// a client with a stale epoch learns both halves at once.
    pub fn right_sibling(&self, region: &Region) -> Option<&Region> {
        self.regions.right_neighbor(region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metapb::Peer;

    fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            peers: vec![Peer { id, store_id: 1 }],
            ..Default::default()
        }
    }

    #[test]
    fn ranges_follow_region_changes() {
        let mut m = StoreMeta::default();
        m.set_region(region(1, b"", b""));
        assert_eq!(m.overlapping(b"m", b"", 2), vec![1]);
        // The split is recorded: left shrinks, right appears.
        m.set_region(region(1, b"", b"m"));
        m.set_region(region(2, b"m", b""));
        assert_eq!(m.overlapping(b"a", b"b", 9), vec![1]);
        assert_eq!(m.overlapping(b"m", b"n", 9), vec![2]);
        assert!(m.overlapping(b"m", b"", 2).is_empty());
        assert_eq!(m.right_sibling(m.region(1).unwrap()).unwrap().id, 2);
        // An uninitialized region claims no range.
        m.set_region(Region {
            id: 3,
            ..Default::default()
        });
        assert!(m.overlapping(b"", b"", 1).iter().all(|id| *id == 2));
        m.remove_region(2);
        assert!(m.overlapping(b"m", b"", 1).is_empty());
    }

    #[test]
    fn reservations_block_overlapping_snapshots() {
        let mut m = StoreMeta::default();
        m.reserve_snapshot(region(5, b"a", b"c"));
        assert_eq!(m.overlapping(b"b", b"d", 6), vec![5]);
        assert!(m.overlapping(b"b", b"d", 5).is_empty());
        m.set_region(region(5, b"a", b"c"));
        m.cancel_snapshot(5);
        assert_eq!(m.overlapping(b"b", b"d", 6), vec![5]);
    }
}
