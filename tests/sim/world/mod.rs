//! The simulated world: stores of `Peer`s over temporary sled, a network
//! and a clock that exist only as events in one seeded queue. Everything
//! the core asks for in its `Effects` is carried out here, the way the
//! actors carry it out, but at moments the seed chooses.
//!
//! Durability model: a store's writes reach sled at once (as in the real
//! store) but count as durable only at a flush point (the writer's batch
//! completing, or the store's own forced flush before a split replaces an
//! uninitialized peer). Every flush point copies both trees (the "image",
//! a few hundred keys); a crash, at any instant, throws the database away
//! and restarts the store from its last image, losing every write after
//! it, as a power cut does on a disk that drops unsynced writes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tessel::peer::{Effects, Peer};
use tessel::proto::metapb::{self, Region};
use tessel::proto::raft_serverpb::RaftMessage;
use tessel::region::roles;
use tessel::storage::snap_apply::SnapshotIngest;
use tessel::storage::tasks::{SnapshotTask, Task};

use tessel::store::{SplitStart, StoreEnv};
use tessel::{Config, PeerId, RegionId, StoreId};

mod lifecycle;
mod net;

/// Simulated time in microseconds.
pub type Time = u64;

pub const MS: Time = 1_000;
pub const SEC: Time = 1_000_000;

/// How hostile one run is; every choice within it comes from the seed.
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub max_delay: Time,
    pub crashes: bool,
    pub partitions: bool,
    pub conf_changes: bool,
    pub transfers: bool,
    pub splits: bool,
}

/// Something that happens at one instant.
pub enum Event {
    Deliver {
        to: StoreId,
        msg: RaftMessage,
    },
    SnapshotReport {
        store: StoreId,
        incarnation: u64,
        region: RegionId,
        to_peer: PeerId,
        finished: bool,
    },
    Tick(StoreId),
    FlushDone {
        store: StoreId,
        incarnation: u64,
    },
    SnapshotGenerated {
        store: StoreId,
        incarnation: u64,
        region: RegionId,
        peer_id: PeerId,
        task: Box<SnapshotTask>,
    },
    /// A snapshot ingest a worker finished.
    SnapshotIngested {
        store: StoreId,
        incarnation: u64,
        region: RegionId,
        peer_id: PeerId,
        task: Box<SnapshotIngest>,
    },
    /// The scheduler's answer to a peer's `check_membership`.
    SchedulerRegion {
        store: StoreId,
        incarnation: u64,
        region: RegionId,
        peer_id: PeerId,
        answer: Option<Region>,
    },
    Restart(StoreId),
    Heal,
    Nemesis,
    /// A client's timer; only its latest `(client, token)` is live.
    Client(usize, u64),
}

impl Event {
    /// A short, stable name for the trace digest.
    fn tag(&self) -> (u8, u64, u64) {
        match self {
            Event::Deliver { to, msg } => (0, *to, msg.region_id * 64 + msg.msg_type as u64),
            Event::SnapshotReport { store, region, .. } => (1, *store, *region),
            Event::Tick(s) => (2, *s, 0),
            Event::FlushDone { store, .. } => (3, *store, 0),
            Event::SnapshotGenerated { store, region, .. } => (4, *store, *region),
            Event::SchedulerRegion { store, region, .. } => (5, *store, *region),
            Event::Restart(s) => (6, *s, 0),
            Event::Heal => (7, 0, 0),
            Event::Nemesis => (8, 0, 0),
            Event::Client(c, t) => (9, *c as u64, *t),
            Event::SnapshotIngested { store, region, .. } => (10, *store, *region),
        }
    }
}

struct Queue {
    heap: BinaryHeap<Reverse<(Time, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: Time, e: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    fn pop(&mut self) -> Option<(Time, Event)> {
        let Reverse((at, seq)) = self.heap.pop()?;
        Some((at, self.events.remove(&seq).expect("queued event")))
    }
}

/// A running incarnation of a store.
pub struct Running {
    pub env: StoreEnv,
    pub peers: BTreeMap<RegionId, Peer>,
    /// Ready numbers waiting for a flush point, per region.
    persist: BTreeMap<RegionId, (PeerId, u64)>,
    flush_scheduled: bool,
}

type Image = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>);

