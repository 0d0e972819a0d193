//! `GrpcTransport`: raft messages to other stores over the Raft gRPC
//! service. One stream per destination store keeps messages in order; a
//! bounded queue in front of it drops (and reports) messages when the store
//! cannot keep up. A store that cannot be reached is marked down for a
//! backoff that doubles up to a few seconds; messages meanwhile are dropped
//! and their senders told (`report_unreachable`), so raft probes instead of
//! streaming into the void. Snapshots travel on a stream of their own, in
//! chunks, and the sender learns how it ended (`report_snapshot`).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use parking_lot::Mutex;
use raft::eraftpb::MessageType;
use tokio::runtime::Handle;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::actors::router::Router;
use crate::actors::transport::Transport;
use crate::error::{Error, Result};
use crate::proto::raft_serverpb::raft_client::RaftClient;
use crate::proto::raft_serverpb::{BatchRaftMessage, RaftMessage, SnapshotChunk};
use crate::scheduler::GrpcSchedulerClient;
use crate::storage::SnapManager;
use crate::StoreId;

/// Messages that may wait for one destination store.
const QUEUE_CAPACITY: usize = 8192;
/// Messages sent together in one batch.
const BATCH: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

enum Conn {
    /// A stream is open or opening.
    Up(mpsc::Sender<RaftMessage>),
    Down {
        until: Instant,
        backoff: Duration,
    },
}

struct Inner {
    store_id: StoreId,
    /// Set once the store is started (the store needs its transport first).
    router: std::sync::OnceLock<Router>,
    snap_mgr: SnapManager,
    scheduler: GrpcSchedulerClient,
    rt: Handle,
    chunk_size: usize,
    conns: Mutex<HashMap<StoreId, Conn>>,
    addrs: Mutex<HashMap<StoreId, String>>,
}

#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

impl GrpcTransport {
    /// A transport for `store_id`'s peers; store addresses come from the
    /// scheduler; network tasks run on `rt`.
    pub fn new(
        store_id: StoreId,
        snap_mgr: SnapManager,
        scheduler: GrpcSchedulerClient,
        rt: Handle,
        chunk_size: usize,
    ) -> GrpcTransport {
        GrpcTransport {
            inner: Arc::new(Inner {
                store_id,
                router: std::sync::OnceLock::new(),
                snap_mgr,
                scheduler,
                rt,
                chunk_size: chunk_size.max(4096),
                conns: Mutex::default(),
                addrs: Mutex::default(),
            }),
        }
    }

    /// Connects the transport to its store's router, for the reports to
    /// raft (unreachable stores, snapshot outcomes).
    pub fn set_router(&self, router: Router) {
        let _ = self.inner.router.set(router);
    }
}

impl Inner {
    fn report_unreachable(&self, msg: &RaftMessage) {
        if let Some(r) = self.router.get() {
            r.report_unreachable(msg);
        }
    }

    async fn address(&self, store_id: StoreId) -> Result<String> {
        if let Some(a) = self.addrs.lock().get(&store_id) {
            return Ok(a.clone());
        }
        let store = self
            .scheduler
            .get_store(store_id)
            .await?
            .store
            .filter(|s| !s.address.is_empty())
            .ok_or_else(|| Error::Unavailable(format!("store {store_id} has no address")))?;
        self.addrs.lock().insert(store_id, store.address.clone());
        Ok(store.address)
    }

    async fn connect(&self, store_id: StoreId) -> Result<RaftClient<Channel>> {
        let addr = self.address(store_id).await?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Config(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| {
                // The store may have moved: ask the scheduler next time.
                self.addrs.lock().remove(&store_id);
                Error::Unavailable(format!("cannot connect to store {store_id} at {addr}: {e}"))
            })?;
        Ok(RaftClient::new(channel).max_encoding_message_size(super::MAX_MESSAGE_BYTES))
    }

