//! `Node`: one store as a process. It gets (once) a store id from the
//! scheduler, bootstraps the cluster's first region if it is the first node
//! of an empty cluster, starts the store's actors, and serves the Kv and
//! Raft gRPC services on one port. Network work runs on a small tokio
//! runtime of its own; the store's actors run on their arbiters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::actors::router::Router;
use crate::actors::store_actor::{start_store, StoreContext};
use crate::actors::writer_actor::{WriterActor, WriterStats};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::proto::metapb::{Peer, Region, RegionEpoch, Store};
use crate::proto::raft_serverpb::StoreIdent;
use crate::scheduler::GrpcSchedulerClient;
use crate::scheduler::SchedulerClient;
use crate::server::kv_service::KvService;
use crate::server::raft_service::RaftService;
use crate::server::transport::GrpcTransport;
use crate::storage::peer_storage::write_initial_states;
use crate::storage::state;
use crate::storage::{Engines, SnapManager};
use crate::StoreId;

/// The cluster id a bootstrapping node proposes.
const CLUSTER_ID: u64 = 1;
/// How long a first start waits for the scheduler before giving up.
const FIRST_START_WAIT: Duration = Duration::from_secs(30);

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// The scheduler's address (host:port).
    pub scheduler: String,
    /// The node's directory: the store's database goes in `store/`, its
    /// snapshot files in `snap/`.
    pub data_dir: PathBuf,
    /// Where to serve `/metrics` and `/status` (none: not served).
    pub status_addr: Option<SocketAddr>,
    /// The store's knobs (raft timings, split sizes, cache size, ...).
    pub cfg: Config,
    /// The operator's word that a directory whose store data was lost may
    /// join as a new store: the old data is moved aside, not deleted.
    pub new_store: bool,
}

/// How long a stopping node waits for its background tasks to reach a
/// checkpoint; each writes at most a batch of about 1 MiB before one.
const BACKGROUND_STOP: std::time::Duration = std::time::Duration::from_secs(10);

/// A running node. Dropping it does not stop it; call [`Node::stop`].
pub struct Node {
    /// The id of the store this node runs, assigned by the scheduler on the
    /// directory's first start and kept since.
    pub store_id: StoreId,
    /// The address the node serves on (the one registered with the scheduler).
    pub addr: SocketAddr,
    /// The handle to the store's actors: finds a region's peer actor and
    /// delivers commands and raft messages to it.
    pub router: Router,
    /// Where `/metrics` and `/status` are served, if anywhere.
    pub status_addr: Option<SocketAddr>,
    net: Option<tokio::runtime::Runtime>,
    stop_server: Option<oneshot::Sender<()>>,
    arbiters: Vec<Arbiter>,
    background: crate::background::Background,
}

impl Node {
    /// Starts a node. Must be called inside an actix system.
    pub async fn start(opts: NodeOptions) -> Result<Node> {
        // Dropped on an error return too; a tokio runtime dropped inside an
        // async context panics, so the guard shuts it down in the background.
        let net = NetRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("tessel-net")
                .enable_all()
                .build()?,
        ));
        let listener = std::net::TcpListener::bind(opts.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        let engines = open_engines(&opts)?;
        let snap_mgr = SnapManager::new(opts.data_dir.join("snap"))?;
        let scheduler = {
            let _g = net.enter();
            GrpcSchedulerClient::new(&opts.scheduler)?
        };
        let (e, sched) = (engines.clone(), scheduler.clone());
        let store_id = run_on(&net, async move { ensure_store_id(&e, &sched).await }).await??;
        let sched = scheduler.clone();
        let (e, a) = (engines.clone(), addr);
        run_on(&net, async move { register(&e, &sched, store_id, a).await }).await??;

        let transport = GrpcTransport::new(
            store_id,
            snap_mgr.clone(),
            scheduler.clone(),
            net.handle().clone(),
            opts.cfg.snapshot_chunk_size_bytes,
        );
        let writer_arbiter = Arbiter::new();
        let store_arbiter = Arbiter::new();
        let writer = {
            let engines = engines.clone();
            let stats = Arc::new(WriterStats::default());
            WriterActor::start_in_arbiter(&writer_arbiter.handle(), move |_| {
                WriterActor::new(engines, stats)
            })
        };
        let sc = StoreContext {
            store_id,
            cfg: Arc::new(opts.cfg.clone()),
            engines: engines.clone(),
            snap_mgr: snap_mgr.clone(),
            transport: Arc::new(transport.clone()),
            writer,
            scheduler: Arc::new(scheduler.clone()) as Arc<dyn SchedulerClient>,
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        store_arbiter.spawn_fn(move || {
            let _ = tx.send(start_store(sc));
        });
        let router = rx
            .await
            .map_err(|_| Error::Internal("the store did not start".into()))?;
        transport.set_router(router.clone());

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stop_rx = futures::FutureExt::shared(async {
            let _ = stop_rx.await;
        });
        let status_addr = match opts.status_addr {
            Some(a) => {
                let l = std::net::TcpListener::bind(a)?;
                let bound = l.local_addr()?;
                let r = router.clone();
                let status = move || node_status(r.clone(), store_id, addr);
                let stop = stop_rx.clone();
                net.spawn(async move {
                    if let Err(e) = crate::metrics::serve_status(l, status, stop).await {
                        warn!(error = %e, "status server stopped");
                    }
                });
                Some(bound)
            }
            None => None,
        };
        let kv = KvService::new(router.clone()).into_server();
        let raft = RaftService::new(router.clone(), snap_mgr).into_server();
        net.spawn(async move {
            let incoming = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => TcpIncoming::from_listener(l, true, None),
                Err(e) => {
                    warn!(error = %e, "cannot serve");
                    return;
                }
            };
            let served = match incoming {
                Ok(incoming) => {
                    tonic::transport::Server::builder()
                        .add_service(kv)
                        .add_service(raft)
                        .serve_with_incoming_shutdown(incoming, stop_rx)
                        .await
                }
                Err(e) => {
                    warn!(error = %e, "cannot serve");
                    return;
                }
            };
            if let Err(e) = served {
                warn!(error = %e, "gRPC server stopped");
            }
        });
        info!(store_id, %addr, "node serving");
        Ok(Node {
            store_id,
            addr,
            router,
            status_addr,
            net: net.into_inner(),
            stop_server: Some(stop_tx),
            arbiters: vec![store_arbiter, writer_arbiter],
            background: engines.background().clone(),
        })
    }

    /// Stops serving and stops the store's actors. What was acknowledged
    /// is already durable; nothing else needs flushing.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        for a in self.arbiters.drain(..) {
            a.stop();
            let _ = actix_rt::task::spawn_blocking(move || a.join()).await;
        }
        // An ingest or a generation still running would keep writing to a
        // database the caller may open again; each stops at its next batch.
        let bg = self.background.clone();
        let _ = actix_rt::task::spawn_blocking(move || bg.stop(BACKGROUND_STOP)).await;
        if let Some(net) = self.net.take() {
            net.shutdown_background();
        }
        info!(store_id = self.store_id, "node stopped");
    }
}

