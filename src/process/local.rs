//! `LocalCluster`: a scheduler and N nodes in this process, on loopback
//! ports, talking gRPC exactly as separate processes would. The playground
//! and the benchmark run one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::info;

use super::node::{Node, NodeOptions};
use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Result};

/// A scheduler and some nodes running in this process on loopback ports,
/// talking gRPC to each other as separate processes would. Shut it down with
/// [`LocalCluster::stop`]; dropping it does not stop the nodes.
pub struct LocalCluster {
    /// The address the scheduler actually listens on (the real port when
    /// port 0 was asked for); clients start here.
    pub scheduler_addr: SocketAddr,
    /// The running nodes, in start order; node `i` keeps its data in
    /// `node{i+1}/` of the data directory.
    pub nodes: Vec<Node>,
    scheduler_rt: Option<tokio::runtime::Runtime>,
    stop_scheduler: Option<oneshot::Sender<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Starts a scheduler on `scheduler_addr` and `nodes` nodes on
    /// `node_addr` (ports counting up from it; port 0: any free ports),
    /// keeping data in `data_dir` (default: a temporary directory), and
    /// waits until the first region has a leader and its replicas. Must be
    /// called inside an actix system.
    pub async fn start(
        nodes: usize,
        scheduler_addr: SocketAddr,
        node_addr: SocketAddr,
        data_dir: Option<&Path>,
        cfg: Config,
    ) -> Result<LocalCluster> {
        let (dir, tmp): (PathBuf, _) = match data_dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("tessel-playground")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tessel-scheduler")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind(scheduler_addr)?;
        let scheduler_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let sdir = dir.join("scheduler");
        let replicas = nodes.min(3);
        rt.spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) =
                super::scheduler::serve_scheduler(listener, &sdir, replicas, None, shutdown).await
            {
                tracing::error!(error = %e, "scheduler stopped");
            }
        });
        let mut cluster = LocalCluster {
            scheduler_addr,
            nodes: Vec::new(),
            scheduler_rt: Some(rt),
            stop_scheduler: Some(stop_tx),
            _tmp: tmp,
        };
        for i in 0..nodes {
            let mut addr = node_addr;
            if addr.port() != 0 {
                addr.set_port(addr.port() + i as u16);
            }
            let node = Node::start(NodeOptions {
                addr,
                scheduler: scheduler_addr.to_string(),
                data_dir: dir.join(format!("node{}", i + 1)),
                status_addr: None,
                cfg: cfg.clone(),
                new_store: false,
            })
            .await?;
            cluster.nodes.push(node);
        }
        cluster.wait_ready(replicas).await?;
        info!(%scheduler_addr, nodes, "local cluster ready");
        Ok(cluster)
    }

    /// A client of this cluster.
    pub fn client(&self) -> Result<Client> {
        Client::new(&self.scheduler_addr.to_string())
    }

    /// Waits (30 s at most) until the first region serves a write with
    /// all its replicas.
    async fn wait_ready(&self, replicas: usize) -> Result<()> {
        let client = self.client()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match client.region_of(b"").await {
                Ok((r, Some(_))) => r.peers.len() >= replicas,
                _ => false,
            };
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout("the local cluster never got ready".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every node, then the scheduler; a temporary data directory made
    /// by [`LocalCluster::start`] is deleted.
    pub async fn stop(mut self) {
        for node in self.nodes.drain(..) {
            node.stop().await;
        }
        if let Some(tx) = self.stop_scheduler.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.scheduler_rt.take() {
            rt.shutdown_background();
        }
    }
}
