//! `PeerStorage`: one region's raft log, hard state and apply state over the
//! store's sled engines, seen by raft-rs through [`raft::Storage`].
//!
//! Invariants (checked where they can break):
//! - `truncated.index < first_index() <= last_index() + 1`: the log holds
//!   exactly the entries `(truncated.index, last_index]`.
//! - `truncated.index <= applied_index <= commit`.
//! - Region state and apply state change together in one kv batch; log entries
//!   and raft state change together in one raft batch.

use std::cell::RefCell;
use std::collections::HashMap;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::keys;
use crate::proto::metapb::Region;
use crate::proto::raft_serverpb::{
    PeerState, RaftApplyState, RaftLocalState, RaftTruncatedState, RegionLocalState, SnapshotApply,
    SnapshotData,
};
use crate::storage::engine::{delete_data_range, Engines};
use crate::storage::snap_apply::{applied_at, SnapshotIngest};
use crate::storage::snapshot::SnapManager;
use crate::storage::state;
use crate::storage::tasks::{LogDeletion, SnapshotTask, Task};
use crate::storage::{RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM};
use crate::{PeerId, RegionId, StoreId};

/// Where snapshot generation for this region stands.
enum SnapState {
    Idle,
    /// A `Task::GenerateSnapshot` is out; its result comes back through
    /// [`PeerStorage::on_snapshot_generated`].
    Generating,
    /// The generator's result, for raft's next `snapshot()` call.
    Generated(Result<Snapshot>),
}

/// What applying a received snapshot changed, for the peer to act on.
pub struct AppliedSnapshot {
    pub prev_region: Region,
    pub region: Region,
}

/// One region replica's durable raft state (log, hard state, apply state
/// and region meta) over the store's engines; raft-rs reads it through
/// [`raft::Storage`] and the peer writes it through the methods below.
pub struct PeerStorage {
    /// The store's sled trees, shared with every other peer of the store;
    /// the peer's apply path writes user data and apply state through them.
    pub engines: Engines,
    snap_mgr: SnapManager,
    store_id: StoreId,
    /// The region as of `apply_state.applied_index`; no peers means the peer
    /// is uninitialized (created from a message, waiting for a snapshot).
    pub region: Region,
    hard_state: HardState,
    last_index: u64,
    last_term: u64,
    /// How far this replica has applied and truncated its log, and the
    /// commit point it had seen; the apply path advances it and writes it in
    /// the same kv batch as the data it covers.
    pub apply_state: RaftApplyState,
    snap_state: RefCell<SnapState>,
    /// The last snapshot generated, reused while it is recent enough.
    last_snapshot: RefCell<Option<Snapshot>>,
    /// conf_ver right after each peer was last added, as applied here: a
    /// snapshot for that peer must be at least that recent.
    peer_added_at: HashMap<PeerId, u64>,
    /// Background work asked for since the peer last collected it (raft
    /// calls `snapshot()` through `&self`, hence the cell).
    tasks: RefCell<Vec<Task>>,
}

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

/// Writes the initial states of a region on a store at bootstrap: every peer of
/// the first region starts with the same log position so no snapshot is needed.
pub fn write_initial_states(engines: &Engines, region: &Region) -> Result<()> {
    let mut kv = sled::Batch::default();
    write_initial_apply_states(region, &mut kv);
    engines.kv.apply_batch(kv)?;
    let hs = HardState {
        term: RAFT_INIT_LOG_TERM,
        commit: RAFT_INIT_LOG_INDEX,
        ..Default::default()
    };
    let raft_state = RaftLocalState {
        hard_state: hs.write_to_bytes()?,
        last_index: RAFT_INIT_LOG_INDEX,
        last_term: RAFT_INIT_LOG_TERM,
    };
    let mut raft = sled::Batch::default();
    state::put_raft_state(&mut raft, region.id, &raft_state);
    engines.raft.apply_batch(raft)?;
    engines.flush()
}

