//! `MetaStore`: the scheduler's durable metadata in a sled database of its
//! own: the cluster id, the id high-water mark, the stores and the latest
//! region per range.
//!
//! Ids are reserved in batches: the high-water mark written (and fsynced)
//! before an id below it is handed out, so ids never repeat across restarts
//! (a restart skips the rest of the batch). Stores are fsynced when they
//! change, as a store id must never be forgotten; so are the cluster id and
//! the bootstrap. Every fsync goes through [`SledSyncer`], which also syncs
//! what sled's own flush leaves out (its log's size, blobs, directories).
//! Regions from heartbeats are written without waiting for an fsync: they
//! are re-learned from the leaders' heartbeats, so a restart that lost the
//! last changes only serves a slightly older view until the next heartbeats;
//! they become durable with the next fsync of anything else, or within
//! about a second by sled's background flusher (which calls `fsync` on the
//! log).

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::metapb::{Region, Store};
use crate::storage::durable::SledSyncer;

const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
const ID_LIMIT_KEY: &[u8] = b"id_limit";
const STORE_PREFIX: &[u8] = b"store/";
const REGION_PREFIX: &[u8] = b"region/";

/// What a scheduler restarting on its data finds.
#[derive(Debug, Default)]
pub struct Loaded {
    pub cluster_id: Option<u64>,
    /// No id at or above this was ever handed out: the next id starts here.
    pub id_limit: u64,
    pub stores: Vec<Store>,
    pub regions: Vec<Region>,
}

/// The scheduler's durable metadata: a sled database of its own holding
/// the cluster id, the id high-water mark, the stores and the regions.
pub struct MetaStore {
    db: sled::Db,
    syncer: SledSyncer,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaStore")
    }
}

fn keyed(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn read_u64(v: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = v
        .try_into()
        .map_err(|_| Error::Corruption("corrupt scheduler metadata: bad integer".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

impl MetaStore {
    /// Opens (or creates) the metadata database under `dir/meta`; sled
    /// flushes it in the background about once a second.
    pub fn open(dir: &Path) -> Result<MetaStore> {
        let config = sled::Config::new()
            .cache_capacity(16 * 1024 * 1024)
            // Region writes ride on sled's background flush; ids, stores and
            // the bootstrap are synced explicitly.
            .flush_every_ms(Some(1000));
        let (db, syncer) = SledSyncer::open(&dir.join("meta"), config)?;
        Ok(MetaStore { db, syncer })
    }

    /// Everything recorded so far, for a scheduler restarting on this data;
    /// an empty database gives no cluster id and an id limit of 0.
    pub fn load(&self) -> Result<Loaded> {
        let mut loaded = Loaded {
            cluster_id: self
                .db
                .get(CLUSTER_ID_KEY)?
                .map(|v| read_u64(&v))
                .transpose()?,
            id_limit: self
                .db
                .get(ID_LIMIT_KEY)?
                .map(|v| read_u64(&v))
                .transpose()?
                .unwrap_or(0),
            ..Default::default()
        };
        for item in self.db.scan_prefix(STORE_PREFIX) {
            let (_, v) = item?;
            loaded.stores.push(Store::decode(v.as_ref())?);
        }
        for item in self.db.scan_prefix(REGION_PREFIX) {
            let (_, v) = item?;
            loaded.regions.push(Region::decode(v.as_ref())?);
        }
        Ok(loaded)
    }

    /// Records the cluster id and fsyncs it before returning.
    pub fn save_cluster_id(&self, id: u64) -> Result<()> {
        self.db.insert(CLUSTER_ID_KEY, &id.to_be_bytes())?;
        self.syncer.flush(&self.db)
    }

    /// Durably raises the id high-water mark.
    pub fn save_id_limit(&self, limit: u64) -> Result<()> {
        self.db.insert(ID_LIMIT_KEY, &limit.to_be_bytes())?;
        self.syncer.flush(&self.db)
    }

    /// Records `store` (replacing what was recorded under its id) and fsyncs
    /// it before returning.
    pub fn save_store(&self, store: &Store) -> Result<()> {
        self.db
            .insert(keyed(STORE_PREFIX, store.id), store.encode_to_vec())?;
        self.syncer.flush(&self.db)
    }

    /// Records `region` under its id without waiting for an fsync; it becomes
    /// durable with the next flush (explicit or sled's background one).
    pub fn save_region(&self, region: &Region) -> Result<()> {
        self.db
            .insert(keyed(REGION_PREFIX, region.id), region.encode_to_vec())?;
        Ok(())
    }

    /// Forgets region `region_id`, without waiting for an fsync.
    pub fn delete_region(&self, region_id: u64) -> Result<()> {
        self.db.remove(keyed(REGION_PREFIX, region_id))?;
        Ok(())
    }

    /// Makes every write so far durable (fsync).
    pub fn flush(&self) -> Result<()> {
        self.syncer.flush(&self.db)
    }
}
