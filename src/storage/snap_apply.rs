//! Ingesting a received snapshot off the peer's thread, in bounded batches,
//! so the rest of the store keeps running while a large region arrives.
//!
//! Two steps, each crash-safe:
//! 1. On the peer's thread (`PeerStorage::apply_snapshot`): the region
//!    state becomes `Applying`, recording the snapshot (`SnapshotApply`)
//!    and the range the region held before; the raft log is reset to the
//!    snapshot's position. Small writes only.
//! 2. On a worker ([`SnapshotIngest::run`]): the old and new ranges are
//!    cleared and the file's pairs written, batch by batch; then, in one
//!    last batch, the client sessions, the apply state at the snapshot's
//!    index and the `Normal` region state; then a flush. Until that last
//!    batch the data is an unknown mix, and nothing reads it: the peer
//!    does not count the snapshot persisted (so raft applies nothing after
//!    it, the peer serves nothing and campaigns for nothing), the store's
//!    range map keeps the old range and the snapshot's reservation, and a
//!    restart finds the region `Applying` and runs step 2 again from the
//!    start ([`resume`]): every write of it is idempotent.

use std::path::PathBuf;

use tracing::{info, warn};

use crate::background::Background;
use crate::error::{Error, Result};
use crate::keys;
use crate::proto::metapb::Region;
use crate::proto::raft_serverpb::{
    PeerState, RaftApplyState, RaftTruncatedState, RegionLocalState, SnapshotApply,
};
use crate::storage::engine::Engines;
use crate::storage::snapshot::{self, SnapManager};
use crate::storage::{sessions, state};
use crate::RegionId;

/// About how many bytes of pairs one sled batch of an ingest holds: sled
/// applies every batch of the process under one lock, so a batch must be
/// short for the other regions' writes to interleave.
pub const INGEST_BATCH_BYTES: usize = 1 << 20;

/// Keys deleted per batch while clearing a range, for the same reason.
const DELETE_BATCH_KEYS: usize = 4096;

/// Step 2 of applying one snapshot.
pub struct SnapshotIngest {
    pub(crate) engines: Engines,
    pub(crate) path: PathBuf,
    pub(crate) region: Region,
    pub(crate) pending: SnapshotApply,
}

impl std::fmt::Debug for SnapshotIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SnapshotIngest(region {}, index {})",
            self.region.id, self.pending.index
        )
    }
}

impl SnapshotIngest {
    /// The region whose snapshot this is.
    pub fn region_id(&self) -> RegionId {
        self.region.id
    }

    /// Clears the ranges, writes the pairs, then the states, then flushes;
    /// removes the file once that is durable.
    pub fn run(self) -> Result<()> {
        let kv = &self.engines.kv;
        let p = &self.pending;
        let data = p
            .data
            .as_ref()
            .ok_or_else(|| Error::Corruption("snapshot apply without its data".into()))?;
        // A stopping store interrupts the ingest between batches; the
        // region stays Applying and its next start does it again.
        let bg = self.engines.background();
        if p.had_range {
            delete_range_batched(kv, bg, &p.prev_start_key, &p.prev_end_key)?;
        }
        delete_range_batched(kv, bg, &self.region.start_key, &self.region.end_key)?;
        let header = snapshot::ingest_batched(&self.path, data, INGEST_BATCH_BYTES, |wb| {
            bg.check()?;
            kv.apply_batch(wb)?;
            Ok(())
        })?;
        bg.check()?;
        let mut wb = sled::Batch::default();
        sessions::delete_sessions(kv, self.region.id, &mut wb)?;
        sessions::put_sessions(self.region.id, &header.sessions, &mut wb);
        state::put_apply_state(&mut wb, self.region.id, &applied_at(p.index, p.term));
        let normal = RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(self.region.clone()),
            applying: None,
        };
        state::put_region_state(&mut wb, self.region.id, &normal);
        kv.apply_batch(wb)?;
        self.engines.flush()?;
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!(file = %self.path.display(), error = %e, "cannot remove applied snapshot file");
        }
        info!(
            region_id = self.region.id,
            index = p.index,
            keys = data.key_count,
            "snapshot ingested"
        );
        Ok(())
    }
}

/// The apply state right after a snapshot at (`index`, `term`).
pub fn applied_at(index: u64, term: u64) -> RaftApplyState {
    RaftApplyState {
        applied_index: index,
        truncated_state: Some(RaftTruncatedState { index, term }),
        commit_index: index,
        commit_term: term,
    }
}

/// Finishes the ingest of a region a crash left `Applying`, before its peer
/// starts. Returns the region, now `Normal`.
pub fn resume(engines: &Engines, mgr: &SnapManager, state: RegionLocalState) -> Result<Region> {
    let region = state
        .region
        .ok_or_else(|| Error::Corruption("applying region state without a region".into()))?;
    let pending = state.applying.ok_or_else(|| {
        Error::Corruption(format!(
            "region {} is applying a snapshot it did not record",
            region.id
        ))
    })?;
    let name = pending
        .data
        .as_ref()
        .map(|d| d.file_name.clone())
        .unwrap_or_default();
    info!(
        region_id = region.id,
        index = pending.index,
        "finishing a snapshot ingest a restart interrupted"
    );
    SnapshotIngest {
        engines: engines.clone(),
        path: mgr.path(&name)?,
        region: region.clone(),
        pending,
    }
    .run()?;
    Ok(region)
}

/// Deletes every pair of `[start, end)` in all column families, a bounded
/// batch at a time.
fn delete_range_batched(kv: &sled::Tree, bg: &Background, start: &[u8], end: &[u8]) -> Result<()> {
    for cf in keys::ALL_CFS {
        let (lo, hi) = keys::data_range(cf, start, end);
        loop {
            let mut wb = sled::Batch::default();
            let mut n = 0;
            for item in kv.range(lo.clone()..hi.clone()).take(DELETE_BATCH_KEYS) {
                wb.remove(item?.0);
                n += 1;
            }
            if n == 0 {
                break;
            }
            bg.check()?;
            kv.apply_batch(wb)?;
        }
    }
    Ok(())
}
