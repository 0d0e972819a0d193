//! `tessel bench`: the put benchmark over the in-process cluster
//! (`puts.rs`, also `--membership` and `--split`), and the same client code
//! against a running networked cluster or etcd (`net.rs`, `--target`).

mod ingest;
mod membership;
mod net;
mod puts;

/// Flags of `tessel bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
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
    /// Measure what taking in a snapshot of --bulk-mib MiB costs the
    /// other regions of the receiving store (their put latency).
    #[arg(long)]
    ingest: bool,
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
    target: Option<net::Target>,
    /// Tessel: the scheduler's address; etcd: comma-separated client URLs.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    #[arg(long, value_enum, default_value = "put")]
    workload: net::Workload,
    /// Keys the workload draws from (preloaded for get and mixed).
    #[arg(long, default_value_t = 10_000)]
    key_space: u64,
    /// With --target tessel: writes without client sessions (measures
    /// what exactly-once costs).
    #[arg(long)]
    no_sessions: bool,
}

/// `tessel bench`: picks the benchmark the flags ask for and prints its
/// report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        stores,
        clients,
        value_size,
        seconds,
        membership,
        keys,
        ingest,
        split,
        scale,
        bulk_mib,
        target,
        endpoints,
        workload,
        key_space,
        no_sessions,
    } = args;
    if let Some(target) = target {
        anyhow::ensure!(clients >= 1, "--clients must be at least 1");
        anyhow::ensure!(!endpoints.is_empty(), "--endpoints is needed with --target");
        let opts = net::NetBenchOptions {
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
        let report = rt.block_on(net::run(opts))?;
        println!("{}", net::NetBenchReport::HEADER);
        println!("{}", report.row());
        return Ok(());
    }
    if split {
        anyhow::ensure!(clients >= 1, "--clients must be at least 1");
        let report = actix::System::new().block_on(puts::run_split(
            scale,
            bulk_mib * 1024 * 1024,
            clients,
        ))?;
        println!("{report}");
        return Ok(());
    }
    if ingest {
        let report = actix::System::new().block_on(ingest::run(bulk_mib, value_size))?;
        println!("{report}");
        return Ok(());
    }
    if membership {
        let report = actix::System::new().block_on(membership::run(keys, value_size))?;
        println!("{report}");
        return Ok(());
    }
    anyhow::ensure!(
        (1..=9).contains(&stores),
        "--stores must be between 1 and 9"
    );
    anyhow::ensure!(clients >= 1, "--clients must be at least 1");
    let opts = puts::BenchOptions {
        stores,
        clients,
        value_size,
        duration: std::time::Duration::from_secs(seconds.max(1)),
    };
    println!("bench: {opts:?}");
    let report = actix::System::new().block_on(puts::run_puts(opts))?;
    println!("{report}");
    Ok(())
}
