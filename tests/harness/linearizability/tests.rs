//! The checker's tests: hand-written histories, a brute-force cross-check on
//! small random histories, and its speed on large ones.
use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ----- builders ---------------------------------------------------------

fn ev(client: usize, op: Op, invoke: u64, ret: u64, outcome: Outcome) -> Event {
    Event {
        client,
        op,
        invoke,
        ret,
        outcome,
    }
}

fn put(client: usize, key: &str, value: &str, invoke: u64, ret: u64) -> Event {
    let op = Op::Put {
        key: key.into(),
        value: value.into(),
    };
    ev(client, op, invoke, ret, Outcome::Ok(None))
}

fn del(client: usize, key: &str, invoke: u64, ret: u64) -> Event {
    let op = Op::Delete { key: key.into() };
    ev(client, op, invoke, ret, Outcome::Ok(None))
}

fn get(client: usize, key: &str, seen: Option<&str>, invoke: u64, ret: u64) -> Event {
    let op = Op::Get { key: key.into() };
    let seen = seen.map(|s| s.as_bytes().to_vec());
    ev(client, op, invoke, ret, Outcome::Ok(seen))
}

fn with(mut e: Event, outcome: Outcome) -> Event {
    e.outcome = outcome;
    e
}

fn accepts(events: &[Event]) {
    let v = check(events, DEFAULT_BUDGET);
    assert_eq!(v, Verdict::Linearizable, "expected linearizable, got {v}");
}

/// Asserts rejection and returns the explanation.
fn rejects(events: &[Event]) -> String {
    match check(events, DEFAULT_BUDGET) {
        Verdict::NotLinearizable { explanation, .. } => explanation,
        v => panic!("expected a violation, got {v}"),
    }
}

// ----- hand-written histories -------------------------------------------

#[test]
fn empty_history_is_linearizable() {
    accepts(&[]);
}

#[test]
fn sequential_history_accepts() {
    accepts(&[
        get(0, "k", None, 0, 1),
        put(0, "k", "a", 2, 3),
        get(1, "k", Some("a"), 4, 5),
        put(1, "k", "b", 6, 7),
        get(0, "k", Some("b"), 8, 9),
        del(0, "k", 10, 11),
        get(1, "k", None, 12, 13),
    ]);
}

#[test]
fn concurrent_overlaps_accept_when_some_order_works() {
    // The get overlaps the put, so it may see either value.
    accepts(&[put(0, "k", "a", 0, 10), get(1, "k", None, 2, 3)]);
    accepts(&[put(0, "k", "a", 0, 10), get(1, "k", Some("a"), 2, 3)]);
    // Two overlapping puts; the later read decides the order, which is
    // the reverse of invocation order.
    accepts(&[
        put(0, "k", "a", 0, 10),
        put(1, "k", "b", 1, 11),
        get(2, "k", Some("a"), 12, 13),
    ]);
    // Reads overlapping a write and each other may disagree: the one
    // linearized before the write sees the old value.
    accepts(&[
        put(0, "k", "a", 0, 100),
        get(1, "k", Some("a"), 10, 20),
        get(2, "k", None, 5, 15),
    ]);
}

#[test]
fn read_after_read_of_new_value_cannot_go_back() {
    // get(None) starts after get("a") returned, and the put of "a"
    // cannot be undone.
    rejects(&[
        put(0, "k", "a", 0, 100),
        get(1, "k", Some("a"), 10, 20),
        get(2, "k", None, 30, 40),
    ]);
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let expl = rejects(&[
        put(0, "k", "a", 0, 1),
        put(0, "k", "b", 2, 3),
        get(1, "k", Some("a"), 4, 5),
    ]);
    assert!(expl.contains("Longest linearizable prefix"), "{expl}");
    assert!(
        expl.contains("would replace \"a\" for good, but #2 client 1 [4, 5] Get -> \"a\""),
        "{expl}"
    );
    assert!(expl.contains("<-- still has to observe"), "{expl}");
}