pub struct Store {
    pub id: StoreId,
    root: PathBuf,
    pub incarnation: u64,
    pub up: Option<Running>,
    /// Both trees as of the last flush point: all a crash keeps.
    image: Image,
}

/// What happened in a run, to judge how hard it tested.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub crashes: u64,
    /// Ready writes a crash lost (asked to persist, never flushed).
    pub lost_readies: u64,
    pub snapshots_sent: u64,
    pub messages: u64,
    pub dropped: u64,
    pub partitions: u64,
    pub splits: u64,
    pub peers_created: u64,
    pub peers_destroyed: u64,
    /// Regions (as one store applied them) seen with a learner, and in a
    /// joint configuration.
    pub learner_regions: u64,
    pub joint_regions: u64,
    /// Peers that asked the scheduler whether they were removed.
    pub membership_checks: u64,
    /// Tombstone notices a store sent for a region it tombstoned.
    pub removal_notices: u64,
    pub max_term: u64,
}

/// A bug the run found, with the time it was seen.
#[derive(Debug, Clone)]
pub struct Violation {
    pub at: Time,
    pub what: String,
}

pub struct World {
    pub now: Time,
    pub rng: ChaCha8Rng,
    pub cfg: Arc<Config>,
    pub faults: Faults,
    pub stores: Vec<Store>,
    queue: Queue,
    /// Two groups of stores that cannot reach each other, if any.
    partition: Option<BTreeSet<StoreId>>,
    next_id: u64,
    /// (region, term) -> the peer seen leading it.
    leaders: BTreeMap<(RegionId, u64), PeerId>,
    /// (store, incarnation, region, peer) -> highest applied index seen.
    applied: BTreeMap<(StoreId, u64, RegionId, PeerId), u64>,
    pub violations: Vec<Violation>,
    /// Every event in order, folded into one number: the same seed must
    /// give the same digest.
    pub digest: u64,
    pub events: u64,
    pub faults_on: bool,
    pub keys: Vec<Vec<u8>>,
    pub stats: Stats,
    _dir: tempfile::TempDir,
}

/// The first region, on every store.
pub const FIRST_REGION: RegionId = 1;
const TICK: Time = 100 * MS;

impl World {
    pub fn new(seed: u64, stores: u64, faults: Faults, keys: Vec<Vec<u8>>) -> World {
        use rand::SeedableRng;
        let mut cfg = Config::for_tests();
        cfg.raft_check_quorum = false;
        cfg.raft_log_gc_tick_interval = std::time::Duration::from_millis(50);
        cfg.raft_log_gc_count_limit = 20;
        // The sim proposes splits itself; the checker is not simulated.
        cfg.split_region_check_tick_interval = std::time::Duration::from_secs(3600);
        cfg.sled_cache_capacity_bytes = 1 << 20;
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut w = World {
            now: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cfg: Arc::new(cfg),
            faults,
            stores: Vec::new(),
            queue: Queue {
                heap: BinaryHeap::new(),
                events: BTreeMap::new(),
                seq: 0,
            },
            partition: None,
            next_id: 1000,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            violations: Vec::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            events: 0,
            faults_on: true,
            keys,
            stats: Stats::default(),
            _dir: dir,
        };
        let region = Region {
            id: FIRST_REGION,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: (1..=stores)
                .map(|s| metapb::Peer { id: s, store_id: s })
                .collect(),
            ..Default::default()
        };
        for id in 1..=stores {
            let root = w._dir.path().join(format!("store{id}"));
            w.stores.push(Store {
                id,
                root,
                incarnation: 0,
                up: None,
                image: Default::default(),
            });
            let env = w.open_env(id, None);
            tessel::storage::write_initial_states(&env.engines, &region).expect("bootstrap");
            w.start_store(id, env);
            w.flush_point(id);
            let phase = w.rng.gen_range(0..TICK);
            w.queue.push(phase, Event::Tick(id));
        }
        w
    }

