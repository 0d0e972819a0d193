//! Unit tests of `PeerStorage` against a real sled database.
use raft::eraftpb::{Entry, HardState};
use raft::{GetEntriesContext, Storage};

use super::*;
use crate::proto::metapb::{Peer, RegionEpoch};

fn region() -> Region {
    Region {
        id: 1,
        start_key: vec![],
        end_key: vec![],
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer { id: 1, store_id: 1 }],
        roles: vec![],
    }
}

fn storage(dir: &std::path::Path) -> PeerStorage {
    let engines = Engines::open(dir, 1 << 20).unwrap();
    write_initial_states(&engines, &region()).unwrap();
    let mgr = SnapManager::new(dir.join("snap")).unwrap();
    PeerStorage::new(engines, mgr, 1, region()).unwrap()
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}").into_bytes().into(),
        ..Default::default()
    }
}

/// Runs the background work the storage asked for, as a runtime would.
fn run_tasks(s: &PeerStorage) {
    for task in s.take_tasks() {
        match task {
            crate::storage::tasks::Task::DeleteLog(d) => d.run(),
            crate::storage::tasks::Task::GenerateSnapshot(_) => panic!("no snapshot expected"),
            crate::storage::tasks::Task::ApplySnapshot(t) => t.run().unwrap(),
        }
    }
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

#[test]
fn bootstrap_state_starts_at_the_initial_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    assert_eq!(s.first_index(), RAFT_INIT_LOG_INDEX + 1);
    assert_eq!(Storage::last_index(&s).unwrap(), RAFT_INIT_LOG_INDEX);
    assert_eq!(s.term(RAFT_INIT_LOG_INDEX).unwrap(), RAFT_INIT_LOG_TERM);
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.commit, RAFT_INIT_LOG_INDEX);
    assert_eq!(st.conf_state.voters, vec![1]);
    assert!(matches!(
        s.term(RAFT_INIT_LOG_INDEX - 1),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
}

#[test]
fn append_overwrites_a_conflicting_tail_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = storage(dir.path());
        let ents: Vec<Entry> = (6..=10).map(|i| entry(i, 6)).collect();
        let hs = HardState {
            term: 6,
            commit: 7,
            ..Default::default()
        };
        s.save_ready(&Snapshot::default(), &ents, Some(&hs))
            .unwrap();
        // A new leader's entries replace 8..=10 with 8 alone.
        s.save_ready(&Snapshot::default(), &[entry(8, 7)], None)
            .unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 8);
        assert_eq!(s.term(8).unwrap(), 7);
        let got = s.entries(6, 9, None, ctx()).unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![6, 7, 8]
        );
        // max_size still returns at least one entry.
        assert_eq!(s.entries(6, 9, Some(0), ctx()).unwrap().len(), 1);
        s.engines.flush().unwrap();
    }
    let engines = Engines::open(dir.path(), 1 << 20).unwrap();
    let mgr = SnapManager::new(dir.path().join("snap")).unwrap();
    let s = PeerStorage::new(engines, mgr, 1, region()).unwrap();
    assert_eq!(Storage::last_index(&s).unwrap(), 8);
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 7);
    assert!(s
        .engines
        .raft
        .get(keys::raft_log_key(1, 9))
        .unwrap()
        .is_none());
}

