//! `Cluster`: starting, stopping and inspecting the stores of an in-process
//! cluster.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use tracing::info;

use super::network::{Filter, SimNetwork};
use crate::actors::msg::{GetPeerStatus, PeerStatus};
use crate::actors::router::Router;
use crate::actors::store_actor::{start_store, StoreContext};
use crate::actors::writer_actor::{WriterActor, WriterStats};
use crate::config::Config;
use crate::keys;
use crate::proto::metapb::{Peer, Region, RegionEpoch, Store};
use crate::proto::raft_serverpb::{RaftApplyState, RegionLocalState, StoreIdent};
use crate::scheduler::{LocalSchedulerClient, RegionInfo, Scheduler};
use crate::storage::peer_storage::write_initial_states;
use crate::storage::state;
use crate::storage::{Engines, SnapManager};
use crate::{RegionId, StoreId};

/// Copies a directory tree as it is now (regular files and directories).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                // A temporary file removed while we copied was never needed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A store running in this process.
struct RunningStore {
    arbiter: Arbiter,
    writer_arbiter: Arbiter,
    router: Router,
    engines: Engines,
}

pub(crate) struct Inner {
    seed: u64,
    pub(crate) count: u64,
    pub(crate) cfg: Arc<Config>,
    dir: PathBuf,
    /// The temporary data directory, removed on drop (kept if a test failed).
    tmp: Option<tempfile::TempDir>,
    pub(crate) scheduler: LocalSchedulerClient,
    pub(crate) net: Arc<SimNetwork>,
    stores: Mutex<HashMap<StoreId, RunningStore>>,
    writer_stats: Mutex<HashMap<StoreId, Arc<WriterStats>>>,
    /// The client side's leader cache.
    pub(crate) leaders: Mutex<HashMap<RegionId, Peer>>,
    /// Idle client sessions of the retrying helpers.
    pub(crate) sessions: Mutex<Vec<crate::proto::raft_cmdpb::Session>>,
}

impl Drop for Inner {
    /// A test that panics drops its cluster with the stores still running:
    /// removing their directory under them would fail a store flush, which
    /// aborts the whole test process (`durable::flush_failed`) and hides
    /// the failure's message. The directory is kept instead, and named, so
    /// the failed run's data can be inspected.
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(tmp) = self.tmp.take() {
                let kept = tmp.keep();
                eprintln!(
                    "tessel test kit: test failed; its data is kept in {}",
                    kept.display()
                );
            }
        }
    }
}

/// An in-process cluster of `count` stores (ids 1..=count). See the module docs.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

const STORE_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// `TESSEL_TEST_SEED` if it is a number, else a random seed (a value that
/// is not a number is reported, not silently replaced).
fn seed_from_env() -> u64 {
    match std::env::var("TESSEL_TEST_SEED") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!(
                "tessel test kit: TESSEL_TEST_SEED={v:?} is not a number; using a random seed"
            );
            rand::random()
        }),
        Err(_) => rand::random(),
    }
}

impl Cluster {
    /// A cluster with its data in a temporary directory removed on drop.
    /// Its seed comes from `TESSEL_TEST_SEED` if set, else at random; it
    /// is printed (a failing test shows it) and seeds the network's random
    /// drops.
    pub fn new(count: u64, cfg: Config) -> Cluster {
        Cluster::with_seed(count, cfg, seed_from_env())
    }