    pub fn schedule(&mut self, after: Time, e: Event) {
        self.queue.push(self.now + after, e);
    }

    pub fn alloc_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn store(&mut self, id: StoreId) -> &mut Store {
        &mut self.stores[id as usize - 1]
    }

    /// Runs the next event; false when the queue is empty or `until` is
    /// reached.
    pub fn step(&mut self, until: Time, clients: &mut dyn FnMut(&mut World, usize, u64)) -> bool {
        let Some((at, e)) = self.queue.pop() else {
            return false;
        };
        if at > until {
            self.queue.push(at, e);
            return false;
        }
        if std::env::var_os("TESSEL_SIM_TRACE").is_some() && at / SEC != self.now / SEC {
            let mut kinds = [0u64; 10];
            for e in self.queue.events.values() {
                kinds[e.tag().0 as usize] += 1;
            }
            eprintln!(
                "sim t={}s events={} queued by kind {kinds:?}",
                at / SEC,
                self.events
            );
        }
        self.now = at;
        self.events += 1;
        let (kind, a, b) = e.tag();
        for x in [at, kind as u64, a, b] {
            self.digest = (self.digest ^ x).wrapping_mul(0x100_0000_01b3);
        }
        match e {
            Event::Deliver { to, msg } => self.deliver(to, msg),
            Event::SnapshotReport {
                store,
                incarnation,
                region,
                to_peer,
                finished,
            } => {
                if self.store(store).incarnation == incarnation {
                    self.feed(store, region, |p| p.on_snapshot_report(to_peer, finished));
                }
            }
            Event::Tick(s) => {
                let regions: Vec<RegionId> = match &self.store(s).up {
                    Some(r) => r.peers.keys().copied().collect(),
                    None => vec![],
                };
                for region in regions {
                    self.feed(s, region, |p| p.on_tick());
                }
                let jitter = self.rng.gen_range(0..TICK / 20);
                self.schedule(TICK - TICK / 40 + jitter, Event::Tick(s));
            }
            Event::FlushDone { store, incarnation } => self.flush_done(store, incarnation),
            Event::SnapshotGenerated {
                store,
                incarnation,
                region,
                peer_id,
                task,
            } => {
                if self.store(store).incarnation == incarnation {
                    let result = task.run();
                    let same = self.peer_mut(store, region).map(|p| p.meta().id) == Some(peer_id);
                    if same {
                        self.feed(store, region, |p| p.on_snapshot_generated(result));
                    }
                }
            }
            Event::SnapshotIngested {
                store,
                incarnation,
                region,
                peer_id,
                task,
            } => {
                // A crash before this point leaves the region Applying: the
                // store's restart finishes the ingest (`regions_to_start`).
                if self.store(store).incarnation == incarnation {
                    let same = self.peer_mut(store, region).map(|p| p.meta().id) == Some(peer_id);
                    if same {
                        let result = task.run();
                        self.feed(store, region, |p| {
                            p.on_snapshot_applied(result)
                                .unwrap_or_else(|e| panic!("snapshot ingest failed: {e}"))
                        });
                    }
                }
            }
            Event::SchedulerRegion {
                store,
                incarnation,
                region,
                peer_id,
                answer,
            } => {
                let same = self.store(store).incarnation == incarnation
                    && self.peer_mut(store, region).map(|p| p.meta().id) == Some(peer_id);
                if same {
                    self.feed(store, region, |p| p.on_scheduler_region(answer));
                }
            }
            Event::Restart(s) => self.restart(s),
            Event::Heal => self.partition = None,
            Event::Nemesis => super::nemesis::act(self),
            Event::Client(c, t) => clients(self, c, t),
        }
        self.check_invariants();
        true
    }

