//! `StoreMeta`: the store's region map (region id -> region) and range map
//! (end key -> region id), shared read-mostly between the store actor and its
//! peers.
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

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::proto::metapb::Region;
use crate::region::{range_key, ranges_overlap};
use crate::RegionId;

pub type SharedStoreMeta = Arc<Mutex<StoreMeta>>;

#[derive(Debug, Default)]
pub struct StoreMeta {
    /// Every region with a peer on this store, initialized or not.
    regions: HashMap<RegionId, Region>,
    /// Initialized regions by end key; their ranges never overlap.
    ranges: BTreeMap<Vec<u8>, RegionId>,
    /// Ranges of snapshots accepted by a peer and not yet recorded.
    pending_snapshots: HashMap<RegionId, Region>,
}

impl StoreMeta {
    pub fn region(&self, region_id: RegionId) -> Option<&Region> {
        self.regions.get(&region_id)
    }

    pub fn contains(&self, region_id: RegionId) -> bool {
        self.regions.contains_key(&region_id)
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Records a region's latest meta (an uninitialized one has no range);
    /// a snapshot reservation for it is fulfilled.
    pub fn set_region(&mut self, region: Region) {
        self.remove_range(region.id);
        self.pending_snapshots.remove(&region.id);
        if !region.peers.is_empty() {
            self.ranges.insert(range_key(&region.end_key), region.id);
        }
        self.regions.insert(region.id, region);
    }

    pub fn remove_region(&mut self, region_id: RegionId) -> Option<Region> {
        self.remove_range(region_id);
        self.pending_snapshots.remove(&region_id);
        self.regions.remove(&region_id)
    }

    fn remove_range(&mut self, region_id: RegionId) {
        if let Some(old) = self.regions.get(&region_id) {
            let k = range_key(&old.end_key);
            if self.ranges.get(&k) == Some(&region_id) {
                self.ranges.remove(&k);
            }
        }
    }

    /// Regions other than `except` whose range, held or reserved for a
    /// snapshot, overlaps `[start, end)`.
    pub fn overlapping(&self, start: &[u8], end: &[u8], except: RegionId) -> Vec<RegionId> {
        let held = self.ranges.values().filter_map(|id| self.regions.get(id));
        let reserved = self.pending_snapshots.values();
        let mut ids: Vec<RegionId> = held
            .chain(reserved)
            .filter(|r| r.id != except && ranges_overlap(&r.start_key, &r.end_key, start, end))
            .map(|r| r.id)
            .collect();
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
        if region.end_key.is_empty() {
            return None;
        }
        let after = (
            Bound::Excluded(range_key(&region.end_key)),
            Bound::Unbounded,
        );
        let id = self.ranges.range(after).next()?.1;
        let r = self.regions.get(id)?;
        (r.start_key == region.end_key).then_some(r)
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
