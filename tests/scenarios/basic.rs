//! The smoke scenario: put, get and delete on three stores.

use tessel::testkit::Cluster;
use tessel::Config;

#[actix::test]
async fn smoke_put_get_delete() {
    crate::harness::init();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k1", b"v1").await;
    assert_eq!(cluster.must_get(b"k1").await, b"v1".to_vec());
    for s in 1..=3 {
        cluster.must_store_get_equal(s, b"k1", Some(b"v1")).await;
    }
    cluster.must_delete(b"k1").await;
    assert_eq!(cluster.get(b"k1").await, None);
    cluster.shutdown().await;
}
