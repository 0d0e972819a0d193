//! Failpoints at IO boundaries. Failpoints are process-wide, so they live in
//! a binary of their own and its tests hold `fail::FailScenario` (which
//! serialises them).
//!
//! One region's fault stays in that region: an apply error in one region's
//! peer stops that peer alone (its commands are answered Undetermined); the
//! store restarts it from disk, its other regions serve throughout, and the
//! restarted peer catches up.

use std::time::{Duration, Instant};

use tessel::testkit::Cluster;
use tessel::Config;

#[actix::test]
async fn an_apply_error_stops_only_its_region_and_the_peer_comes_back() {
    tessel::logging::init_for_tests();
    let scenario = fail::FailScenario::setup();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"a", b"1").await;
    cluster.must_put(b"z", b"1").await;
    let region = cluster.get_region(b"a").await;
    cluster.must_split(region.id, b"m").await;
    let right = cluster.get_region(b"z").await;
    let left = cluster.get_region(b"a").await;
    assert_ne!(left.id, right.id);
    let failures_before = tessel::metrics::PEER_FAILURES.get();

    // Store 1's peer of the right region fails at its next apply.
    fail::cfg("apply::entry", &format!("return(1:{})", right.id)).expect("a valid failpoint");
    cluster.must_put(b"z2", b"2").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.peer_status(1, right.id).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the failpoint never stopped the peer"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // The store and its other region keep serving, store 1 included.
    cluster.must_put(b"a2", b"2").await;
    cluster.must_store_get_equal(1, b"a2", Some(b"2")).await;
    assert_eq!(cluster.must_get(b"z2").await, b"2");

    // Healed, the peer is restarted from disk and catches up.
    fail::remove("apply::entry");
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.store_get(1, b"z2").as_deref() != Some(b"2".as_slice()) {
        assert!(
            Instant::now() < deadline,
            "store 1's peer of region {} never came back",
            right.id
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.must_put(b"z3", b"3").await;
    cluster.must_store_get_equal(1, b"z3", Some(b"3")).await;
    assert!(cluster.store_region_ids(1).contains(&right.id));
    assert!(tessel::metrics::PEER_FAILURES.get() > failures_before);
    cluster.shutdown().await;
    scenario.teardown();
}
