//! `Engines`: one sled database per store with two trees, `kv` (user data,
//! apply and region states) and `raft` (log entries and raft states).
//!
//! Writes to either tree become durable only with [`Engines::flush`]. sled
//! logs every write of both trees in one ordered log and recovers a prefix of
//! it after a crash, so a write that is durable implies every write issued
//! before it on this store is durable too; the apply path relies on that
//! (data and apply state are written before the raft state that refers to them).

use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::Result;
use crate::keys;
use crate::proto::raft_serverpb::{RegionLocalState, StoreIdent};

#[derive(Clone)]
pub struct Engines {
    pub db: sled::Db,
    pub kv: sled::Tree,
    pub raft: sled::Tree,
    dir: PathBuf,
}

impl Engines {
    /// Opens (or creates) the store's database under `dir/db`.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Engines> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            // Durability is driven by the store's writer, one flush per batch
            // of Readies; a background flusher would only add fsyncs.
            .flush_every_ms(None)
            .open()?;
        let kv = db.open_tree("kv")?;
        let raft = db.open_tree("raft")?;
        Ok(Engines {
            db,
            kv,
            raft,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every write issued so far durable (one fsync of sled's log).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn store_ident(&self) -> Result<Option<StoreIdent>> {
        get_msg(&self.kv, &keys::store_ident_key())
    }

    pub fn put_store_ident(&self, ident: &StoreIdent) -> Result<()> {
        self.kv
            .insert(keys::store_ident_key(), ident.encode_to_vec())?;
        Ok(())
    }

    /// Every region state persisted on this store, tombstones included.
    pub fn region_states(&self) -> Result<Vec<RegionLocalState>> {
        let (lo, hi) = keys::region_meta_range();
        let mut out = Vec::new();
        for kv in self.kv.range(lo..hi) {
            let (_, v) = kv?;
            out.push(RegionLocalState::decode(v.as_ref())?);
        }
        Ok(out)
    }

    /// A direct read of one user key in the default column family.
    pub fn get_data(&self, cf: u8, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.kv.get(keys::data_key(cf, key))?.map(|v| v.to_vec()))
    }
}

/// Reads and decodes one prost message.
pub fn get_msg<M: Message + Default>(tree: &sled::Tree, key: &[u8]) -> Result<Option<M>> {
    match tree.get(key)? {
        Some(v) => Ok(Some(M::decode(v.as_ref())?)),
        None => Ok(None),
    }
}

/// Deletes every data key of `[start, end)` in all column families into `batch`.
pub fn delete_data_range(
    kv: &sled::Tree,
    start: &[u8],
    end: &[u8],
    batch: &mut sled::Batch,
) -> Result<usize> {
    let mut n = 0;
    for cf in keys::ALL_CFS {
        let (lo, hi) = keys::data_range(cf, start, end);
        for item in kv.range(lo..hi) {
            let (k, _) = item?;
            batch.remove(k);
            n += 1;
        }
    }
    Ok(n)
}
