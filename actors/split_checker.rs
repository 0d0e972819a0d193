//! `SplitCheckActor`: measures regions off the peers' threads. A leader whose
//! region may have grown asks it to scan the region's data in key order; it
//! answers with the region's size and, when the region is too large, where
//! to cut it.

use actix::prelude::*;
use tracing::{debug, warn};

use super::msg::{SplitCheck, SplitCheckResult};
use crate::error::Result;
use crate::keys;
use crate::proto::metapb::Region;
use crate::storage::Engines;

/// Runs on a `SyncArbiter` thread of its own: a scan of a large region takes
/// a while and must not stall the peers.
pub struct SplitCheckActor {
    engines: Engines,
}

impl SplitCheckActor {
    pub fn new(engines: Engines) -> SplitCheckActor {
        SplitCheckActor { engines }
    }
}

impl Actor for SplitCheckActor {
    type Context = SyncContext<Self>;
}

impl Handler<SplitCheck> for SplitCheckActor {
    type Result = ();

    fn handle(&mut self, task: SplitCheck, _ctx: &mut SyncContext<Self>) {
        let region_id = task.region.id;
        match scan_region(
            &self.engines.kv,
            &task.region,
            task.split_size,
            task.max_size,
        ) {
            Ok(measured) => {
                debug!(region_id, size = measured.size, split_key = ?measured.split_key, "split check");
                task.reply.do_send(SplitCheckResult {
                    region_epoch: task.region.region_epoch.unwrap_or_default(),
                    size: measured.size,
                    split_key: measured.split_key,
                });
            }
            Err(e) => warn!(region_id, error = %e, "split check failed"),
        }
    }
}

/// What a scan of one region found.
#[derive(Debug, PartialEq, Eq)]
pub struct Measured {
    /// Bytes of keys and values in every column family.
    pub size: u64,
    /// Where to split, when `size > max_size`.
    pub split_key: Option<Vec<u8>>,
}

/// Sums key and value sizes over the region in key order (all column
/// families merged, so every version of a key counts at that key). The split
/// key is the first key at which the running sum passes `split_size`; it is
/// never the region's start key, since the left half must not be empty.
pub fn scan_region(
    kv: &sled::Tree,
    region: &Region,
    split_size: u64,
    max_size: u64,
) -> Result<Measured> {
    let mut iters: Vec<_> = keys::ALL_CFS
        .iter()
        .map(|cf| {
            let (lo, hi) = keys::data_range(*cf, &region.start_key, &region.end_key);
            kv.range(lo..hi).peekable()
        })
        .collect();
    let mut size = 0u64;
    let mut candidate = None;
    loop {
        // The smallest user key among the column families' next entries.
        let mut next: Option<(usize, Vec<u8>)> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            match it.peek() {
                Some(Ok((k, _))) => {
                    let key = keys::origin_key(k);
                    if next.as_ref().is_none_or(|(_, best)| key < best.as_slice()) {
                        next = Some((i, key.to_vec()));
                    }
                }
                Some(Err(_)) => {
                    let err = it.next().expect("peeked").expect_err("peeked an error");
                    return Err(err.into());
                }
                None => {}
            }
        }
        let Some((i, key)) = next else { break };
        let (k, v) = iters[i].next().expect("peeked")?;
        size += (keys::origin_key(&k).len() + v.len()) as u64;
        if candidate.is_none() && size > split_size && key != region.start_key {
            candidate = Some(key);
        }
    }
    Ok(Measured {
        size,
        split_key: candidate.filter(|_| size > max_size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let t = db.open_tree("kv").unwrap();
        (dir, t)
    }

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn finds_the_key_where_the_running_size_passes_split_size() {
        let (_d, kv) = tree();
        // Ten 10-byte pairs: "k0".."k9" with 8-byte values.
        for i in 0..10 {
            kv.insert(
                keys::data_key(keys::CF_DEFAULT, format!("k{i}").as_bytes()),
                &[0u8; 8],
            )
            .unwrap();
        }
        // Another column family counts at the same key order.
        kv.insert(keys::data_key(keys::CF_WRITE, b"k0"), &[0u8; 8])
            .unwrap();
        let m = scan_region(&kv, &region(b"", b""), 35, 100).unwrap();
        assert_eq!(m.size, 110);
        // k0 twice (20), k1 (30), k2 (40 > 35).
        assert_eq!(m.split_key.as_deref(), Some(&b"k2"[..]));
        // Not too large: no split key, size still reported.
        let m = scan_region(&kv, &region(b"", b""), 35, 200).unwrap();
        assert_eq!((m.size, m.split_key), (110, None));
        // Only the region's own range counts.
        let m = scan_region(&kv, &region(b"k5", b"k8"), 5, 20).unwrap();
        assert_eq!(m.size, 30);
        assert_eq!(m.split_key.as_deref(), Some(&b"k6"[..]));
    }

    #[test]
    fn never_splits_at_the_start_key() {
        let (_d, kv) = tree();
        kv.insert(keys::data_key(keys::CF_DEFAULT, b"a"), &[0u8; 100][..])
            .unwrap();
        kv.insert(keys::data_key(keys::CF_DEFAULT, b"b"), &[0u8; 1])
            .unwrap();
        let m = scan_region(&kv, &region(b"a", b""), 10, 50).unwrap();
        assert_eq!(m.split_key.as_deref(), Some(&b"b"[..]));
        // A region of one huge key cannot be split.
        let m = scan_region(&kv, &region(b"a", b"b"), 10, 50).unwrap();
        assert_eq!(m.split_key, None);
    }
}
