//! `tessel bench`: a closed-loop put workload against an in-process cluster
//! with durable writes, printing throughput, latency percentiles, resident
//! memory and how many fsyncs the load cost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use hdrhistogram::Histogram;

use tessel::keys::CF_DEFAULT;
use tessel::testkit::Cluster;
use tessel::Config;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub stores: u64,
    pub clients: usize,
    pub value_size: usize,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct BenchReport {
    pub ops: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub flushes: u64,
    pub rss_bytes: Option<u64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(f, "puts:        {} in {:.1} s", self.ops, secs)?;
        writeln!(f, "throughput:  {:.0} puts/s", self.ops as f64 / secs)?;
        writeln!(
            f,
            "latency:     p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999)
        )?;
        writeln!(
            f,
            "fsyncs:      {} in all stores, {:.0}/s, {:.1} puts per fsync",
            self.flushes,
            self.flushes as f64 / secs,
            self.ops as f64 / self.flushes.max(1) as f64
        )?;
        match self.rss_bytes {
            Some(b) => write!(f, "resident:    {:.1} MiB", b as f64 / (1024.0 * 1024.0)),
            None => write!(f, "resident:    unknown"),
        }
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resident set size of this process (Linux), for the report.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the put benchmark. Must run inside an actix system.
pub async fn run_puts(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let cluster = Cluster::new(opts.stores, Config::default());
    cluster.start().await;
    cluster
        .leader_of_region(1)
        .await
        .ok_or_else(|| anyhow!("no leader elected"))?;
    // Warm up the route so the first puts do not measure leader discovery.
    cluster.put_cf(CF_DEFAULT, b"warmup", b"x").await?;

    let stop = Arc::new(AtomicBool::new(false));
    let flushes_before = cluster.flush_count();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        let cluster = cluster.clone();
        let stop = stop.clone();
        let value = vec![b'v'; opts.value_size];
        tasks.push(actix_rt::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bench-{c:03}-{i:010}");
                let t = Instant::now();
                if cluster
                    .put_cf(CF_DEFAULT, key.as_bytes(), &value)
                    .await
                    .is_ok()
                {
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                }
                i += 1;
            }
            hist
        }));
    }
    let mut last = Instant::now();
    while start.elapsed() < opts.duration {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        if last.elapsed() >= Duration::from_secs(2) {
            eprintln!("... {:.0} s", start.elapsed().as_secs_f64());
            last = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = hist.add(h);
        }
    }
    let elapsed = start.elapsed();
    let flushes = cluster.flush_count() - flushes_before;
    let rss = rss_bytes();
    cluster.shutdown().await;
    let q = |p: f64| Duration::from_micros(hist.value_at_quantile(p));
    Ok(BenchReport {
        ops: hist.len(),
        elapsed,
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
        flushes,
        rss_bytes: rss,
    })
}

/// What splitting costs and how the key space ends up cut.
#[derive(Debug)]
pub struct SplitReport {
    pub max_size: u64,
    pub split_size: u64,
    /// Threshold crossed (the put that made the tail region too large was
    /// acknowledged) until both halves served a request.
    pub latencies: Vec<Duration>,
    pub bulk_bytes: u64,
    pub bulk_elapsed: Duration,
    pub regions: usize,
    /// Peers each store runs after the bulk load.
    pub per_store: Vec<(tessel::StoreId, usize)>,
}

impl std::fmt::Display for SplitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut t = self.latencies.clone();
        t.sort();
        let avg = t.iter().sum::<Duration>() / t.len().max(1) as u32;
        writeln!(
            f,
            "region max {} KiB, split {} KiB",
            self.max_size / 1024,
            self.split_size / 1024
        )?;
        writeln!(
            f,
            "split latency: {} splits, mean {:.0} ms, min {:.0} ms, max {:.0} ms",
            t.len(),
            ms(avg),
            ms(t.first().copied().unwrap_or_default()),
            ms(t.last().copied().unwrap_or_default())
        )?;
        writeln!(
            f,
            "bulk load: {:.1} MiB in {:.1} s -> {} regions",
            self.bulk_bytes as f64 / (1024.0 * 1024.0),
            self.bulk_elapsed.as_secs_f64(),
            self.regions
        )?;
        let stores: Vec<String> = self
            .per_store
            .iter()
            .map(|(s, n)| format!("store {s}: {n}"))
            .collect();
        write!(f, "peers per store: {}", stores.join(", "))
    }
}