/// The node's network runtime until the node is up.
struct NetRuntime(Option<tokio::runtime::Runtime>);

impl NetRuntime {
    fn into_inner(mut self) -> Option<tokio::runtime::Runtime> {
        self.0.take()
    }
}

impl std::ops::Deref for NetRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .expect("taken only by into_inner, which consumes the guard")
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Opens the store's engines. A directory whose database lost the store it
/// held is refused unless the operator passed `new_store`; then the old
/// store and snapshot directories are renamed aside (kept for forensics)
/// and an empty store is opened in their place.
fn open_engines(opts: &NodeOptions) -> Result<Engines> {
    let dir = opts.data_dir.join("store");
    match Engines::open(&dir, opts.cfg.sled_cache_capacity_bytes) {
        Err(Error::DataLost { store_id, .. }) if opts.new_store => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for name in ["store", "snap"] {
                let from = opts.data_dir.join(name);
                if from.exists() {
                    let to = opts.data_dir.join(format!("{name}.lost-{stamp}"));
                    std::fs::rename(&from, &to)?;
                    warn!(old_store = store_id, from = %from.display(), to = %to.display(),
                        "--new-store: the lost store's data was moved aside");
                }
            }
            crate::storage::durable::sync_dir(&opts.data_dir)?;
            Engines::open(&dir, opts.cfg.sled_cache_capacity_bytes)
        }
        other => other,
    }
}

/// The node's `/status`: its store and every region peer it runs.
async fn node_status(router: Router, store_id: StoreId, addr: SocketAddr) -> serde_json::Value {
    use crate::actors::msg::GetPeerStatus;
    let mut regions = Vec::new();
    for id in router.region_ids() {
        let Some(peer) = router.peer(id) else {
            continue;
        };
        if let Ok(st) = peer.send(GetPeerStatus).await {
            let e = st.region.region_epoch.unwrap_or_default();
            regions.push(serde_json::json!({
                "region_id": id,
                "start_key": String::from_utf8_lossy(&st.region.start_key),
                "end_key": String::from_utf8_lossy(&st.region.end_key),
                "conf_ver": e.conf_ver,
                "version": e.version,
                "peer_id": st.peer_id,
                "leader": st.is_leader,
                "term": st.term,
                "applied_index": st.applied_index,
                "truncated_index": st.truncated_index,
            }));
        }
    }
    serde_json::json!({
        "store_id": store_id,
        "address": addr.to_string(),
        "regions": regions,
    })
}

/// Runs `fut` on the network runtime and waits for it from this one.
async fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T> {
    rt.spawn(fut)
        .await
        .map_err(|e| Error::Internal(format!("network task failed: {e}")))
}

