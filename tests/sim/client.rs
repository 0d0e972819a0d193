//! Model clients: each issues one operation at a time (a Put of a unique
//! value or a Get) on a small set of keys, routes it as a real client
//! would (last known leader, hints from NotLeader, any store otherwise),
//! retries only answers that say the command was not applied, and records
//! every operation for the linearizability check.

use futures::channel::oneshot;
use rand::seq::SliceRandom;
use rand::Rng;
use tessel::proto::raft_cmdpb::{
    CmdType, ColumnFamily, GetRequest, PutRequest, RaftCmdRequest, RaftCmdResponse,
    RaftRequestHeader, Request,
};
use tessel::StoreId;

use super::world::{Event, Time, World, MS, SEC};
use crate::harness::linearizability::{Event as Record, Op, Outcome};

/// How long one operation may take before its client gives up on it.
const OP_DEADLINE: Time = 3 * SEC;

struct Pending {
    op: Op,
    invoke: u64,
    deadline: Time,
    /// The attempt in flight, if any (between attempts, none).
    rx: Option<oneshot::Receiver<RaftCmdResponse>>,
    /// The store the attempt went to.
    target: StoreId,
}

struct Client {
    pending: Option<Pending>,
    /// Where the last answer said the key's leader is.
    leader: Option<StoreId>,
    seq: u64,
    /// The token of the client's one live timer (older ones are stale).
    timer: u64,
}

pub struct Clients {
    clients: Vec<Client>,
    pub history: Vec<Record>,
    last_stamp: u64,
    /// Whether clients start new operations.
    pub running: bool,
    pub ok: u64,
    pub unknown: u64,
    pub failed: u64,
}

impl Clients {
    pub fn new(w: &mut World, n: usize) -> Clients {
        let mut clients = Clients {
            clients: (0..n)
                .map(|_| Client {
                    pending: None,
                    leader: None,
                    seq: 0,
                    timer: 0,
                })
                .collect(),
            history: Vec::new(),
            last_stamp: 0,
            running: true,
            ok: 0,
            unknown: 0,
            failed: 0,
        };
        for c in 0..n {
            let d = w.rng.gen_range(0..10 * MS);
            clients.set_timer(w, c, d);
        }
        clients
    }

    /// Sets client `c`'s only timer to fire `after` from now.
    fn set_timer(&mut self, w: &mut World, c: usize, after: Time) {
        let client = &mut self.clients[c];
        client.timer += 1;
        w.schedule(after, Event::Client(c, client.timer));
    }

    /// A client's timer fired: give up on a command past its deadline,
    /// or start (or retry) an operation.
    pub fn wake(&mut self, w: &mut World, c: usize, token: u64) {
        if self.clients[c].timer != token {
            return;
        }
        let waiting = self.clients[c]
            .pending
            .as_ref()
            .is_some_and(|p| p.rx.is_some());
        if waiting {
            self.clients[c].pending.as_mut().expect("pending").rx = None;
            self.finish(w, c, Outcome::Unknown);
        } else {
            self.act(w, c);
        }
    }

    /// Strictly increasing timestamps from simulated time.
    fn stamp(&mut self, now: Time) -> u64 {
        let t = (now * 1000).max(self.last_stamp + 1);
        self.last_stamp = t;
        t
    }

    pub fn busy(&self) -> bool {
        self.clients.iter().any(|c| c.pending.is_some())
    }

    /// A client's turn: start an operation, or try the current one again.
    fn act(&mut self, w: &mut World, c: usize) {
        if self.clients[c].pending.is_none() {
            if !self.running {
                return;
            }
            let key = w.keys.choose(&mut w.rng).expect("keys").clone();
            let op = if w.rng.gen_bool(0.5) {
                self.clients[c].seq += 1;
                let value = format!("c{c}-{}", self.clients[c].seq).into_bytes();
                Op::Put { key, value }
            } else {
                Op::Get { key }
            };
            let invoke = self.stamp(w.now);
            self.clients[c].pending = Some(Pending {
                op,
                invoke,
                deadline: w.now + OP_DEADLINE,
                rx: None,
                target: 0,
            });
        } else if self.clients[c]
            .pending
            .as_ref()
            .is_some_and(|p| w.now >= p.deadline)
        {
            // Every attempt was refused before proposing, or never sent.
            self.finish(w, c, Outcome::Failed);
            return;
        }
        self.attempt(w, c);
    }