    /// Like [`Cluster::new`], with the seed given.
    pub fn with_seed(count: u64, cfg: Config, seed: u64) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("tessel-cluster")
            .tempdir()
            .expect("a temporary directory can be created");
        let dir = tmp.path().to_path_buf();
        Cluster::build(count, cfg, dir, Some(tmp), seed)
    }

    /// A cluster keeping its data in `dir` (kept after the process ends).
    pub fn with_dir(count: u64, cfg: Config, dir: &Path) -> Cluster {
        Cluster::build(count, cfg, dir.to_path_buf(), None, seed_from_env())
    }

    fn build(
        count: u64,
        cfg: Config,
        dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
        seed: u64,
    ) -> Cluster {
        eprintln!(
            "tessel test kit: cluster seed {seed} (TESSEL_TEST_SEED={seed} repeats its drops)"
        );
        let net = SimNetwork::new(cfg.snapshot_chunk_size_bytes, seed);
        Cluster {
            inner: Arc::new(Inner {
                seed,
                count,
                cfg: Arc::new(cfg),
                dir,
                tmp,
                scheduler: LocalSchedulerClient::new(Scheduler::new(count + 1)),
                net,
                stores: Mutex::new(HashMap::new()),
                writer_stats: Mutex::new(HashMap::new()),
                leaders: Mutex::new(HashMap::new()),
                sessions: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The seed of this cluster's random network faults.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The configuration every store runs with.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The ids of every store of the cluster, `1..=count`, whether it is
    /// running or not.
    pub fn store_ids(&self) -> Vec<StoreId> {
        (1..=self.inner.count).collect()
    }

    /// The scheduler (direct access to its state).
    pub fn scheduler(&self) -> &LocalSchedulerClient {
        &self.inner.scheduler
    }

    fn store_dir(&self, store_id: StoreId) -> PathBuf {
        self.inner.dir.join(format!("store{store_id}"))
    }

    /// The first region: ["", ""), epoch {1, 1}, peer id = store id everywhere.
    fn first_region(&self) -> Region {
        Region {
            id: 1,
            start_key: vec![],
            end_key: vec![],
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: self
                .store_ids()
                .into_iter()
                .map(|id| Peer { id, store_id: id })
                .collect(),
            roles: vec![],
        }
    }

    /// Bootstraps every store that has no identity yet, then starts them all.
    pub async fn start(&self) {
        let region = self.first_region();
        for id in self.store_ids() {
            let engines = self.open_engines(id).await;
            if engines
                .store_ident()
                .expect("store ident is readable")
                .is_none()
            {
                write_initial_states(&engines, &region).expect("bootstrap states are written");
                engines
                    .put_store_ident(&StoreIdent {
                        cluster_id: 1,
                        store_id: id,
                    })
                    .expect("store ident is written");
                engines.flush().expect("bootstrap is flushed");
            }
            self.inner.scheduler.with(|s| {
                s.put_store(Store {
                    id,
                    address: String::new(),
                })
            });
        }
        self.inner.scheduler.with(|s| {
            if s.get_region_by_id(1).is_none() && s.regions().is_empty() {
                s.bootstrap(region)
            }
        });
        for id in self.store_ids() {
            self.start_store(id).await;
        }
    }

    async fn open_engines(&self, store_id: StoreId) -> Engines {
        let dir = self.store_dir(store_id);
        let deadline = Instant::now() + STORE_OPEN_TIMEOUT;
        loop {
            // A just-stopped store's database closes when its last handle
            // drops; until then sled's file lock refuses a second open.
            match Engines::open(&dir, self.inner.cfg.sled_cache_capacity_bytes) {
                Ok(e) => return e,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(store_id, error = %e, "store database busy, retrying");
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("store {store_id}: cannot open database: {e}"),
            }
        }
    }

    /// Starts (or restarts, on the same data) one store.
    pub async fn start_store(&self, store_id: StoreId) {
        if self.inner.stores.lock().contains_key(&store_id) {
            return;
        }
        let engines = self.open_engines(store_id).await;
        let snap_mgr =
            SnapManager::new(self.store_dir(store_id).join("snap")).expect("snap dir is created");
        let stats = self
            .inner
            .writer_stats
            .lock()
            .entry(store_id)
            .or_default()
            .clone();
        let writer_arbiter = Arbiter::new();
        let arbiter = Arbiter::new();
        let writer = {
            let engines = engines.clone();
            WriterActor::start_in_arbiter(&writer_arbiter.handle(), move |_| {
                WriterActor::new(engines, stats)
            })
        };
        let scheduler = Arc::new(self.inner.scheduler.clone());
        let sc = StoreContext {
            store_id,
            cfg: self.inner.cfg.clone(),
            engines: engines.clone(),
            snap_mgr: snap_mgr.clone(),
            transport: self.inner.net.transport(store_id),
            writer,
            scheduler,
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        arbiter.spawn_fn(move || {
            let _ = tx.send(start_store(sc));
        });
        let router = rx.await.expect("the store arbiter runs its start function");
        self.inner.net.register(router.clone(), snap_mgr);
        self.inner.stores.lock().insert(
            store_id,
            RunningStore {
                arbiter,
                writer_arbiter,
                router,
                engines,
            },
        );
        info!(store_id, "store started");
    }

    /// Shuts one store down cleanly: its actors stop with whatever they had
    /// in flight (unanswered requests get no answer), then its database is
    /// closed, which flushes and fsyncs everything sled still buffered.
    pub async fn stop_store(&self, store_id: StoreId) {
        if let Some(engines) = self.halt_store(store_id).await {
            drop(engines);
            info!(store_id, "store stopped");
        }
    }

    /// Crashes one store the way `kill -9` does: its actors stop where they
    /// are, and what sled still held in its own buffers is lost. What sled
    /// had written to its files survives, as the page cache outlives a
    /// killed process; everything the writer acknowledged is among it.
    ///
    /// How: the store's files are frozen by copying them as they are, and
    /// the running database is abandoned without being closed (closing sled
    /// flushes its buffers). The abandoned handle's memory (bounded by
    /// `sled_cache_capacity_bytes`) stays allocated until the process ends;
    /// its files are deleted. A power cut, which also loses what was
    /// written but not fsynced, is tested with real processes on a lazy
    /// filesystem instead (tests/scenarios/power_loss.rs).
    pub async fn crash_store(&self, store_id: StoreId) {
        let Some(engines) = self.halt_store(store_id).await else {
            return;
        };
        let dir = self.store_dir(store_id);
        static CRASHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CRASHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let abandoned = dir.with_extension(format!("crashed-{n}"));
        // Renaming first moves the open files with the abandoned handle, so a
        // late write of its IO threads cannot reach the copy.
        std::fs::rename(&dir, &abandoned).expect("the crashed store's directory can be renamed");
        copy_dir(&abandoned, &dir).expect("the crashed store's files can be copied");
        std::mem::forget(engines);
        if let Err(e) = std::fs::remove_dir_all(&abandoned) {
            tracing::warn!(store_id, error = %e, "abandoned store files not removed");
        }
        info!(store_id, "store crashed");
    }

    /// Unregisters a store and stops its actors, waiting for their threads.
    /// Returns the store's engines, now unused by anything of the store.
    async fn halt_store(&self, store_id: StoreId) -> Option<Engines> {
        self.inner.net.unregister(store_id);
        let s = self.inner.stores.lock().remove(&store_id)?;
        s.arbiter.stop();
        s.writer_arbiter.stop();
        let (a, w) = (s.arbiter, s.writer_arbiter);
        // Background tasks are threads of the store too: a kill -9 stops
        // them, so they stop (at a checkpoint) before the files are frozen.
        let bg = s.engines.background().clone();
        let _ = actix_rt::task::spawn_blocking(move || {
            let _ = a.join();
            let _ = w.join();
            bg.stop(std::time::Duration::from_secs(30));
        })
        .await;
        Some(s.engines)
    }

    /// Crashes every store (see [`Cluster::crash_store`]).
    pub async fn crash_all(&self) {
        for id in self.store_ids() {
            self.crash_store(id).await;
        }
    }

    /// Stops every store cleanly.
    pub async fn shutdown(&self) {
        for id in self.store_ids() {
            self.stop_store(id).await;
        }
    }

    /// Installs a fault on the simulated network; from now on a raft message
    /// between stores is delivered only if every installed filter lets it pass.
    pub fn add_filter(&self, f: Filter) {
        self.inner.net.add_filter(f);
    }

    /// Removes every installed filter: the network delivers everything again.
    pub fn clear_filters(&self) {
        self.inner.net.clear_filters();
    }

    pub(crate) fn router(&self, store_id: StoreId) -> Option<Router> {
        self.inner
            .stores
            .lock()
            .get(&store_id)
            .map(|s| s.router.clone())
    }

    fn engines(&self, store_id: StoreId) -> Option<Engines> {
        self.inner
            .stores
            .lock()
            .get(&store_id)
            .map(|s| s.engines.clone())
    }

    /// A direct read of one store's data (default column family); None if
    /// the key is absent or the store is not running.
    pub fn store_get(&self, store_id: StoreId, key: &[u8]) -> Option<Vec<u8>> {
        self.store_get_cf(store_id, keys::CF_DEFAULT, key)
    }

    /// A direct read of one store's data in column family `cf`, bypassing
    /// raft; `None` if the key is absent or the store is not running.
    pub fn store_get_cf(&self, store_id: StoreId, cf: u8, key: &[u8]) -> Option<Vec<u8>> {
        self.engines(store_id)?
            .get_data(cf, key)
            .expect("store data is readable")
    }

    /// Waits up to 6 s until store `store_id` holds `value` (None: holds
    /// nothing) under `key`; panics otherwise.
    pub async fn must_store_get_equal(&self, store_id: StoreId, key: &[u8], value: Option<&[u8]>) {
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let got = self.store_get(store_id, key);
            if got.as_deref() == value {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "store {store_id}: key {:?} is {:?}, expected {:?}",
                    String::from_utf8_lossy(key),
                    got.map(|v| String::from_utf8_lossy(&v).to_string()),
                    value.map(|v| String::from_utf8_lossy(v).to_string())
                );
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Store `store_id`'s recorded apply state of region `region_id`, read
    /// from its kv tree; `None` if the store is not running or holds none.
    pub fn apply_state(&self, store_id: StoreId, region_id: RegionId) -> Option<RaftApplyState> {
        state::apply_state(&self.engines(store_id)?.kv, region_id).expect("apply state is readable")
    }

    /// Store `store_id`'s recorded `RegionLocalState` of region `region_id`
    /// (range, peers, normal or tombstone), read from its kv tree; `None` if
    /// the store is not running or holds none.
    pub fn region_state(&self, store_id: StoreId, region_id: RegionId) -> Option<RegionLocalState> {
        state::region_state(&self.engines(store_id)?.kv, region_id)
            .expect("region state is readable")
    }

    /// Flushes counted by the store writers since the stores first started.
    pub fn flush_count(&self) -> u64 {
        self.inner
            .writer_stats
            .lock()
            .values()
            .map(|s| s.flushes.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// The scheduler's view of the region holding `key`, waiting up to 2 s.
    pub async fn get_region(&self, key: &[u8]) -> Region {
        self.get_region_info(key, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("no region for key {:?}", String::from_utf8_lossy(key)))
            .region
    }

    pub(crate) async fn get_region_info(&self, key: &[u8], wait: Duration) -> Option<RegionInfo> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(r) = self.inner.scheduler.with(|s| s.get_region(key)) {
                return Some(r);
            }
            if Instant::now() > deadline {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every region the scheduler knows, in key order.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.inner.scheduler.with(|s| s.regions())
    }

    /// The regions a running store has a peer for.
    pub fn store_region_ids(&self, store_id: StoreId) -> Vec<RegionId> {
        self.router(store_id)
            .map(|r| r.region_ids())
            .unwrap_or_default()
    }

    /// Status of the peer of `region_id` on `store_id`, if it runs.
    pub async fn peer_status(&self, store_id: StoreId, region_id: RegionId) -> Option<PeerStatus> {
        let addr = self.router(store_id)?.peer(region_id)?;
        addr.send(GetPeerStatus).await.ok()
    }

    /// The current leader of a region, asking the peers themselves; waits up
    /// to 5 s for one to exist.
    pub async fn leader_of_region(&self, region_id: RegionId) -> Option<Peer> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut best: Option<PeerStatus> = None;
            for id in self.store_ids() {
                if let Some(st) = self.peer_status(id, region_id).await {
                    if st.is_leader && best.as_ref().is_none_or(|b| st.term > b.term) {
                        best = Some(st);
                    }
                }
            }
            if let Some(st) = best {
                let peer = crate::region::find_peer_by_id(&st.region, st.peer_id).cloned();
                if peer.is_some() {
                    return peer;
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A fresh peer id on `store_id`, from the scheduler.
    pub fn alloc_peer(&self, store_id: StoreId) -> Peer {
        let id = self
            .inner
            .scheduler
            .with(|s| s.alloc_id())
            .expect("the in-process scheduler keeps ids in memory");
        Peer { id, store_id }
    }
}
