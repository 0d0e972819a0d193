//! Splits: the "one split" scenario of SCENARIOS.md, a manual split with the
//! region errors a stale client meets, and the generic rows with split.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessel::proto::metapb::Region;
use tessel::proto::raft_cmdpb::{CmdType, GetRequest, RaftCmdRequest, RaftRequestHeader, Request};
use tessel::testkit::{Cluster, Filter};
use tessel::Config;

use crate::harness::{run, Workload};

fn get_request(region: &Region, key: &[u8]) -> RaftCmdRequest {
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: None,
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: vec![Request {
            cmd_type: CmdType::Get as i32,
            get: Some(GetRequest {
                cf: 0,
                key: key.to_vec(),
            }),
            ..Default::default()
        }],
        admin_request: None,
    }
}

/// The region error a region's leader answers `req` with, retrying while
/// the answer is NotLeader or missing (leadership may move meanwhile).
async fn leader_error(cluster: &Cluster, req: RaftCmdRequest) -> tessel::proto::errorpb::Error {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no leader answered");
        let region_id = req.header.as_ref().unwrap().region_id;
        let Some(leader) = cluster.leader_of_region(region_id).await else {
            continue;
        };
        let mut req = req.clone();
        req.header.as_mut().unwrap().peer = Some(leader);
        let Ok(resp) = cluster.call_command(req, Duration::from_secs(1)).await else {
            continue;
        };
        let err = resp
            .header
            .and_then(|h| h.error)
            .expect("the request must fail");
        if err.not_leader.is_none() {
            return err;
        }
    }
}

/// Waits until the scheduler shows the regions of `a` and `b` as different.
async fn wait_split(cluster: &Cluster, a: &[u8], b: &[u8]) -> (Region, Region) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = cluster.get_region(a).await;
        let right = cluster.get_region(b).await;
        if left.id != right.id {
            return (left, right);
        }
        assert!(Instant::now() < deadline, "region never split");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn one_split() {
    crate::harness::init();
    let mut cfg = Config::for_tests();
    cfg.region_max_size_bytes = 800;
    cfg.region_split_size_bytes = 500;
    let cluster = Cluster::new(5, cfg);
    cluster.start().await;
    cluster.must_put(b"k1", b"v1").await;
    cluster.must_put(b"k2", b"v2").await;
    let region = cluster.get_region(b"k1").await;
    assert_eq!(region.id, cluster.get_region(b"k2").await.id);

    // Store 5 misses the split: it must not take the new region's peer or
    // snapshot while it still holds the unsplit range.
    cluster.add_filter(Filter::Partition(vec![1, 2, 3, 4], vec![5]));
    for i in 100..200 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        cluster.must_put(k.as_bytes(), v.as_bytes()).await;
    }
    // The split happens while store 5 is cut off.
    let (left, right) = wait_split(&cluster, b"k1", b"k2").await;
    assert!(cluster.peer_status(5, right.id).await.is_none());
    // Heal, except that store 5 keeps missing the old region's log for a
    // while: the right half's leader reaches it first, and must not create
    // a peer where store 5 still holds the unsplit range.
    cluster.clear_filters();
    let old_region = region.id;
    cluster.add_filter(Filter::Custom(Arc::new(move |m| {
        let touches_5 = m.to_peer.is_some_and(|p| p.store_id == 5)
            || m.from_peer.is_some_and(|p| p.store_id == 5);
        !(touches_5 && m.region_id == old_region)
    })));
    actix_rt::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        cluster.peer_status(5, right.id).await.is_none(),
        "store 5 created a peer of region {} over a range it still holds",
        right.id
    );
    cluster.clear_filters();

    assert_eq!(left.start_key, region.start_key);
    assert_eq!(left.end_key, right.start_key);
    assert_eq!(right.end_key, region.end_key);
    assert!(!left.end_key.is_empty());

    // k2 now lives in the right half: the left leader refuses it.
    let err = leader_error(&cluster, get_request(&left, b"k2")).await;
    assert!(
        err.key_not_in_region.is_some(),
        "expected KeyNotInRegion, got {err:?}"
    );

    cluster
        .must_store_get_equal(5, b"k100", Some(b"v100"))
        .await;
    // Store 5 applied the split itself and runs the right half too.
    let deadline = Instant::now() + Duration::from_secs(6);
    while cluster.peer_status(5, right.id).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "store 5 never created region {}",
            right.id
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Its peer was born at the initial index, not caught up by a snapshot:
    // the right half's leader could not create one while store 5 still
    // held the unsplit range.
    let applied = cluster.apply_state(5, right.id).expect("apply state");
    assert_eq!(applied.truncated_state.map(|t| t.index), Some(5));
    cluster.shutdown().await;
}

