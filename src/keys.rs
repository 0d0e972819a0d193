//! Every storage key layout of a store, in one place. No other module builds
//! storage keys by hand.
//!
//! Two sled trees hold a store's state:
//!
//! | tree | key                                   | value                |
//! |------|---------------------------------------|----------------------|
//! | kv   | `0x01 0x01`                           | `StoreIdent`         |
//! | kv   | `0x01 0x02 region_id 0x03`            | `RaftApplyState`     |
//! | kv   | `0x01 0x02 region_id 0x04 client_id`  | `ClientSession`      |
//! | kv   | `0x01 0x03 region_id 0x01`            | `RegionLocalState`   |
//! | kv   | `z cf user_key`                       | user value           |
//! | raft | `0x01 0x02 region_id 0x01 log_index`  | raft-rs `Entry`      |
//! | raft | `0x01 0x02 region_id 0x02`            | `RaftLocalState`     |
//!
//! Integers are big-endian so that sled's byte order is numeric order: a
//! region's log is one contiguous, index-ordered range, and the region states
//! of all regions are one contiguous range that a restart scans.

use crate::RegionId;

const LOCAL_PREFIX: u8 = 0x01;
const STORE_IDENT_SUFFIX: u8 = 0x01;
const REGION_RAFT_PREFIX: u8 = 0x02;
const REGION_META_PREFIX: u8 = 0x03;

const RAFT_LOG_SUFFIX: u8 = 0x01;
const RAFT_STATE_SUFFIX: u8 = 0x02;
const APPLY_STATE_SUFFIX: u8 = 0x03;
const SESSION_SUFFIX: u8 = 0x04;
const REGION_STATE_SUFFIX: u8 = 0x01;

/// Prefix of every user data key; sorts after all local keys.
pub const DATA_PREFIX: u8 = b'z';

/// Column families of user data. The byte is part of the data key.
pub const CF_DEFAULT: u8 = 0;
/// The lock column family; stored and snapshotted like any other, kept
/// so that a lock/write layout can be layered on top.
pub const CF_LOCK: u8 = 1;
/// The write column family; stored and snapshotted like any other, kept
/// so that a lock/write layout can be layered on top.
pub const CF_WRITE: u8 = 2;
/// Every column family, in key order; range deletes and snapshots walk
/// all of them.
pub const ALL_CFS: [u8; 3] = [CF_DEFAULT, CF_LOCK, CF_WRITE];

/// The key of the store's `StoreIdent` (kv tree), written once when the
/// store gets its id.
pub fn store_ident_key() -> Vec<u8> {
    vec![LOCAL_PREFIX, STORE_IDENT_SUFFIX]
}

fn region_key(prefix: u8, region_id: RegionId, suffix: u8, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + extra);
    k.push(LOCAL_PREFIX);
    k.push(prefix);
    k.extend_from_slice(&region_id.to_be_bytes());
    k.push(suffix);
    k
}

/// The key of the raft log entry at `index` of a region (raft tree);
/// keys of one region sort by index.
pub fn raft_log_key(region_id: RegionId, index: u64) -> Vec<u8> {
    let mut k = region_key(REGION_RAFT_PREFIX, region_id, RAFT_LOG_SUFFIX, 8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Decodes the log index of a key made by [`raft_log_key`].
pub fn raft_log_index(key: &[u8]) -> Option<u64> {
    if key.len() != 19 || key[10] != RAFT_LOG_SUFFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[11..19].try_into().ok()?))
}

/// The key of a region's `RaftLocalState`, its hard state and last index
/// (raft tree).
pub fn raft_state_key(region_id: RegionId) -> Vec<u8> {
    region_key(REGION_RAFT_PREFIX, region_id, RAFT_STATE_SUFFIX, 0)
}

/// The key of a region's `RaftApplyState`, its applied and truncated
/// indexes (kv tree).
pub fn apply_state_key(region_id: RegionId) -> Vec<u8> {
    region_key(REGION_RAFT_PREFIX, region_id, APPLY_STATE_SUFFIX, 0)
}

/// One client session of a region (kv tree).
pub fn session_key(region_id: RegionId, client_id: u64) -> Vec<u8> {
    let mut k = region_key(REGION_RAFT_PREFIX, region_id, SESSION_SUFFIX, 8);
    k.extend_from_slice(&client_id.to_be_bytes());
    k
}

/// Every client session of a region: `[lo, hi)`.
pub fn session_range(region_id: RegionId) -> (Vec<u8>, Vec<u8>) {
    (
        region_key(REGION_RAFT_PREFIX, region_id, SESSION_SUFFIX, 0),
        region_key(REGION_RAFT_PREFIX, region_id, SESSION_SUFFIX + 1, 0),
    )
}

/// The key of a region's `RegionLocalState`: its range and peers, and
/// whether this replica is normal, applying a snapshot or a tombstone
/// (kv tree).
pub fn region_state_key(region_id: RegionId) -> Vec<u8> {
    region_key(REGION_META_PREFIX, region_id, REGION_STATE_SUFFIX, 0)
}

/// The range holding the region states of every region, for a restart scan.
pub fn region_meta_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![LOCAL_PREFIX, REGION_META_PREFIX],
        vec![LOCAL_PREFIX, REGION_META_PREFIX + 1],
    )
}

/// Decodes the region id of a key made by [`region_state_key`].
pub fn region_id_of_state_key(key: &[u8]) -> Option<RegionId> {
    if key.len() != 11 || key[1] != REGION_META_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[2..10].try_into().ok()?))
}

/// The storage key of user key `key` in column family `cf`: `z`, the
/// cf byte, then the key unchanged.
pub fn data_key(cf: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.push(DATA_PREFIX);
    k.push(cf);
    k.extend_from_slice(key);
    k
}

/// The user key inside a data key.
pub fn origin_key(data_key: &[u8]) -> &[u8] {
    &data_key[2..]
}

/// The data-key range `[start, end)` of one column family for a user range;
/// an empty user `end` means the end of the column family.
pub fn data_range(cf: u8, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lo = data_key(cf, start);
    let hi = if end.is_empty() {
        vec![DATA_PREFIX, cf + 1]
    } else {
        data_key(cf, end)
    };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_region_then_index() {
        let a = raft_log_key(1, 255);
        let b = raft_log_key(1, 256);
        let c = raft_log_key(2, 0);
        assert!(a < b && b < c);
        assert_eq!(raft_log_index(&b), Some(256));
        assert!(raft_log_key(1, u64::MAX) < raft_state_key(1));
    }

    #[test]
    fn region_state_keys_are_in_meta_range() {
        let (lo, hi) = region_meta_range();
        let k = region_state_key(42);
        assert!(lo <= k && k < hi);
        assert_eq!(region_id_of_state_key(&k), Some(42));
        assert!(apply_state_key(42) < lo);
    }

    #[test]
    fn data_keys_keep_user_order_within_a_cf() {
        let (lo, hi) = data_range(CF_DEFAULT, b"a", b"");
        assert!(lo <= data_key(CF_DEFAULT, b"zzz") && data_key(CF_DEFAULT, b"zzz") < hi);
        assert!(data_key(CF_LOCK, b"") >= hi);
        assert_eq!(origin_key(&data_key(CF_WRITE, b"k1")), b"k1");
        assert!(store_ident_key() < data_key(CF_DEFAULT, b""));
    }
}
