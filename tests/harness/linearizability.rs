//! Linearizability checker for histories recorded against a key-value store.
//!
//! # Model
//!
//! The store is specified as a sequential map from byte-string keys to
//! optional byte-string values, initially empty (every key absent), with
//! three operations:
//!
//! * `Put(key, value)` sets `key` to `value`;
//! * `Delete(key)` makes `key` absent;
//! * `Get(key)` returns the current value of `key` (`None` when absent).
//!
//! A test records one [`Event`] per operation: the client that issued it, the
//! time it was invoked, the time its outcome became known, and the outcome:
//!
//! * [`Outcome::Ok`]: the operation took effect (for `Get`, with the observed
//!   value) at a single instant between its invocation and its return;
//! * [`Outcome::Failed`]: the store reported that the operation definitely did
//!   not take effect, so it is removed from the history;
//! * [`Outcome::Unknown`]: the operation may or may not have taken effect, at
//!   any instant after its invocation (also after the client gave up on it).
//!   Its return time is treated as +infinity and it may be left out of the
//!   linearization altogether. An unknown `Get` tells us nothing and is
//!   removed.
//!
//! A history is linearizable when some subset of the unknown writes together
//! with all `Ok` operations can be arranged in one sequence that (a) obeys
//! the sequential model above and (b) respects real time: if operation `a`
//! returned strictly before `b` was invoked (`a.ret < b.invoke`), `a` comes
//! first. Operations with touching or overlapping intervals may go in either
//! order, so equal timestamps are read as "concurrent"; [`History`] hands out
//! strictly increasing timestamps so that this leniency never hides an
//! ordering it actually observed.
//!
//! # Algorithm
//!
//! 1. **Partition by key.** Every operation touches exactly one key and the
//!    model of one key does not depend on any other, so a history is
//!    linearizable iff its restriction to each key is (linearizability is
//!    local / "P-compositional"). Each key is checked on its own, which keeps
//!    the per-key search small.
//! 2. **Pre-filtering.** Failed operations and unknown `Get`s are removed.
//!    Unknown writes whose value no `Get` could have observed are removed
//!    too (the comments in `prepare` explain why this is sound), and a `Get`
//!    whose value no write could have produced in time is reported straight
//!    away with a targeted explanation.
//! 3. **Depth-first search** in the style of Wing & Gong with Lowe's
//!    refinements: the not-yet-linearized `Ok` operations are kept in
//!    invocation order in a linked list; the candidates for the next
//!    linearization point are those invoked no later than the earliest
//!    return among them (anything invoked later must wait for that one).
//!    Each move is applied to the model (a `Get` must observe the current
//!    value); at a dead end the search backtracks. Every configuration
//!    reached, i.e. the set of linearized operations (a bitset) plus the
//!    key's current value, is memoized: the rest of the search depends on
//!    nothing else, so a configuration seen before is never explored twice.
//! 4. **Unknown writes are linearized just in time.** In any valid
//!    linearization an included unknown write can be deleted unless the
//!    operation right after it is a `Get` observing its value (if a write
//!    follows, the unknown write's effect is overwritten unseen; if nothing
//!    follows, nobody saw it). Deleting it never breaks real-time order,
//!    because an unknown write has no return time that anything must follow.
//!    So the search only places an unknown write immediately before a `Get`
//!    that needs its value, when the current value differs, and picks the
//!    earliest-invoked unused one (they are interchangeable). Unknown writes
//!    therefore do not multiply the search space by two each, as they would
//!    if "applied or not" were a free choice at every step.
//! 5. **Pruning that keeps the common case near-linear:**
//!    * a candidate `Get` that observes the current value is linearized at
//!      once, with no alternatives tried (moving it earlier can never hurt),
//!      which removes the interleavings of concurrent reads;
//!    * a move that overwrites a value some pending `Get` still has to
//!      observe, when no write of that value is left, is cut immediately,
//!      so a stale read fails fast instead of forcing an exhaustive search
//!      of everything before it;
//!    * in the memo, all values no pending `Get` observes count as one, so
//!      configurations that differ only in such a value are merged.
//!
//! For a non-linearizable key the explanation lists the longest
//! linearizable prefix found, why each operation that could come next
//! cannot, and the key's operations (around the interesting ones) with
//! their outcomes and status.
//!
//! # Limits
//!
//! * The search is exact but worst-case exponential (checking
//!   linearizability is NP-complete in general), and a non-linearizable
//!   history with heavy overlap costs more than a linearizable one, since
//!   every alternative must be ruled out. The `budget` argument of [`check`]
//!   bounds the number of search steps per key; when it runs out the
//!   verdict is [`Verdict::Inconclusive`], never a guess.
//! * Values need not be unique for correctness, but unique values per write
//!   make the search far more constrained (a `Get` then identifies its
//!   writer) and the explanations clearer.
//! * Only single-key operations are modelled; there are no transactions,
//!   scans, or conditional writes.
//! * Times are whatever the caller records; the checker trusts that an `Ok`
//!   operation took effect within `[invoke, ret]` and that `ret >= invoke`
//!   (it panics otherwise, as that is a harness bug, not a store bug).
//! * Memory use grows with the number of configurations explored (one bitset
//!   over the key's operations per configuration).
//! * The "longest prefix" in an explanation is one witness chosen by the
//!   search, not necessarily the one a human would pick; the operation
//!   listing beside it is the ground truth.

