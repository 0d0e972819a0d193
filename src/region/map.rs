//! `RegionMap`: regions by id, and their ranges in key order. The client's
//! region cache, the store's `StoreMeta` and the scheduler's view of the
//! cluster all keep regions in one of these; each stores its own record
//! beside the region (a leader hint, a heartbeat's figures) through
//! [`Regional`].
//!
//! Ranges are indexed by end key, an empty end key (+infinity) sorting last,
//! so the region that may hold a key is the first entry past it: a lookup is
//! one ordered-map search, an overlap query walks only the regions it
//! returns. The index holds ranges that do not overlap; `insert` keeps it so
//! by evicting every other region the new one overlaps, which is what all
//! three users want (the newer view of a range wins). A region without
//! peers (a peer created by a message, not yet given its range by a
//! snapshot) is kept by id but claims no range.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::key_in_region;
use crate::proto::metapb::Region;
use crate::RegionId;

/// A record kept in a [`RegionMap`]: it knows its region.
pub trait Regional {
    /// The region this record is about.
    fn region(&self) -> &Region;
}

impl Regional for Region {
    fn region(&self) -> &Region {
        self
    }
}

/// Regions by id and by range (see the module docs).
#[derive(Debug, Clone)]
pub struct RegionMap<T> {
    by_id: HashMap<RegionId, T>,
    /// `range_key(end_key)` -> id, for every region with a range.
    by_end: BTreeMap<Vec<u8>, RegionId>,
}

impl<T> Default for RegionMap<T> {
    fn default() -> Self {
        RegionMap {
            by_id: HashMap::new(),
            by_end: BTreeMap::new(),
        }
    }
}

/// Whether a region claims a range: an uninitialized one does not.
fn has_range(region: &Region) -> bool {
    !region.peers.is_empty()
}

/// An end key as an index key: empty (+infinity) sorts after every other.
fn end_index(end_key: &[u8]) -> Vec<u8> {
    if end_key.is_empty() {
        vec![1]
    } else {
        let mut k = Vec::with_capacity(end_key.len() + 1);
        k.push(0);
        k.extend_from_slice(end_key);
        k
    }
}

/// Where a key falls in the index: a key is never +infinity, even empty.
fn key_index(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(0);
    k.extend_from_slice(key);
    k
}