/// A manual split: both halves serve, a stale epoch is refused with the
/// current regions, a scan crosses the boundary, and a restart keeps both.
#[actix::test]
async fn manual_split_and_stale_clients() {
    crate::harness::init();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    for k in [&b"a"[..], b"b", b"m", b"x"] {
        cluster.must_put(k, k).await;
    }
    let before = cluster.get_region(b"a").await;
    cluster.must_split(before.id, b"m").await;
    // Splitting at an existing boundary is already done.
    cluster.must_split(before.id, b"m").await;
    let (left, right) = wait_split(&cluster, b"a", b"m").await;
    assert_eq!(left.id, before.id);
    assert_eq!(
        (left.end_key.as_slice(), right.start_key.as_slice()),
        (&b"m"[..], &b"m"[..])
    );
    let (le, re) = (left.region_epoch.unwrap(), right.region_epoch.unwrap());
    assert_eq!(le.version, before.region_epoch.unwrap().version + 1);
    assert_eq!(le, re);
    assert_eq!(right.peers.len(), before.peers.len());

    // A client still holding the unsplit region is told the current ones.
    let err = leader_error(&cluster, get_request(&before, b"a")).await;
    let current = err
        .epoch_not_match
        .clone()
        .unwrap_or_else(|| panic!("expected EpochNotMatch, got {err:?}"))
        .current_regions;
    assert!(current.iter().any(|r| r.id == left.id && r.end_key == b"m"));
    assert!(current.iter().any(|r| r.id == right.id), "{current:?}");
    // A region id no store has.
    let mut missing = get_request(&left, b"a");
    missing.header.as_mut().unwrap().region_id = 999;
    missing.header.as_mut().unwrap().peer = Some(left.peers[0]);
    let resp = cluster
        .call_command(missing, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(resp
        .header
        .unwrap()
        .error
        .unwrap()
        .region_not_found
        .is_some());

    // Both halves serve reads and writes; a scan crosses the boundary.
    cluster.must_put(b"n", b"n").await;
    assert_eq!(cluster.must_get(b"x").await, b"x");
    let keys: Vec<Vec<u8>> = cluster
        .scan(b"", b"")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"m".to_vec(),
            b"n".to_vec(),
            b"x".to_vec()
        ]
    );

    // Splitting outside the region is refused.
    assert!(cluster.try_split(left.id, b"z").await.is_err());

    // Both halves survive a crash of every store.
    cluster.crash_all().await;
    for s in 1..=3 {
        cluster.start_store(s).await;
    }
    cluster.must_put(b"y", b"y").await;
    assert_eq!(cluster.must_get(b"b").await, b"b");
    let keys = cluster.scan(b"", b"").await;
    assert_eq!(keys.len(), 6);
    for s in 1..=3 {
        cluster.must_store_get_equal(s, b"y", Some(b"y")).await;
    }
    cluster.shutdown().await;
}

fn w(clients: usize) -> Workload {
    Workload {
        clients,
        split: true,
        ..Default::default()
    }
}

#[actix::test]
async fn split_recover() {
    run(Workload {
        crash: true,
        ..w(1)
    })
    .await;
}

#[actix::test]
async fn split_recover_many_clients() {
    run(Workload {
        crash: true,
        ..w(20)
    })
    .await;
}

#[actix::test]
async fn split_unreliable() {
    run(Workload {
        unreliable: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn split_unreliable_recover() {
    run(Workload {
        unreliable: true,
        crash: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn split_conf_change_snapshot_unreliable_recover() {
    run(Workload {
        unreliable: true,
        crash: true,
        log_gc_limit: Some(100),
        conf_change: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn split_conf_change_snapshot_unreliable_recover_partitions() {
    run(Workload {
        unreliable: true,
        crash: true,
        partitions: true,
        log_gc_limit: Some(100),
        conf_change: true,
        ..w(5)
    })
    .await;
}
