//! `Engines`: one sled database per store with two trees, `kv` (user data,
//! apply and region states) and `raft` (log entries and raft states).
//!
//! Writes to either tree become durable only with [`Engines::flush`], which
//! fsyncs every file that holds them (see `durable.rs`). sled logs every
//! write of both trees in one ordered log and recovers a prefix of it after a
//! crash, so a write that is durable implies every write issued before it on
//! this store is durable too; the apply path relies on that (data and apply
//! state are written before the raft state that refers to them).
//!
//! Beside the database lives the store's identity file, `dir/ident`, written
//! and fsynced once when the store gets its id. It is how a store notices that
//! its database was lost: a directory with an identity file but a database
//! without the store ident held a store once, and opening it as a new, empty
//! store would silently give that store's address and replicas to a stranger.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use super::durable::{write_file_durable, SledSyncer};
use crate::background::Background;
use crate::error::{Error, Result};
use crate::keys;
use crate::proto::raft_serverpb::StoreIdent;

#[derive(Clone)]
/// A store's sled database and its two trees; cheap to clone, every clone
/// shares the same database. Nothing written is durable until
/// [`Engines::flush`] returns.
pub struct Engines {
    /// The whole database, for what spans both trees (its size on disk).
    pub db: sled::Db,
    /// User data of every region, with the apply states, region states,
    /// client sessions and the store ident (layouts in [`crate::keys`]).
    pub kv: sled::Tree,
    /// Every region's raft log entries and raft state (layouts in
    /// [`crate::keys`]).
    pub raft: sled::Tree,
    syncer: Arc<SledSyncer>,
    dir: PathBuf,
    background: Background,
}

/// The identity file's name inside the engines' directory.
const IDENT_FILE: &str = "ident";

impl Engines {
    /// Opens (or creates) the store's database under `dir/db` and checks it
    /// against the identity file: a database that lost the store it held is
    /// refused with [`Error::DataLost`].
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Engines> {
        let config = sled::Config::new()
            .cache_capacity(cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            // Durability is driven by the store's writer, one sync per batch
            // of Readies; a background flusher would only add fsyncs.
            .flush_every_ms(None);
        let (db, syncer) = SledSyncer::open(&dir.join("db"), config).map_err(|e| {
            Error::Internal(format!(
                "cannot open the store database in {}: {e}",
                dir.display()
            ))
        })?;
        let kv = db.open_tree("kv")?;
        let raft = db.open_tree("raft")?;
        let engines = Engines {
            db,
            kv,
            raft,
            syncer: Arc::new(syncer),
            dir: dir.to_path_buf(),
            background: Background::default(),
        };
        engines.check_identity()?;
        Ok(engines)
    }

    /// The directory the engines were opened in: it holds the database
    /// (`db/`) and the identity file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store's background threads, which write to these engines.
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Makes every write issued so far durable: sled's flush plus an
    /// fdatasync of its log and of any new blob files (see `durable.rs`).
    pub fn flush(&self) -> Result<()> {
        self.syncer.flush(&self.db)
    }

    /// The store's identity as the database records it; `None` for a store
    /// that has not been given an id yet.
    pub fn store_ident(&self) -> Result<Option<StoreIdent>> {
        get_msg(&self.kv, &keys::store_ident_key())
    }

    /// Records the store's identity, durably: in the database and in the
    /// identity file beside it.
    pub fn put_store_ident(&self, ident: &StoreIdent) -> Result<()> {
        self.kv
            .insert(keys::store_ident_key(), ident.encode_to_vec())?;
        self.flush()?;
        write_file_durable(&self.dir.join(IDENT_FILE), &encode_ident_file(ident))?;
        Ok(())
    }

    /// The identity file's store, if the file exists.
    fn ident_file(&self) -> Result<Option<StoreIdent>> {
        let path = self.dir.join(IDENT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => decode_ident_file(&text).map(Some).ok_or_else(|| {
                Error::Corruption(format!(
                    "{} is not a store identity file; refusing to guess which store this was",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn check_identity(&self) -> Result<()> {
        match (self.ident_file()?, self.store_ident()?) {
            (None, None) => Ok(()),
            // A store from before the identity file: write it now.
            (None, Some(db)) => {
                write_file_durable(&self.dir.join(IDENT_FILE), &encode_ident_file(&db))?;
                Ok(())
            }
            (Some(file), None) => Err(Error::DataLost {
                dir: self.dir.clone(),
                store_id: file.store_id,
                cluster_id: file.cluster_id,
            }),
            (Some(file), Some(db)) if file != db => Err(Error::Corruption(format!(
                "{}: the identity file names store {} of cluster {} but the database holds \
                 store {} of cluster {}; refusing to start",
                self.dir.display(),
                file.store_id,
                file.cluster_id,
                db.store_id,
                db.cluster_id
            ))),
            (Some(_), Some(_)) => Ok(()),
        }
    }

    /// A direct read of one user key in column family `cf`, bypassing raft
    /// (the test kit reads replicas with it).
    pub fn get_data(&self, cf: u8, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.kv.get(keys::data_key(cf, key))?.map(|v| v.to_vec()))
    }
}

fn encode_ident_file(ident: &StoreIdent) -> Vec<u8> {
    format!(
        "# Written once when this store got its id; do not edit.\n\
         cluster_id = {}\nstore_id = {}\n",
        ident.cluster_id, ident.store_id
    )
    .into_bytes()
}

fn decode_ident_file(text: &str) -> Option<StoreIdent> {
    let mut ident = StoreIdent::default();
    let (mut cluster, mut store) = (false, false);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=')?;
        let v: u64 = v.trim().parse().ok()?;
        match k.trim() {
            "cluster_id" => (ident.cluster_id, cluster) = (v, true),
            "store_id" => (ident.store_id, store) = (v, true),
            _ => return None,
        }
    }
    (cluster && store && ident.store_id != 0).then_some(ident)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_whose_database_vanished_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let ident = StoreIdent {
            cluster_id: 1,
            store_id: 4,
        };
        {
            let e = Engines::open(&dir, 1 << 20).unwrap();
            e.put_store_ident(&ident).unwrap();
        }
        let e = Engines::open(&dir, 1 << 20).unwrap();
        assert_eq!(e.store_ident().unwrap(), Some(ident));
        drop(e);
        std::fs::remove_dir_all(dir.join("db")).unwrap();
        match Engines::open(&dir, 1 << 20) {
            Err(Error::DataLost { store_id: 4, .. }) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("an empty database was opened as store 4"),
        }
    }

    #[test]
    fn identity_file_round_trips_and_rejects_garbage() {
        let ident = StoreIdent {
            cluster_id: 7,
            store_id: 9,
        };
        let text = String::from_utf8(encode_ident_file(&ident)).unwrap();
        assert_eq!(decode_ident_file(&text), Some(ident));
        assert_eq!(decode_ident_file("store_id = x"), None);
        assert_eq!(decode_ident_file("cluster_id = 1"), None);
        assert_eq!(decode_ident_file(""), None);
    }
}
