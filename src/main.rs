//! The `tessel` binary: `scheduler` and `node` run the networked service;
//! `playground` runs a cluster in this process with a shell on stdin;
//! `bench` measures.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tessel::ctl::show_key;
use tessel::testkit::Cluster;
use tessel::Config;
use tokio::io::{AsyncBufReadExt, BufReader};

// The store threads allocate a message, a buffer or a sled node for nearly
// everything they do; under glibc's allocator malloc/free were 17% of all
// CPU in a put benchmark (perf). mimalloc's thread-local pages cost less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessel",
    version,
    about = "A range-sharded, Raft-replicated key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler: ids, stores, the region map, operators. Its
    /// metadata lives in --data-dir and survives restarts.
    Scheduler {
        /// Address to listen on (host:port; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:2379")]
        addr: std::net::SocketAddr,
        #[arg(long)]
        data_dir: PathBuf,
        /// Replicas per region: regions with fewer get peers added.
        #[arg(long, default_value_t = 3)]
        max_replicas: usize,
        /// Serve /metrics (Prometheus) and /status (JSON) here.
        #[arg(long)]
        status_addr: Option<std::net::SocketAddr>,
    },
    /// Operate a running cluster: data, regions, stores, membership, split.
    Ctl {
        /// The scheduler's address (host:port).
        #[arg(long, default_value = "127.0.0.1:2379")]
        scheduler: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: tessel::ctl::CtlCommand,
    },
    /// Run a node: one store serving the Kv and Raft services. The first
    /// start gets a store id from the scheduler; the first node of an empty
    /// cluster bootstraps it.
    Node {
        /// Address to listen on and to be reached at (port 0 picks one);
        /// default 127.0.0.1:20160.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
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
        status_addr: Option<std::net::SocketAddr>,
        /// Join as a new store even though this data directory held a
        /// store whose data was lost (the node refuses to start otherwise).
        /// The old data is renamed aside, not deleted.
        #[arg(long)]
        new_store: bool,
    },
    /// Print a node configuration file with every key at its default.
    Config,
    /// Start an in-process cluster and a shell on stdin (put, get, delete,
    /// scan, regions, stores, help).
    Playground {
        /// How many stores to run.
        #[arg(long, default_value_t = 3)]
        stores: u64,
        /// Keep the data here (default: a temporary directory removed at exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The scheduler's address; nodes listen on --node-addr and the
        /// ports after it.
        #[arg(long, default_value = "127.0.0.1:2379")]
        scheduler_addr: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:20160")]
        node_addr: std::net::SocketAddr,
        /// Instead of serving on the network, run the stores in-process
        /// with a shell on stdin.
        #[arg(long)]
        shell: bool,
    },
    /// Put 128-byte values from many concurrent clients into an in-process
    /// cluster with durable writes; print puts/s, latency, fsyncs, memory.
    Bench {
        #[arg(long, default_value_t = 3)]
        stores: u64,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 128)]
        value_size: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Measure membership changes instead: leader transfers and one
        /// add-peer caught up by snapshot after writing --keys keys.
        #[arg(long)]
        membership: bool,
        /// Keys written before the add-peer of --membership.
        #[arg(long, default_value_t = 20_000)]
        keys: u64,
        /// Measure splits instead: latency of ten splits on sequential
        /// writes, then the regions after a bulk load of --bulk-mib MiB.
        #[arg(long)]
        split: bool,
        /// Region sizes are the production ones divided by this.
        #[arg(long, default_value_t = 100)]
        scale: u64,
        #[arg(long, default_value_t = 100)]
        bulk_mib: u64,
        /// Measure a running networked cluster instead (the same client
        /// code for both targets); see scripts/bench-vs-etcd.sh.
        #[arg(long, value_enum)]
        target: Option<tessel::bench_net::Target>,
        /// Tessel: the scheduler's address; etcd: comma-separated client URLs.
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
        #[arg(long, value_enum, default_value = "put")]
        workload: tessel::bench_net::Workload,
        /// Keys the workload draws from (preloaded for get and mixed).
        #[arg(long, default_value_t = 10_000)]
        key_space: u64,
        /// With --target tessel: writes without client sessions (measures
        /// what exactly-once costs).
        #[arg(long)]
        no_sessions: bool,
    },
}

const HELP: &str = "commands:
  put <key> <value>      write a key
  get <key>              read a key (linearizable)
  delete <key>           delete a key
  scan [<start> [<end>]] list keys in [start, end)
  regions                list regions: range, epoch, peers, leader
  stores                 list stores
  transfer-leader <region> <store>   move a region's leadership to its peer on a store
  add-peer <region> <store>          add a replica of a region on a store
  remove-peer <region> <store>       remove a region's replica from a store
  split <key>            split the region holding key so that key starts a region
  help                   this text
  quit                   stop the cluster and exit";