// This file is also compiled as a module of a test crate that may use only
// part of the API; keep unused items from turning into warnings there.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// A search budget (steps per key) that comfortably covers histories of a
/// few thousand operations with moderate concurrency.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// An operation on the key-value store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key written.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// Make `key` absent.
    Delete {
        /// The key deleted.
        key: Vec<u8>,
    },
    /// Read the current value of `key`.
    Get {
        /// The key read.
        key: Vec<u8>,
    },
}

impl Op {
    /// The key this operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key,
        }
    }
}

/// What the client learned about an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation took effect. For `Get` this carries the observed value
    /// (`None` = key absent); for `Put`/`Delete` it should be `None` and is
    /// ignored otherwise.
    Ok(Option<Vec<u8>>),
    /// The store said the operation definitely did not take effect.
    Failed,
    /// The operation may or may not have taken effect, at any time after its
    /// invocation (timeouts, lost connections, crashed clients).
    Unknown,
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// The client (thread, connection, ...) that issued the operation.
    pub client: usize,
    /// The operation.
    pub op: Op,
    /// Monotonic timestamp taken just before the request was sent.
    pub invoke: u64,
    /// Monotonic timestamp taken once the outcome was known. Ignored for
    /// [`Outcome::Unknown`] (treated as +infinity) and [`Outcome::Failed`].
    pub ret: u64,
    /// What the client learned.
    pub outcome: Outcome,
}

/// Handle for an invoked operation; pass it to [`History::complete`].
///
/// Deliberately neither `Clone` nor `Copy`, so an operation cannot be
/// completed twice.
#[derive(Debug)]
#[must_use = "complete the ticket with History::complete (or drop it to record an Unknown outcome)"]
pub struct Ticket {
    index: usize,
}

/// Thread-safe recorder of a history.
///
/// Call [`History::invoke`] immediately before sending a request and
/// [`History::complete`] as soon as its outcome is known. Operations whose
/// ticket is never completed are reported as [`Outcome::Unknown`].
#[derive(Debug)]
pub struct History {
    start: Instant,
    inner: Mutex<Recorder>,
}

#[derive(Debug)]
struct Recorder {
    /// Last timestamp handed out; timestamps are kept strictly increasing.
    last: u64,
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    client: usize,
    op: Op,
    invoke: u64,
    done: Option<(u64, Outcome)>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            inner: Mutex::new(Recorder {
                last: 0,
                slots: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A client thread that panicked while recording must not hide the
        // rest of the history: the data is append-only and stays consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes a timestamp while the lock is held. Forcing it above the
    /// previous one makes timestamp order equal lock order, which respects
    /// happens-before between threads even if the OS clock were to stall or
    /// repeat; distinct timestamps also avoid the lenient "equal means
    /// concurrent" rule hiding a real ordering.
    fn stamp(&self, rec: &mut Recorder) -> u64 {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX / 2);
        let t = now.max(rec.last + 1);
        rec.last = t;
        t
    }

    /// Records the invocation of `op` by `client` and returns its ticket.
    pub fn invoke(&self, client: usize, op: Op) -> Ticket {
        let mut rec = self.lock();
        let invoke = self.stamp(&mut rec);
        rec.slots.push(Slot {
            client,
            op,
            invoke,
            done: None,
        });
        Ticket {
            index: rec.slots.len() - 1,
        }
    }

    /// Records the outcome of the operation behind `ticket`.
    pub fn complete(&self, ticket: Ticket, outcome: Outcome) {
        let mut rec = self.lock();
        let ret = self.stamp(&mut rec);
        let slot = &mut rec.slots[ticket.index];
        debug_assert!(slot.done.is_none(), "operation completed twice");
        slot.done = Some((ret, outcome));
    }

    /// A snapshot of all events so far, in invocation order. Operations not
    /// completed yet are reported as [`Outcome::Unknown`] with
    /// `ret == u64::MAX`.
    pub fn events(&self) -> Vec<Event> {
        self.lock()
            .slots
            .iter()
            .map(|slot| {
                let (ret, outcome) = slot.done.clone().unwrap_or((u64::MAX, Outcome::Unknown));
                Event {
                    client: slot.client,
                    op: slot.op.clone(),
                    invoke: slot.invoke,
                    ret,
                    outcome,
                }
            })
            .collect()
    }
}

/// Result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some linearization exists for every key.
    Linearizable,
    /// No linearization exists for the operations on `key`.
    NotLinearizable {
        /// The first key (in byte order) found to be non-linearizable.
        key: Vec<u8>,
        /// Human-readable account: the key's operations, the longest
        /// linearizable prefix found and why nothing can follow it.
        explanation: String,
    },
    /// The search budget ran out on `key` before an answer was found (and no
    /// key was found to be non-linearizable).
    Inconclusive {
        /// The first key (in byte order) whose search ran out of budget.
        key: Vec<u8>,
        /// What was explored before giving up.
        reason: String,
    },
}

