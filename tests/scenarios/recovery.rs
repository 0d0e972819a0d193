//! Every region recovers: the cases of the "every region recovers" issue,
//! each made to happen with filters rather than hoped for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::MessageType;
use tessel::proto::metapb::Peer;
use tessel::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, ChangePeerRequest, CmdType, ConfChangeType, GetRequest,
    RaftCmdRequest, RaftRequestHeader, Request,
};
use tessel::proto::raft_serverpb::RaftMessage;
use tessel::testkit::{Cluster, Filter};
use tessel::Config;

fn store_of(p: &Option<Peer>) -> u64 {
    p.map_or(0, |p| p.store_id)
}

fn is(m: &RaftMessage, t: MessageType) -> bool {
    m.msg_type == t as i32
}

/// A peer cut off from its region campaigns again every election timeout.
/// With pre-vote its pre-vote term never moves, and each campaign's
/// requests used to be added to the list re-sent every tick: one stuck
/// peer's traffic grew without bound. Only the latest request to each voter
/// may be re-sent, so it sends at most a few messages per tick.
#[actix::test]
async fn a_stuck_campaign_sends_a_bounded_number_of_vote_requests() {
    crate::harness::init();
    let cfg = Config::for_tests();
    let tick = cfg.raft_base_tick_interval;
    let cluster = Cluster::new(3, cfg);
    cluster.start().await;
    cluster.must_put(b"k", b"v").await;
    let leader = cluster.leader_of_region(1).await.expect("a leader");
    let cut = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != leader.store_id)
        .expect("a follower store");
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    cluster.add_filter(Filter::Custom(Arc::new(move |m: &RaftMessage| {
        if store_of(&m.from_peer) == cut {
            counter.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        store_of(&m.to_peer) != cut
    })));
    // About eight elections' worth of a stuck campaign (an election timeout
    // is 10 to 20 ticks).
    let started = Instant::now();
    actix_rt::time::sleep(tick * 160).await;
    let ticks = started.elapsed().as_millis() as u64 / tick.as_millis() as u64;
    let sent = sent.load(Ordering::Relaxed);
    // Per tick: one re-sent request to each of the two other voters, plus
    // a new campaign's two now and then. A busy machine runs fewer ticks,
    // never more, than the elapsed time allows.
    assert!(
        sent <= 3 * ticks + 10,
        "the cut-off peer sent {sent} messages in {ticks} ticks"
    );
    cluster.clear_filters();
    cluster.must_put(b"k2", b"v2").await;
    cluster.shutdown().await;
}

/// raft-rs drops a read-index request made before a new leader has
/// committed an entry of its term. Such a read must wait for that commit
/// and then be served, not be lost and fail two election timeouts later.
/// The new leader's append responses are held back so its term's first
/// entry cannot commit while the read arrives.
#[actix::test]
async fn a_read_right_after_a_leader_change_is_served_once_the_term_commits() {
    crate::harness::init();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k", b"v").await;
    let old = cluster.leader_of_region(1).await.expect("a leader");
    let region = cluster.get_region(b"k").await;
    let new = *region
        .peers
        .iter()
        .find(|p| p.id != old.id)
        .expect("three peers");
    cluster.add_filter(Filter::Custom(Arc::new(move |m: &RaftMessage| {
        !(is(m, MessageType::MsgAppendResponse) && store_of(&m.to_peer) == new.store_id)
    })));
    cluster.must_transfer_leader(region.id, new).await;
    let read = RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: Some(new),
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: vec![Request {
            cmd_type: CmdType::Get as i32,
            get: Some(GetRequest {
                cf: 0,
                key: b"k".to_vec(),
            }),
            ..Default::default()
        }],
        admin_request: None,
    };
    let c = cluster.clone();
    let answer = actix_rt::spawn(async move {
        c.call_store(new.store_id, read, Duration::from_secs(10))
            .await
    });
    // Hold the commit back for a while (less than the two election
    // timeouts after which an unconfirmed read fails), then let it go.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    cluster.clear_filters();
    let resp = answer
        .await
        .expect("the read task")
        .expect("the new leader answers");
    let header = resp.header.unwrap_or_default();
    assert!(
        header.error.is_none(),
        "the read failed: {:?}",
        header.error
    );
    assert_eq!(
        resp.responses
            .first()
            .and_then(|r| r.get.as_ref())
            .map(|g| g.value.clone()),
        Some(b"v".to_vec())
    );
    cluster.shutdown().await;
}