    /// Runs one stream to `to`; when it ends the store is marked down, for
    /// twice the previous backoff if the stream failed quickly.
    async fn run_stream(
        self: Arc<Self>,
        to: StoreId,
        rx: mpsc::Receiver<RaftMessage>,
        prev: Duration,
    ) {
        let started = Instant::now();
        let why = match self.connect(to).await {
            Ok(mut client) => {
                debug!(to, "raft stream open");
                let batches = rx.ready_chunks(BATCH).map(|msgs| BatchRaftMessage { msgs });
                match client.raft(batches).await {
                    Ok(_) => "stream closed".to_string(),
                    Err(e) => e.message().to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        let mut conns = self.conns.lock();
        let backoff = if started.elapsed() > MAX_BACKOFF * 3 {
            MIN_BACKOFF
        } else {
            (prev * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
        };
        info!(to, error = %why, backoff_ms = backoff.as_millis() as u64, "store unreachable");
        conns.insert(
            to,
            Conn::Down {
                until: Instant::now() + backoff,
                backoff,
            },
        );
    }

    fn send(self: &Arc<Self>, msg: RaftMessage) {
        let to = msg.to_peer.map_or(0, |p| p.store_id);
        if to == 0 || to == self.store_id {
            return;
        }
        if msg.msg_type == MessageType::MsgSnapshot as i32 {
            let me = self.clone();
            self.rt
                .spawn(async move { me.send_snapshot(to, msg).await });
            return;
        }
        let mut conns = self.conns.lock();
        let conn = conns.entry(to).or_insert(Conn::Down {
            until: Instant::now(),
            backoff: Duration::ZERO,
        });
        if let Conn::Down { until, backoff } = conn {
            if Instant::now() < *until {
                drop(conns);
                self.report_unreachable(&msg);
                return;
            }
            // Time to try again.
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            let prev = *backoff;
            *conn = Conn::Up(tx);
            let me = self.clone();
            self.rt
                .spawn(async move { me.run_stream(to, rx, prev).await });
        }
        if let Conn::Up(tx) = conn {
            if let Err(e) = tx.try_send(msg) {
                let full = e.is_full();
                let msg = e.into_inner();
                drop(conns);
                if full {
                    debug!(to, "raft queue full; message dropped");
                }
                self.report_unreachable(&msg);
            }
        }
    }

    /// Streams a snapshot file in chunks, then reports how it ended.
    async fn send_snapshot(self: Arc<Self>, to: StoreId, msg: RaftMessage) {
        let result = self.try_send_snapshot(to, &msg).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        crate::metrics::SNAPSHOTS
            .with_label_values(&["sent", outcome])
            .inc();
        if let Err(e) = &result {
            warn!(to, region_id = msg.region_id, error = %e, "snapshot not sent");
        }
        if let Some(r) = self.router.get() {
            r.report_snapshot(&msg, result.is_ok());
        }
    }

    async fn try_send_snapshot(&self, to: StoreId, msg: &RaftMessage) -> Result<()> {
        let data = crate::peer::message::snapshot_data(msg)?;
        let path = self.snap_mgr.path(&data.file_name)?;
        let file = std::fs::File::open(&path)?;
        let chunk_size = self.chunk_size;
        // Read lazily, one chunk per message: a snapshot is never held in
        // memory whole. The first chunk carries the envelope.
        let chunks = futures::stream::unfold(
            (file, Some(msg.clone()), false),
            move |(mut file, envelope, done)| async move {
                if done {
                    return None;
                }
                let mut buf = vec![0u8; chunk_size];
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(error = %e, "snapshot file unreadable");
                        return None;
                    }
                };
                if n == 0 && envelope.is_none() {
                    return None;
                }
                buf.truncate(n);
                let chunk = SnapshotChunk {
                    message: envelope,
                    data: buf,
                };
                Some((chunk, (file, None, n == 0)))
            },
        );
        let mut client = self.connect(to).await?;
        client
            .snapshot(chunks)
            .await
            .map_err(|e| Error::Unavailable(format!("snapshot stream: {}", e.message())))?;
        Ok(())
    }
}

impl Transport for GrpcTransport {
    fn send(&self, msg: RaftMessage) {
        self.inner.send(msg);
    }
}