impl Verdict {
    /// True only for [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable { key, explanation } => {
                write!(
                    f,
                    "not linearizable on key {}:\n{explanation}",
                    show_bytes(key)
                )
            }
            Verdict::Inconclusive { key, reason } => {
                write!(f, "inconclusive on key {}: {reason}", show_bytes(key))
            }
        }
    }
}

/// Checks whether `events` is linearizable with respect to the key-value
/// model described in the module documentation.
///
/// `budget` bounds the number of search steps spent on each key; if it runs
/// out the result is [`Verdict::Inconclusive`] (unless another key is
/// definitely not linearizable, which takes precedence). Events may be given
/// in any order.
///
/// # Panics
///
/// If an event with an [`Outcome::Ok`] outcome has `ret < invoke`.
pub fn check(events: &[Event], budget: u64) -> Verdict {
    // BTreeMap so that keys are checked, and reported, in a deterministic
    // order.
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        by_key.entry(e.op.key()).or_default().push(i);
    }
    let mut inconclusive = None;
    for (key, idxs) in by_key {
        match check_key(events, &idxs, budget) {
            Ok(()) => {}
            Err(KeyFailure::Violation(explanation)) => {
                return Verdict::NotLinearizable {
                    key: key.to_vec(),
                    explanation,
                };
            }
            Err(KeyFailure::Budget(reason)) => {
                // Keep going: a definite violation on a later key is more
                // useful than "inconclusive".
                if inconclusive.is_none() {
                    inconclusive = Some(Verdict::Inconclusive {
                        key: key.to_vec(),
                        reason,
                    });
                }
            }
        }
    }
    inconclusive.unwrap_or(Verdict::Linearizable)
}

// ---------------------------------------------------------------------------
// Per-key preparation
// ---------------------------------------------------------------------------

/// Interned value id meaning "key absent". Real values get ids from 1.
const ABSENT: u32 = 0;
/// Return time of an unknown-outcome operation.
const INFINITY: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `Put` (with the value's id) or `Delete` (with [`ABSENT`]): both are
    /// blind writes, so the model needs nothing else.
    Write(u32),
    /// A `Get` that observed the value with this id.
    Read(u32),
}

impl Kind {
    fn value(self) -> u32 {
        match self {
            Kind::Write(v) | Kind::Read(v) => v,
        }
    }
}

#[derive(Clone, Debug)]
struct KeyOp {
    /// Index into the caller's event slice (used in explanations).
    event: usize,
    kind: Kind,
    invoke: u64,
    /// [`INFINITY`] for unknown-outcome writes.
    ret: u64,
    /// `Ok` operations must be linearized; unknown writes may be left out.
    required: bool,
}

#[derive(Debug, Default)]
struct Dropped {
    failed: usize,
    unknown_reads: usize,
    unobserved_writes: usize,
}

struct Prepared<'a> {
    /// Surviving operations sorted by invocation time.
    ops: Vec<KeyOp>,
    /// Value id -> value (`values[ABSENT] == None`).
    values: Vec<Option<&'a [u8]>>,
    dropped: Dropped,
    /// Why each removed event was removed, for the explanation.
    drop_reason: HashMap<usize, &'static str>,
}

enum KeyFailure {
    Violation(String),
    Budget(String),
}

fn check_key(events: &[Event], idxs: &[usize], budget: u64) -> Result<(), KeyFailure> {
    let prep = prepare(events, idxs);
    if let Some(explanation) = impossible_read(events, idxs, &prep) {
        return Err(KeyFailure::Violation(explanation));
    }
    let mut search = Search::new(&prep.ops, prep.values.len());
    match search.run(budget) {
        SearchEnd::Found => Ok(()),
        SearchEnd::Exhausted => Err(KeyFailure::Violation(explain_violation(
            events,
            idxs,
            &prep,
            &mut search,
        ))),
        SearchEnd::OutOfBudget => {
            let required = prep.ops.iter().filter(|o| o.required).count();
            Err(KeyFailure::Budget(format!(
                "search budget of {budget} steps exhausted after exploring {} distinct \
                 configurations; {required} operations with known outcome and {} \
                 unknown-outcome writes on this key; the longest linearizable prefix \
                 reached covers {} of the {required} known operations. Raise the budget \
                 or check a shorter history.",
                search.memo.len(),
                prep.ops.len() - required,
                search.best.len(),
            )))
        }
    }
}