#[test]
fn a_b_a_read_sequence_is_rejected() {
    // Both writes are concurrent with all reads, but the reads are
    // sequential: once "b" is observed after "a", "a" cannot return.
    rejects(&[
        put(0, "k", "a", 0, 100),
        put(1, "k", "b", 0, 100),
        get(2, "k", Some("a"), 10, 11),
        get(2, "k", Some("b"), 20, 21),
        get(3, "k", Some("a"), 30, 31),
    ]);
    // Control: without the last read it is fine.
    accepts(&[
        put(0, "k", "a", 0, 100),
        put(1, "k", "b", 0, 100),
        get(2, "k", Some("a"), 10, 11),
        get(2, "k", Some("b"), 20, 21),
    ]);
}

#[test]
fn failed_write_is_dropped() {
    let failed = with(put(0, "k", "a", 0, 1), Outcome::Failed);
    let expl = rejects(&[failed.clone(), get(1, "k", Some("a"), 2, 3)]);
    assert!(expl.contains("failed, so it never took effect"), "{expl}");
    // Not reading it is fine, and so is a failed get (dropped entirely).
    accepts(&[failed.clone(), get(1, "k", None, 2, 3)]);
    let failed_get = with(get(1, "k", Some("zzz"), 2, 3), Outcome::Failed);
    accepts(&[failed, failed_get]);
}

#[test]
fn unknown_write_may_have_happened_after_its_invocation() {
    let unknown = with(put(0, "k", "x", 10, 11), Outcome::Unknown);
    // Observed long after the client gave up: allowed.
    accepts(&[unknown.clone(), get(1, "k", Some("x"), 1000, 1001)]);
    // Never observed: allowed too.
    accepts(&[unknown.clone(), get(1, "k", None, 1000, 1001)]);
    // Observed, then not observed: allowed (a reader may see it later or
    // never), in this order only.
    accepts(&[
        unknown.clone(),
        get(1, "k", None, 20, 21),
        get(1, "k", Some("x"), 30, 31),
    ]);
    rejects(&[
        unknown.clone(),
        get(1, "k", Some("x"), 20, 21),
        get(1, "k", None, 30, 31),
    ]);
    // Observed by a get that returned before the write was invoked.
    let expl = rejects(&[get(1, "k", Some("x"), 0, 5), unknown.clone()]);
    assert!(
        expl.contains("invoked only after the get returned"),
        "{expl}"
    );
    // The unknown write must come after everything that returned before
    // its invocation: here "a" was written (and read) before it.
    rejects(&[
        put(1, "k", "a", 0, 5),
        unknown.clone(),
        get(2, "k", Some("x"), 20, 21),
        get(2, "k", Some("a"), 30, 31),
    ]);
    // An unknown get carries no information.
    let unknown_get = with(get(2, "k", Some("nonsense"), 0, 1), Outcome::Unknown);
    accepts(&[unknown, unknown_get]);
}

#[test]
fn unknown_write_return_time_is_ignored() {
    // The recorded return time (say, a timeout) does not bound when the
    // write took effect.
    let unknown = with(put(0, "k", "x", 10, 11), Outcome::Unknown);
    accepts(&[
        unknown,
        put(1, "k", "y", 20, 21),
        get(1, "k", Some("y"), 22, 23),
        get(1, "k", Some("x"), 30, 31),
    ]);
}

#[test]
fn get_none_after_completed_put_is_rejected() {
    rejects(&[put(0, "k", "a", 0, 1), get(1, "k", None, 2, 3)]);
    // Even with a failed delete in between.
    let failed_del = with(del(0, "k", 1, 2), Outcome::Failed);
    rejects(&[put(0, "k", "a", 0, 1), failed_del, get(1, "k", None, 3, 4)]);
}

