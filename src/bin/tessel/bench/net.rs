//! `tessel bench --target tessel|etcd`: one closed-loop workload client for
//! a networked Tessel cluster or an etcd cluster, so both are measured by the
//! same code in the same way: N concurrent clients, each issuing its next
//! operation when the previous one is answered, over a fixed key space.
//!
//! Durability is equal on both sides: etcd fsyncs its WAL before answering
//! a put, Tessel fsyncs the raft log before a leader counts its own vote.
//! Reads are linearizable on both sides (etcd's default Range).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;

use anyhow::{anyhow, Result};
use tessel::client::Client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Tessel,
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Every operation is a put.
    Put,
    /// Every operation is a linearizable get of a preloaded key.
    Get,
    /// Half gets, half puts.
    Mixed,
}

#[derive(Debug, Clone)]
pub struct NetBenchOptions {
    pub target: Target,
    /// Tessel: the scheduler's address; etcd: the members' client URLs.
    pub endpoints: Vec<String>,
    pub workload: Workload,
    pub clients: usize,
    pub keys: u64,
    pub value_size: usize,
    pub duration: Duration,
    /// Tessel: writes carry client sessions (exactly-once), as the client's
    /// default; off measures what sessions cost.
    pub sessions: bool,
}

#[derive(Debug)]
pub struct NetBenchReport {
    pub opts: NetBenchOptions,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl NetBenchReport {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// One row of the comparison table.
    pub fn row(&self) -> String {
        format!(
            "| {:?} | {:?} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.opts.target,
            self.opts.workload,
            self.opts.clients,
            self.opts.value_size,
            self.ops_per_sec(),
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            self.errors
        )
    }

    pub const HEADER: &'static str = "| target | workload | clients | value B | ops/s | p50 ms | p99 ms | p99.9 ms | errors |\n|---|---|---|---|---|---|---|---|---|";
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn key(i: u64) -> Vec<u8> {
    format!("bench-{i:08}").into_bytes()
}

/// The two systems behind one interface.
#[derive(Clone)]
enum Conn {
    Tessel(Client),
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::KvClient),
}

impl Conn {
    async fn connect(target: Target, endpoints: &[String], sessions: bool) -> Result<Conn> {
        match target {
            Target::Tessel => {
                let addr = endpoints
                    .first()
                    .ok_or_else(|| anyhow!("--endpoints needs the scheduler's address"))?;
                let client = Client::new(addr)?;
                Ok(Conn::Tessel(if sessions {
                    client
                } else {
                    client.without_sessions()
                }))
            }
            #[cfg(feature = "etcd")]
            Target::Etcd => {
                let c = etcd_client::Client::connect(endpoints, None)
                    .await
                    .map_err(|e| anyhow!("etcd: {e}"))?;
                Ok(Conn::Etcd(c.kv_client()))
            }
            #[cfg(not(feature = "etcd"))]
            Target::Etcd => Err(anyhow!(
                "this build has no etcd client: build with --features etcd (needs protoc)"
            )),
        }
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        match self {
            Conn::Tessel(c) => Ok(c.put(&key, &value).await?),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c
                .put(key, value, None)
                .await
                .map(|_| ())
                .map_err(|e| anyhow!("etcd: {e}")),
        }
    }

    async fn get(&mut self, key: Vec<u8>) -> Result<bool> {
        match self {
            Conn::Tessel(c) => Ok(c.get(&key).await?.is_some()),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c
                .get(key, None)
                .await
                .map(|r| !r.kvs().is_empty())
                .map_err(|e| anyhow!("etcd: {e}")),
        }
    }
}

/// Runs the workload and reports. Must run on a tokio runtime.
pub async fn run(opts: NetBenchOptions) -> Result<NetBenchReport> {
    let conn = Conn::connect(opts.target, &opts.endpoints, opts.sessions).await?;
    let value = vec![b'v'; opts.value_size];
    if opts.workload != Workload::Put {
        preload(&conn, opts.keys, &value).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.clients {
        let mut conn = conn.clone();
        let (stop, done, value) = (stop.clone(), done.clone(), value.clone());
        let (workload, keys) = (opts.workload, opts.keys.max(1));
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (k, read) = {
                    let mut rng = rand::thread_rng();
                    let read = match workload {
                        Workload::Put => false,
                        Workload::Get => true,
                        Workload::Mixed => rng.gen_bool(0.5),
                    };
                    (key(rng.gen_range(0..keys)), read)
                };
                let t = Instant::now();
                let ok = if read {
                    conn.get(k).await.map(|_| ())
                } else {
                    conn.put(k, value.clone()).await
                };
                match ok {
                    Ok(()) => {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => errors += 1,
                }
            }
            (hist, errors)
        }));
    }
    let mut last = (Instant::now(), 0u64);
    while start.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if last.0.elapsed() >= Duration::from_secs(2) {
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "... {:.0} s: {:.0} ops/s",
                start.elapsed().as_secs_f64(),
                (n - last.1) as f64 / last.0.elapsed().as_secs_f64()
            );
            last = (Instant::now(), n);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let mut errors = 0;
    for t in tasks {
        if let Ok((h, e)) = t.await {
            let _ = hist.add(h);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    let q = |p: f64| Duration::from_micros(hist.value_at_quantile(p));
    Ok(NetBenchReport {
        ops: hist.len(),
        errors,
        elapsed,
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
        opts,
    })
}

/// Writes every key once so reads find them (64 writers at a time).
async fn preload(conn: &Conn, keys: u64, value: &[u8]) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let mut conn = conn.clone();
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(64) {
                conn.put(key(i), value.clone()).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| anyhow!(e.to_string()))??;
    }
    Ok(())
}
