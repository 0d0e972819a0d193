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

mod search;
use search::*;

mod explain;
use explain::*;

#[cfg(test)]
mod tests;
