//! `tessel bench --membership`: what membership and leadership changes
//! cost in the in-process cluster, with the scenario timings (50 ms ticks,
//! election after 10 to 20 ticks, 100 ms region heartbeats):
//!
//! - leader transfers, operator to the scheduler seeing the new leader;
//! - what a client sees: the longest gap between two successful writes, and
//!   between two successful reads, around a leader transfer and around a
//!   crash of the leader's store (probes run a closed loop throughout);
//! - one add-peer caught up by snapshot after a bulk load, and one caught
//!   up while writers keep the region busy (log GC must not compact away
//!   what the new replica still needs after its snapshot).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use parking_lot::Mutex;

use tessel::keys::CF_DEFAULT;
use tessel::proto::metapb::Peer;
use tessel::testkit::Cluster;
use tessel::Config;

use super::puts::ms;

/// What membership changes cost.
#[derive(Debug)]
pub struct MembershipReport {
    pub transfers: Vec<Duration>,
    /// (longest write gap, longest read gap) around each leader transfer.
    pub transfer_gaps: Vec<(Duration, Duration)>,
    /// The same around each crash of the leader's store.
    pub crash_gaps: Vec<(Duration, Duration)>,
    pub add_peer_keys: u64,
    pub add_peer_bytes: u64,
    pub add_peer: Duration,
    /// Until a replica added under load was caught up, and the puts/s the
    /// writers made meanwhile.
    pub loaded_add_peer: Duration,
    pub loaded_puts_per_sec: f64,
}

fn worst(gaps: &[(Duration, Duration)]) -> (f64, f64) {
    let w = gaps.iter().map(|g| g.0).max().unwrap_or_default();
    let r = gaps.iter().map(|g| g.1).max().unwrap_or_default();
    (ms(w), ms(r))
}

fn mean(gaps: &[(Duration, Duration)]) -> (f64, f64) {
    let n = gaps.len().max(1) as u32;
    let w = gaps.iter().map(|g| g.0).sum::<Duration>() / n;
    let r = gaps.iter().map(|g| g.1).sum::<Duration>() / n;
    (ms(w), ms(r))
}

impl std::fmt::Display for MembershipReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut t = self.transfers.clone();
        t.sort();
        let avg = t.iter().sum::<Duration>() / t.len().max(1) as u32;
        writeln!(
            f,
            "leader transfer: {} runs, mean {:.0} ms, min {:.0} ms, max {:.0} ms",
            t.len(),
            ms(avg),
            ms(t.first().copied().unwrap_or_default()),
            ms(t.last().copied().unwrap_or_default())
        )?;
        for (what, gaps) in [
            ("leader transfer", &self.transfer_gaps),
            ("leader crash", &self.crash_gaps),
        ] {
            let (mw, mr) = mean(gaps);
            let (ww, wr) = worst(gaps);
            writeln!(
                f,
                "client-side unavailability after a {what} ({} runs): writes mean {mw:.0} ms, max {ww:.0} ms; reads mean {mr:.0} ms, max {wr:.0} ms",
                gaps.len()
            )?;
        }
        writeln!(
            f,
            "add peer with snapshot ({} keys, {:.1} MiB): {:.0} ms until caught up",
            self.add_peer_keys,
            self.add_peer_bytes as f64 / (1024.0 * 1024.0),
            ms(self.add_peer)
        )?;
        write!(
            f,
            "add peer under load ({:.0} puts/s meanwhile): {:.0} ms until caught up",
            self.loaded_puts_per_sec,
            ms(self.loaded_add_peer)
        )
    }
}