/// Measures split latency on sequential writes, then bulk-loads
/// `bulk_bytes` of random keys and counts the regions. Production timings,
/// except region sizes scaled down by `scale` and a split check every
/// 100 ms (production checks every 10 s, which would dominate the latency).
pub async fn run_split(scale: u64, bulk_bytes: u64, clients: usize) -> anyhow::Result<SplitReport> {
    use rand::Rng;
    let mut cfg = Config::default();
    let scale = scale.max(1);
    cfg.region_max_size_bytes /= scale;
    cfg.region_split_size_bytes /= scale;
    cfg.split_region_check_tick_interval = Duration::from_millis(100);
    cfg.sled_cache_capacity_bytes = 64 * 1024 * 1024;
    let (max_size, split_size) = (cfg.region_max_size_bytes, cfg.region_split_size_bytes);
    let cluster = Cluster::new(3, cfg);
    cluster.start().await;
    cluster
        .leader_of_region(1)
        .await
        .ok_or_else(|| anyhow!("no leader elected"))?;

    // Sequential keys: only the last region grows; each time it passes the
    // maximum, time how long until it is split and both halves serve.
    let value = vec![b'v'; 1000];
    let key = |i: u64| format!("seq-{i:08}").into_bytes();
    let pair = (key(0).len() + value.len()) as u64;
    let mut latencies = Vec::new();
    let (mut i, mut tail_first) = (0u64, 0u64);
    while latencies.len() < 10 {
        while (i - tail_first) * pair <= max_size {
            cluster.put_cf(CF_DEFAULT, &key(i), &value).await?;
            i += 1;
        }
        let t = Instant::now();
        let deadline = t + Duration::from_secs(30);
        let tail = loop {
            let r = cluster.get_region(&key(i - 1)).await;
            if r.start_key.as_slice() > key(tail_first).as_slice() {
                break r;
            }
            if Instant::now() > deadline {
                return Err(anyhow!("region never split"));
            }
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        };
        // Both halves serve: a read from the left, a write to the right.
        cluster.get_cf(CF_DEFAULT, &key(tail_first)).await?;
        cluster.put_cf(CF_DEFAULT, &key(i), &value).await?;
        i += 1;
        latencies.push(t.elapsed());
        let split_at = String::from_utf8_lossy(&tail.start_key)
            .trim_start_matches("seq-")
            .parse::<u64>()
            .map_err(|e| anyhow!("unexpected split key: {e}"))?;
        tail_first = split_at;
        eprintln!("... split {} at key {split_at}", latencies.len());
    }

    // Bulk load of random keys from many clients.
    let per_client = bulk_bytes / pair / clients.max(1) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let cluster = cluster.clone();
        let value = value.clone();
        tasks.push(actix_rt::spawn(async move {
            for _ in 0..per_client {
                let k: u64 = rand::thread_rng().gen();
                cluster
                    .put_cf(CF_DEFAULT, format!("rnd-{k:016x}").as_bytes(), &value)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| anyhow!(e.to_string()))??;
    }
    let bulk_elapsed = start.elapsed();
    // Let the last checks and splits land.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let regions = cluster.regions().len();
    let per_store = cluster
        .store_ids()
        .into_iter()
        .map(|s| (s, cluster.store_region_ids(s).len()))
        .collect();
    cluster.shutdown().await;
    Ok(SplitReport {
        max_size,
        split_size,
        latencies,
        bulk_bytes: per_client * clients as u64 * pair,
        bulk_elapsed,
        regions,
        per_store,
    })
}