/// Turns one key's events into search operations.
fn prepare<'a>(events: &'a [Event], idxs: &[usize]) -> Prepared<'a> {
    let mut ids: HashMap<&'a [u8], u32> = HashMap::new();
    let mut values: Vec<Option<&'a [u8]>> = vec![None];
    let mut intern = |v: Option<&'a [u8]>| -> u32 {
        match v {
            None => ABSENT,
            Some(bytes) => *ids.entry(bytes).or_insert_with(|| {
                values.push(Some(bytes));
                u32::try_from(values.len() - 1).expect("more than 2^32 distinct values")
            }),
        }
    };

    let mut ops = Vec::with_capacity(idxs.len());
    let mut dropped = Dropped::default();
    let mut drop_reason = HashMap::new();
    for &i in idxs {
        let e = &events[i];
        let (kind, required) = match (&e.op, &e.outcome) {
            (_, Outcome::Failed) => {
                dropped.failed += 1;
                drop_reason.insert(i, "failed");
                continue;
            }
            (Op::Get { .. }, Outcome::Unknown) => {
                dropped.unknown_reads += 1;
                drop_reason.insert(i, "unknown get carries no information");
                continue;
            }
            (Op::Get { .. }, Outcome::Ok(seen)) => (Kind::Read(intern(seen.as_deref())), true),
            (Op::Put { value, .. }, outcome) => (
                Kind::Write(intern(Some(value))),
                matches!(outcome, Outcome::Ok(_)),
            ),
            (Op::Delete { .. }, outcome) => {
                (Kind::Write(ABSENT), matches!(outcome, Outcome::Ok(_)))
            }
        };
        let ret = if required {
            assert!(
                e.ret >= e.invoke,
                "malformed event #{i}: returned at {} before it was invoked at {}",
                e.ret,
                e.invoke
            );
            e.ret
        } else {
            INFINITY
        };
        ops.push(KeyOp {
            event: i,
            kind,
            invoke: e.invoke,
            ret,
            required,
        });
    }

    // Drop unknown writes whose value no Get can have observed, i.e. no Get
    // of that value returned at or after the write's invocation. This is
    // sound in both directions:
    // * if a linearization without the write exists, it is valid as is,
    //   because an unknown write may always be omitted;
    // * if a linearization with the write exists, any Get placed after the
    //   write and before the next write would observe its value, and there
    //   is no such Get (one placed after the write returns after the write's
    //   invocation). So the write is followed by another write or by nothing;
    //   in both cases removing it leaves every Get's observation unchanged,
    //   and removing an operation never violates real-time order.
    // The argument does not need unique values; unique values just make it
    // fire for every unknown write that did not take effect (or was
    // overwritten before anyone looked), which keeps the search small.
    let mut last_read_ret: HashMap<u32, u64> = HashMap::new();
    for op in &ops {
        if let Kind::Read(v) = op.kind {
            let r = last_read_ret.entry(v).or_insert(0);
            *r = (*r).max(op.ret);
        }
    }
    ops.retain(|op| {
        let keep = op.required
            || last_read_ret
                .get(&op.kind.value())
                .is_some_and(|&r| r >= op.invoke);
        if !keep {
            dropped.unobserved_writes += 1;
            drop_reason.insert(op.event, "unknown write whose value no get observed");
        }
        keep
    });

    // Invocation order is what the search's candidate rule relies on; ties
    // are broken by event index so that runs are reproducible.
    ops.sort_by_key(|op| (op.invoke, op.ret, op.event));
    Prepared {
        ops,
        values,
        dropped,
        drop_reason,
    }
}

/// Finds a `Get` that observed a value no write could have produced before
/// the `Get` returned. The search would reject such a history too, but a
/// targeted message is far more useful than "longest prefix" output.
fn impossible_read(events: &[Event], idxs: &[usize], prep: &Prepared) -> Option<String> {
    let mut first_write: HashMap<u32, u64> = HashMap::new();
    for op in &prep.ops {
        if let Kind::Write(v) = op.kind {
            let t = first_write.entry(v).or_insert(op.invoke);
            *t = (*t).min(op.invoke);
        }
    }
    let bad = prep.ops.iter().find(|op| match op.kind {
        Kind::Read(v) if v != ABSENT => first_write.get(&v).is_none_or(|&t| t > op.ret),
        _ => false,
    })?;
    let value = prep.values[bad.kind.value() as usize];
    let base = idxs.iter().map(|&i| events[i].invoke).min().unwrap_or(0);
    let e = &events[bad.event];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: no write of {} can have taken effect before this get returned.",
        event_line(events, bad.event, base),
        show_value(value),
    );
    let writers: Vec<usize> = idxs
        .iter()
        .copied()
        .filter(
            |&i| matches!(&events[i].op, Op::Put { value: v, .. } if Some(v.as_slice()) == value),
        )
        .collect();
    if writers.is_empty() {
        let _ = writeln!(out, "No put on this key ever wrote that value.");
    } else {
        let _ = writeln!(out, "Puts of that value on this key:");
        for &w in &writers {
            let why = if events[w].outcome == Outcome::Failed {
                "failed, so it never took effect"
            } else if events[w].invoke > e.ret {
                "invoked only after the get returned"
            } else {
                "usable"
            };
            let _ = writeln!(out, "  {}  ({why})", event_line(events, w, base));
        }
    }
    let focus: Vec<usize> = std::iter::once(bad.event).chain(writers).collect();
    let status = |i: usize| {
        if i == bad.event {
            "<-- impossible read".to_string()
        } else {
            prep.drop_reason
                .get(&i)
                .map(|r| format!("(dropped: {r})"))
                .unwrap_or_default()
        }
    };
    list_events(&mut out, events, idxs, base, &focus, status);
    Some(out)
}

// ---------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------

