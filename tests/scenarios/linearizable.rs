//! Linearizability under faults: model clients run single-attempt
//! operations (no retry, so the history is exactly what the store said) on a
//! few keys with unique values, while partitions, crashes, leader transfers,
//! splits and conf changes happen. Each operation is recorded as ok, failed
//! (a definite error) or unknown (no answer, `Undetermined`), and the whole
//! history goes through the checker in tests/harness/linearizability.rs,
//! whose own tests show it rejects non-linearizable histories.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessel::proto::raft_cmdpb::{
    CmdType, DeleteRequest, GetRequest, PutRequest, RaftCmdResponse, Request,
};
use tessel::testkit::{Cluster, Filter, OnceOutcome};
use tessel::Config;

use crate::harness::linearizability::{check, History, Op, Outcome, DEFAULT_BUDGET};

const STORES: u64 = 5;
const CLIENTS: usize = 5;
const KEYS: [&[u8]; 3] = [b"k0", b"k1", b"k2"];
const RUN: Duration = Duration::from_secs(8);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

fn request(op: &Op) -> Request {
    match op {
        Op::Put { key, value } => Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest {
                cf: 0,
                key: key.clone(),
                value: value.clone(),
            }),
            ..Default::default()
        },
        Op::Delete { key } => Request {
            cmd_type: CmdType::Delete as i32,
            delete: Some(DeleteRequest {
                cf: 0,
                key: key.clone(),
            }),
            ..Default::default()
        },
        Op::Get { key } => Request {
            cmd_type: CmdType::Get as i32,
            get: Some(GetRequest {
                cf: 0,
                key: key.clone(),
            }),
            ..Default::default()
        },
    }
}

fn observed(resp: &RaftCmdResponse) -> Option<Vec<u8>> {
    let g = resp.responses.first().and_then(|r| r.get.clone())?;
    g.found.then_some(g.value)
}

async fn model_client(
    cluster: Cluster,
    c: usize,
    seed: u64,
    history: Arc<History>,
    done: Arc<AtomicBool>,
) -> [u64; 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = [0u64; 3];
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        let key = KEYS[rng.gen_range(0..KEYS.len())].to_vec();
        let op = match rng.gen_range(0..10) {
            0..=4 => {
                n += 1;
                Op::Put {
                    key: key.clone(),
                    value: format!("c{c}-{n}").into_bytes(),
                }
            }
            5 => Op::Delete { key: key.clone() },
            _ => Op::Get { key: key.clone() },
        };
        let is_get = matches!(op, Op::Get { .. });
        let req = request(&op);
        let ticket = history.invoke(c, op);
        let mut pause = true;
        let outcome = match cluster.request_once(&key, vec![req], ATTEMPT_TIMEOUT).await {
            OnceOutcome::Ok(resp) => {
                counts[0] += 1;
                pause = false;
                Outcome::Ok(if is_get { observed(&resp) } else { None })
            }
            OnceOutcome::NotSent(_) | OnceOutcome::Failed(_) => {
                counts[1] += 1;
                Outcome::Failed
            }
            OnceOutcome::Unknown(_) => {
                counts[2] += 1;
                Outcome::Unknown
            }
        };
        history.complete(ticket, outcome);
        if pause {
            // A failed attempt backs off a little, as a real client would.
            actix_rt::time::sleep(Duration::from_millis(rng.gen_range(5..30))).await;
        }
    }
    counts
}

/// One fault at a time, healed before the next.
async fn faults(cluster: Cluster, seed: u64, done: Arc<AtomicBool>) -> Vec<&'static str> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut log = Vec::new();
    let mut splits = vec![b"k1".as_slice(), b"k2".as_slice()];
    while !done.load(Ordering::Relaxed) {
        let hold = Duration::from_millis(rng.gen_range(200..500));
        match rng.gen_range(0..5) {
            0 => {
                let mut stores: Vec<u64> = (1..=STORES).collect();
                for i in (1..stores.len()).rev() {
                    stores.swap(i, rng.gen_range(0..=i));
                }
                let (a, b) = stores.split_at(rng.gen_range(1..STORES as usize));
                cluster.add_filter(Filter::Partition(a.to_vec(), b.to_vec()));
                actix_rt::time::sleep(hold).await;
                cluster.clear_filters();
                log.push("partition");
            }
            1 => {
                let victim = rng.gen_range(1..=STORES);
                cluster.crash_store(victim).await;
                actix_rt::time::sleep(hold).await;
                cluster.start_store(victim).await;
                log.push("crash");
            }
            2 => {
                let key = KEYS[rng.gen_range(0..KEYS.len())];
                let region = cluster.get_region(key).await;
                if let Some(p) = region.peers.get(rng.gen_range(0..region.peers.len())) {
                    let _ = cluster.try_transfer_leader(region.id, *p).await;
                }
                log.push("transfer");
            }
            3 if !splits.is_empty() => {
                let key = splits.remove(0);
                let region = cluster.get_region(key).await;
                if cluster.try_split(region.id, key).await.is_err() {
                    splits.push(key);
                }
                log.push("split");
            }
            _ => {
                // Replace one replica of a key's region by a new peer on the
                // same store: a remove and an add, both conf changes.
                let key = KEYS[rng.gen_range(0..KEYS.len())];
                let region = cluster.get_region(key).await;
                if region.peers.len() == STORES as usize {
                    let old = region.peers[rng.gen_range(0..region.peers.len())];
                    cluster.must_remove_peer(region.id, old).await;
                    cluster
                        .must_add_peer(region.id, cluster.alloc_peer(old.store_id))
                        .await;
                    log.push("conf change");
                }
            }
        }
        actix_rt::time::sleep(hold).await;
    }
    log
}

#[actix::test]
async fn single_attempt_histories_are_linearizable_under_faults() {
    crate::harness::init();
    let seed: u64 = std::env::var("TESSEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("linearizability run, seed {seed} (TESSEL_SEED={seed} to replay the choices)");
    let cluster = Cluster::new(STORES, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"warm", b"up").await;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let history = Arc::new(History::new());
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            actix_rt::spawn(model_client(
                cluster.clone(),
                c,
                rng.gen(),
                history.clone(),
                done.clone(),
            ))
        })
        .collect();
    let injector = actix_rt::spawn(faults(cluster.clone(), rng.gen(), done.clone()));
    actix_rt::time::sleep(RUN).await;
    done.store(true, Ordering::Relaxed);
    let faults = injector.await.expect("the fault injector does not panic");
    let mut totals = [0u64; 3];
    for h in clients {
        let c = h.await.expect("a model client does not panic");
        for i in 0..3 {
            totals[i] += c[i];
        }
    }
    cluster.clear_filters();
    let events = history.events();
    eprintln!(
        "{} operations: {} ok, {} failed, {} unknown; faults: {faults:?}",
        events.len(),
        totals[0],
        totals[1],
        totals[2]
    );
    assert!(
        totals[0] > 50,
        "too few operations succeeded to mean anything"
    );
    let verdict = check(&events, DEFAULT_BUDGET);
    assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    cluster.shutdown().await;
}