fn main() {
    tessel::logging::init();
    let cli = Cli::parse();
    // Errors are for operators: the message and its causes on one line, a
    // non-zero exit, no backtrace.
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ctl {
            scheduler,
            json,
            cmd,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let out = rt.block_on(tessel::ctl::run(&scheduler, json, cmd))?;
            println!("{out}");
            Ok(())
        }
        Command::Scheduler {
            addr,
            data_dir,
            max_replicas,
            status_addr,
        } => {
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
                tessel::server::scheduler_service::serve_scheduler(
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
        Command::Config => {
            print!("{}", Config::documented_toml());
            Ok(())
        }
        Command::Node {
            addr,
            scheduler,
            data_dir,
            config,
            status_addr,
            new_store,
        } => actix::System::new().block_on(async move {
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
            let opts = tessel::server::node::NodeOptions {
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
            let node = tessel::server::node::Node::start(opts).await?;
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
        }),
        Command::Playground {
            stores,
            data_dir,
            scheduler_addr,
            node_addr,
            shell,
        } => {
            anyhow::ensure!(
                (1..=9).contains(&stores),
                "--stores must be between 1 and 9"
            );
            if shell {
                return actix::System::new().block_on(playground(stores, data_dir));
            }
            actix::System::new().block_on(async move {
                let cluster = tessel::server::local::LocalCluster::start(
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
        Command::Bench {
            stores,
            clients,
            value_size,
            seconds,
            membership,
            keys,
            split,
            scale,
            bulk_mib,
            target,
            endpoints,
            workload,
            key_space,
            no_sessions,
        } => {
            if let Some(target) = target {
                anyhow::ensure!(clients >= 1, "--clients must be at least 1");
                anyhow::ensure!(!endpoints.is_empty(), "--endpoints is needed with --target");
                let opts = tessel::bench_net::NetBenchOptions {
                    target,
                    endpoints,
                    workload,
                    clients,
                    keys: key_space,
                    value_size,
                    duration: std::time::Duration::from_secs(seconds.max(1)),
                    sessions: !no_sessions,
                };
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                let report = rt.block_on(tessel::bench_net::run(opts))?;
                println!("{}", tessel::bench_net::NetBenchReport::HEADER);
                println!("{}", report.row());
                return Ok(());
            }
            if split {
                anyhow::ensure!(clients >= 1, "--clients must be at least 1");
                let report = actix::System::new().block_on(tessel::bench::run_split(
                    scale,
                    bulk_mib * 1024 * 1024,
                    clients,
                ))?;
                println!("{report}");
                return Ok(());
            }
            if membership {
                let report = actix::System::new()
                    .block_on(tessel::bench::run_membership(keys, value_size))?;
                println!("{report}");
                return Ok(());
            }
            anyhow::ensure!(
                (1..=9).contains(&stores),
                "--stores must be between 1 and 9"
            );
            anyhow::ensure!(clients >= 1, "--clients must be at least 1");
            let opts = tessel::bench::BenchOptions {
                stores,
                clients,
                value_size,
                duration: std::time::Duration::from_secs(seconds.max(1)),
            };
            println!("bench: {opts:?}");
            let report = actix::System::new().block_on(tessel::bench::run_puts(opts))?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn playground(stores: u64, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::default();
    let cluster = match &data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Cluster::with_dir(stores, cfg, dir)
        }
        None => Cluster::new(stores, cfg),
    };
    cluster.start().await;
    cluster
        .leader_of_region(1)
        .await
        .context("no leader elected for the first region")?;
    println!("tessel playground: {stores} stores ready; type `help` for commands");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        use std::io::Write as _;
        print!("> ");
        let _ = std::io::stdout().flush();
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") || words.first() == Some(&"exit") {
            break;
        }
        match run_command(&cluster, &words).await {
            Ok(out) => println!("{out}"),
            Err(e) => println!("error: {e}"),
        }
    }
    cluster.shutdown().await;
    Ok(())
}

async fn run_command(cluster: &Cluster, words: &[&str]) -> anyhow::Result<String> {
    let usage = |u: &str| Err(anyhow::anyhow!("usage: {u}"));
    match words {
        [] => Ok(String::new()),
        ["help"] => Ok(HELP.to_string()),
        ["put", k, v] => {
            cluster
                .put_cf(tessel::keys::CF_DEFAULT, k.as_bytes(), v.as_bytes())
                .await?;
            Ok("OK".into())
        }
        ["put", ..] => usage("put <key> <value>"),
        ["get", k] => Ok(
            match cluster
                .get_cf(tessel::keys::CF_DEFAULT, k.as_bytes())
                .await?
            {
                Some(v) => String::from_utf8_lossy(&v).to_string(),
                None => "(not found)".into(),
            },
        ),
        ["get", ..] => usage("get <key>"),
        ["delete", k] => {
            cluster
                .delete_cf(tessel::keys::CF_DEFAULT, k.as_bytes())
                .await?;
            Ok("OK".into())
        }
        ["delete", ..] => usage("delete <key>"),
        ["scan", rest @ ..] if rest.len() <= 2 => {
            let start = rest.first().map_or(&b""[..], |s| s.as_bytes());
            let end = rest.get(1).map_or(&b""[..], |s| s.as_bytes());
            let pairs = cluster.scan(start, end).await;
            let mut out: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{} = {}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect();
            out.push(format!("({} keys)", pairs.len()));
            Ok(out.join("\n"))
        }
        ["scan", ..] => usage("scan [<start> [<end>]]"),
        ["regions"] => Ok(regions(cluster)),
        ["transfer-leader" | "add-peer" | "remove-peer", region, store] => {
            membership(cluster, words[0], region, store).await
        }
        ["transfer-leader" | "add-peer" | "remove-peer", ..] => {
            usage(&format!("{} <region> <store>", words[0]))
        }
        ["stores"] => Ok(stores(cluster)),
        ["split", key] => {
            let region = cluster.get_region(key.as_bytes()).await;
            cluster.try_split(region.id, key.as_bytes()).await?;
            Ok(regions(cluster))
        }
        ["split", ..] => usage("split <key>"),
        _ => Err(anyhow::anyhow!(
            "unknown command {:?}; try `help`",
            words.join(" ")
        )),
    }
}

/// Carries out a membership command through the scheduler, as an operator
/// would, and waits (5 s at most) for the scheduler to see it done.
async fn membership(
    cluster: &Cluster,
    cmd: &str,
    region: &str,
    store: &str,
) -> anyhow::Result<String> {
    let region_id: u64 = region.parse().context("<region> must be a region id")?;
    let store_id: u64 = store.parse().context("<store> must be a store id")?;
    anyhow::ensure!(
        cluster.store_ids().contains(&store_id),
        "no store {store_id} in this cluster"
    );
    let info = cluster
        .regions()
        .into_iter()
        .find(|r| r.region.id == region_id)
        .with_context(|| format!("no region {region_id}"))?;
    let existing = info
        .region
        .peers
        .iter()
        .find(|p| p.store_id == store_id)
        .copied();
    let start = std::time::Instant::now();
    let outcome = match (cmd, existing) {
        ("add-peer", Some(p)) => anyhow::bail!("store {store_id} already has peer {}", p.id),
        ("add-peer", None) => {
            let peer = cluster.alloc_peer(store_id);
            cluster.try_add_peer(region_id, peer).await.map(|_| peer)
        }
        (_, None) => anyhow::bail!("region {region_id} has no peer on store {store_id}"),
        ("remove-peer", Some(p)) => cluster.try_remove_peer(region_id, p).await.map(|_| p),
        (_, Some(p)) => cluster.try_transfer_leader(region_id, p).await.map(|_| p),
    };
    let peer = outcome?;
    Ok(format!(
        "{cmd} done: peer {} on store {} ({} ms)",
        peer.id,
        peer.store_id,
        start.elapsed().as_millis()
    ))
}

fn regions(cluster: &Cluster) -> String {
    let mut out = Vec::new();
    for info in cluster.regions() {
        let r = &info.region;
        let e = r.region_epoch.unwrap_or_default();
        let peers: Vec<String> = r
            .peers
            .iter()
            .map(|p| format!("{}@s{}", p.id, p.store_id))
            .collect();
        let leader = info
            .leader
            .map_or("unknown".into(), |l| format!("{}@s{}", l.id, l.store_id));
        out.push(format!(
            "region {} [{}, {}) conf_ver {} version {} peers [{}] leader {}",
            r.id,
            show_key(&r.start_key),
            show_key(&r.end_key),
            e.conf_ver,
            e.version,
            peers.join(", "),
            leader
        ));
    }
    out.join("\n")
}

fn stores(cluster: &Cluster) -> String {
    cluster
        .scheduler()
        .with(|s| s.stores())
        .into_iter()
        .map(|(store, stats)| {
            format!(
                "store {} regions {} used {} bytes",
                store.id, stats.region_count, stats.used_size
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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
