//! Helpers over region metadata: ranges, epochs and peers; and
//! [`RegionMap`] (`map.rs`), the one range map every layer keeps regions in.

mod map;
pub mod roles;

pub use map::{RegionMap, Regional};

use crate::error::{Error, RegionError, Result};
use crate::proto::metapb::{Peer, Region, RegionEpoch};
use crate::{PeerId, StoreId};

/// True when `key` is at or past `end_key`; an empty end key is +infinity.
pub fn exceeds_end_key(key: &[u8], end_key: &[u8]) -> bool {
    !end_key.is_empty() && key >= end_key
}

/// True when `key` is in `[start_key, end_key)` of `region`.
pub fn key_in_region(key: &[u8], region: &Region) -> bool {
    key >= region.start_key.as_slice() && !exceeds_end_key(key, &region.end_key)
}

/// `KeyNotInRegion` (with the region's range) unless `key` is in `region`.
pub fn check_key_in_region(key: &[u8], region: &Region) -> Result<()> {
    if key_in_region(key, region) {
        Ok(())
    } else {
        Err(Error::Region(RegionError::KeyNotInRegion {
            key: key.to_vec(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        }))
    }
}

/// True when the ranges `[a_start, a_end)` and `[b_start, b_end)` share a key.
pub fn ranges_overlap(a_start: &[u8], a_end: &[u8], b_start: &[u8], b_end: &[u8]) -> bool {
    exceeds_end_key_or_inf(b_start, a_end) && exceeds_end_key_or_inf(a_start, b_end)
}

// `start < end` where an empty end is +infinity.
fn exceeds_end_key_or_inf(start: &[u8], end: &[u8]) -> bool {
    end.is_empty() || start < end
}

/// The region's epoch (zero if it has none).
pub fn epoch(region: &Region) -> RegionEpoch {
    region.region_epoch.unwrap_or_default()
}

/// True when `a` is older than `b` in either dimension.
pub fn is_epoch_stale(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    a.version < b.version || a.conf_ver < b.conf_ver
}

/// Checks a request's epoch against the region's: `check_conf_ver` and
/// `check_version` select which dimensions the command depends on.
pub fn check_epoch(
    req: Option<&RegionEpoch>,
    region: &Region,
    check_conf_ver: bool,
    check_version: bool,
) -> Result<()> {
    let current = epoch(region);
    let Some(req) = req else {
        return Err(Error::Region(RegionError::EpochNotMatch {
            message: "request carries no region epoch".into(),
            current_regions: vec![region.clone()],
        }));
    };
    if (check_conf_ver && req.conf_ver != current.conf_ver)
        || (check_version && req.version != current.version)
    {
        return Err(Error::Region(RegionError::EpochNotMatch {
            message: format!(
                "region {} epoch {:?} != request epoch {:?}",
                region.id, current, req
            ),
            current_regions: vec![region.clone()],
        }));
    }
    Ok(())
}

/// The region's peer on store `store_id`, if it has one.
pub fn find_peer(region: &Region, store_id: StoreId) -> Option<&Peer> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

/// The region's peer with id `peer_id`, if it is a member.
pub fn find_peer_by_id(region: &Region, peer_id: PeerId) -> Option<&Peer> {
    region.peers.iter().find(|p| p.id == peer_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 2,
                version: 3,
            }),
            peers: vec![],
            roles: vec![],
        }
    }

    #[test]
    fn empty_end_key_is_infinity() {
        assert!(!exceeds_end_key(b"zzzz", b""));
        assert!(exceeds_end_key(b"b", b"b"));
        assert!(key_in_region(b"", &region(b"", b"")));
        assert!(check_key_in_region(b"c", &region(b"a", b"c")).is_err());
    }

    #[test]
    fn overlap_treats_empty_end_as_infinity() {
        assert!(ranges_overlap(b"", b"", b"x", b"y"));
        assert!(!ranges_overlap(b"a", b"b", b"b", b""));
        assert!(ranges_overlap(b"a", b"c", b"b", b""));
        assert!(!ranges_overlap(b"c", b"", b"a", b"c"));
    }

    #[test]
    fn epoch_checks_select_dimensions() {
        let r = region(b"", b"");
        let stale_version = RegionEpoch {
            conf_ver: 2,
            version: 2,
        };
        assert!(check_epoch(Some(&stale_version), &r, true, false).is_ok());
        assert!(check_epoch(Some(&stale_version), &r, false, true).is_err());
        assert!(check_epoch(None, &r, false, false).is_err());
        assert!(is_epoch_stale(&stale_version, &epoch(&r)));
    }
}
