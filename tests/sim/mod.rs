//! The deterministic simulator: N stores of the real `Peer` core over
//! temporary sled, with no actix, no threads and no clock. One seeded
//! queue of events drives everything: message delivery (delayed, dropped,
//! duplicated, reordered), partitions, ticks, flushes, crashes that keep
//! only what was flushed, restarts, conf changes, leader transfers and
//! splits. Model clients record every operation; at the end the history
//! must be linearizable and the invariants must hold (`check.rs`).
//!
//! Every run prints its seed, and a seed replays its run exactly (the
//! digest of every event, in order, is compared by
//! `sim_replays_a_seed_exactly`). To replay one:
//! `TESSEL_SIM_SEED=<seed> cargo test --release --test main sim_one -- --ignored --nocapture`;
//! to search many: `TESSEL_SIM_RUNS=500 cargo test --release --test main sim_many -- --ignored`.

mod check;
mod client;
mod nemesis;
mod world;

use std::time::Instant;

use client::Clients;
use world::{Event, Faults, World, MS, SEC};

/// The shape of one run.
#[derive(Clone, Debug)]
pub struct Options {
    pub stores: u64,
    pub clients: usize,
    pub keys: usize,
    /// Simulated time with faults on, then with the network healed and
    /// every store up.
    pub fault_time: u64,
    pub calm_time: u64,
    pub faults: Faults,
}

impl Options {
    /// The fault profile a seed gets: every few seeds another mix, so a
    /// fixed set of seeds covers them all.
    pub fn for_seed(seed: u64) -> Options {
        let all = Faults {
            drop: 0.1,
            duplicate: 0.05,
            max_delay: 20 * MS,
            crashes: true,
            partitions: true,
            conf_changes: true,
            transfers: true,
            splits: true,
        };
        let faults = match seed % 4 {
            // Membership and splits over a lossy network.
            0 => Faults {
                crashes: false,
                partitions: false,
                ..all
            },
            // Crashes and partitions on a fixed membership.
            1 => Faults {
                conf_changes: false,
                splits: false,
                drop: 0.2,
                ..all
            },
            // Everything at once.
            2 => all,
            // Everything, on a badly lossy network.
            _ => Faults {
                drop: 0.3,
                duplicate: 0.1,
                max_delay: 50 * MS,
                ..all
            },
        };
        Options {
            stores: if seed.is_multiple_of(3) { 5 } else { 3 },
            clients: 8,
            keys: 8,
            fault_time: 20 * SEC,
            calm_time: 10 * SEC,
            faults,
        }
    }
}

/// What one run did and found.
#[derive(Debug)]
pub struct Report {
    pub events: u64,
    pub digest: u64,
    pub ok: u64,
    pub unknown: u64,
    pub failed: u64,
    pub violations: Vec<String>,
    pub stats: world::Stats,
    pub history: Vec<crate::harness::linearizability::Event>,
    pub wall: std::time::Duration,
}

/// Runs one simulation from `seed`.
pub fn run(seed: u64, opts: &Options) -> Report {
    let started = Instant::now();
    let keys: Vec<Vec<u8>> = (0..opts.keys)
        .map(|i| format!("k{:02}", i * 100 / opts.keys).into_bytes())
        .collect();
    let mut w = World::new(seed, opts.stores, opts.faults.clone(), keys);
    let mut clients = Clients::new(&mut w, opts.clients);
    w.schedule(200 * MS, Event::Nemesis);

    let drive = |w: &mut World, clients: &mut Clients, until: u64| {
        // Bounded: the queue always holds the stores' ticks, so stop at
        // `until` or after far more events than any run needs.
        for _ in 0..20_000_000u64 {
            let stepped = w.step(until, &mut |w, c, token| clients.wake(w, c, token));
            clients.poll(w);
            if !stepped {
                return;
            }
        }
        w.violation("the run did not reach its end time".into());
    };
    drive(&mut w, &mut clients, opts.fault_time);
    w.calm();
    drive(&mut w, &mut clients, opts.fault_time + opts.calm_time);
    // Let the operations in flight finish.
    clients.running = false;
    let end = opts.fault_time + opts.calm_time + 5 * SEC;
    while clients.busy() && w.now < end {
        let until = w.now + 100 * MS;
        drive(&mut w, &mut clients, until);
    }
    clients.close();
    check::at_end(&mut w, &clients.history);
    Report {
        events: w.events,
        digest: w.digest,
        ok: clients.ok,
        unknown: clients.unknown,
        failed: clients.failed,
        violations: w
            .violations
            .iter()
            .map(|v| format!("at {:.3}s: {}", v.at as f64 / SEC as f64, v.what))
            .collect(),
        history: clients.history,
        stats: w.stats.clone(),
        wall: started.elapsed(),
    }
}