/// The store id of this data directory, asked of the scheduler (and kept)
/// on the first start. A first start waits a while for the scheduler.
async fn ensure_store_id(engines: &Engines, sched: &GrpcSchedulerClient) -> Result<StoreId> {
    if let Some(ident) = engines.store_ident()? {
        return Ok(ident.store_id);
    }
    let deadline = tokio::time::Instant::now() + FIRST_START_WAIT;
    let id = loop {
        match sched.alloc_id().await {
            Ok(id) => break id,
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!(error = %e, "waiting for the scheduler");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let cluster_id = sched.is_bootstrapped().await?.cluster_id.max(CLUSTER_ID);
    engines.put_store_ident(&StoreIdent {
        cluster_id,
        store_id: id,
    })?;
    engines.flush()?;
    info!(store_id = id, "new store");
    Ok(id)
}

/// Registers the store's address, and bootstraps the cluster when this
/// node is the first: region 1 of the whole key space with one peer here.
/// A node that lost the race to bootstrap drops its local copy and joins
/// as an empty store. When the scheduler is down and the store already
/// holds regions, the node serves them and registers later.
async fn register(
    engines: &Engines,
    sched: &GrpcSchedulerClient,
    store_id: StoreId,
    addr: SocketAddr,
) -> Result<()> {
    let store = Store {
        id: store_id,
        address: addr.to_string(),
    };
    let has_regions = !state::region_states(&engines.kv)?.is_empty();
    let status = match sched.is_bootstrapped().await {
        Ok(s) => s,
        Err(e) if has_regions => {
            warn!(error = %e, "scheduler unreachable; serving the regions held here");
            let sched = sched.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if sched.put_store(store.clone()).await.is_ok() {
                        info!("registered with the scheduler");
                        break;
                    }
                }
            });
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if !status.bootstrapped {
        let region = match state::region_states(&engines.kv)?
            .into_iter()
            .find_map(|s| s.region)
        {
            Some(r) => r,
            None => {
                let region = Region {
                    id: sched.alloc_id().await?,
                    start_key: vec![],
                    end_key: vec![],
                    region_epoch: Some(RegionEpoch {
                        conf_ver: 1,
                        version: 1,
                    }),
                    peers: vec![Peer {
                        id: sched.alloc_id().await?,
                        store_id,
                    }],
                    roles: vec![],
                };
                write_initial_states(engines, &region)?;
                region
            }
        };
        match sched
            .bootstrap(CLUSTER_ID, store.clone(), region.clone())
            .await
        {
            Ok(()) => info!(region_id = region.id, "cluster bootstrapped"),
            Err(e) => {
                // The answer may be lost after the scheduler committed the
                // bootstrap (a timeout, a dropped connection), or the refusal
                // may come from a retry of our own bootstrap. Only the
                // scheduler's recorded view decides: the local region is
                // forgotten only if the scheduler provably holds another
                // first region; in every other case it is kept, because it
                // may be the cluster's only replica.
                warn!(error = %e, "bootstrap not acknowledged; asking the scheduler what it recorded");
                match recorded_bootstrap(sched, region.id).await? {
                    Some(true) => {
                        info!(
                            region_id = region.id,
                            "the scheduler recorded our bootstrap"
                        )
                    }
                    Some(false) => {
                        warn!(
                            ours = region.id,
                            "another node bootstrapped the cluster; joining as an empty store"
                        );
                        forget_region(engines, region.id)?;
                    }
                    None => {
                        return Err(Error::Unavailable(format!(
                            "bootstrap of region {} was not acknowledged and the scheduler \
                             records no first region yet: {e}",
                            region.id
                        )))
                    }
                }
            }
        }
    }
    sched.put_store(store).await
}

/// What the scheduler recorded of a bootstrap: None if it is not
/// bootstrapped, Some(true) if it holds `region_id` (our bootstrap went
/// through), Some(false) if it was bootstrapped with another region. Asks a
/// few times with backoff, as it is asked right after an ambiguous failure.
async fn recorded_bootstrap(sched: &GrpcSchedulerClient, region_id: u64) -> Result<Option<bool>> {
    let mut pause = Duration::from_millis(100);
    let mut last = None;
    for _ in 0..8 {
        match sched.is_bootstrapped().await {
            Ok(s) if !s.bootstrapped => return Ok(None),
            Ok(_) => match sched.get_region_by_id(region_id).await {
                Ok(r) => return Ok(Some(r.region.is_some())),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    Err(last.unwrap_or_else(|| Error::Unavailable("scheduler unreachable".into())))
}

/// Deletes the states of a region this store bootstrapped but never served.
fn forget_region(engines: &Engines, region_id: crate::RegionId) -> Result<()> {
    let mut kv = sled::Batch::default();
    state::delete_apply_state(&mut kv, region_id);
    state::delete_region_state(&mut kv, region_id);
    engines.kv.apply_batch(kv)?;
    let mut raft = sled::Batch::default();
    state::delete_raft_state(&mut raft, region_id);
    engines.raft.apply_batch(raft)?;
    engines.flush()
}
