//! The `tessel` binary: `scheduler` and `node` run the networked service
//! (`serve.rs`); `playground` runs a cluster in this process, on the network
//! or with a shell on stdin (`shell.rs`); `ctl` operates a running cluster
//! (`ctl.rs`); `bench` measures (`bench/`).
//!
//! Only this binary uses `anyhow`: the library's errors are typed, and here
//! they become one line for an operator.

mod bench;
mod ctl;
mod serve;
mod shell;

use clap::{Parser, Subcommand};
use tessel::Config;

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
    Scheduler(serve::SchedulerArgs),
    /// Operate a running cluster: data, regions, stores, membership, split.
    Ctl {
        /// The scheduler's address (host:port).
        #[arg(long, default_value = "127.0.0.1:2379")]
        scheduler: String,
        /// Print JSON instead of text (anywhere on the line).
        #[arg(long, global = true)]
        json: bool,
        /// How long membership and split commands wait for the change to
        /// show before giving up (and cancelling what is not yet proposed).
        #[arg(long, global = true, default_value_t = 20, value_name = "SECONDS")]
        timeout: u64,
        #[command(subcommand)]
        cmd: ctl::CtlCommand,
    },
    /// Run a node: one store serving the Kv and Raft services. The first
    /// start gets a store id from the scheduler; the first node of an empty
    /// cluster bootstraps it.
    Node(serve::NodeArgs),
    /// Print a node configuration file with every key at its default.
    Config,
    /// Start an in-process cluster and a shell on stdin (put, get, delete,
    /// scan, regions, stores, help).
    Playground(serve::PlaygroundArgs),
    /// Put 128-byte values from many concurrent clients into an in-process
    /// cluster with durable writes; print puts/s, latency, fsyncs, memory.
    Bench(bench::BenchArgs),
}

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
            timeout,
            cmd,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let wait = std::time::Duration::from_secs(timeout);
            let out = rt.block_on(ctl::run(&scheduler, json, wait, cmd))?;
            println!("{out}");
            Ok(())
        }
        Command::Scheduler(args) => serve::scheduler(args),
        Command::Config => {
            print!("{}", Config::documented_toml());
            Ok(())
        }
        Command::Node(args) => serve::node(args),
        Command::Playground(args) => serve::playground(args),
        Command::Bench(args) => bench::run(args),
    }
}
