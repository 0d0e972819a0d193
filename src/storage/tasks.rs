//! Work the core hands out instead of doing on its own thread: generating a
//! snapshot file, ingesting a received one, and deleting compacted log
//! entries. Both read or write sled
//! for long enough to stall every region of the store if run inline, and
//! both finish whenever they do, so the core returns them in its `Effects`
//! and the runtime decides where they run: the actors on a thread of their
//! own, the simulator inline at a moment its seed chooses (which keeps its
//! runs replayable).

use raft::eraftpb;

use crate::background::Background;
use crate::error::Result;
use crate::keys;
use crate::proto::metapb::Region;
use crate::proto::raft_serverpb::{ClientSession, RaftApplyState};
use crate::storage::engine::Engines;
use crate::storage::snap_apply::SnapshotIngest;
use crate::storage::snapshot::{self, SnapManager};
use crate::RegionId;

/// Compacted log entries deleted per sled batch: sled applies every batch of
/// the process under one lock, and a long one stalls every store's writes.
const GC_BATCH: u64 = 128;

/// One piece of background work; its result, if any, goes back to the peer.
pub enum Task {
    /// Write a snapshot file; hand the result to `Peer::on_snapshot_generated`.
    GenerateSnapshot(Box<SnapshotTask>),
    /// Delete log entries below the first index; nothing to report.
    DeleteLog(LogDeletion),
    /// Ingest a received snapshot's data (`snap_apply.rs`); hand the
    /// result to `Peer::on_snapshot_applied`.
    ApplySnapshot(Box<SnapshotIngest>),
}

impl Task {
    /// The background threads of the store the task belongs to.
    pub fn background(&self) -> &Background {
        match self {
            Task::GenerateSnapshot(t) => t.engines.background(),
            Task::ApplySnapshot(t) => t.engines.background(),
            Task::DeleteLog(d) => &d.background,
        }
    }
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Task::GenerateSnapshot(t) => write!(
                f,
                "GenerateSnapshot(region {}, index {})",
                t.region.id, t.apply_state.applied_index
            ),
            Task::ApplySnapshot(t) => write!(f, "{t:?}"),
            Task::DeleteLog(d) => write!(
                f,
                "DeleteLog(region {}, {}..={})",
                d.region_id, d.from, d.to
            ),
        }
    }
}

/// Everything snapshot generation needs, captured at the applied index.
pub struct SnapshotTask {
    pub(crate) engines: Engines,
    pub(crate) mgr: SnapManager,
    pub(crate) store_id: u64,
    pub(crate) region: Region,
    pub(crate) apply_state: RaftApplyState,
    /// Read at the applied index: a session ahead of the snapshot's index
    /// would make a replica skip a write it never got.
    pub(crate) sessions: Vec<ClientSession>,
    pub(crate) term: u64,
}

impl SnapshotTask {
    /// The region whose snapshot this is.
    pub fn region_id(&self) -> RegionId {
        self.region.id
    }

    /// Writes the file (the region's data is read as it is now, which may
    /// already hold later writes; replaying the entries after the snapshot's
    /// index converges to the same state, see `snapshot.rs`).
    pub fn run(self) -> Result<eraftpb::Snapshot> {
        snapshot::generate(
            &self.engines,
            &self.mgr,
            self.store_id,
            self.region,
            self.apply_state,
            self.sessions,
            self.term,
        )
    }
}

/// Log entries `from..=to` of a region, below its first index.
pub struct LogDeletion {
    pub(crate) raft: sled::Tree,
    pub(crate) background: Background,
    pub(crate) region_id: RegionId,
    pub(crate) from: u64,
    pub(crate) to: u64,
}

impl LogDeletion {
    /// Deletes the entries in small batches. Nothing reads below the first
    /// index any more and every later entry has a higher index, so this may
    /// finish whenever it does; entries a crash leaves behind are deleted
    /// when the peer starts again (`PeerStorage::new`).
    pub fn run(self) {
        let mut idx = self.from;
        while idx <= self.to {
            if self.background.check().is_err() {
                return;
            }
            let end = self.to.min(idx + GC_BATCH - 1);
            let mut wb = sled::Batch::default();
            for i in idx..=end {
                wb.remove(keys::raft_log_key(self.region_id, i));
            }
            if let Err(e) = self.raft.apply_batch(wb) {
                tracing::warn!(region_id = self.region_id, error = %e, "compacted log entries not deleted");
                return;
            }
            idx = end + 1;
        }
    }
}