#[test]
fn delete_semantics() {
    accepts(&[
        put(0, "k", "a", 0, 1),
        del(0, "k", 2, 3),
        get(1, "k", None, 4, 5),
    ]);
    rejects(&[
        put(0, "k", "a", 0, 1),
        del(0, "k", 2, 3),
        get(1, "k", Some("a"), 4, 5),
    ]);
    // Deleting an absent key is fine.
    accepts(&[del(0, "k", 0, 1), get(0, "k", None, 2, 3)]);
    // A concurrent delete may or may not be seen.
    accepts(&[
        put(0, "k", "a", 0, 1),
        del(0, "k", 2, 10),
        get(1, "k", Some("a"), 3, 4),
        get(1, "k", None, 5, 6),
    ]);
    rejects(&[
        put(0, "k", "a", 0, 1),
        del(0, "k", 2, 10),
        get(1, "k", None, 3, 4),
        get(1, "k", Some("a"), 5, 6),
    ]);
    // Put after delete.
    accepts(&[
        put(0, "k", "a", 0, 1),
        del(0, "k", 2, 3),
        put(0, "k", "b", 4, 5),
        get(1, "k", Some("b"), 6, 7),
    ]);
    // An unknown delete may explain an absent read, but only after it
    // was invoked.
    let unknown_del = with(del(0, "k", 10, 11), Outcome::Unknown);
    accepts(&[
        put(0, "k", "a", 0, 1),
        unknown_del.clone(),
        get(1, "k", None, 100, 101),
    ]);
    rejects(&[put(0, "k", "a", 0, 1), get(1, "k", None, 2, 3), unknown_del]);
}

#[test]
fn keys_are_independent() {
    // Each key alone is linearizable; no cross-key constraint exists in
    // the model even though the real-time order interleaves them.
    accepts(&[
        put(0, "x", "x1", 0, 10),
        put(1, "y", "y1", 0, 10),
        get(2, "x", None, 1, 2),
        get(2, "y", Some("y1"), 3, 4),
        get(3, "y", None, 1, 2),
        get(3, "x", Some("x1"), 3, 4),
    ]);
    // A violation on one key is reported for that key only.
    let v = check(
        &[
            put(0, "x", "x1", 0, 1),
            get(1, "x", Some("x1"), 2, 3),
            put(0, "y", "y1", 0, 1),
            get(1, "y", None, 2, 3),
        ],
        DEFAULT_BUDGET,
    );
    match v {
        Verdict::NotLinearizable { key, .. } => assert_eq!(key, b"y"),
        v => panic!("expected violation on y, got {v}"),
    }
    // Same value on different keys does not mix them up.
    rejects(&[put(0, "x", "same", 0, 1), get(1, "y", Some("same"), 2, 3)]);
}

#[test]
fn read_of_never_written_value_is_rejected() {
    let expl = rejects(&[put(0, "k", "a", 0, 1), get(1, "k", Some("b"), 2, 3)]);
    assert!(
        expl.contains("No put on this key ever wrote that value"),
        "{expl}"
    );
}

#[test]
fn non_unique_values_are_handled() {
    // Values need not be unique for correctness.
    accepts(&[
        put(0, "k", "a", 0, 1),
        put(0, "k", "b", 2, 3),
        put(0, "k", "a", 4, 5),
        get(1, "k", Some("a"), 6, 7),
    ]);
    rejects(&[
        put(0, "k", "a", 0, 1),
        put(0, "k", "b", 2, 3),
        put(0, "k", "a", 4, 5),
        get(1, "k", Some("b"), 6, 7),
    ]);
}

#[test]
fn budget_exhaustion_is_inconclusive() {
    let events: Vec<Event> = (0..10)
        .map(|i| put(0, "k", &format!("v{i}"), i * 2, i * 2 + 1))
        .collect();
    match check(&events, 3) {
        Verdict::Inconclusive { key, reason } => {
            assert_eq!(key, b"k");
            assert!(reason.contains("budget of 3 steps"), "{reason}");
        }
        v => panic!("expected inconclusive, got {v}"),
    }
    // A definite violation elsewhere wins over an inconclusive key.
    let mut more = events.clone();
    more.push(put(0, "z", "a", 0, 1));
    more.push(get(0, "z", None, 2, 3));
    assert!(matches!(
        check(&more, 3),
        Verdict::NotLinearizable { key, .. } if key == b"z"
    ));
    accepts(&events);
}

#[test]
#[should_panic(expected = "malformed event")]
fn return_before_invoke_panics() {
    let _ = check(&[put(0, "k", "a", 5, 4)], DEFAULT_BUDGET);
}

