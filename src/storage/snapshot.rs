//! Region snapshots as files: generation (off the peer's thread), chunked
//! copying between stores, and ingestion.
//!
//! A snapshot file is a sequence of length-delimited prost records: one
//! `SnapshotHeader` (region and apply state) and then one `SnapshotEntry` per
//! key of every column family in the region's range. The raft-rs snapshot that
//! travels in a `MsgSnapshot` carries only a `SnapshotData` naming the file,
//! its size and checksum; the file travels beside it in chunks.
//!
//! Consistency: sled has no point-in-time iterator, so the data is read while
//! the region keeps applying. The apply state is captured *before* the scan, so
//! every key holds its value as of the snapshot index or later. Replaying the log
//! after the snapshot index rewrites every key changed since, in order, so the
//! follower converges to exactly the leader's state. This holds because every
//! data command (Put, Delete) sets a key to a value independent of its old one.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use raft::eraftpb;

use crate::error::{Error, Result};
use crate::keys;
use crate::proto::metapb::Region;
use crate::proto::raft_serverpb::{
    ClientSession, RaftApplyState, SnapshotData, SnapshotEntry, SnapshotHeader,
};
use crate::storage::durable::{create_dir_all_durable, sync_dir};
use crate::storage::engine::Engines;
use crate::RegionId;

/// Owns the snapshot directory of one store.
#[derive(Clone, Debug)]
pub struct SnapManager {
    dir: PathBuf,
}

impl SnapManager {
    /// Manages the snapshot files in `dir`, creating the directory (durably)
    /// if it does not exist yet.
    pub fn new(dir: PathBuf) -> Result<SnapManager> {
        create_dir_all_durable(&dir)?;
        Ok(SnapManager { dir })
    }