#[test]
fn compaction_moves_the_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = storage(dir.path());
    let ents: Vec<Entry> = (6..=10).map(|i| entry(i, 6)).collect();
    s.save_ready(&Snapshot::default(), &ents, None).unwrap();
    s.apply_state.applied_index = 9;
    s.apply_state.truncated_state = Some(RaftTruncatedState { index: 8, term: 6 });
    s.compact_log_to(6, 8).unwrap();
    run_tasks(&s);
    assert_eq!(s.first_index(), 9);
    assert_eq!(s.term(8).unwrap(), 6);
    assert!(matches!(
        s.entries(7, 10, None, ctx()),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert_eq!(s.entries(9, 11, None, ctx()).unwrap().len(), 2);
}

#[test]
fn snapshot_is_generated_as_a_task_and_replaces_data_when_applied() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    s.engines
        .kv
        .insert(keys::data_key(keys::CF_LOCK, b"a"), b"1".to_vec())
        .unwrap();
    // The first call hands out the generation and asks raft to come back;
    // until its result is in, raft keeps being asked to wait.
    for _ in 0..2 {
        assert!(matches!(
            s.snapshot(0, 1),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
    }
    let mut tasks = s.take_tasks();
    assert_eq!(tasks.len(), 1, "one generation at a time");
    let Some(crate::storage::tasks::Task::GenerateSnapshot(task)) = tasks.pop() else {
        panic!("expected a snapshot task");
    };
    s.on_snapshot_generated(task.run());
    let snap = s.snapshot(0, 1).expect("the generated snapshot");
    assert_eq!(snap.get_metadata().index, RAFT_INIT_LOG_INDEX);

    // A second store receives the file and applies the snapshot over its
    // own stale data for the same range.
    let dir2 = tempfile::tempdir().unwrap();
    let engines2 = Engines::open(dir2.path(), 1 << 20).unwrap();
    engines2
        .kv
        .insert(keys::data_key(keys::CF_DEFAULT, b"stale"), b"x".to_vec())
        .unwrap();
    let mgr2 = SnapManager::new(dir2.path().join("snap")).unwrap();
    let data = SnapshotData::decode(snap.data.as_ref()).unwrap();
    let src = s.snap_manager().path(&data.file_name).unwrap();
    crate::storage::snapshot::copy_in_chunks(&src, &mgr2.path(&data.file_name).unwrap(), 7)
        .unwrap();
    let uninit = Region {
        id: 1,
        ..Default::default()
    };
    let mut s2 = PeerStorage::new(engines2.clone(), mgr2.clone(), 2, uninit).unwrap();
    let applied = s2.save_ready(&snap, &[], None).unwrap().expect("applied");
    assert_eq!(applied.region.peers.len(), 1);
    // Step 1 only records the region as Applying; the data comes with the
    // ingest task, which a crash may interrupt: the next start finishes it.
    let state = crate::storage::state::region_state(&engines2.kv, 1)
        .unwrap()
        .unwrap();
    assert_eq!(state.state, PeerState::Applying as i32);
    assert_eq!(engines2.get_data(keys::CF_LOCK, b"a").unwrap(), None);
    let mut tasks = s2.take_tasks();
    assert!(matches!(
        tasks.pop(),
        Some(crate::storage::tasks::Task::ApplySnapshot(_))
    ));
    drop(tasks);
    let region = crate::storage::snap_apply::resume(&engines2, &mgr2, state).unwrap();
    assert_eq!(region.peers.len(), 1);
    let state = crate::storage::state::region_state(&engines2.kv, 1)
        .unwrap()
        .unwrap();
    assert_eq!(state.state, PeerState::Normal as i32);
    assert_eq!(
        crate::storage::state::apply_state(&engines2.kv, 1)
            .unwrap()
            .unwrap()
            .applied_index,
        RAFT_INIT_LOG_INDEX
    );
    assert!(
        !mgr2.path(&data.file_name).unwrap().exists(),
        "the file goes once ingested"
    );
    assert_eq!(
        engines2.get_data(keys::CF_LOCK, b"a").unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(engines2.get_data(keys::CF_DEFAULT, b"stale").unwrap(), None);
    assert_eq!(s2.applied_index(), RAFT_INIT_LOG_INDEX);
    assert_eq!(s2.first_index(), RAFT_INIT_LOG_INDEX + 1);
}

/// A region born at a split has its apply state (index 5) but no raft
/// state, or only the vote its uninitialized peer cast here: it starts at
/// the initial index, keeping a vote from a newer term.
#[test]
fn split_born_region_starts_at_the_initial_index_and_keeps_its_vote() {
    let dir = tempfile::tempdir().unwrap();
    let engines = Engines::open(dir.path(), 1 << 20).unwrap();
    let mgr = SnapManager::new(dir.path().join("snap")).unwrap();
    let born = |id: u64| Region { id, ..region() };
    for id in [2, 3] {
        let mut kv = sled::Batch::default();
        write_initial_apply_states(&born(id), &mut kv);
        engines.kv.apply_batch(kv).unwrap();
    }
    // Region 3's uninitialized peer voted for peer 9 in term 7.
    let voted = HardState {
        term: 7,
        vote: 9,
        commit: 0,
        ..Default::default()
    };
    let raft_state = RaftLocalState {
        hard_state: voted.write_to_bytes().unwrap(),
        last_index: 0,
        last_term: 0,
    };
    let mut wb = sled::Batch::default();
    state::put_raft_state(&mut wb, 3, &raft_state);
    engines.raft.apply_batch(wb).unwrap();

    let fresh = PeerStorage::new(engines.clone(), mgr.clone(), 1, born(2)).unwrap();
    let st = fresh.initial_state().unwrap();
    assert_eq!(Storage::last_index(&fresh).unwrap(), RAFT_INIT_LOG_INDEX);
    assert_eq!(fresh.term(RAFT_INIT_LOG_INDEX).unwrap(), RAFT_INIT_LOG_TERM);
    assert_eq!(
        (st.hard_state.term, st.hard_state.commit),
        (RAFT_INIT_LOG_TERM, RAFT_INIT_LOG_INDEX)
    );

    let replaced = PeerStorage::new(engines, mgr, 1, born(3)).unwrap();
    let st = replaced.initial_state().unwrap();
    assert_eq!(Storage::last_index(&replaced).unwrap(), RAFT_INIT_LOG_INDEX);
    assert_eq!((st.hard_state.term, st.hard_state.vote), (7, 9));
    assert_eq!(st.hard_state.commit, RAFT_INIT_LOG_INDEX);
}

/// Compacted entries are deleted in the background; entries a crash left
/// behind (the truncation durable, the deletion not) go at the next start.
#[test]
fn compacted_entries_are_deleted_now_or_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = storage(dir.path());
    let ents: Vec<Entry> = (6..=12).map(|i| entry(i, 6)).collect();
    s.save_ready(&Snapshot::default(), &ents, None).unwrap();
    let present = |s: &PeerStorage, i: u64| {
        s.engines
            .raft
            .contains_key(keys::raft_log_key(1, i))
            .unwrap()
    };
    s.apply_state.applied_index = 12;
    s.apply_state.truncated_state = Some(RaftTruncatedState { index: 8, term: 6 });
    s.compact_log_to(6, 8).unwrap();
    // Asked for, not done: the deletion is a task for the runtime.
    assert!(present(&s, 6));
    run_tasks(&s);
    assert!((6..=8).all(|i| !present(&s, i)));
    assert!(present(&s, 9));

    // A crash after the truncation to 10 was recorded, before its deletion.
    s.apply_state.truncated_state = Some(RaftTruncatedState { index: 10, term: 6 });
    let engines = s.engines.clone();
    let mut wb = sled::Batch::default();
    state::put_apply_state(&mut wb, 1, &s.apply_state);
    engines.kv.apply_batch(wb).unwrap();
    drop(s);
    let mgr = SnapManager::new(dir.path().join("snap")).unwrap();
    let s = PeerStorage::new(engines, mgr, 1, region()).unwrap();
    assert!(!present(&s, 9) && !present(&s, 10));
    assert!(present(&s, 11) && present(&s, 12));
    assert_eq!(s.first_index(), 11);
}