/// One step of a linearization: a known-outcome operation, possibly preceded
/// by the unknown write whose value it (a `Get`) observes.
#[derive(Clone, Copy, Debug)]
struct Move {
    op: usize,
    paired: Option<usize>,
}

/// Where the enumeration of moves at a node stands: the next candidate to
/// consider (a list node), the node's frontier (see [`Search::frontier`]),
/// and whether the node has a single forced move (see [`Search::cursor`]).
#[derive(Clone, Copy)]
struct Cursor {
    op: usize,
    frontier: u64,
    forced: bool,
}

/// A move on the DFS stack, with what is needed to undo it and to resume
/// with its next sibling.
struct Frame {
    mv: Move,
    prev_state: u32,
    resume: Cursor,
}

enum SearchEnd {
    Found,
    Exhausted,
    OutOfBudget,
}

/// Memo state standing for "a value no pending `Get` observes".
const DEAD: u32 = u32::MAX;

/// Memo entry. The Zobrist hash is maintained incrementally, so hashing an
/// entry costs one word instead of the whole bitset; equality still compares
/// the full bitset, so collisions cannot merge different configurations.
#[derive(PartialEq, Eq)]
struct MemoKey {
    hash: u64,
    state: u32,
    done: Box<[u64]>,
}

impl Hash for MemoKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

/// Hasher for [`MemoKey`]: the key's hash is already well mixed.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `write_u64` is used; keep it
        // correct, if slow.
        for &b in bytes {
            self.0 = splitmix64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Search<'o> {
    ops: &'o [KeyOp],
    /// Doubly linked list, in invocation order, of the known-outcome
    /// operations not yet linearized; node `ops.len()` is the sentinel.
    /// Removal and re-insertion are O(1) and undo exactly in LIFO order.
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Linearized operations (known and unknown outcome) as a bitset.
    done: Vec<u64>,
    zobrist: Vec<u64>,
    hash: u64,
    /// Current value of the key, as a value id.
    state: u32,
    /// Known-outcome operations not yet linearized.
    remaining: usize,
    /// Per value id: pending `Get`s observing it.
    pending_reads: Vec<u32>,
    /// Per value id: writes of it (known outcome or unused unknown) not yet
    /// linearized.
    writers_left: Vec<u32>,
    /// Per value id: the unknown writes of it, in invocation order, and how
    /// many of them (always a prefix, see [`Search::move_for`]) are used.
    unknown_writes: Vec<Vec<usize>>,
    unknown_used: Vec<usize>,
    memo: HashSet<MemoKey, BuildHasherDefault<PassThrough>>,
    steps: u64,
    /// Deepest linearizable prefix found so far.
    best: Vec<Move>,
}

impl<'o> Search<'o> {
    fn new(ops: &'o [KeyOp], num_values: usize) -> Self {
        let n = ops.len();
        let head = n;
        let mut next = vec![head; n + 1];
        let mut prev = vec![head; n + 1];
        let mut last = head;
        let mut pending_reads = vec![0; num_values];
        let mut writers_left = vec![0; num_values];
        let mut unknown_writes = vec![Vec::new(); num_values];
        for (i, op) in ops.iter().enumerate() {
            if let Kind::Write(v) = op.kind {
                writers_left[v as usize] += 1;
            }
            if op.required {
                next[last] = i;
                prev[i] = last;
                last = i;
                if let Kind::Read(v) = op.kind {
                    pending_reads[v as usize] += 1;
                }
            } else {
                // `ops` is sorted by invocation, so these lists are too.
                unknown_writes[op.kind.value() as usize].push(i);
            }
        }
        next[last] = head;
        prev[head] = last;
        Search {
            ops,
            next,
            prev,
            done: vec![0; n.div_ceil(64)],
            zobrist: (0..n as u64).map(splitmix64).collect(),
            hash: 0,
            state: ABSENT,
            remaining: ops.iter().filter(|o| o.required).count(),
            pending_reads,
            writers_left,
            unknown_writes,
            unknown_used: vec![0; num_values],
            memo: HashSet::default(),
            steps: 0,
            best: Vec::new(),
        }
    }

    fn head(&self) -> usize {
        self.ops.len()
    }

    fn toggle(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
        self.hash ^= self.zobrist[i];
    }

    /// Earliest return time among pending known-outcome operations. An
    /// operation may be linearized next iff it was invoked no later than
    /// this: otherwise the pending operation that returned first would have
    /// to come after it, contradicting real time. Because the list is in
    /// invocation order, the scan can stop at the first operation invoked
    /// after the running minimum (its return, and all later ones, are later
    /// still), so it only visits the concurrent window. Along any search
    /// path the frontier never decreases, as pending operations only go.
    fn frontier(&self) -> u64 {
        let mut m = INFINITY;
        let mut x = self.next[self.head()];
        while x != self.head() && self.ops[x].invoke <= m {
            m = m.min(self.ops[x].ret);
            x = self.next[x];
        }
        m
    }

