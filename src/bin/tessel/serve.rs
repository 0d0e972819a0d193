//! The long-running subcommands: `tessel scheduler`, `tessel node` and the
//! networked `tessel playground`. Each parses its flags (and the node's
//! configuration file), starts the process from `tessel::process` and runs
//! until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tessel::Config;

/// Flags of `tessel scheduler`.
#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:2379")]
    addr: SocketAddr,
    #[arg(long)]
    data_dir: PathBuf,
    /// Replicas per region: regions with fewer get peers added.
    #[arg(long, default_value_t = 3)]
    max_replicas: usize,
    /// Serve /metrics (Prometheus) and /status (JSON) here.
    #[arg(long)]
    status_addr: Option<SocketAddr>,
}

/// Flags of `tessel node`.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// Address to listen on and to be reached at (port 0 picks one);
    /// default 127.0.0.1:20160.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The scheduler's address (host:port); default 127.0.0.1:2379.
    #[arg(long)]
    scheduler: Option<String>,
    /// Where the store keeps its data (required here or in the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (`tessel config` prints one with
    /// every key); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve /metrics (Prometheus) and /status (JSON) here.
    #[arg(long)]
    status_addr: Option<SocketAddr>,
    /// Join as a new store even though this data directory held a
    /// store whose data was lost (the node refuses to start otherwise).
    /// The old data is renamed aside, not deleted.
    #[arg(long)]
    new_store: bool,
}

/// Flags of `tessel playground`.
#[derive(clap::Args)]
pub struct PlaygroundArgs {
    /// How many stores to run.
    #[arg(long, default_value_t = 3)]
    stores: u64,
    /// Keep the data here (default: a temporary directory removed at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The scheduler's address; nodes listen on --node-addr and the
    /// ports after it.
    #[arg(long, default_value = "127.0.0.1:2379")]
    scheduler_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:20160")]
    node_addr: SocketAddr,
    /// Instead of serving on the network, run the stores in-process
    /// with a shell on stdin.
    #[arg(long)]
    shell: bool,
}

/// `tessel scheduler`.
pub fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let SchedulerArgs {
        addr,
        data_dir,
        max_replicas,
        status_addr,
    } = args;
    anyhow::ensure!(
        (1..=7).contains(&max_replicas),
        "--max-replicas must be between 1 and 7"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        let status = match status_addr {
            Some(a) => {
                let l = std::net::TcpListener::bind(a)
                    .with_context(|| format!("cannot listen on {a}"))?;
                println!("tessel scheduler status at {}", l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        println!("tessel scheduler serving at {}", listener.local_addr()?);
        tessel::process::scheduler::serve_scheduler(
            listener,
            &data_dir,
            max_replicas,
            status,
            shutdown_signal(),
        )
        .await?;
        println!("tessel scheduler stopped");
        Ok(())
    })
}

/// `tessel node`: the configuration file first, flags over it.
pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let NodeArgs {
        addr,
        scheduler,
        data_dir,
        config,
        status_addr,
        new_store,
    } = args;
    actix::System::new().block_on(async move {
        let file = match &config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                tessel::config::ConfigFile::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Default::default(),
        };
        let cfg = file
            .to_config()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let data_dir = data_dir
            .or(file.data_dir.clone())
            .context("--data-dir (or data_dir in the config file) is required")?;
        let opts = tessel::process::node::NodeOptions {
            addr: addr
                .or(file.addr)
                .unwrap_or_else(|| "127.0.0.1:20160".parse().expect("a valid address")),
            scheduler: scheduler
                .or(file.scheduler.clone())
                .unwrap_or_else(|| "127.0.0.1:2379".into()),
            data_dir,
            status_addr,
            cfg,
            new_store,
        };
        let node = tessel::process::node::Node::start(opts).await?;
        if let Some(s) = node.status_addr {
            println!("tessel node: status at {s}");
        }
        println!(
            "tessel node: store {} serving at {}",
            node.store_id, node.addr
        );
        shutdown_signal().await;
        node.stop().await;
        println!("tessel node stopped");
        Ok(())
    })
}

/// `tessel playground`: a scheduler and nodes on the network in this
/// process, or with `--shell` the in-process test kit and a shell.
pub fn playground(args: PlaygroundArgs) -> anyhow::Result<()> {
    let PlaygroundArgs {
        stores,
        data_dir,
        scheduler_addr,
        node_addr,
        shell,
    } = args;
    anyhow::ensure!(
        (1..=9).contains(&stores),
        "--stores must be between 1 and 9"
    );
    if shell {
        return actix::System::new().block_on(crate::shell::playground(stores, data_dir));
    }
    actix::System::new().block_on(async move {
        let cluster = tessel::process::local::LocalCluster::start(
            stores as usize,
            scheduler_addr,
            node_addr,
            data_dir.as_deref(),
            Config::default(),
        )
        .await?;
        println!("scheduler: {}", cluster.scheduler_addr);
        for n in &cluster.nodes {
            println!("node: store {} at {}", n.store_id, n.addr);
        }
        println!(
            "tessel playground ready: try `tessel ctl --scheduler {} put k v`; Ctrl-C stops",
            cluster.scheduler_addr
        );
        shutdown_signal().await;
        cluster.stop().await;
        println!("tessel playground stopped");
        Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
