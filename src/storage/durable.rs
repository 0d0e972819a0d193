//! Making sled 0.34 durable, and the small fsync helpers every durable file
//! of the project goes through.
//!
//! sled's `Db::flush()` is not a durability barrier on Linux: it writes its
//! log buffers with `pwrite` and then calls `sync_file_range`, which starts
//! and waits for writeback of the dirty pages but neither flushes the device
//! cache nor persists the file's size or any metadata. Values bigger than a
//! quarter of a segment go to one blob file each, which sled never syncs, and
//! no directory sled creates entries in is ever synced. [`SledSyncer`] closes
//! those gaps after a `flush()`:
//!
//! 1. every blob file created since the last sync is `fdatasync`ed, then the
//!    blob directory is `fsync`ed (blobs first: a log record that survives
//!    must never point at a blob that did not);
//! 2. the database directory is `fsync`ed when its entries changed (sled's
//!    own snapshot files are synced by sled but renamed into place without a
//!    directory sync);
//! 3. the log file is `fdatasync`ed: its data and the size needed to read it.
//!
//! A failed sync is an error the caller must treat as fatal for the whole
//! database: after a failed fsync Linux may already have dropped the dirty
//! pages, so retrying could "succeed" over lost data (the fsyncgate lesson).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Fsyncs a directory, making the entries created, renamed or removed in
/// it so far durable.
/// Ends the process after a failed store flush. Once an fsync has failed
/// the kernel may have dropped the dirty pages it could not write and
/// marked them clean, so a retry can "succeed" without the data (the
/// PostgreSQL "fsyncgate" of 2018): nothing written since the last good
/// sync can be trusted, and acknowledging anything more could lie. Aborting
/// (rather than panicking one actor thread) also skips every destructor
/// that would flush again. The node restarts from what did reach the disk,
/// which raft reconciles with the other replicas.
pub fn flush_failed(e: &dyn std::fmt::Display) -> ! {
    tracing::error!(error = %e, "store flush failed: stopping the process so no write is acknowledged that the disk may not hold");
    eprintln!("tessel: store flush failed ({e}); aborting");
    std::process::abort()
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all` that also makes every directory it created durable, by
/// syncing the parent of each one after it appears.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    std::fs::create_dir_all(dir)?;
    for p in missing.iter().rev() {
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically and durably: a temporary file
/// beside it is written and fsynced, renamed over `path`, and the directory
/// is fsynced. A crash leaves either the old or the new content.
pub fn write_file_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Syncs what sled 0.34 leaves unsynced (see the module docs). One per
/// open database; [`SledSyncer::flush`] replaces `Db::flush()`.
pub struct SledSyncer {
    db_dir: PathBuf,
    /// sled's log file, opened a second time: an fsync through any
    /// descriptor of an inode covers all of that inode's dirty data.
    log: File,
    state: Mutex<SyncState>,
}

#[derive(Default)]
struct SyncState {
    /// Blob files already synced (named by the log sequence number that
    /// created them); pruned to the files still present.
    synced_blobs: BTreeSet<OsString>,
    /// The database directory's entries at the last directory sync.
    dir_entries: BTreeSet<OsString>,
}

impl std::fmt::Debug for SledSyncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledSyncer")
            .field("db_dir", &self.db_dir)
            .finish()
    }
}

impl SledSyncer {
    /// Opens a sled database at `db_dir` with `config` (whose path is set
    /// here) and makes its files, directories and parents durable before
    /// returning, so that a database created by this call exists after a
    /// power cut.
    pub fn open(db_dir: &Path, config: sled::Config) -> crate::Result<(sled::Db, SledSyncer)> {
        if let Some(parent) = db_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_all_durable(parent)?;
        }
        let db = config.path(db_dir).open()?;
        let log = File::open(db_dir.join("db"))?;
        let syncer = SledSyncer {
            db_dir: db_dir.to_path_buf(),
            log,
            state: Mutex::new(SyncState::default()),
        };
        // sled writes its `conf` file once, unsynced, when it creates the
        // database; without it a reopen fails.
        File::open(db_dir.join("conf"))?.sync_all()?;
        syncer.flush(&db)?;
        if let Some(parent) = db_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok((db, syncer))
    }

    /// Makes every write issued to `db` before this call durable: sled's
    /// flush, then the syncs it leaves out. Concurrent callers are
    /// serialised; one call covers the writes of all that came before it.
    pub fn flush(&self, db: &sled::Db) -> crate::Result<()> {
        let mut st = self.state.lock();
        // A blob file is written while its write is being reserved, before
        // that write returns, and sled's flush returns only once every
        // reservation it wrote out is complete. So after the flush, every
        // blob that a record just written points at is complete, and is
        // listed below: all of those are synced before the log is. Blobs
        // of writes reserved during the flush may still be half written;
        // they are synced now too but only those listed before the flush
        // count as done, the others are synced again next time.
        let blobs = self.db_dir.join("blobs");
        let before = list_dir(&blobs)?;
        db.flush()?;
        let after = list_dir(&blobs)?;
        let mut synced_any = false;
        for name in after.difference(&st.synced_blobs) {
            match File::open(blobs.join(name)) {
                Ok(f) => f.sync_data()?,
                // sled removes blobs it no longer needs at any time.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
            synced_any = true;
        }
        if synced_any || after.len() != st.synced_blobs.len() {
            // New blobs, or removed ones: the directory changed.
            sync_dir(&blobs)?;
        }
        st.synced_blobs = before.intersection(&after).cloned().collect();
        let entries = list_dir(&self.db_dir)?;
        if entries != st.dir_entries {
            sync_dir(&self.db_dir)?;
            st.dir_entries = entries;
        }
        self.log.sync_data()?;
        Ok(())
    }
}

/// The names in a directory (empty if it does not exist).
fn list_dir(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(l) => l.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_helpers_create_and_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        create_dir_all_durable(&dir).unwrap();
        assert!(dir.is_dir());
        let f = dir.join("ident");
        write_file_durable(&f, b"one").unwrap();
        write_file_durable(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert!(!dir.join("ident.tmp").exists());
    }

    #[test]
    fn syncer_syncs_blobs_and_reopens() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        {
            let (db, syncer) = SledSyncer::open(&dir, sled::Config::new()).unwrap();
            // Bigger than a quarter of sled's default 512 KiB segment: a blob.
            db.insert(b"big", vec![7u8; 200 * 1024]).unwrap();
            syncer.flush(&db).unwrap();
            db.insert(b"small", b"v".to_vec()).unwrap();
            syncer.flush(&db).unwrap();
            assert_eq!(
                syncer.state.lock().synced_blobs.len(),
                1,
                "the blob was synced"
            );
        }
        let (db, _) = SledSyncer::open(&dir, sled::Config::new()).unwrap();
        assert_eq!(db.get(b"big").unwrap().unwrap().len(), 200 * 1024);
    }
}