    /// The cursor for a freshly reached node.
    ///
    /// If a candidate `Get` observes the current value, linearizing it right
    /// now is the only move tried. That loses nothing: in any completion
    /// from here, moving that `Get` to the front keeps it correct (it sees
    /// the current value), keeps everything it jumps over correct (a `Get`
    /// changes nothing), and keeps real-time order (everything that returned
    /// before its invocation is already linearized, since it is a
    /// candidate). This collapses the interleavings of concurrent reads.
    fn cursor(&self) -> Cursor {
        let frontier = self.frontier();
        let mut x = self.next[self.head()];
        while x != self.head() && self.ops[x].invoke <= frontier {
            if self.ops[x].kind == Kind::Read(self.state) {
                return Cursor {
                    op: x,
                    frontier,
                    forced: true,
                };
            }
            x = self.next[x];
        }
        Cursor {
            op: self.next[self.head()],
            frontier,
            forced: false,
        }
    }

    /// The move that linearizes candidate `x` next, if there is one.
    ///
    /// A `Get` whose value differs from the current one can only go next
    /// right after an unknown write of its value (just-in-time placement,
    /// see the module docs). Of the unused unknown writes of that value, the
    /// earliest-invoked one is taken: all that are usable now stay usable
    /// for the rest of the path (the frontier only grows), so they are
    /// interchangeable, and picking a canonical one keeps the search from
    /// trying each in turn. It also means the used ones always form a
    /// prefix of the per-value list.
    fn move_for(&self, x: usize, frontier: u64) -> Option<Move> {
        match self.ops[x].kind {
            Kind::Read(v) if v != self.state => {
                let v = v as usize;
                let &u = self.unknown_writes[v].get(self.unknown_used[v])?;
                (self.ops[u].invoke <= frontier).then_some(Move {
                    op: x,
                    paired: Some(u),
                })
            }
            _ => Some(Move {
                op: x,
                paired: None,
            }),
        }
    }

    /// The next move at `cur`, advancing `cur` past it.
    fn next_move(&self, cur: &mut Cursor) -> Option<Move> {
        if cur.forced {
            // The single forced move; afterwards the node is exhausted.
            let x = cur.op;
            cur.forced = false;
            cur.op = self.head();
            return Some(Move {
                op: x,
                paired: None,
            });
        }
        while cur.op != self.head() && self.ops[cur.op].invoke <= cur.frontier {
            let x = cur.op;
            cur.op = self.next[x];
            if let Some(mv) = self.move_for(x, cur.frontier) {
                return Some(mv);
            }
        }
        None
    }

    fn apply(&mut self, mv: Move) {
        if let Some(u) = mv.paired {
            self.toggle(u);
            let v = self.ops[u].kind.value();
            self.unknown_used[v as usize] += 1;
            self.writers_left[v as usize] -= 1;
            self.state = v;
        }
        let x = mv.op;
        self.toggle(x);
        self.next[self.prev[x]] = self.next[x];
        self.prev[self.next[x]] = self.prev[x];
        self.remaining -= 1;
        match self.ops[x].kind {
            Kind::Write(v) => {
                self.writers_left[v as usize] -= 1;
                self.state = v;
            }
            Kind::Read(v) => self.pending_reads[v as usize] -= 1,
        }
    }

    fn undo(&mut self, mv: Move, prev_state: u32) {
        let x = mv.op;
        match self.ops[x].kind {
            Kind::Write(v) => self.writers_left[v as usize] += 1,
            Kind::Read(v) => self.pending_reads[v as usize] += 1,
        }
        self.next[self.prev[x]] = x;
        self.prev[self.next[x]] = x;
        self.toggle(x);
        self.remaining += 1;
        if let Some(u) = mv.paired {
            self.toggle(u);
            let v = self.ops[u].kind.value() as usize;
            self.unknown_used[v] -= 1;
            self.writers_left[v] += 1;
        }
        self.state = prev_state;
    }

    /// Whether moving the key away from value `old` left a pending `Get` of
    /// `old` with no way to see it again (every write of it is used up).
    /// Such a configuration is dead however the search continues; noticing
    /// it at once, instead of when that `Get` finally comes up, is what keeps
    /// a stale read from forcing an exhaustive search of everything before
    /// it.
    fn strands_a_read(&self, old: u32) -> bool {
        let o = old as usize;
        old != self.state && self.pending_reads[o] > 0 && self.writers_left[o] == 0
    }

    /// A pending `Get` observing `value`, if any (for explanations).
    fn pending_read_of(&self, value: u32) -> Option<usize> {
        let mut x = self.next[self.head()];
        while x != self.head() {
            if self.ops[x].kind == Kind::Read(value) {
                return Some(x);
            }
            x = self.next[x];
        }
        None
    }

    fn memo_key(&self) -> MemoKey {
        // A value that no pending Get observes can never be read again, so
        // all such values behave alike: until the next write no Get can go
        // (and an unknown write is placed only where the value differs,
        // which it does from all of them). Merging them lets configurations
        // that differ only in which unobserved value the key holds share one
        // memo entry.
        let state = if self.pending_reads[self.state as usize] == 0 {
            DEAD
        } else {
            self.state
        };
        MemoKey {
            hash: self.hash ^ splitmix64(u64::from(state) | 1 << 40),
            state,
            done: self.done.clone().into_boxed_slice(),
        }
    }