/// Closed-loop clients recording when each operation succeeded.
struct Probes {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Instant>>>,
    reads: Arc<Mutex<Vec<Instant>>>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Probes {
    fn start(cluster: &Cluster) -> Probes {
        let stop = Arc::new(AtomicBool::new(false));
        let writes: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let reads: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let mut tasks = Vec::new();
        for write in [true, false] {
            let (cluster, stop) = (cluster.clone(), stop.clone());
            let log = if write { writes.clone() } else { reads.clone() };
            tasks.push(actix_rt::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let ok = if write {
                        let v = i.to_be_bytes();
                        cluster.put_cf(CF_DEFAULT, b"probe", &v).await.is_ok()
                    } else {
                        cluster.get_cf(CF_DEFAULT, b"probe").await.is_ok()
                    };
                    if ok {
                        log.lock().push(Instant::now());
                    }
                }
            }));
        }
        Probes {
            stop,
            writes,
            reads,
            tasks,
        }
    }

    /// The longest gaps between successive writes and successive reads
    /// that end in `[from, from + window]`.
    fn gaps(&self, from: Instant, window: Duration) -> (Duration, Duration) {
        let gap = |log: &Mutex<Vec<Instant>>| {
            let log = log.lock();
            log.windows(2)
                .filter(|w| w[1] >= from && w[1] <= from + window)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(window)
        };
        (gap(&self.writes), gap(&self.reads))
    }

    /// Waits until both probes succeeded after `t` (at most `limit`).
    async fn resumed_after(&self, t: Instant, limit: Duration) {
        let deadline = Instant::now() + limit;
        let after = |log: &Mutex<Vec<Instant>>| log.lock().last().is_some_and(|l| *l > t);
        while !(after(&self.writes) && after(&self.reads)) && Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Runs every measurement of the report.
pub async fn run(keys: u64, value_size: usize) -> anyhow::Result<MembershipReport> {
    let mut cfg = Config::for_tests();
    cfg.raft_log_gc_count_limit = 1000;
    let cluster = Cluster::new(4, cfg);
    cluster.start().await;
    cluster.put_cf(CF_DEFAULT, b"warmup", b"x").await?;

    let mut transfers = Vec::new();
    for round in 0..10u64 {
        let target = Peer {
            id: round % 4 + 1,
            store_id: round % 4 + 1,
        };
        let t = Instant::now();
        cluster.try_transfer_leader(1, target).await?;
        transfers.push(t.elapsed());
    }

    // What a client sees: transfers, then crashes of the leader's store.
    let probes = Probes::start(&cluster);
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let window = Duration::from_secs(5);
    let mut transfer_gaps = Vec::new();
    for round in 0..5u64 {
        let target = Peer {
            id: round % 4 + 1,
            store_id: round % 4 + 1,
        };
        if cluster.leader_of_region(1).await == Some(target) {
            continue;
        }
        let t = Instant::now();
        cluster.try_transfer_leader(1, target).await?;
        probes.resumed_after(Instant::now(), window).await;
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        transfer_gaps.push(probes.gaps(t, window));
    }
    let mut crash_gaps = Vec::new();
    for _ in 0..3 {
        let leader = cluster
            .leader_of_region(1)
            .await
            .ok_or_else(|| anyhow!("region 1 has no leader"))?;
        let t = Instant::now();
        cluster.crash_store(leader.store_id).await;
        probes.resumed_after(t, window).await;
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        crash_gaps.push(probes.gaps(t, window));
        cluster.start_store(leader.store_id).await;
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    }
    probes.stop().await;

    cluster
        .try_remove_peer(1, Peer { id: 4, store_id: 4 })
        .await?;
    let value = vec![b'v'; value_size];
    let mut tasks = Vec::new();
    for c in 0..16u64 {
        let cluster = cluster.clone();
        let value = value.clone();
        tasks.push(actix_rt::spawn(async move {
            for i in (c..keys).step_by(16) {
                cluster
                    .put_cf(CF_DEFAULT, format!("key-{i:08}").as_bytes(), &value)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| anyhow!(e.to_string()))??;
    }
    let add_peer = add_and_catch_up(&cluster, 4).await?;

    // A new replica while 16 writers keep going.
    let removed = cluster
        .get_region(b"")
        .await
        .peers
        .into_iter()
        .find(|p| p.store_id == 4)
        .ok_or_else(|| anyhow!("store 4 holds no replica"))?;
    cluster.try_remove_peer(1, removed).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let puts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for c in 0..16u64 {
        let (cluster, stop, puts, value) =
            (cluster.clone(), stop.clone(), puts.clone(), value.clone());
        writers.push(actix_rt::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load-{:08}", i % 100_000);
                if cluster
                    .put_cf(CF_DEFAULT, key.as_bytes(), &value)
                    .await
                    .is_ok()
                {
                    puts.fetch_add(1, Ordering::Relaxed);
                }
                i += 16;
            }
        }));
    }
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    let before = puts.load(Ordering::Relaxed);
    let loaded_add_peer = add_and_catch_up(&cluster, 4).await;
    let done = puts.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let loaded_add_peer = loaded_add_peer?;
    cluster.shutdown().await;
    Ok(MembershipReport {
        transfers,
        transfer_gaps,
        crash_gaps,
        add_peer_keys: keys,
        add_peer_bytes: keys * (value_size as u64 + 12),
        add_peer,
        loaded_add_peer,
        loaded_puts_per_sec: done as f64 / loaded_add_peer.as_secs_f64().max(1e-3),
    })
}

/// Adds a replica of region 1 on `store` and times it until the scheduler
/// no longer lists it pending (the AddPeer operator is done).
async fn add_and_catch_up(cluster: &Cluster, store: u64) -> anyhow::Result<Duration> {
    let peer = cluster.alloc_peer(store);
    let t = Instant::now();
    cluster.try_add_peer(1, peer).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.scheduler().with(|s| s.operator(1).is_some()) {
        if Instant::now() > deadline {
            return Err(anyhow!("new peer never caught up"));
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(t.elapsed())
}