    /// The directory holding this store's snapshot files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a snapshot file named `name` lives on this store.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        // The name comes from the network: refuse anything that is not a
        // plain file name of ours.
        let ok = name.starts_with("snap_")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !ok {
            return Err(Error::Corruption(format!(
                "invalid snapshot file name {name:?}"
            )));
        }
        Ok(self.dir.join(name))
    }

    /// The file name of the snapshot that `store_id` generates of
    /// `region_id` at log position (`term`, `index`); [`SnapManager::path`]
    /// accepts every name it makes.
    pub fn file_name(store_id: u64, region_id: RegionId, term: u64, index: u64) -> String {
        format!("snap_{store_id}_{region_id}_{term}_{index}.sst")
    }

    /// Removes earlier generated files of a region, keeping `keep`.
    pub fn remove_old(&self, store_id: u64, region_id: RegionId, keep: &str) {
        let prefix = format!("snap_{store_id}_{region_id}_");
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&prefix) && name != keep {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

fn write_record<M: Message>(w: &mut impl Write, m: &M, crc: &mut crc32fast::Hasher) -> Result<u64> {
    let buf = m.encode_length_delimited_to_vec();
    crc.update(&buf);
    w.write_all(&buf)?;
    Ok(buf.len() as u64)
}

/// Writes the snapshot file of `region` at `apply_state` and returns the
/// raft-rs snapshot describing it. Runs on a generator thread, never on a peer.
pub fn generate(
    engines: &Engines,
    mgr: &SnapManager,
    store_id: u64,
    region: Region,
    apply_state: RaftApplyState,
    sessions: Vec<ClientSession>,
    term: u64,
) -> Result<eraftpb::Snapshot> {
    let index = apply_state.applied_index;
    let name = SnapManager::file_name(store_id, region.id, term, index);
    let path = mgr.path(&name)?;
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(File::create(&tmp)?);
    let mut crc = crc32fast::Hasher::new();
    let header = SnapshotHeader {
        apply_state: Some(apply_state),
        region: Some(region.clone()),
        sessions,
    };
    let mut size = write_record(&mut w, &header, &mut crc)?;
    let mut key_count = 0;
    for cf in keys::ALL_CFS {
        let (lo, hi) = keys::data_range(cf, &region.start_key, &region.end_key);
        for item in engines.kv.range(lo..hi) {
            let (k, v) = item?;
            let e = SnapshotEntry {
                cf: cf as u32,
                key: keys::origin_key(&k).to_vec(),
                value: v.to_vec(),
            };
            size += write_record(&mut w, &e, &mut crc)?;
            key_count += 1;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    // A stopping store publishes no new file into its directory.
    if let Err(e) = engines.background().check() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &path)?;
    sync_dir(mgr.dir())?;
    mgr.remove_old(store_id, region.id, &name);

    let data = SnapshotData {
        region: Some(region.clone()),
        file_name: name,
        file_size: size,
        checksum: crc.finalize() as u64,
        key_count,
    };
    let mut snap = eraftpb::Snapshot {
        data: data.encode_to_vec().into(),
        ..Default::default()
    };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(crate::region::roles::conf_state(&region));
    Ok(snap)
}

/// Copies a snapshot file between two stores' directories in chunks of
/// `chunk` bytes (the in-process stand-in for the chunked snapshot stream).
pub fn copy_in_chunks(src: &Path, dst: &Path, chunk: usize) -> Result<u64> {
    let mut r = File::open(src)?;
    // Two sends of the same snapshot may overlap: each writes its own file.
    static COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dst.with_extension(format!("recv{n}"));
    let mut w = File::create(&tmp)?;
    let mut buf = vec![0u8; chunk.max(4096)];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
    w.sync_all()?;
    fs::rename(&tmp, dst)?;
    if let Some(dir) = dst.parent() {
        sync_dir(dir)?;
    }
    Ok(total)
}

/// Reads a snapshot file record by record, checking its size and checksum
/// on the way: nothing holds more than one record in memory.
struct RecordReader {
    r: BufReader<File>,
    crc: crc32fast::Hasher,
    left: u64,
    name: String,
}

/// How a snapshot file can be wrong, for the message.
fn corrupt(name: &str, why: impl std::fmt::Display) -> Error {
    Error::Corruption(format!("snapshot file {name} is corrupt: {why}"))
}

impl RecordReader {
    /// Opens `path`, whose size must be the one `data` announces (it comes
    /// from the network: compared with the file before anything is read).
    fn open(path: &Path, data: &SnapshotData) -> Result<RecordReader> {
        if data.region.is_none() {
            return Err(Error::Corruption("snapshot without region".into()));
        }
        let f = File::open(path)?;
        let on_disk = f.metadata()?.len();
        if on_disk != data.file_size {
            return Err(corrupt(
                &data.file_name,
                format!("{on_disk} bytes, expected {}", data.file_size),
            ));
        }
        Ok(RecordReader {
            r: BufReader::with_capacity(256 * 1024, f),
            crc: crc32fast::Hasher::new(),
            left: on_disk,
            name: data.file_name.clone(),
        })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        if buf.len() as u64 > self.left {
            return Err(corrupt(&self.name, "a record runs past the end"));
        }
        self.r.read_exact(buf)?;
        self.crc.update(buf);
        self.left -= buf.len() as u64;
        Ok(())
    }

    /// The next record, or None at the end of the file.
    fn next<M: Message + Default>(&mut self) -> Result<Option<M>> {
        if self.left == 0 {
            return Ok(None);
        }
        // A varint length prefix: at most 10 bytes, the last without the
        // continuation bit.
        let mut len_buf = [0u8; 10];
        let mut n = 0;
        loop {
            if n == len_buf.len() {
                return Err(corrupt(&self.name, "bad record length"));
            }
            self.read_exact(&mut len_buf[n..n + 1])?;
            n += 1;
            if len_buf[n - 1] & 0x80 == 0 {
                break;
            }
        }
        let len = prost::encoding::decode_varint(&mut &len_buf[..n])
            .map_err(|e| corrupt(&self.name, e))?;
        if len > self.left {
            return Err(corrupt(&self.name, "a record runs past the end"));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        Ok(Some(M::decode(buf.as_slice())?))
    }

    /// Checks the checksum once every byte was read.
    fn finish(self, data: &SnapshotData) -> Result<()> {
        if self.left != 0 || self.crc.finalize() as u64 != data.checksum {
            return Err(corrupt(&self.name, "checksum mismatch"));
        }
        Ok(())
    }
}

/// Checks a received snapshot file before raft is given its message, so a
/// missing or corrupt file is refused instead of failing the apply. Reads
/// it in chunks, never whole.
pub fn verify(path: &Path, data: &SnapshotData) -> Result<()> {
    let mut r = RecordReader::open(path, data)?;
    let mut buf = vec![0u8; 256 * 1024];
    while r.left > 0 {
        let n = (r.left as usize).min(buf.len());
        r.read_exact(&mut buf[..n])?;
    }
    r.finish(data)
}

/// Reads a received snapshot file and hands its pairs to `apply` in
/// batches of about `batch_bytes`, so no single sled batch holds the whole
/// region (sled applies every batch of the process under one lock). Returns
/// the header (region, apply state, sessions) once the whole file was read
/// and its checksum matched; batches handed out before a mismatch are the
/// caller's to undo (the region stays Applying, see `snap_apply.rs`).
pub fn ingest_batched(
    path: &Path,
    data: &SnapshotData,
    batch_bytes: usize,
    mut apply: impl FnMut(sled::Batch) -> Result<()>,
) -> Result<SnapshotHeader> {
    let mut r = RecordReader::open(path, data)?;
    let header: SnapshotHeader = r
        .next()?
        .ok_or_else(|| corrupt(&data.file_name, "no header"))?;
    let mut batch = sled::Batch::default();
    let mut size = 0;
    while let Some(e) = r.next::<SnapshotEntry>()? {
        size += e.key.len() + e.value.len();
        batch.insert(keys::data_key(e.cf as u8, &e.key), e.value);
        if size >= batch_bytes {
            apply(std::mem::take(&mut batch))?;
            size = 0;
        }
    }
    r.finish(data)?;
    if size > 0 {
        apply(batch)?;
    }
    Ok(header)
}