/// Adds the region state and the initial apply state (everything up to the
/// initial index applied and truncated) of a region born at the initial index
/// to `kv`: the first region at bootstrap, a new region at a split. Its raft
/// state needs no write: [`PeerStorage::new`] derives it from the apply state.
pub fn write_initial_apply_states(region: &Region, kv: &mut sled::Batch) {
    let apply = RaftApplyState {
        applied_index: RAFT_INIT_LOG_INDEX,
        truncated_state: Some(RaftTruncatedState {
            index: RAFT_INIT_LOG_INDEX,
            term: RAFT_INIT_LOG_TERM,
        }),
        commit_index: RAFT_INIT_LOG_INDEX,
        commit_term: RAFT_INIT_LOG_TERM,
    };
    let region_state = RegionLocalState {
        state: PeerState::Normal as i32,
        region: Some(region.clone()),
        applying: None,
    };
    state::put_apply_state(kv, region.id, &apply);
    state::put_region_state(kv, region.id, &region_state);
}

/// Deletes a region's whole raft log and its raft state in one batch.
fn wipe_raft_state(engines: &Engines, region_id: RegionId) -> Result<()> {
    let mut wb = sled::Batch::default();
    let lo = keys::raft_log_key(region_id, 0);
    let hi = keys::raft_log_key(region_id, u64::MAX);
    for item in engines.raft.range(lo..=hi) {
        wb.remove(item?.0);
    }
    state::delete_raft_state(&mut wb, region_id);
    engines.raft.apply_batch(wb)?;
    Ok(())
}

impl PeerStorage {
    /// Loads the states of `region` (an uninitialized region has none yet).
    pub fn new(
        engines: Engines,
        snap_mgr: SnapManager,
        store_id: StoreId,
        region: Region,
    ) -> Result<PeerStorage> {
        let raft_state: RaftLocalState =
            state::raft_state(&engines.raft, region.id)?.unwrap_or_default();
        let apply_state: RaftApplyState =
            state::apply_state(&engines.kv, region.id)?.unwrap_or_default();
        let mut hard_state = HardState::default();
        if !raft_state.hard_state.is_empty() {
            hard_state.merge_from_bytes(&raft_state.hard_state)?;
        }
        let mut raft_state = raft_state;
        if !region.peers.is_empty() && raft_state.last_index < apply_state.applied_index {
            let truncated = apply_state.truncated_state.unwrap_or_default();
            if truncated.index != apply_state.applied_index {
                return Err(Error::Corruption(format!(
                    "region {} last index {} is behind applied index {}",
                    region.id, raft_state.last_index, apply_state.applied_index
                )));
            }
            // Either a crash between a snapshot's kv batch and its raft
            // batch (the snapshot is fully applied, the log simply restarts
            // after it), or a region born at a split, whose raft state is
            // whatever its uninitialized peer here had voted, if anything.
            raft_state.last_index = truncated.index;
            raft_state.last_term = truncated.term;
            if hard_state.term < truncated.term {
                // A vote cast in an older term does not carry over.
                hard_state.term = truncated.term;
                hard_state.vote = 0;
            }
        }
        // The apply state records the commit point it saw; never restart with
        // a hard state that forgets it (raft-rs refuses applied > commit).
        if apply_state.commit_index > hard_state.commit {
            hard_state.commit = apply_state.commit_index.min(raft_state.last_index);
        }
        let storage = PeerStorage {
            engines,
            snap_mgr,
            store_id,
            region,
            hard_state,
            last_index: raft_state.last_index,
            last_term: raft_state.last_term,
            apply_state,
            snap_state: RefCell::new(SnapState::Idle),
            last_snapshot: RefCell::new(None),
            peer_added_at: HashMap::new(),
            tasks: RefCell::new(Vec::new()),
        };
        storage.delete_compacted_leftovers()?;
        Ok(storage)
    }

    /// The id of the region this storage belongs to.
    pub fn region_id(&self) -> RegionId {
        self.region.id
    }

