//! `tessel bench --ingest`: what a large snapshot costs the other regions
//! of the store that takes it in. Region L (`[, "m")`) is loaded with
//! `--bulk-mib` MiB and loses its replica on store 3; region R (`["m", )`)
//! is led from store 3 and written by probe clients. Then L gets a new
//! replica on store 3, caught up by one snapshot of everything, while the
//! probes keep timing their puts to R: their latency during the ingest,
//! against the same probes before it, is the cost.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::puts::ms;
use tessel::keys::CF_DEFAULT;
use tessel::proto::metapb::Peer;
use tessel::proto::schedulerpb::{Operator, OperatorKind};
use tessel::region::roles;
use tessel::testkit::Cluster;
use tessel::Config;

/// Probe clients writing to region R.
const PROBES: u64 = 4;

/// What `bench --ingest` measured.
pub struct IngestReport {
    bulk_bytes: u64,
    ingest: Duration,
    before: Histogram<u64>,
    during: Histogram<u64>,
    /// Whether R kept its leader on store 3 throughout.
    leader_kept: bool,
}

impl std::fmt::Display for IngestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |h: &Histogram<u64>| {
            format!(
                "{} puts, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            )
        };
        writeln!(
            f,
            "snapshot of {:.1} MiB taken in by store 3 in {:.0} ms",
            self.bulk_bytes as f64 / (1 << 20) as f64,
            ms(self.ingest)
        )?;
        writeln!(f, "other region's puts before:  {}", line(&self.before))?;
        writeln!(f, "other region's puts during:  {}", line(&self.during))?;
        write!(
            f,
            "other region's leader stayed on store 3: {}",
            self.leader_kept
        )
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// The peer of the region holding `key` on `store`, if any.
async fn peer_on(cluster: &Cluster, key: &[u8], store: u64) -> Option<Peer> {
    let region = cluster.get_region(key).await;
    region.peers.iter().copied().find(|p| p.store_id == store)
}

pub async fn run(bulk_mib: u64, value_size: usize) -> Result<IngestReport> {
    let mut cfg = Config::for_tests();
    cfg.raft_log_gc_count_limit = 1000;
    let cluster = Cluster::new(3, cfg);
    cluster.start().await;
    cluster.put_cf(CF_DEFAULT, b"warmup", b"x").await?;
    cluster.try_split(1, b"m").await?;

    // Load L.
    let value = vec![b'v'; value_size.max(16)];
    let keys = (bulk_mib << 20) / (value.len() as u64 + 12);
    let mut loaders = Vec::new();
    for c in 0..16u64 {
        let (cluster, value) = (cluster.clone(), value.clone());
        loaders.push(actix_rt::spawn(async move {
            for i in (c..keys).step_by(16) {
                cluster
                    .put_cf(CF_DEFAULT, format!("a-{i:010}").as_bytes(), &value)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for l in loaders {
        l.await.map_err(|e| anyhow!(e.to_string()))??;
    }
    let left = cluster.get_region(b"a").await;
    let gone = peer_on(&cluster, b"a", 3)
        .await
        .ok_or_else(|| anyhow!("store 3 holds no replica of the loaded region"))?;
    cluster.try_remove_peer(left.id, gone).await?;
    let right = cluster.get_region(b"m").await;
    let r3 = peer_on(&cluster, b"m", 3)
        .await
        .ok_or_else(|| anyhow!("store 3 holds no replica of the probed region"))?;
    cluster.try_transfer_leader(right.id, r3).await?;

    // Probes on R, timing every put; `phase` says which histogram it
    // counts in: none while the clients warm up (find R's leader), then
    // before the ingest, then during it.
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let hists = Arc::new(Mutex::new((histogram(), histogram())));
    let mut probes = Vec::new();
    for c in 0..PROBES {
        let (cluster, stop, phase, hists) =
            (cluster.clone(), stop.clone(), phase.clone(), hists.clone());
        probes.push(actix_rt::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("m-{c}-{:06}", i % 10_000);
                i += 1;
                let t = Instant::now();
                let ok = cluster
                    .put_cf(CF_DEFAULT, key.as_bytes(), b"p")
                    .await
                    .is_ok();
                let us = t.elapsed().as_micros().max(1) as u64;
                let mut h = hists.lock();
                let h = match phase.load(Ordering::Relaxed) {
                    0 => continue,
                    1 => &mut h.0,
                    _ => &mut h.1,
                };
                if ok {
                    let _ = h.record(us.min(600_000_000));
                }
            }
        }));
    }
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    phase.store(1, Ordering::Relaxed);
    actix_rt::time::sleep(Duration::from_secs(3)).await;

    let new = cluster.alloc_peer(3);
    phase.store(2, Ordering::Relaxed);
    let t = Instant::now();
    cluster.scheduler().with(|s| {
        s.add_operator(
            left.id,
            Operator {
                kind: OperatorKind::AddPeer as i32,
                peer: Some(new),
                split_key: vec![],
                replaced: None,
            },
        )
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut leader_kept = true;
    loop {
        let voting = cluster
            .scheduler()
            .with(|s| s.get_region_by_id(left.id))
            .is_some_and(|i| roles::is_voter(&i.region, new.id) && i.pending_peers.is_empty());
        if voting {
            break;
        }
        if cluster.leader_of_region(right.id).await.map(|l| l.id) != Some(r3.id) {
            leader_kept = false;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("the new replica never caught up"));
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let ingest = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for p in probes {
        let _ = p.await;
    }
    cluster.shutdown().await;
    let (before, during) = std::mem::replace(&mut *hists.lock(), (histogram(), histogram()));
    Ok(IngestReport {
        bulk_bytes: keys * (value.len() as u64 + 12),
        ingest,
        before,
        during,
        leader_kept,
    })
}