    /// Sends the pending operation to the store most likely to lead it.
    fn attempt(&mut self, w: &mut World, c: usize) {
        let up: Vec<StoreId> = w
            .stores
            .iter()
            .filter(|s| s.up.is_some())
            .map(|s| s.id)
            .collect();
        let client = &mut self.clients[c];
        let pending = client.pending.as_mut().expect("pending");
        let target = match client.leader.filter(|s| up.contains(s)) {
            Some(s) => s,
            None => match up.choose(&mut w.rng) {
                Some(s) => *s,
                None => {
                    self.set_timer(w, c, 50 * MS);
                    return;
                }
            },
        };
        client.leader = None;
        let key = pending.op.key().to_vec();
        let found = w.stores[target as usize - 1].up.as_ref().and_then(|up| {
            up.peers.values().find(|p| {
                let r = p.region();
                p.is_initialized()
                    && key.as_slice() >= r.start_key.as_slice()
                    && (r.end_key.is_empty() || key.as_slice() < r.end_key.as_slice())
            })
        });
        let Some(peer) = found else {
            self.set_timer(w, c, 20 * MS);
            return;
        };
        let region = peer.region().clone();
        let req = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: region.id,
                peer: Some(peer.meta()),
                region_epoch: region.region_epoch,
                term: 0,
            }),
            requests: vec![request(&pending.op)],
            admin_request: None,
        };
        let (tx, rx) = oneshot::channel();
        pending.rx = Some(rx);
        pending.target = target;
        // The answer is polled after every event; the timer gives up on a
        // silent command at its deadline.
        let deadline = pending.deadline.saturating_sub(w.now);
        w.feed(target, region.id, |p| p.on_propose(req, tx));
        self.set_timer(w, c, deadline);
    }

    /// Collects every answer that has arrived (called after each event).
    pub fn poll(&mut self, w: &mut World) {
        for c in 0..self.clients.len() {
            let Some(p) = self.clients[c].pending.as_mut() else {
                continue;
            };
            let Some(rx) = p.rx.as_mut() else { continue };
            let answer = match rx.try_recv() {
                Ok(Some(resp)) => Some(resp),
                Ok(None) if w.now >= p.deadline => None,
                Ok(None) => continue,
                // The peer went away without answering (a crash).
                Err(_) => None,
            };
            p.rx = None;
            let Some(resp) = answer else {
                self.finish(w, c, Outcome::Unknown);
                continue;
            };
            let Some(err) = resp.header.as_ref().and_then(|h| h.error.clone()) else {
                let outcome = match &p.op {
                    Op::Get { .. } => {
                        let g = resp.responses.first().and_then(|r| r.get.clone());
                        match g {
                            Some(g) => Outcome::Ok(g.found.then_some(g.value)),
                            None => {
                                w.violation("a Get answered without a value".into());
                                Outcome::Unknown
                            }
                        }
                    }
                    _ => Outcome::Ok(None),
                };
                self.clients[c].leader = Some(p.target);
                self.finish(w, c, outcome);
                continue;
            };
            if !tessel::error::is_definite(&err) {
                self.finish(w, c, Outcome::Unknown);
                continue;
            }
            let past_deadline = w.now >= p.deadline;
            if let Some(hint) = err.not_leader.and_then(|nl| nl.leader) {
                self.clients[c].leader = Some(hint.store_id);
            }
            if past_deadline {
                self.finish(w, c, Outcome::Failed);
            } else {
                let d = w.rng.gen_range(MS..20 * MS);
                self.set_timer(w, c, d);
            }
        }
    }

    fn finish(&mut self, w: &mut World, c: usize, outcome: Outcome) {
        let p = self.clients[c].pending.take().expect("pending");
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Unknown => self.unknown += 1,
            Outcome::Failed => self.failed += 1,
        }
        let ret = self.stamp(w.now);
        self.history.push(Record {
            client: c,
            op: p.op,
            invoke: p.invoke,
            ret: if outcome == Outcome::Unknown {
                u64::MAX
            } else {
                ret
            },
            outcome,
        });
        let think = w.rng.gen_range(0..2 * MS);
        self.set_timer(w, c, think);
    }

    /// Operations still open at the end count as undetermined.
    pub fn close(&mut self) {
        for (c, client) in self.clients.iter_mut().enumerate() {
            if let Some(p) = client.pending.take() {
                self.unknown += 1;
                self.history.push(Record {
                    client: c,
                    op: p.op,
                    invoke: p.invoke,
                    ret: u64::MAX,
                    outcome: Outcome::Unknown,
                });
            }
        }
    }
}

fn request(op: &Op) -> Request {
    match op {
        Op::Put { key, value } => Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest {
                cf: ColumnFamily::Default as i32,
                key: key.clone(),
                value: value.clone(),
            }),
            ..Default::default()
        },
        Op::Get { key } | Op::Delete { key } => Request {
            cmd_type: CmdType::Get as i32,
            get: Some(GetRequest {
                cf: ColumnFamily::Default as i32,
                key: key.clone(),
            }),
            ..Default::default()
        },
    }
}