    pub fn peer_mut(&mut self, store: StoreId, region: RegionId) -> Option<&mut Peer> {
        self.store(store).up.as_mut()?.peers.get_mut(&region)
    }

    /// Gives one input to a peer and carries out what it asks, then runs
    /// its Ready loop until raft is idle.
    pub fn feed(&mut self, store: StoreId, region: RegionId, f: impl FnOnce(&mut Peer) -> Effects) {
        let Some(peer) = self.peer_mut(store, region) else {
            return;
        };
        let effects = f(peer);
        if !self.execute(store, region, effects) {
            return;
        }
        for _ in 0..64 {
            let Some(peer) = self.peer_mut(store, region) else {
                return;
            };
            if !peer.needs_ready() {
                return;
            }
            match peer.handle_ready() {
                Ok(effects) => {
                    if !self.execute(store, region, effects) {
                        return;
                    }
                }
                Err(e) => {
                    self.violation(format!(
                        "store {store} region {region}: the Ready loop failed: {e}"
                    ));
                    return;
                }
            }
        }
        self.violation(format!(
            "store {store} region {region}: 64 Readies in a row without raft going idle"
        ));
    }

    pub fn violation(&mut self, what: String) {
        self.violations.push(Violation { at: self.now, what });
    }

    /// Carries out one `Effects` in its documented order; false if the
    /// peer is gone afterwards.
    fn execute(&mut self, store: StoreId, region: RegionId, e: Effects) -> bool {
        let Effects {
            persist,
            messages,
            replies,
            region_changed,
            splits,
            heartbeat: _,
            split_check: _,
            check_membership,
            tasks,
            destroy,
            stop,
        } = e;
        let incarnation = self.store(store).incarnation;
        if let Some(number) = persist {
            let peer_id = self.peer_mut(store, region).map_or(0, |p| p.meta().id);
            let up = self.store(store).up.as_mut().expect("a peer runs");
            up.persist.insert(region, (peer_id, number));
            if !up.flush_scheduled {
                up.flush_scheduled = true;
                let d = self.rng.gen_range(200..3 * MS);
                self.schedule(d, Event::FlushDone { store, incarnation });
            }
        }
        for msg in messages {
            self.send(store, msg);
        }
        for (cb, resp) in replies {
            let _ = cb.send(resp);
        }
        if let Some(r) = region_changed {
            self.stats.learner_regions +=
                r.peers.iter().any(|p| roles::is_learner(&r, p.id)) as u64;
            self.stats.joint_regions += roles::in_joint(&r) as u64;
            self.env(store).meta.lock().set_region(r);
        }
        for split in splits {
            self.stats.splits += split.right.is_some() as u64;
            let env = self.env(store).clone();
            let start = tessel::store::on_split_applied(&env, split.left, split.right);
            let right = match start {
                SplitStart::Nothing => None,
                SplitStart::Start(r) => Some(r),
                SplitStart::FlushThenStart(r) => {
                    self.flush_point(store);
                    Some(r)
                }
            };
            if let Some(right) = right {
                let meta = *tessel::region::find_peer(&right, store).expect("split lists us");
                let mut peer = self.new_peer(&env, right.clone(), meta);
                if split.was_leader {
                    peer.campaign().expect("campaign");
                }
                let up = self.store(store).up.as_mut().expect("up");
                up.peers.insert(right.id, peer);
                env.meta.lock().set_region(right.clone());
                self.feed(store, right.id, |_| Effects::default());
            }
        }
        if check_membership {
            // The scheduler knows what some leader applied and reported: the
            // newest applied region of this id on any store stands in for it.
            self.stats.membership_checks += 1;
            let answer = self.newest_region(region);
            let peer_id = self.peer_mut(store, region).map_or(0, |p| p.meta().id);
            let d = self.rng.gen_range(MS..20 * MS);
            self.schedule(
                d,
                Event::SchedulerRegion {
                    store,
                    incarnation,
                    region,
                    peer_id,
                    answer,
                },
            );
        }
        for task in tasks {
            match task {
                Task::DeleteLog(d) => d.run(),
                Task::ApplySnapshot(task) => {
                    let peer_id = self.peer_mut(store, region).map_or(0, |p| p.meta().id);
                    let d = self.rng.gen_range(MS..50 * MS);
                    self.schedule(
                        d,
                        Event::SnapshotIngested {
                            store,
                            incarnation,
                            region,
                            peer_id,
                            task,
                        },
                    );
                }
                Task::GenerateSnapshot(task) => {
                    let peer_id = self.peer_mut(store, region).map_or(0, |p| p.meta().id);
                    let d = self.rng.gen_range(MS..30 * MS);
                    self.schedule(
                        d,
                        Event::SnapshotGenerated {
                            store,
                            incarnation,
                            region,
                            peer_id,
                            task,
                        },
                    );
                }
            }
        }
        if stop {
            self.remove_peer(store, region, false);
            return false;
        }
        if destroy {
            let Some(peer) = self.peer_mut(store, region) else {
                return false;
            };
            match peer.destroy() {
                Ok(effects) => {
                    let stop = effects.stop;
                    self.stats.peers_destroyed += !stop as u64;
                    self.execute(store, region, effects);
                    self.remove_peer(store, region, !stop);
                }
                Err(e) => self.violation(format!("store {store} region {region}: destroy: {e}")),
            }
            return false;
        }
        true
    }