impl<T: Regional> RegionMap<T> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record of region `id`.
    pub fn get(&self, id: RegionId) -> Option<&T> {
        self.by_id.get(&id)
    }

    /// The record of region `id`, to change what is kept beside the
    /// region. Changing the region's range through it is not allowed (the
    /// index would not follow): `insert` the new region instead.
    pub fn get_mut(&mut self, id: RegionId) -> Option<&mut T> {
        self.by_id.get_mut(&id)
    }

    /// Whether region `id` is known, with a range or not.
    pub fn contains(&self, id: RegionId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// How many regions are known, with a range or not.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no region is known.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Records `record`, replacing the record of the same region, and
    /// evicts every other region whose range the new one overlaps (they are
    /// older views). Returns the evicted records.
    pub fn insert(&mut self, record: T) -> Vec<T> {
        let id = record.region().id;
        self.unindex(id);
        let mut evicted = Vec::new();
        if has_range(record.region()) {
            for o in self.others_overlapping(record.region()) {
                evicted.extend(self.remove(o));
            }
            self.by_end.insert(end_index(&record.region().end_key), id);
        }
        self.by_id.insert(id, record);
        evicted
    }

    /// Records `record`, replacing the record of the same region, unless
    /// its range overlaps another region's: then nothing changes and the
    /// record comes back with the ids it overlaps. For a map whose ranges
    /// are disjoint by construction (a store's own regions), where an
    /// overlap is a bug to report, never a newer view to take.
    pub fn try_insert(&mut self, record: T) -> Result<(), (T, Vec<RegionId>)> {
        let id = record.region().id;
        if has_range(record.region()) {
            let overlapped = self.others_overlapping(record.region());
            if !overlapped.is_empty() {
                return Err((record, overlapped));
            }
        }
        self.unindex(id);
        if has_range(record.region()) {
            self.by_end.insert(end_index(&record.region().end_key), id);
        }
        self.by_id.insert(id, record);
        Ok(())
    }

    /// Forgets region `id`; returns its record.
    pub fn remove(&mut self, id: RegionId) -> Option<T> {
        self.unindex(id);
        self.by_id.remove(&id)
    }

    /// The ids of the regions other than `region` whose range overlaps it.
    fn others_overlapping(&self, region: &Region) -> Vec<RegionId> {
        self.overlapping(&region.start_key, &region.end_key)
            .map(|o| o.region().id)
            .filter(|o| *o != region.id)
            .collect()
    }

    fn unindex(&mut self, id: RegionId) {
        if let Some(old) = self.by_id.get(&id) {
            let k = end_index(&old.region().end_key);
            if self.by_end.get(&k) == Some(&id) {
                self.by_end.remove(&k);
            }
        }
    }

    /// The region holding `key`, if one is known.
    pub fn locate(&self, key: &[u8]) -> Option<&T> {
        let range = (Bound::Excluded(key_index(key)), Bound::Unbounded);
        let (_, id) = self.by_end.range(range).next()?;
        let record = self.by_id.get(id)?;
        key_in_region(key, record.region()).then_some(record)
    }

    /// The regions with a range overlapping `[start, end)` (an empty end is
    /// +infinity), in key order.
    pub fn overlapping<'a>(
        &'a self,
        start: &[u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = &'a T> + 'a {
        let from = (Bound::Excluded(key_index(start)), Bound::Unbounded);
        self.by_end
            .range(from)
            .filter_map(|(_, id)| self.by_id.get(id))
            .take_while(move |r| end.is_empty() || r.region().start_key.as_slice() < end)
    }

    /// The region starting where `region` ends, if one is known: the right
    /// half of a split, for instance.
    pub fn right_neighbor(&self, region: &Region) -> Option<&T> {
        if region.end_key.is_empty() {
            return None;
        }
        let after = (
            Bound::Excluded(end_index(&region.end_key)),
            Bound::Unbounded,
        );
        let (_, id) = self.by_end.range(after).next()?;
        let r = self.by_id.get(id)?;
        (r.region().start_key == region.end_key).then_some(r)
    }

    /// Every region with a range, in key order.
    pub fn in_key_order(&self) -> impl Iterator<Item = &T> + '_ {
        self.by_end.values().filter_map(|id| self.by_id.get(id))
    }

    /// Every region, with a range or not, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.by_id.values()
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

    fn ids<'a>(it: impl Iterator<Item = &'a Region>) -> Vec<u64> {
        it.map(|r| r.id).collect()
    }

    #[test]
    fn locates_keys_with_an_unbounded_last_region() {
        let mut m = RegionMap::new();
        m.insert(region(1, b"", b"m"));
        m.insert(region(2, b"m", b""));
        assert_eq!(m.locate(b"").map(|r| r.id), Some(1));
        assert_eq!(m.locate(b"l\xff").map(|r| r.id), Some(1));
        assert_eq!(m.locate(b"m").map(|r| r.id), Some(2));
        assert_eq!(m.locate(b"\xff\xff").map(|r| r.id), Some(2));
        assert_eq!(
            m.right_neighbor(&region(1, b"", b"m")).map(|r| r.id),
            Some(2)
        );
        assert_eq!(ids(m.in_key_order()), vec![1, 2]);
    }

    #[test]
    fn a_gap_locates_nothing() {
        let mut m = RegionMap::new();
        m.insert(region(1, b"a", b"c"));
        m.insert(region(2, b"e", b"g"));
        assert!(m.locate(b"0").is_none());
        assert!(m.locate(b"d").is_none());
        assert!(m.locate(b"g").is_none());
        assert!(m.right_neighbor(&region(1, b"a", b"c")).is_none());
    }

    #[test]
    fn overlap_queries_walk_only_what_overlaps() {
        let mut m = RegionMap::new();
        for (id, s, e) in [(1, &b""[..], &b"c"[..]), (2, b"c", b"f"), (3, b"f", b"")] {
            m.insert(region(id, s, e));
        }
        assert_eq!(ids(m.overlapping(b"a", b"b")), vec![1]);
        assert_eq!(ids(m.overlapping(b"b", b"d")), vec![1, 2]);
        assert_eq!(ids(m.overlapping(b"c", b"f")), vec![2]);
        assert_eq!(ids(m.overlapping(b"e", b"")), vec![2, 3]);
        assert_eq!(ids(m.overlapping(b"", b"")), vec![1, 2, 3]);
        assert!(m.overlapping(b"c", b"c\x00").any(|r| r.id == 2));
    }

    #[test]
    fn a_newer_view_evicts_what_it_overlaps() {
        let mut m = RegionMap::new();
        m.insert(region(1, b"", b"m"));
        m.insert(region(2, b"m", b""));
        // Region 3 was merged from both, or learned after a change.
        let evicted = m.insert(region(3, b"a", b"z"));
        assert_eq!(ids(evicted.iter()), vec![1, 2]);
        assert_eq!(m.len(), 1);
        // The same region again, shrunk by a split: no eviction, re-indexed.
        assert!(m.insert(region(3, b"a", b"k")).is_empty());
        assert!(m.locate(b"p").is_none());
        assert_eq!(m.locate(b"b").map(|r| r.id), Some(3));
    }

    #[test]
    fn try_insert_refuses_an_overlap_and_changes_nothing() {
        let mut m = RegionMap::new();
        m.insert(region(1, b"", b"m"));
        m.insert(region(2, b"m", b""));
        let (back, with) = m.try_insert(region(3, b"k", b"p")).unwrap_err();
        assert_eq!((back.id, with), (3, vec![1, 2]));
        assert_eq!(ids(m.in_key_order()), vec![1, 2]);
        // A split recorded left first: the shrunk left, then the right.
        m.try_insert(region(1, b"", b"f")).unwrap();
        m.try_insert(region(4, b"f", b"m")).unwrap();
        assert_eq!(ids(m.in_key_order()), vec![1, 4, 2]);
    }

    #[test]
    fn a_region_without_peers_claims_no_range() {
        let mut m = RegionMap::new();
        m.insert(region(1, b"", b""));
        let bare = Region {
            id: 2,
            ..Default::default()
        };
        assert!(m.insert(bare).is_empty());
        assert!(m.contains(2));
        assert_eq!(m.locate(b"k").map(|r| r.id), Some(1));
        assert_eq!(m.remove(1).map(|r| r.id), Some(1));
        assert!(m.locate(b"k").is_none());
        assert_eq!(m.len(), 1);
    }
}