    /// Iterative DFS (the depth can reach thousands of operations).
    fn run(&mut self, budget: u64) -> SearchEnd {
        let mut stack: Vec<Frame> = Vec::new();
        // `best[..low]` equals the current stack's moves: the lowest depth
        // reached since `best` was last updated. Lets `best` be refreshed by
        // copying only the part that changed.
        let mut low = 0;
        let mut cur = self.cursor();
        loop {
            if self.remaining == 0 {
                return SearchEnd::Found;
            }
            let Some(mv) = self.next_move(&mut cur) else {
                let Some(f) = stack.pop() else {
                    return SearchEnd::Exhausted;
                };
                self.undo(f.mv, f.prev_state);
                low = low.min(stack.len());
                cur = f.resume;
                continue;
            };
            if self.steps >= budget {
                return SearchEnd::OutOfBudget;
            }
            self.steps += 1;
            let prev_state = self.state;
            self.apply(mv);
            if self.strands_a_read(prev_state) {
                self.undo(mv, prev_state);
            } else if self.memo.insert(self.memo_key()) {
                stack.push(Frame {
                    mv,
                    prev_state,
                    resume: cur,
                });
                if stack.len() > self.best.len() {
                    self.best.truncate(low);
                    self.best.extend(stack[low..].iter().map(|f| f.mv));
                    low = stack.len();
                }
                cur = self.cursor();
            } else {
                // Reached before by another order. It cannot be on the
                // current path (every move grows the set), so it was fully
                // explored, and failed, or the search would have ended.
                self.undo(mv, prev_state);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Explanations
// ---------------------------------------------------------------------------

/// How many entries of the longest prefix to print (the most recent ones).
const PREFIX_LIMIT: usize = 30;
/// Print every operation of the key when there are at most this many...
const FULL_LIST_LIMIT: usize = 60;
/// ...otherwise this many before and after each interesting one.
const CONTEXT: usize = 10;

/// Builds the explanation for a key whose search was exhausted. Expects the
/// search to be back at its initial configuration (which exhaustion
/// guarantees) and replays the longest prefix found.
fn explain_violation(
    events: &[Event],
    idxs: &[usize],
    prep: &Prepared,
    search: &mut Search,
) -> String {
    let ops = &prep.ops;
    let base = idxs.iter().map(|&i| events[i].invoke).min().unwrap_or(0);
    let required = ops.iter().filter(|o| o.required).count();
    let value = |v: u32| show_value(prep.values[v as usize]);
    let mut out = String::new();

    let d = &prep.dropped;
    let _ = writeln!(
        out,
        "No linearization exists for the {} operations on this key ({required} with known \
         outcome, {} unknown-outcome writes that may or may not have happened). Removed \
         beforehand: {} failed, {} unknown-outcome gets, {} unknown-outcome writes whose \
         value no get observed. Times below are in the recorded unit, relative to the \
         key's first invocation.",
        ops.len(),
        ops.len() - required,
        d.failed,
        d.unknown_reads,
        d.unobserved_writes,
    );

    let best = search.best.clone();
    let mut position: HashMap<usize, usize> = HashMap::new();
    let mut n = 0;
    for mv in &best {
        for i in mv.paired.into_iter().chain(std::iter::once(mv.op)) {
            n += 1;
            position.insert(ops[i].event, n);
        }
    }
    let _ = writeln!(
        out,
        "\nLongest linearizable prefix found ({} of {required} known-outcome operations):",
        best.len()
    );
    if best.is_empty() {
        let _ = writeln!(out, "  (empty: no operation can be linearized first)");
    }
    let mut shown = 0;
    for (k, mv) in best.iter().enumerate() {
        if k + PREFIX_LIMIT < best.len() {
            shown += usize::from(mv.paired.is_some()) + 1;
            continue;
        }
        if shown > 0 {
            let _ = writeln!(out, "  ... {shown} earlier steps omitted ...");
            shown = 0;
        }
        for i in mv.paired.into_iter().chain(std::iter::once(mv.op)) {
            let e = ops[i].event;
            let note = if ops[i].required {
                ""
            } else {
                "  (unknown outcome; assumed to take effect here)"
            };
            let _ = writeln!(
                out,
                "  {:>4}. {}{note}",
                position[&e],
                event_line(events, e, base)
            );
        }
    }

    for &mv in &best {
        search.apply(mv);
    }
    let frontier = search.frontier();
    let _ = writeln!(
        out,
        "\nAfter that prefix the key holds {}, and no remaining operation can come next:",
        value(search.state)
    );
    let mut focus = Vec::new();
    // Pending gets that a candidate write would leave unsatisfiable: often
    // the real culprit (a stale read), possibly far later in the history.
    let mut stranded_reads = Vec::new();
    let mut x = search.next[search.head()];
    while x != search.head() && ops[x].invoke <= frontier {
        focus.push(ops[x].event);
        let why = match search.move_for(x, frontier) {
            Some(mv) => {
                let old = search.state;
                search.apply(mv);
                let stranded = search.strands_a_read(old);
                search.undo(mv, old);
                match stranded.then(|| search.pending_read_of(old)).flatten() {
                    Some(r) => {
                        if !stranded_reads.contains(&ops[r].event) {
                            stranded_reads.push(ops[r].event);
                        }
                        format!(
                            "would replace {} for good, but {} still has to observe it",
                            value(old),
                            event_line(events, ops[r].event, base)
                        )
                    }
                    None => "allowed here, but every continuation from there was explored \
                             and fails"
                        .to_string(),
                }
            }
            None => format!(
                "observed {}, but the key holds {} here (and no unknown-outcome write of \
                 that value can be placed here)",
                value(ops[x].kind.value()),
                value(search.state)
            ),
        };
        let _ = writeln!(out, "  {}: {why}", event_line(events, ops[x].event, base));
        x = search.next[x];
    }
    // Say which pending operation closes the window, since operations
    // invoked later are exactly the ones that cannot be tried yet.
    let mut x = search.next[search.head()];
    while x != search.head() {
        if ops[x].ret == frontier {
            let _ = writeln!(
                out,
                "  Nothing invoked after t={} may come next: {} returned then and is still \
                 pending.",
                frontier.saturating_sub(base),
                event_line(events, ops[x].event, base)
            );
            break;
        }
        x = search.next[x];
    }

    let status = |i: usize| {
        if let Some(p) = position.get(&i) {
            format!("(prefix step {p})")
        } else if let Some(r) = prep.drop_reason.get(&i) {
            format!("(dropped: {r})")
        } else if focus.contains(&i) {
            "<-- cannot come next".to_string()
        } else if stranded_reads.contains(&i) {
            "<-- still has to observe the value held after the prefix".to_string()
        } else if events[i].outcome == Outcome::Unknown {
            "(unknown outcome; not used)".to_string()
        } else {
            "(not linearized)".to_string()
        }
    };
    let listed: Vec<usize> = focus.iter().chain(&stranded_reads).copied().collect();
    list_events(&mut out, events, idxs, base, &listed, status);
    out
}

/// Appends the key's events in invocation order: all of them if there are
/// few, otherwise windows of [`CONTEXT`] events around each `focus` event
/// (merged where they overlap), so that long histories stay readable.
fn list_events(
    out: &mut String,
    events: &[Event],
    idxs: &[usize],
    base: u64,
    focus: &[usize],
    status: impl Fn(usize) -> String,
) {
    let mut order = idxs.to_vec();
    order.sort_by_key(|&i| (events[i].invoke, i));
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    if order.len() <= FULL_LIST_LIMIT {
        ranges.push((0, order.len()));
    } else {
        for (p, i) in order.iter().enumerate() {
            if !focus.contains(i) {
                continue;
            }
            let (lo, hi) = (
                p.saturating_sub(CONTEXT),
                (p + CONTEXT + 1).min(order.len()),
            );
            match ranges.last_mut() {
                Some(last) if last.1 >= lo => last.1 = hi,
                _ => ranges.push((lo, hi)),
            }
        }
    }
    let _ = writeln!(
        out,
        "\nOperations on this key in invocation order ({} in total):",
        order.len()
    );
    let mut shown_to = 0;
    for (lo, hi) in ranges {
        if lo > shown_to {
            let _ = writeln!(out, "  ... {} operations omitted ...", lo - shown_to);
        }
        for &i in &order[lo..hi] {
            let line = event_line(events, i, base);
            let status = status(i);
            if status.is_empty() {
                let _ = writeln!(out, "  {line}");
            } else {
                let _ = writeln!(out, "  {line}  {status}");
            }
        }
        shown_to = hi;
    }
    if shown_to < order.len() {
        let _ = writeln!(
            out,
            "  ... {} operations omitted ...",
            order.len() - shown_to
        );
    }
}

/// `#12 client 3 [40, 55] Get -> "v7"`, with times relative to `base`.
fn event_line(events: &[Event], i: usize, base: u64) -> String {
    let e = &events[i];
    let ret = match e.outcome {
        Outcome::Ok(_) => (e.ret.saturating_sub(base)).to_string(),
        Outcome::Failed => format!("{} failed", e.ret.saturating_sub(base)),
        Outcome::Unknown => "unknown".to_string(),
    };
    let op = match &e.op {
        Op::Put { value, .. } => format!("Put {}", show_bytes(value)),
        Op::Delete { .. } => "Delete".to_string(),
        Op::Get { .. } => match &e.outcome {
            Outcome::Ok(seen) => format!("Get -> {}", show_value(seen.as_deref())),
            _ => "Get".to_string(),
        },
    };
    format!(
        "#{i} client {} [{}, {ret}] {op}",
        e.client,
        e.invoke.saturating_sub(base)
    )
}

fn show_value(v: Option<&[u8]>) -> String {
    v.map_or_else(|| "<absent>".to_string(), show_bytes)
}

fn show_bytes(b: &[u8]) -> String {
    const MAX: usize = 40;
    let shown = &b[..b.len().min(MAX)];
    let more = if b.len() > MAX { "..." } else { "" };
    format!("\"{}{more}\"", shown.escape_ascii())
}

#[cfg(test)]
mod tests {
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
                matches!(events[i].op, Op::Get { .. })
                    && matches!(events[i].outcome, Outcome::Ok(_))
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
}