    /// The applied region of this id with the newest epoch on any running
    /// store, if any store applied one.
    fn newest_region(&self, region: RegionId) -> Option<Region> {
        self.stores
            .iter()
            .filter_map(|st| st.up.as_ref()?.peers.get(&region))
            .filter(|p| p.is_initialized())
            .map(|p| p.region().clone())
            .max_by_key(|r| {
                let e = r.region_epoch.unwrap_or_default();
                (e.conf_ver, e.version)
            })
    }

    fn remove_peer(&mut self, store: StoreId, region: RegionId, forget_range: bool) {
        let up = self.store(store).up.as_mut().expect("up");
        up.peers.remove(&region);
        up.persist.remove(&region);
        if forget_range {
            up.env.meta.lock().remove_region(region);
        }
    }

    fn env(&mut self, store: StoreId) -> &StoreEnv {
        &self.store(store).up.as_ref().expect("up").env
    }

    pub fn is_crashing(&self) -> bool {
        self.stores.iter().any(|s| s.up.is_none())
    }

    /// Ends every fault: the network heals, and stores stay up.
    pub fn calm(&mut self) {
        self.faults_on = false;
        self.partition = None;
    }

    /// Checks what must hold after every event.
    fn check_invariants(&mut self) {
        let mut found = Vec::new();
        for st in &self.stores {
            let Some(up) = &st.up else { continue };
            for (region, p) in &up.peers {
                self.stats.max_term = self.stats.max_term.max(p.term());
                if p.is_leader() {
                    let key = (*region, p.term());
                    match self.leaders.get(&key) {
                        Some(other) if *other != p.meta().id => found.push(format!(
                            "region {region} term {}: peers {other} and {} both lead",
                            p.term(),
                            p.meta().id
                        )),
                        _ => {
                            self.leaders.insert(key, p.meta().id);
                        }
                    }
                }
                let applied = p.storage().applied_index();
                let key = (st.id, st.incarnation, *region, p.meta().id);
                let seen = self.applied.entry(key).or_insert(applied);
                if applied < *seen {
                    found.push(format!(
                        "store {} region {region}: applied index went back from {} to {applied}",
                        st.id, *seen
                    ));
                }
                *seen = applied.max(*seen);
                let r = p.region();
                let mut stores: Vec<StoreId> = r.peers.iter().map(|p| p.store_id).collect();
                stores.sort_unstable();
                stores.dedup();
                if stores.len() != r.peers.len() {
                    found.push(format!(
                        "region {region} as seen on store {}: two peers on one store: {:?}",
                        st.id, r.peers
                    ));
                }
            }
        }
        for f in found {
            self.violation(f);
        }
    }
}