    /// Whether the region meta lists any peer; false for a replica created
    /// from a message that still waits for its first snapshot.
    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
    }

    /// The index of the last log entry applied to the kv tree.
    pub fn applied_index(&self) -> u64 {
        self.apply_state.applied_index
    }

    /// The index of the last entry removed from the log by compaction (or
    /// covered by a snapshot); 0 when nothing has been truncated.
    pub fn truncated_index(&self) -> u64 {
        self.apply_state
            .truncated_state
            .as_ref()
            .map_or(0, |t| t.index)
    }

    /// The term of the entry at [`truncated_index`](Self::truncated_index);
    /// 0 when nothing has been truncated.
    pub fn truncated_term(&self) -> u64 {
        self.apply_state
            .truncated_state
            .as_ref()
            .map_or(0, |t| t.term)
    }

    /// The index of the first entry still held in the log (one past the
    /// truncated index).
    pub fn first_index(&self) -> u64 {
        self.truncated_index() + 1
    }

    /// The index of the last entry written to the log (written to the raft
    /// tree, not necessarily fsynced yet).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The store's snapshot directory, where snapshot files for this region
    /// are generated and received.
    pub fn snap_manager(&self) -> &SnapManager {
        &self.snap_mgr
    }

    fn conf_state(&self) -> ConfState {
        crate::region::roles::conf_state(&self.region)
    }

    fn raft_state(&self) -> Result<RaftLocalState> {
        Ok(RaftLocalState {
            hard_state: self.hard_state.write_to_bytes()?,
            last_index: self.last_index,
            last_term: self.last_term,
        })
    }

    /// Writes the log part of a Ready into the raft tree in one atomic batch
    /// (not yet durable: the store writer's flush makes it so). A snapshot, if
    /// any, is applied first. Returns what the snapshot changed.
    pub fn save_ready(
        &mut self,
        snapshot: &Snapshot,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Option<AppliedSnapshot>> {
        let mut raft_wb = sled::Batch::default();
        let mut applied = None;
        if !snapshot.is_empty() {
            applied = Some(self.apply_snapshot(snapshot, &mut raft_wb)?);
        }
        if !entries.is_empty() {
            self.append(entries, &mut raft_wb)?;
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        state::put_raft_state(&mut raft_wb, self.region.id, &self.raft_state()?);
        self.engines.raft.apply_batch(raft_wb)?;
        Ok(applied)
    }

    fn append(&mut self, entries: &[Entry], wb: &mut sled::Batch) -> Result<()> {
        let region_id = self.region.id;
        let first = entries[0].index;
        let last = entries[entries.len() - 1].index;
        if first > self.last_index + 1 {
            panic!(
                "region {region_id}: log gap, appending {first} after last index {}",
                self.last_index
            );
        }
        for e in entries {
            wb.insert(keys::raft_log_key(region_id, e.index), e.write_to_bytes()?);
        }
        // Entries past the new last index belong to a deposed leader's term.
        for idx in last + 1..=self.last_index {
            wb.remove(keys::raft_log_key(region_id, idx));
        }
        self.last_index = last;
        self.last_term = entries[entries.len() - 1].term;
        Ok(())
    }

    /// Step 1 of applying a received snapshot (`snap_apply.rs`): records
    /// the region as Applying it, resets the log to the snapshot's position
    /// and hands the ingest of its data out as a [`Task`]. In memory the
    /// storage is at the snapshot at once (raft reads its terms from here);
    /// on disk the apply state moves only when the ingest is done.
    fn apply_snapshot(
        &mut self,
        snap: &Snapshot,
        raft_wb: &mut sled::Batch,
    ) -> Result<AppliedSnapshot> {
        let meta = snap.get_metadata();
        let data = SnapshotData::decode(snap.data.as_ref())?;
        let region = data
            .region
            .clone()
            .ok_or_else(|| Error::Corruption("snapshot without region".into()))?;
        let path = self.snap_mgr.path(&data.file_name)?;
        let initialized = self.is_initialized();
        let pending = SnapshotApply {
            index: meta.index,
            term: meta.term,
            data: Some(data.clone()),
            had_range: initialized,
            prev_start_key: self.region.start_key.clone(),
            prev_end_key: self.region.end_key.clone(),
        };
        let applying = RegionLocalState {
            state: PeerState::Applying as i32,
            region: Some(region.clone()),
            applying: Some(pending.clone()),
        };
        let mut kv_wb = sled::Batch::default();
        state::put_region_state(&mut kv_wb, region.id, &applying);
        self.engines.kv.apply_batch(kv_wb)?;

        for idx in self.first_index()..=self.last_index {
            raft_wb.remove(keys::raft_log_key(region.id, idx));
        }
        self.last_index = meta.index;
        self.last_term = meta.term;
        self.apply_state = applied_at(meta.index, meta.term);
        let prev_region = std::mem::replace(&mut self.region, region.clone());
        self.tasks
            .borrow_mut()
            .push(Task::ApplySnapshot(Box::new(SnapshotIngest {
                engines: self.engines.clone(),
                path,
                region: region.clone(),
                pending,
            })));
        info!(
            index = meta.index,
            term = meta.term,
            keys = data.key_count,
            "snapshot accepted; ingesting it off the peer's thread"
        );
        Ok(AppliedSnapshot {
            prev_region,
            region,
        })
    }

    /// Asks for log entries `from..=compact_index` to be deleted, after
    /// the apply state recording the truncation has been written. The
    /// deletion is a [`Task`]: thousands of deletes stalled the store's
    /// thread for a hundred milliseconds and more (the put benchmark's
    /// p99.9) when they ran inline.
    pub fn compact_log_to(&mut self, from: u64, compact_index: u64) -> Result<()> {
        if from > compact_index {
            return Ok(());
        }
        self.tasks.borrow_mut().push(Task::DeleteLog(LogDeletion {
            raft: self.engines.raft.clone(),
            background: self.engines.background().clone(),
            region_id: self.region.id,
            from,
            to: compact_index,
        }));
        Ok(())
    }

    /// The background work asked for since the last call.
    pub fn take_tasks(&self) -> Vec<Task> {
        std::mem::take(&mut *self.tasks.borrow_mut())
    }

    /// The result of a `Task::GenerateSnapshot`, for raft's next try.
    pub fn on_snapshot_generated(&self, result: Result<Snapshot>) {
        *self.snap_state.borrow_mut() = SnapState::Generated(result);
    }

    /// Deletes log entries below the first index that a compaction cut
    /// short by a crash left behind.
    fn delete_compacted_leftovers(&self) -> Result<()> {
        let first = self.first_index();
        if self.region.peers.is_empty() || first <= RAFT_INIT_LOG_INDEX + 1 {
            return Ok(());
        }
        let lo = keys::raft_log_key(self.region.id, 0);
        let hi = keys::raft_log_key(self.region.id, first);
        let mut wb = sled::Batch::default();
        let mut n = 0;
        for item in self.engines.raft.range(lo..hi) {
            wb.remove(item?.0);
            n += 1;
        }
        if n > 0 {
            tracing::info!(
                region_id = self.region.id,
                entries = n,
                "deleting compacted log entries left by a crash"
            );
            self.engines.raft.apply_batch(wb)?;
        }
        Ok(())
    }

    /// Deletes a region's raft log and raft state left by an earlier,
    /// initialized peer of it on this store (a destroy cut short by a crash),
    /// so a new peer of the region starts from an empty log. The state of a
    /// peer that never held a log (only a hard state with its vote) is kept:
    /// forgetting a vote could let it vote twice in one term.
    pub fn clear_stale_log(engines: &Engines, region_id: RegionId) -> Result<()> {
        let raft_state = state::raft_state(&engines.raft, region_id)?;
        if raft_state.is_none_or(|s| s.last_index == 0) {
            return Ok(());
        }
        wipe_raft_state(engines, region_id)
    }

    /// Deletes the data of this peer's range into `wb`. An uninitialized peer
    /// has no range yet and must not touch any other region's data.
    fn delete_own_data(&self, wb: &mut sled::Batch) -> Result<()> {
        if self.is_initialized() {
            delete_data_range(
                &self.engines.kv,
                &self.region.start_key,
                &self.region.end_key,
                wb,
            )?;
        }
        Ok(())
    }

    /// Deletes everything this peer stored: log, raft state, apply state, and
    /// the data of its range if it was initialized. Leaves a tombstone region
    /// state with the last known region so stale messages are recognised.
    pub fn destroy(&mut self, tombstone: Region) -> Result<()> {
        let region_id = self.region.id;
        let mut kv_wb = sled::Batch::default();
        self.delete_own_data(&mut kv_wb)?;
        crate::storage::sessions::delete_sessions(&self.engines.kv, region_id, &mut kv_wb)?;
        state::delete_apply_state(&mut kv_wb, region_id);
        let tombstone = RegionLocalState {
            state: PeerState::Tombstone as i32,
            region: Some(tombstone),
            applying: None,
        };
        state::put_region_state(&mut kv_wb, region_id, &tombstone);
        self.engines.kv.apply_batch(kv_wb)?;
        wipe_raft_state(&self.engines, region_id)
    }

    fn read_entry(&self, idx: u64) -> raft::Result<Entry> {
        let v = self
            .engines
            .raft
            .get(keys::raft_log_key(self.region.id, idx))
            .map_err(storage_err)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        let mut e = Entry::default();
        e.merge_from_bytes(&v).map_err(storage_err)?;
        Ok(e)
    }

    /// Asks for a snapshot at the applied index (a [`Task`]).
    fn start_generating(&self) -> raft::Result<()> {
        let term = self.term_of_applied()?;
        let sessions = crate::storage::sessions::load_sessions(&self.engines.kv, self.region.id)
            .map_err(|e| storage_err(e.to_string()))?;
        self.tasks
            .borrow_mut()
            .push(Task::GenerateSnapshot(Box::new(SnapshotTask {
                engines: self.engines.clone(),
                mgr: self.snap_mgr.clone(),
                store_id: self.store_id,
                region: self.region.clone(),
                apply_state: self.apply_state,
                sessions,
                term,
            })));
        *self.snap_state.borrow_mut() = SnapState::Generating;
        Ok(())
    }

    /// Records that `peer` joined the region at `conf_ver`.
    pub fn note_peer_added(&mut self, peer: PeerId, conf_ver: u64) {
        self.peer_added_at.insert(peer, conf_ver);
    }

    /// A snapshot serves peer `to` while it is not older than the log start
    /// (the follower needs the entries right after it) nor the request, its
    /// file is still there, and it was taken after `to` last joined. The
    /// last point matters even when the members look the same: after
    /// "remove p, add p back" an older snapshot lists p too, but a peer built
    /// from it would replay its own removal and destroy itself, again and
    /// again. (A leader restarted since `to` joined has no record and
    /// accepts any snapshot listing `to`: a gap left open.)
    fn snapshot_usable(&self, s: &Snapshot, request_index: u64, to: PeerId) -> bool {
        let meta = s.get_metadata();
        let Ok(data) = SnapshotData::decode(s.data.as_ref()) else {
            return false;
        };
        let Some(snap_region) = data.region else {
            return false;
        };
        let file_exists = self
            .snap_mgr
            .path(&data.file_name)
            .is_ok_and(|p| p.exists());
        let (theirs, ours) = (
            crate::region::epoch(&snap_region),
            crate::region::epoch(&self.region),
        );
        // Other members may differ: raft replays the conf changes after the
        // snapshot. Only `to` itself must be in it, and not from before it
        // last joined.
        let recent_enough = theirs.version == ours.version
            && snap_region.peers.iter().any(|p| p.id == to)
            && self
                .peer_added_at
                .get(&to)
                .is_none_or(|added| theirs.conf_ver >= *added);
        file_exists
            && recent_enough
            && meta.index >= self.truncated_index()
            && meta.index >= request_index
    }

    fn term_of_applied(&self) -> raft::Result<u64> {
        raft::Storage::term(self, self.apply_state.applied_index)
    }
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            panic!(
                "region {}: entries [{low}, {high}) out of bound, last index {}",
                self.region.id, self.last_index
            );
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let lo = keys::raft_log_key(self.region.id, low);
        let hi = keys::raft_log_key(self.region.id, high);
        for item in self.engines.raft.range(lo..hi) {
            let (_, v) = item.map_err(storage_err)?;
            let mut e = Entry::default();
            e.merge_from_bytes(&v).map_err(storage_err)?;
            if e.index != low + out.len() as u64 {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
            size += v.len() as u64;
            // At least one entry is returned, whatever its size.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        if out.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index() {
            return Ok(self.truncated_term());
        }
        if idx < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(PeerStorage::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A cached snapshot serves while it is not older than the log start
        // (a follower needs entries right after it) nor the request.
        if let Some(s) = self.last_snapshot.borrow().as_ref() {
            if self.snapshot_usable(s, request_index, to) {
                return Ok(s.clone());
            }
        }
        let ready = match self.snap_state.replace(SnapState::Idle) {
            SnapState::Generating => {
                *self.snap_state.borrow_mut() = SnapState::Generating;
                return Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ));
            }
            SnapState::Generated(res) => Some(res),
            SnapState::Idle => None,
        };
        match ready {
            Some(Ok(s)) if self.snapshot_usable(&s, request_index, to) => {
                *self.last_snapshot.borrow_mut() = Some(s.clone());
                return Ok(s);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => warn!(error = %e, "snapshot generation failed, retrying"),
            None => {}
        }
        self.start_generating()?;
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
#[path = "peer_storage_tests.rs"]
mod tests;