/// Two replicas of one region on one store would make that store count
/// twice in every quorum. An AddNode for a store that already holds a
/// replica is refused at once, whatever peer id it names.
#[actix::test]
async fn a_second_replica_on_one_store_is_refused() {
    crate::harness::init();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k", b"v").await;
    let region = cluster.get_region(b"k").await;
    let leader = cluster.leader_of_region(region.id).await.expect("a leader");
    let store = region.peers[0].store_id;
    let second = cluster.alloc_peer(store);
    let add = RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: Some(leader),
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: vec![],
        admin_request: Some(AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerRequest {
                change_type: ConfChangeType::AddNode as i32,
                peer: Some(second),
            }),
            ..Default::default()
        }),
    };
    let resp = cluster
        .call_store(leader.store_id, add, Duration::from_secs(5))
        .await
        .expect("the leader answers");
    let error = resp.header.and_then(|h| h.error).expect("a refusal");
    assert!(
        error.invalid_request.is_some(),
        "expected InvalidRequest, got {error:?}"
    );
    // The scheduler's operator for the same thing is dropped, not retried
    // forever, and the region keeps one replica per store.
    cluster.scheduler().with(|s| {
        s.add_operator(
            region.id,
            tessel::proto::schedulerpb::Operator {
                kind: tessel::proto::schedulerpb::OperatorKind::AddPeer as i32,
                peer: Some(second),
                split_key: vec![],
                replaced: None,
            },
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .scheduler()
        .with(|s| s.operator(region.id).is_some())
    {
        assert!(Instant::now() < deadline, "the operator was never dropped");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.must_put(b"k2", b"v2").await;
    let region = cluster.get_region(b"k").await;
    let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    stores.sort_unstable();
    stores.dedup();
    assert_eq!(stores.len(), region.peers.len(), "{region:?}");
    cluster.shutdown().await;
}

/// How the zombie of `zombie_is_collected` may learn of its removal.
#[derive(Clone, Copy, Debug)]
enum Rescue {
    /// Only by asking the scheduler: every tombstone notice is dropped.
    Scheduler,
    /// Only by a store that tombstoned the region: the scheduler is asked
    /// too late to matter.
    Notice,
}

/// Region {1, 2, 3}; store 1 is cut off while the region moves to
/// {4, 5, 6}, so every old fellow member of store 1's peer is gone and
/// nothing running in the region will ever talk to it again. The region
/// then splits and the right half gets a replica on store 1, which store 1
/// must refuse while the zombie holds the whole key space. The zombie must
/// be collected and the right half's replica caught up.
async fn zombie_is_collected(rescue: Rescue) {
    let mut cfg = Config::for_tests();
    if let Rescue::Notice = rescue {
        cfg.max_leader_missing_duration = Duration::from_secs(3600);
    }
    let cluster = Cluster::new(6, cfg);
    cluster.start().await;
    cluster.must_put(b"a", b"1").await;
    for s in 4..=6 {
        cluster
            .must_remove_peer(1, Peer { id: s, store_id: s })
            .await;
    }
    cluster
        .must_transfer_leader(1, Peer { id: 2, store_id: 2 })
        .await;
    cluster.must_put(b"b", b"2").await;
    cluster.must_store_get_equal(1, b"b", Some(b"2")).await;

    cluster.add_filter(Filter::Isolate(1));
    for s in 4..=6 {
        let added = cluster.alloc_peer(s);
        cluster.must_add_peer(1, added).await;
        let gone = Peer {
            id: s - 3,
            store_id: s - 3,
        };
        cluster.must_remove_peer(1, gone).await;
    }
    cluster.must_split(1, b"m").await;
    let right = cluster.get_region(b"z").await;
    assert_ne!(right.id, 1, "the split made a right half");
    cluster.clear_filters();
    if let Rescue::Scheduler = rescue {
        cluster.add_filter(Filter::Custom(Arc::new(|m: &RaftMessage| {
            !(m.is_tombstone && store_of(&m.to_peer) == 1)
        })));
    }
    let on_one = cluster.alloc_peer(1);
    cluster.scheduler().with(|s| {
        s.add_operator(
            right.id,
            tessel::proto::schedulerpb::Operator {
                kind: tessel::proto::schedulerpb::OperatorKind::AddPeer as i32,
                peer: Some(on_one),
                split_key: vec![],
                replaced: None,
            },
        )
    });
    cluster.must_put(b"z", b"3").await;
    // The zombie goes first, then the right half's peer is created,
    // caught up by a snapshot, and serves its range.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.store_get(1, b"z").as_deref() != Some(b"3".as_slice()) {
        assert!(
            Instant::now() < deadline,
            "{rescue:?}: store 1 never got the right half; its regions: {:?}",
            cluster.store_region_ids(1)
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !cluster.store_region_ids(1).contains(&1),
        "the zombie is still on store 1"
    );
    // Its data of the left half is gone with it.
    assert_eq!(cluster.store_get(1, b"a"), None);
    cluster.shutdown().await;
}

#[actix::test]
async fn a_zombie_asks_the_scheduler_and_goes() {
    crate::harness::init();
    zombie_is_collected(Rescue::Scheduler).await;
}

#[actix::test]
async fn a_zombie_is_told_by_a_store_that_tombstoned_its_region() {
    crate::harness::init();
    zombie_is_collected(Rescue::Notice).await;
}

/// A replica added and removed again before its snapshot arrived: the
/// uninitialized peer its leader's first message created on store 4 waits
/// for a snapshot that never comes, and must be collected.
#[actix::test]
async fn an_uninitialized_peer_whose_addition_was_undone_goes() {
    crate::harness::init();
    let cluster = Cluster::new(4, Config::for_tests());
    cluster.start().await;
    cluster
        .must_remove_peer(1, Peer { id: 4, store_id: 4 })
        .await;
    cluster.must_put(b"k", b"v").await;
    cluster.add_filter(Filter::DropType(MessageType::MsgSnapshot));
    let added = cluster.alloc_peer(4);
    // It joins as a learner, never promoted: it has no log to vote with.
    cluster.scheduler().with(|s| {
        s.add_operator(
            1,
            tessel::proto::schedulerpb::Operator {
                kind: tessel::proto::schedulerpb::OperatorKind::AddPeer as i32,
                peer: Some(added),
                split_key: vec![],
                replaced: None,
            },
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.store_region_ids(4).contains(&1) {
        assert!(
            Instant::now() < deadline,
            "the leader never reached store 4"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let region = cluster
        .scheduler()
        .with(|s| s.get_region_by_id(1))
        .expect("known")
        .region;
    assert!(
        !tessel::region::roles::is_voter(&region, added.id),
        "a peer without its snapshot votes: {region:?}"
    );
    cluster.must_remove_peer(1, added).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.store_region_ids(4).contains(&1) {
        assert!(
            Instant::now() < deadline,
            "the uninitialized peer was never collected"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let state = cluster.region_state(4, 1).expect("a tombstone");
    assert_eq!(
        state.state,
        tessel::proto::raft_serverpb::PeerState::Tombstone as i32
    );
    cluster.clear_filters();
    cluster.must_put(b"k2", b"v2").await;
    cluster.shutdown().await;
}

/// The epoch's conf_ver of the region as the scheduler knows it.
fn conf_ver(cluster: &Cluster, region_id: u64) -> u64 {
    cluster
        .scheduler()
        .with(|s| s.get_region_by_id(region_id))
        .and_then(|i| i.region.region_epoch)
        .map_or(0, |e| e.conf_ver)
}

/// A replica is moved with one joint change: the new peer joins as a
/// learner, one ConfChangeV2 promotes it and demotes the old one, raft
/// leaves the joint configuration, and the old learner is removed: four
/// applied changes, each moving conf_ver by one. A moved leader hands its
/// leadership over first. Data and writes carry on throughout.
#[actix::test]
async fn a_replica_moves_through_one_joint_change() {
    use tessel::region::roles;
    crate::harness::init();
    let cluster = Cluster::new(4, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k", b"v0").await;
    let region = cluster.get_region(b"k").await;
    cluster
        .must_remove_peer(region.id, Peer { id: 4, store_id: 4 })
        .await;
    let leader = cluster.leader_of_region(region.id).await.expect("a leader");
    let follower = *region
        .peers
        .iter()
        .find(|p| p.id != leader.id && p.store_id != 4)
        .expect("a follower");

    // A follower moves to store 4.
    let before = conf_ver(&cluster, region.id);
    let on_four = cluster.alloc_peer(4);
    cluster
        .must_replace_peer(region.id, follower, on_four)
        .await;
    assert_eq!(conf_ver(&cluster, region.id), before + 4);
    cluster.must_put(b"k", b"v1").await;
    cluster.must_store_get_equal(4, b"k", Some(b"v1")).await;

    // The leader moves back to the follower's store: it hands over first.
    let leader = cluster.leader_of_region(region.id).await.expect("a leader");
    let back = cluster.alloc_peer(follower.store_id);
    cluster.must_replace_peer(region.id, leader, back).await;
    let info = cluster
        .scheduler()
        .with(|s| s.get_region_by_id(region.id))
        .expect("known");
    assert_ne!(info.leader.map(|l| l.id), Some(leader.id));
    assert_eq!(info.region.peers.len(), 3);
    assert!(info.region.roles.is_empty(), "{:?}", info.region);
    assert!(roles::is_voter(&info.region, back.id));
    cluster.must_put(b"k", b"v2").await;
    cluster
        .must_store_get_equal(follower.store_id, b"k", Some(b"v2"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster
        .store_region_ids(leader.store_id)
        .contains(&region.id)
    {
        assert!(Instant::now() < deadline, "the moved leader is not gone");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

/// A new replica added while writes never stop catches up and is promoted:
/// the leader keeps the log the learner still needs after its snapshot (log
/// GC respects followers), so it is not sent snapshot after snapshot, and
/// it votes only once its log is close to the leader's.
#[actix::test]
async fn a_new_peer_catches_up_under_sustained_writes() {
    use std::sync::atomic::AtomicBool;
    crate::harness::init();
    let mut cfg = Config::for_tests();
    cfg.raft_log_gc_count_limit = 40;
    let cluster = Cluster::new(3, cfg);
    cluster.start().await;
    cluster.must_put(b"k0", b"v").await;
    let region = cluster.get_region(b"k0").await;
    cluster
        .must_remove_peer(region.id, Peer { id: 3, store_id: 3 })
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (cluster, stop, written) = (cluster.clone(), stop.clone(), written.clone());
        writers.push(actix_rt::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                let key = format!("w{w}-{i:06}");
                cluster.must_put(key.as_bytes(), &[b'x'; 256]).await;
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            i
        }));
    }
    // Far more than the log keeps is written before the new peer joins.
    let deadline = Instant::now() + Duration::from_secs(30);
    while written.load(Ordering::Relaxed) < 400 {
        assert!(Instant::now() < deadline, "writes do not go through");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let new = cluster.alloc_peer(3);
    let at_add = written.load(Ordering::Relaxed);
    let started = Instant::now();
    cluster
        .try_add_peer(region.id, new)
        .await
        .unwrap_or_else(|e| panic!("added under writes: {e}"));
    let took = started.elapsed();
    let during = written.load(Ordering::Relaxed) - at_add;
    stop.store(true, Ordering::Relaxed);
    let mut last = Vec::new();
    for (w, h) in writers.into_iter().enumerate() {
        let n = h.await.expect("writer");
        last.push(format!("w{w}-{:06}", n - 1));
    }
    eprintln!("new peer voting after {took:?}, {during} writes meanwhile");
    assert!(during > 0, "writes stalled while the peer was added");
    for key in last {
        cluster
            .must_store_get_equal(3, key.as_bytes(), Some(&[b'x'; 256]))
            .await;
    }
    cluster.shutdown().await;
}

/// A store killed while it ingests a snapshot finishes the ingest when it
/// starts again (the region is left Applying, `snap_apply.rs`), and the
/// new replica then serves everything the snapshot held. Its ingest thread
/// must die with it: one that went on after the kill once removed the
/// snapshot file from the store's frozen files, and the restarted store
/// could not finish the ingest ("region not started").
#[actix::test]
async fn a_store_killed_mid_ingest_finishes_it_when_it_restarts() {
    use tessel::proto::raft_serverpb::PeerState;
    crate::harness::init();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k0", b"v").await;
    let region = cluster.get_region(b"k0").await;
    cluster
        .must_remove_peer(region.id, Peer { id: 3, store_id: 3 })
        .await;
    // About 24 MiB: an ingest of a few hundred ms, long enough to be
    // caught in the middle. Small values: sled keeps large ones in blob
    // files, whose writes failed for a thread that outlived its store.
    let value = vec![b'x'; 2 << 10];
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (cluster, value) = (cluster.clone(), value.clone());
        writers.push(actix_rt::spawn(async move {
            for i in 0..1536u64 {
                cluster
                    .must_put(format!("bulk-{w}-{i:04}").as_bytes(), &value)
                    .await;
            }
        }));
    }
    for h in writers {
        h.await.expect("writer");
    }
    let new = cluster.alloc_peer(3);
    let adding = {
        let cluster = cluster.clone();
        actix_rt::spawn(async move { cluster.try_add_peer(region.id, new).await })
    };
    let applying = |c: &Cluster| {
        c.region_state(3, region.id)
            .is_some_and(|s| s.state == PeerState::Applying as i32)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !applying(&cluster) {
        assert!(Instant::now() < deadline, "store 3 never began the ingest");
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    cluster.crash_store(3).await;
    // The fault schedule, not a wait for a condition: the store stays down
    // longer than the ingest would have taken had it gone on.
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    cluster.start_store(3).await;
    let _ = adding.await;
    cluster
        .must_store_get_equal(3, b"bulk-7-1535", Some(&value))
        .await;
    cluster
        .must_store_get_equal(3, b"bulk-0-0000", Some(&value))
        .await;
    cluster
        .try_add_peer(region.id, new)
        .await
        .unwrap_or_else(|e| panic!("the replica on store 3 votes after its restart: {e}"));
    let state = cluster.region_state(3, region.id).expect("region state");
    assert_eq!(state.state, PeerState::Normal as i32);
    cluster.shutdown().await;
}