#[test]
fn explanation_lists_prefix_and_operations() {
    let expl = rejects(&[
        put(0, "k", "a", 0, 100),
        put(1, "k", "b", 0, 100),
        get(2, "k", Some("a"), 10, 11),
        get(2, "k", Some("b"), 20, 21),
        get(3, "k", Some("a"), 30, 31),
        with(put(4, "k", "never-read", 1, 2), Outcome::Unknown),
        with(put(4, "k", "c", 3, 4), Outcome::Failed),
    ]);
    println!("{expl}");
    for needle in [
        "Longest linearizable prefix found (2 of 5",
        "#3 client 2 [20, 21] Get -> \"b\": observed \"b\", but the key holds \"a\"",
        "#4 client 3 [30, 31] Get -> \"a\"",
        "cannot come next",
        "(dropped: failed)",
        "(dropped: unknown write whose value no get observed)",
        "Operations on this key in invocation order (7 in total)",
    ] {
        assert!(expl.contains(needle), "missing {needle:?} in:\n{expl}");
    }
}

// ----- recorder -----------------------------------------------------------

#[test]
fn history_recorder_with_threads() {
    let history = Arc::new(History::new());
    let store = Arc::new(Mutex::new(HashMap::<Vec<u8>, Vec<u8>>::new()));
    let threads: Vec<_> = (0..6)
        .map(|client| {
            let history = Arc::clone(&history);
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut rng = XorShift::new(client as u64 + 1);
                for n in 0..150 {
                    let key = format!("k{}", rng.below(3)).into_bytes();
                    let op = match rng.below(10) {
                        0..=3 => Op::Get { key: key.clone() },
                        4 => Op::Delete { key: key.clone() },
                        _ => Op::Put {
                            key: key.clone(),
                            value: format!("c{client}-{n}").into_bytes(),
                        },
                    };
                    let ticket = history.invoke(client, op.clone());
                    let fate = rng.below(20);
                    let seen = {
                        let mut s = store.lock().unwrap();
                        // fate 0: not applied and reported failed;
                        // fate 1: not applied, outcome unknown.
                        if fate > 1 {
                            match &op {
                                Op::Put { value, .. } => {
                                    s.insert(key.clone(), value.clone());
                                    None
                                }
                                Op::Delete { .. } => {
                                    s.remove(&key);
                                    None
                                }
                                Op::Get { .. } => s.get(&key).cloned(),
                            }
                        } else {
                            None
                        }
                    };
                    match fate {
                        0 => history.complete(ticket, Outcome::Failed),
                        1 => history.complete(ticket, Outcome::Unknown),
                        // Applied, but the client never hears back.
                        2 => drop(ticket),
                        _ => history.complete(ticket, Outcome::Ok(seen)),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let events = history.events();
    assert_eq!(events.len(), 6 * 150);
    assert!(events.windows(2).all(|w| w[0].invoke < w[1].invoke));
    let unfinished = |e: &Event| e.outcome == Outcome::Unknown && e.ret == u64::MAX;
    assert!(events.iter().any(unfinished));
    accepts(&events);
}

// ----- random histories -----------------------------------------------------

/// xorshift64, seeded through splitmix so that small seeds differ.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(splitmix64(seed) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy)]
struct GenConfig {
    clients: usize,
    keys: u64,
    ops: usize,
    get_pct: u64,
    delete_pct: u64,
    failed_write_pct: u64,
    unknown_write_pct: u64,
    unknown_get_pct: u64,
    /// Maximum gap between a client's operations.
    think: u64,
    /// Maximum time from invocation to effect and from effect to return.
    latency: u64,
    /// 0: every put writes a fresh value; otherwise values are drawn
    /// from this many (to exercise non-unique values).
    value_pool: u64,
}

const YES_UNIQUE: usize = 1123;
const NO_UNIQUE: usize = 377;
const YES_POOL: usize = 1165;
const NO_POOL: usize = 335;

const SMALL: GenConfig = GenConfig {
    clients: 3,
    keys: 2,
    ops: 7,
    get_pct: 50,
    delete_pct: 10,
    failed_write_pct: 10,
    unknown_write_pct: 20,
    unknown_get_pct: 5,
    think: 10,
    latency: 15,
    value_pool: 0,
};

const MEDIUM: GenConfig = GenConfig {
    clients: 6,
    keys: 3,
    ops: 300,
    get_pct: 50,
    delete_pct: 10,
    failed_write_pct: 5,
    unknown_write_pct: 10,
    unknown_get_pct: 3,
    think: 20,
    latency: 30,
    value_pool: 0,
};

const LARGE: GenConfig = GenConfig {
    clients: 8,
    keys: 3,
    ops: 2000,
    ..MEDIUM
};

/// A linearizable history: every operation that takes effect gets a
/// linearization point inside its interval (for unknown writes: any time
/// after invocation, possibly much later), and reads return what a
/// sequential map holds at their point.
fn generate(seed: u64, cfg: GenConfig) -> Vec<Event> {
    let mut rng = XorShift::new(seed);
    let mut free_at = vec![0u64; cfg.clients];
    let mut events = Vec::with_capacity(cfg.ops);
    let mut points: Vec<(u64, usize)> = Vec::new();
    for n in 0..cfg.ops {
        let client = rng.below(cfg.clients as u64) as usize;
        let key = format!("k{}", rng.below(cfg.keys)).into_bytes();
        let roll = rng.below(100);
        let op = if roll < cfg.get_pct {
            Op::Get { key }
        } else if roll < cfg.get_pct + cfg.delete_pct {
            Op::Delete { key }
        } else {
            let v = match cfg.value_pool {
                0 => n as u64,
                pool => rng.below(pool),
            };
            Op::Put {
                key,
                value: format!("v{v}").into_bytes(),
            }
        };
        let invoke = free_at[client] + rng.below(cfg.think);
        let point = invoke + rng.below(cfg.latency);
        let mut ret = point + rng.below(cfg.latency);
        let is_get = matches!(op, Op::Get { .. });
        let (outcome, point) = if is_get {
            let unknown = rng.chance(cfg.unknown_get_pct);
            let outcome = if unknown {
                Outcome::Unknown
            } else {
                Outcome::Ok(None) // filled in below
            };
            (outcome, Some(point))
        } else if rng.chance(cfg.failed_write_pct) {
            (Outcome::Failed, None)
        } else if rng.chance(cfg.unknown_write_pct) {
            // The client times out; the write lands half the time,
            // possibly long after the timeout.
            ret = invoke + 2 * cfg.latency;
            let lands = rng.chance(50);
            (
                Outcome::Unknown,
                lands.then(|| invoke + rng.below(20 * cfg.latency)),
            )
        } else {
            (Outcome::Ok(None), Some(point))
        };
        free_at[client] = ret + 1;
        if let Some(p) = point {
            points.push((p, events.len()));
        }
        events.push(ev(client, op, invoke, ret, outcome));
    }
    points.sort();
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (_, i) in points {
        let e = &mut events[i];
        match &e.op {
            Op::Put { key, value } => {
                map.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                map.remove(key);
            }
            Op::Get { key } => {
                if let Outcome::Ok(seen) = &mut e.outcome {
                    *seen = map.get(key).cloned();
                }
            }
        }
    }
    // Hand them over in a scrambled order: the checker must not rely
    // on input order.
    let len = events.len();
    for i in (1..len).rev() {
        events.swap(i, rng.below(i as u64 + 1) as usize);
    }
    events
}

/// Changes what one successful get observed to another value written on
/// the same key (or to absent). Returns `None` if there is nothing to
/// corrupt.
fn corrupt(events: &[Event], seed: u64) -> Option<Vec<Event>> {
    let mut rng = XorShift::new(seed ^ 0xC0FFEE);
    let gets: Vec<usize> = (0..events.len())
        .filter(|&i| {
            matches!(events[i].op, Op::Get { .. }) && matches!(events[i].outcome, Outcome::Ok(_))
        })
        .collect();
    if gets.is_empty() {
        return None;
    }
    let g = gets[rng.below(gets.len() as u64) as usize];
    let key = events[g].op.key();
    let mut choices: Vec<Option<Vec<u8>>> = vec![None];
    for e in events {
        match &e.op {
            Op::Put { key: k, value } if k.as_slice() == key => {
                choices.push(Some(value.clone()));
            }
            _ => {}
        }
    }
    let current = match &events[g].outcome {
        Outcome::Ok(seen) => seen.clone(),
        _ => unreachable!(),
    };
    choices.retain(|c| *c != current);
    if choices.is_empty() {
        return None;
    }
    let mut out = events.to_vec();
    out[g].outcome = Outcome::Ok(choices[rng.below(choices.len() as u64) as usize].clone());
    Some(out)
}

/// Reference checker straight from the definition: try every order of
/// every subset of unknown writes, over all keys at once, with no
/// memoization, partitioning, dropping or just-in-time tricks.
fn brute_force(events: &[Event]) -> bool {
    let ops: Vec<&Event> = events
        .iter()
        .filter(|e| {
            !(e.outcome == Outcome::Failed
                || (matches!(e.op, Op::Get { .. }) && e.outcome == Outcome::Unknown))
        })
        .collect();
    let required = |e: &Event| matches!(e.outcome, Outcome::Ok(_));
    fn go(
        ops: &[&Event],
        used: &mut Vec<bool>,
        map: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        required: &dyn Fn(&Event) -> bool,
    ) -> bool {
        if (0..ops.len()).all(|i| used[i] || !required(ops[i])) {
            return true;
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            let blocked = (0..ops.len())
                .any(|j| !used[j] && j != i && required(ops[j]) && ops[j].ret < ops[i].invoke);
            if blocked {
                continue;
            }
            let key = ops[i].op.key().to_vec();
            let old = map.get(&key).cloned();
            match (&ops[i].op, &ops[i].outcome) {
                (Op::Get { .. }, Outcome::Ok(seen)) => {
                    if *seen != old {
                        continue;
                    }
                }
                (Op::Put { value, .. }, _) => {
                    map.insert(key.clone(), value.clone());
                }
                (Op::Delete { .. }, _) => {
                    map.remove(&key);
                }
                _ => unreachable!(),
            }
            used[i] = true;
            let ok = go(ops, used, map, required);
            used[i] = false;
            match old {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
            if ok {
                return true;
            }
        }
        false
    }
    go(
        &ops,
        &mut vec![false; ops.len()],
        &mut BTreeMap::new(),
        &required,
    )
}

/// Compares [`check`] with [`brute_force`] on `seeds` histories, half of
/// them corrupted; returns how many were (linearizable, not).
fn differential(cfg: GenConfig, seeds: std::ops::Range<u64>) -> (usize, usize) {
    let (mut yes, mut no) = (0, 0);
    for seed in seeds {
        let mut events = generate(seed, cfg);
        // Corrupt half of them so that both answers are well represented.
        let corrupted = if seed % 2 == 1 {
            corrupt(&events, seed)
        } else {
            None
        };
        if let Some(c) = corrupted {
            events = c;
        }
        let expected = brute_force(&events);
        let got = check(&events, DEFAULT_BUDGET);
        assert_eq!(
            got.is_linearizable(),
            expected,
            "seed {seed}: brute force says {expected}, checker says {got}\n{events:#?}"
        );
        assert!(!matches!(got, Verdict::Inconclusive { .. }));
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    (yes, no)
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let started = Instant::now();
    let (yes, no) = differential(SMALL, 0..1500);
    println!("unique values: {yes} linearizable, {no} not");
    // The split is a property of the generated histories (both checkers
    // are exact), so it is fixed for these seeds.
    assert_eq!((yes, no), (YES_UNIQUE, NO_UNIQUE));

    // Few distinct values (repeated writes of the same value), more
    // deletes and unknowns: exercises the parts of the search that unique
    // values make trivial.
    let cfg = GenConfig {
        ops: 8,
        delete_pct: 20,
        unknown_write_pct: 35,
        value_pool: 2,
        ..SMALL
    };
    let (yes, no) = differential(cfg, 0..1500);
    println!(
        "2 values: {yes} linearizable, {no} not, in {:?}",
        started.elapsed()
    );
    assert_eq!((yes, no), (YES_POOL, NO_POOL));
}

#[test]
#[ignore = "long: run with --ignored for a deeper differential check"]
fn agrees_with_brute_force_extended() {
    for (name, cfg) in [
        ("9 ops", GenConfig { ops: 9, ..SMALL }),
        (
            "9 ops, 1 key, 4 clients, 2 values",
            GenConfig {
                ops: 9,
                keys: 1,
                clients: 4,
                value_pool: 2,
                unknown_write_pct: 30,
                ..SMALL
            },
        ),
        (
            "10 ops, 1 key, unique",
            GenConfig {
                ops: 10,
                keys: 1,
                clients: 4,
                unknown_write_pct: 30,
                delete_pct: 25,
                ..SMALL
            },
        ),
        (
            "11 ops, 1 key, 5 clients, long overlaps, 3 values",
            GenConfig {
                ops: 11,
                keys: 1,
                clients: 5,
                think: 5,
                latency: 40,
                value_pool: 3,
                unknown_write_pct: 30,
                delete_pct: 25,
                ..SMALL
            },
        ),
    ] {
        let started = Instant::now();
        let (yes, no) = differential(cfg, 0..20_000);
        println!(
            "{name}: {yes} linearizable, {no} not, in {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn random_linearizable_histories_accept_and_corruptions_reject() {
    let started = Instant::now();
    let mut rejected = Vec::new();
    let mut survived = Vec::new();
    for seed in 1..=40u64 {
        let events = generate(seed, MEDIUM);
        let v = check(&events, DEFAULT_BUDGET);
        assert_eq!(v, Verdict::Linearizable, "seed {seed}: {v}");
        let bad = corrupt(&events, seed).expect("history has gets");
        match check(&bad, DEFAULT_BUDGET) {
            Verdict::NotLinearizable { .. } => rejected.push(seed),
            Verdict::Linearizable => survived.push(seed),
            v @ Verdict::Inconclusive { .. } => panic!("seed {seed}: {v}"),
        }
    }
    println!(
        "40 random histories of {} ops accepted; {} corruptions rejected, \
         still linearizable: {survived:?}; {:?}",
        MEDIUM.ops,
        rejected.len(),
        started.elapsed()
    );
    // A corrupted read may happen to pick a value that a concurrent
    // write explains just as well (seed 13 does). Both checkers in this
    // file are exact, so which seeds survive is a property of the
    // generated histories and fixed for these seeds.
    assert_eq!(survived, [13]);
    assert_eq!(rejected.len(), 39);
}

#[test]
fn performance_2000_ops_3_keys_8_clients() {
    let budget = 100_000;
    let mut worst = Duration::ZERO;
    for seed in [7u64, 8, 9] {
        let events = generate(seed, LARGE);
        let unknown_writes = events
            .iter()
            .filter(|e| !matches!(e.op, Op::Get { .. }) && e.outcome == Outcome::Unknown)
            .count();
        let started = Instant::now();
        let v = check(&events, budget);
        let ok_time = started.elapsed();
        assert_eq!(v, Verdict::Linearizable, "seed {seed}: {v}");

        let bad = corrupt(&events, seed).unwrap();
        let started = Instant::now();
        let v = check(&bad, budget);
        let bad_time = started.elapsed();
        assert!(
            matches!(v, Verdict::NotLinearizable { .. }),
            "seed {seed}: corrupted history not rejected within budget: {v}"
        );
        println!(
            "seed {seed}: {} events ({unknown_writes} unknown writes): linearizable in \
             {ok_time:?}; corrupted: rejected in {bad_time:?}",
            events.len(),
        );
        worst = worst.max(ok_time).max(bad_time);
    }
    // Generous: the point is "no blow-up", not a benchmark on shared cores.
    assert!(worst < Duration::from_secs(5), "took {worst:?}");
}

#[test]
fn many_unknown_writes_do_not_blow_up() {
    // 30% of writes time out and half of those land, often after other
    // writes; the observed ones stay in the search.
    let cfg = GenConfig {
        unknown_write_pct: 30,
        ..LARGE
    };
    let events = generate(99, cfg);
    let started = Instant::now();
    let v = check(&events, 100_000);
    println!(
        "2000 ops with 30% unknown writes: {v} in {:?}",
        started.elapsed()
    );
    assert_eq!(v, Verdict::Linearizable);
}
