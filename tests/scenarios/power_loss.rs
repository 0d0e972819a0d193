//! Power loss: a scheduler and three node processes run on a lazy filesystem
//! (tests/harness/lazyfs.rs) that keeps every write nobody fsynced in
//! memory only. Clients write; then every process is killed at once and the
//! unsynced writes are dropped, as a power cut of the whole cluster would.
//! After a restart every node must come up as the store it was, and every
//! acknowledged write must be there.
//!
//! The test needs FUSE (/dev/fuse and the `fuse3` package's fusermount3).
//! Without it, it prints loudly that it did not run; with
//! `TESSEL_REQUIRE_FUSE=1` (set by `.ci/run`) that is a failure instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::network::Cluster;
use crate::harness::lazyfs::{fuse_available, LazyFs};

const WRITERS: usize = 8;

fn power_key(w: usize, i: u64) -> Vec<u8> {
    format!("power-{w}-{i:06}").into_bytes()
}

/// Values of a few sizes, one of them above sled's blob threshold (128 KiB
/// with its default segment size), so blob files are exercised too.
fn power_value(w: usize, i: u64) -> Vec<u8> {
    let mut v = format!("v-{w}-{i}-").into_bytes();
    let len = match i % 50 {
        0 => 200 * 1024,
        n if n % 7 == 0 => 4096,
        _ => 64,
    };
    v.resize(len, b'x');
    v
}

/// Ok(()) when the test can run here; panics when it must run but cannot.
fn fuse_or_skip() -> bool {
    match fuse_available() {
        Ok(()) => true,
        Err(why) => {
            let msg = format!(
                "\n*** POWER-LOSS TEST DID NOT RUN: {why} ***\n\
                 *** install fuse3 and run as root with /dev/fuse to run it ***\n"
            );
            if std::env::var_os("TESSEL_REQUIRE_FUSE").is_some() {
                panic!("{msg}TESSEL_REQUIRE_FUSE is set, so this is a failure");
            }
            eprintln!("{msg}");
            false
        }
    }
}

#[actix::test]
async fn acknowledged_writes_survive_a_power_cut_of_every_node() {
    crate::harness::init();
    if !fuse_or_skip() {
        return;
    }
    let mnt = tempfile::tempdir().expect("a mount point");
    let fs = LazyFs::mount(mnt.path()).expect("the lazy filesystem mounts");
    let mut cluster = Cluster::start(fs.mountpoint(), 3);
    let client = cluster.client();
    client.put(b"warm", b"up").await.expect("a first write");
    super::network::wait_replicas(&client, b"warm", 3).await;

    // Writers run until the power goes; each keeps the writes acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, stop) = (cluster.client(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 5_000 {
                    if client
                        .put(&power_key(w, i), &power_value(w, i))
                        .await
                        .is_ok()
                    {
                        acked.push(i);
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs.stats().fsyncs < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The power cut: every process dies at once, then unsynced data goes.
    for i in 0..3 {
        cluster.kill_node(i);
    }
    cluster.kill_scheduler();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for (w, h) in writers.into_iter().enumerate() {
        let ids = h.await.expect("a writer does not panic");
        acked.extend(ids.into_iter().map(|i| (w, i)));
    }
    let before = fs.stats();
    fs.power_cut();
    eprintln!(
        "power cut after {} acknowledged writes ({} fsyncs, {} directory fsyncs, {} bytes written)",
        acked.len(),
        before.fsyncs,
        before.fsyncdirs,
        before.bytes_written
    );
    assert!(
        acked.len() > 100,
        "only {} writes were acknowledged",
        acked.len()
    );

    // Everything comes back as it was: the same stores, every write.
    cluster.restart_scheduler();
    for i in 0..3 {
        cluster.start_node(i);
    }
    let client = cluster.client();
    let mut lost = Vec::new();
    for &(w, i) in &acked {
        match client.get(&power_key(w, i)).await {
            Ok(Some(v)) if v == power_value(w, i) => {}
            other => lost.push(((w, i), other.map(|v| v.map(|v| v.len())))),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost or wrong after the power cut, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let stores = client
        .scheduler()
        .get_all_stores()
        .await
        .expect("the scheduler lists its stores");
    assert_eq!(
        stores.len(),
        3,
        "a node came back as a new store: {stores:?}"
    );
    drop(cluster);
}