/// Runs `seed` and fails with the seed and what it found.
fn run_checked(seed: u64) -> Report {
    let opts = Options::for_seed(seed);
    eprintln!(
        "sim seed {seed} ({} stores, {:?}); replay: TESSEL_SIM_SEED={seed} cargo test --release --test main sim_one -- --ignored --nocapture",
        opts.stores, opts.faults
    );
    let r = run(seed, &opts);
    eprintln!(
        "sim seed {seed}: {} events, {} ok, {} unknown, {} failed, {:.1}s wall; {:?}",
        r.events,
        r.ok,
        r.unknown,
        r.failed,
        r.wall.as_secs_f64(),
        r.stats
    );
    assert!(
        r.violations.is_empty(),
        "sim seed {seed} found {} violation(s):\n{}",
        r.violations.len(),
        r.violations.join("\n")
    );
    r
}

/// The fixed seeds CI runs: every fault profile, 3 and 5 stores.
const CI_SEEDS: std::ops::RangeInclusive<u64> = 1..=16;

#[test]
fn sim_fixed_seeds() {
    crate::harness::init();
    let mut ops = 0;
    for seed in CI_SEEDS {
        let r = run_checked(seed);
        assert!(r.ok > 0, "sim seed {seed}: no operation succeeded");
        ops += r.ok;
    }
    eprintln!(
        "sim: {} seeds, {ops} operations acknowledged",
        CI_SEEDS.count()
    );
}

#[test]
fn sim_replays_a_seed_exactly() {
    crate::harness::init();
    let seed = 7;
    let opts = Options {
        fault_time: 8 * SEC,
        calm_time: 4 * SEC,
        ..Options::for_seed(seed)
    };
    let a = run(seed, &opts);
    let b = run(seed, &opts);
    assert_eq!(a.events, b.events, "same seed, different event counts");
    assert_eq!(a.digest, b.digest, "same seed, different runs");
    assert_eq!(a.history, b.history, "same seed, different histories");
}

#[test]
#[ignore = "one seed, from TESSEL_SIM_SEED"]
fn sim_one() {
    crate::harness::init();
    let seed = std::env::var("TESSEL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("set TESSEL_SIM_SEED to the seed to replay");
    run_checked(seed);
}

#[test]
#[ignore = "many seeds: TESSEL_SIM_RUNS (default 100) from TESSEL_SIM_SEED (default 1000)"]
fn sim_many() {
    crate::harness::init();
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (first, runs) = (env("TESSEL_SIM_SEED", 1000), env("TESSEL_SIM_RUNS", 100));
    let started = Instant::now();
    let mut failed = Vec::new();
    for seed in first..first + runs {
        let opts = Options::for_seed(seed);
        // A panic in the core is a finding like any other: note the seed
        // and go on with the next.
        match std::panic::catch_unwind(|| run(seed, &opts)) {
            Ok(r) if r.violations.is_empty() => {}
            Ok(r) => {
                eprintln!("sim seed {seed}: {}", r.violations.join("\n  "));
                failed.push(seed);
            }
            Err(_) => {
                eprintln!("sim seed {seed}: panicked");
                failed.push(seed);
            }
        }
    }
    let mins = started.elapsed().as_secs_f64() / 60.0;
    eprintln!(
        "sim: {runs} runs in {mins:.1} min ({:.1} runs/min), failing seeds: {failed:?}",
        runs as f64 / mins
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}
