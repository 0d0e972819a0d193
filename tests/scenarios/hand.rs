//! The hand-written scenarios of SCENARIOS.md: "one partition", "one snapshot".

use std::time::{Duration, Instant};

use tessel::keys::CF_LOCK;
use tessel::testkit::{Cluster, Filter};
use tessel::Config;

/// Waits until a store other than those in `exclude` leads region 1.
async fn leader_outside(cluster: &Cluster, exclude: &[u64]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = cluster.leader_of_region(1).await {
            if !exclude.contains(&l.store_id) {
                return l.store_id;
            }
        }
        assert!(Instant::now() < deadline, "no leader outside {exclude:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix::test]
async fn one_partition() {
    crate::harness::init();
    let cluster = Cluster::new(5, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k0", b"v0").await;
    let leader = cluster
        .leader_of_region(1)
        .await
        .expect("a leader")
        .store_id;

    // The leader with two others on one side, the remaining two on the other.
    let others: Vec<u64> = (1..=5).filter(|s| *s != leader).collect();
    let majority = vec![leader, others[0], others[1]];
    let minority = vec![others[2], others[3]];
    cluster.add_filter(Filter::Partition(majority.clone(), minority.clone()));
    cluster.must_put(b"k1", b"v1").await;
    assert_eq!(cluster.must_get(b"k1").await, b"v1");
    cluster
        .must_store_get_equal(others[0], b"k1", Some(b"v1"))
        .await;
    for s in &minority {
        assert_eq!(
            cluster.store_get(*s, b"k1"),
            None,
            "isolated store {s} got k1"
        );
    }

    // Now the old leader sits in a minority of two.
    cluster.clear_filters();
    let old_minority = vec![leader, others[0]];
    let new_majority = vec![others[1], others[2], others[3]];
    cluster.add_filter(Filter::Partition(
        old_minority.clone(),
        new_majority.clone(),
    ));
    leader_outside(&cluster, &old_minority).await;
    assert_eq!(cluster.must_get(b"k1").await, b"v1");
    cluster.must_put(b"k1", b"changed").await;
    for s in &old_minority {
        assert_eq!(
            cluster.store_get(*s, b"k1").as_deref(),
            Some(&b"v1"[..]),
            "store {s}"
        );
    }

    // Heal: the old leader steps down and converges.
    cluster.clear_filters();
    cluster.must_put(b"k2", b"v2").await;
    cluster
        .must_store_get_equal(leader, b"k1", Some(b"changed"))
        .await;
    cluster
        .must_store_get_equal(leader, b"k2", Some(b"v2"))
        .await;
    cluster.shutdown().await;
}

#[actix::test]
async fn one_snapshot() {
    crate::harness::init();
    let mut cfg = Config::for_tests();
    cfg.raft_log_gc_count_limit = 10;
    let cluster = Cluster::new(3, cfg);
    cluster.start().await;

    cluster.must_put_cf(CF_LOCK, b"k1", b"v1").await;
    cluster.must_put_cf(CF_LOCK, b"k2", b"v2").await;
    let before = cluster.apply_state(1, 1).expect("store 1 has region 1");
    assert_eq!(
        before.truncated_state.map(|t| t.index),
        Some(tessel::storage::RAFT_INIT_LOG_INDEX),
        "no compaction yet"
    );
    wait_cf(&cluster, 1, b"k2", Some(b"v2")).await;

    // Store 1 misses a stretch of log long enough to be compacted away.
    cluster.add_filter(Filter::Isolate(1));
    for i in 0..15 {
        let k = format!("k{}", 100 + i);
        cluster
            .must_put_cf(CF_LOCK, k.as_bytes(), k.as_bytes())
            .await;
    }
    cluster.must_delete_cf(CF_LOCK, b"k2").await;
    crate::harness::check_log_bounded(&cluster, 10).await;
    assert_eq!(cluster.store_get_cf(1, CF_LOCK, b"k100"), None);

    // Healed, store 1 is caught up by a snapshot that also removes k2.
    cluster.clear_filters();
    wait_cf(&cluster, 1, b"k1", Some(b"v1")).await;
    wait_cf(&cluster, 1, b"k100", Some(b"k100")).await;
    wait_cf(&cluster, 1, b"k2", None).await;

    // Restarted, store 1 serves from its own disk.
    cluster.crash_store(1).await;
    cluster.start_store(1).await;
    wait_cf(&cluster, 1, b"k1", Some(b"v1")).await;
    wait_cf(&cluster, 1, b"k114", Some(b"k114")).await;
    for s in 1..=3 {
        let a = cluster.apply_state(s, 1).expect("region 1 everywhere");
        let truncated = a.truncated_state.map_or(0, |t| t.index);
        assert!(
            a.applied_index - truncated <= 20,
            "store {s}: log not compacted"
        );
    }
    cluster.shutdown().await;
}

async fn wait_cf(cluster: &Cluster, store: u64, key: &[u8], value: Option<&[u8]>) {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let got = cluster.store_get_cf(store, CF_LOCK, key);
        if got.as_deref() == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "store {store}: {:?} is {got:?}",
            String::from_utf8_lossy(key)
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A store (the leader's) crashes in the middle of a workload and comes
/// back on its own data: nothing acknowledged is lost, and it catches up.
#[actix::test]
async fn restart_one_store_mid_workload() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    crate::harness::init();
    let cluster = Cluster::new(5, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"warm", b"up").await;
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|c| {
            let (cluster, done) = (cluster.clone(), done.clone());
            actix_rt::spawn(async move {
                let mut acked = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let k = format!("w{c}-{acked:06}");
                    cluster.must_put(k.as_bytes(), k.as_bytes()).await;
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    let victim = cluster
        .leader_of_region(1)
        .await
        .expect("a leader")
        .store_id;
    cluster.crash_store(victim).await;
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_store(victim).await;
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    done.store(true, Ordering::Relaxed);
    for (c, w) in writers.into_iter().enumerate() {
        let acked = w.await.expect("writer does not panic");
        assert!(acked > 0, "writer {c} made no progress");
        for i in 0..acked {
            let k = format!("w{c}-{i:06}");
            assert_eq!(
                cluster.get(k.as_bytes()).await.as_deref(),
                Some(k.as_bytes())
            );
        }
        let last = format!("w{c}-{:06}", acked - 1);
        cluster
            .must_store_get_equal(victim, last.as_bytes(), Some(last.as_bytes()))
            .await;
    }
    cluster.shutdown().await;
}
