//! The depth-first search for a linearization of one key's operations
//! (Wing & Gong with Lowe's refinements; see the module docs of the
//! checker), with its memo of configurations already explored.

use super::*;

/// One step of a linearization: a known-outcome operation, possibly preceded
/// by the unknown write whose value it (a `Get`) observes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Move {
    pub(super) op: usize,
    pub(super) paired: Option<usize>,
}

/// Where the enumeration of moves at a node stands: the next candidate to
/// consider (a list node), the node's frontier (see [`Search::frontier`]),
/// and whether the node has a single forced move (see [`Search::cursor`]).
#[derive(Clone, Copy)]
pub(super) struct Cursor {
    op: usize,
    frontier: u64,
    forced: bool,
}

/// A move on the DFS stack, with what is needed to undo it and to resume
/// with its next sibling.
pub(super) struct Frame {
    mv: Move,
    prev_state: u32,
    resume: Cursor,
}

pub(super) enum SearchEnd {
    Found,
    Exhausted,
    OutOfBudget,
}

/// Memo state standing for "a value no pending `Get` observes".
pub(super) const DEAD: u32 = u32::MAX;

/// Memo entry. The Zobrist hash is maintained incrementally, so hashing an
/// entry costs one word instead of the whole bitset; equality still compares
/// the full bitset, so collisions cannot merge different configurations.
#[derive(PartialEq, Eq)]
pub(super) struct MemoKey {
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
pub(super) struct PassThrough(u64);

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

pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) struct Search<'o> {
    ops: &'o [KeyOp],
    /// Doubly linked list, in invocation order, of the known-outcome
    /// operations not yet linearized; node `ops.len()` is the sentinel.
    /// Removal and re-insertion are O(1) and undo exactly in LIFO order.
    pub(super) next: Vec<usize>,
    prev: Vec<usize>,
    /// Linearized operations (known and unknown outcome) as a bitset.
    done: Vec<u64>,
    zobrist: Vec<u64>,
    hash: u64,
    /// Current value of the key, as a value id.
    pub(super) state: u32,
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
    pub(super) memo: HashSet<MemoKey, BuildHasherDefault<PassThrough>>,
    steps: u64,
    /// Deepest linearizable prefix found so far.
    pub(super) best: Vec<Move>,
}

impl<'o> Search<'o> {
    pub(super) fn new(ops: &'o [KeyOp], num_values: usize) -> Self {
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

    pub(super) fn head(&self) -> usize {
        self.ops.len()
    }

    pub(super) fn toggle(&mut self, i: usize) {
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
    pub(super) fn frontier(&self) -> u64 {
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
    pub(super) fn cursor(&self) -> Cursor {
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
    pub(super) fn move_for(&self, x: usize, frontier: u64) -> Option<Move> {
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
    pub(super) fn next_move(&self, cur: &mut Cursor) -> Option<Move> {
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

    pub(super) fn apply(&mut self, mv: Move) {
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

    pub(super) fn undo(&mut self, mv: Move, prev_state: u32) {
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
    pub(super) fn strands_a_read(&self, old: u32) -> bool {
        let o = old as usize;
        old != self.state && self.pending_reads[o] > 0 && self.writers_left[o] == 0
    }

    /// A pending `Get` observing `value`, if any (for explanations).
    pub(super) fn pending_read_of(&self, value: u32) -> Option<usize> {
        let mut x = self.next[self.head()];
        while x != self.head() {
            if self.ops[x].kind == Kind::Read(value) {
                return Some(x);
            }
            x = self.next[x];
        }
        None
    }

    pub(super) fn memo_key(&self) -> MemoKey {
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
    pub(super) fn run(&mut self, budget: u64) -> SearchEnd {
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
