//! Explanations of a violation for a human: the longest linearizable prefix
//! found, why each next candidate fails, and the key's operations in time
//! order.

use std::fmt::Write as _;

use super::*;

/// How many entries of the longest prefix to print (the most recent ones).
const PREFIX_LIMIT: usize = 30;
/// Print every operation of the key when there are at most this many...
const FULL_LIST_LIMIT: usize = 60;
/// ...otherwise this many before and after each interesting one.
const CONTEXT: usize = 10;

/// Builds the explanation for a key whose search was exhausted. Expects the
/// search to be back at its initial configuration (which exhaustion
/// guarantees) and replays the longest prefix found.
pub(super) fn explain_violation(
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
pub(super) fn list_events(
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
pub(super) fn event_line(events: &[Event], i: usize, base: u64) -> String {
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

pub(super) fn show_value(v: Option<&[u8]>) -> String {
    v.map_or_else(|| "<absent>".to_string(), show_bytes)
}

pub(super) fn show_bytes(b: &[u8]) -> String {
    const MAX: usize = 40;
    let shown = &b[..b.len().min(MAX)];
    let more = if b.len() > MAX { "..." } else { "" };
    format!("\"{}{more}\"", shown.escape_ascii())
}
