//! `StoreActor`: the supervisor of one store. It owns the region map (region
//! id -> peer actor, published through the `Router`) and the region and range
//! maps (`StoreMeta`, shared read-mostly with the peers); it spawns a peer
//! actor for every Normal region on start, for the new half of every split,
//! and for raft messages of regions it has no peer for, and reports the store
//! to the scheduler.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{debug, error, info, info_span, warn};

use super::msg::{PeerDestroyed, PeerFailed, RegionChanged, RegionSplit, StepRaft, StoreHeartbeat};
use super::peer_actor::{PeerActor, PeerDeps};
use super::router::Router;
use super::scheduler_client_actor::SchedulerClientActor;
use super::split_checker::SplitCheckActor;
use super::store_meta::SharedStoreMeta;
use crate::error::Result;
use crate::keys;
use crate::peer::Peer;
use crate::proto::metapb::{self, Region};
use crate::proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};
use crate::proto::schedulerpb::StoreStats;
use crate::region::find_peer;
use crate::region::is_epoch_stale;
use crate::storage::engine::get_msg;
use crate::storage::{Engines, SnapManager};
use crate::StoreId;

pub struct StoreActor {
    store_id: StoreId,
    engines: Engines,
    snap_mgr: SnapManager,
    router: Router,
    deps: PeerDeps,
    /// The region and range maps; this actor is their only writer.
    meta: SharedStoreMeta,
    /// How often each region's peer failed since the store started.
    failures: std::collections::HashMap<crate::RegionId, u32>,
}

/// A region whose peer failed this often is left failed, not restarted.
const MAX_PEER_RESTARTS: u32 = 5;
/// The pause before the first restart of a failed peer; it doubles.
const FIRST_RESTART_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl StoreActor {
    pub fn new(
        store_id: StoreId,
        engines: Engines,
        snap_mgr: SnapManager,
        router: Router,
        deps: PeerDeps,
    ) -> StoreActor {
        let meta = deps.meta.clone();
        StoreActor {
            store_id,
            engines,
            snap_mgr,
            router,
            deps,
            meta,
            failures: Default::default(),
        }
    }

    /// Starts the actor of a failed region again, from what its storage
    /// holds, unless the region went away meanwhile.
    fn restart_peer(&mut self, region_id: crate::RegionId) {
        if self.router.peer(region_id).is_some() {
            return;
        }
        let state: Option<RegionLocalState> =
            match get_msg(&self.engines.kv, &keys::region_state_key(region_id)) {
                Ok(s) => s,
                Err(e) => {
                    error!(region_id, error = %e, "cannot read a failed region's state");
                    return;
                }
            };
        let Some(region) = state
            .filter(|s| s.state == PeerState::Normal as i32)
            .and_then(|s| s.region)
            .filter(|r| find_peer(r, self.store_id).is_some())
        else {
            info!(
                region_id,
                "failed region is gone from this store; not restarted"
            );
            self.meta.lock().remove_region(region_id);
            return;
        };
        // The failed peer may have written a Ready nobody fsynced yet; the
        // new one reads it back as persisted and could acknowledge it.
        if let Err(e) = self.engines.flush() {
            crate::storage::durable::flush_failed(&e);
        }
        match self.spawn_peer(region, false) {
            Ok(_) => info!(region_id, "failed peer restarted from disk"),
            Err(e) => error!(region_id, error = %e, "cannot restart a failed peer"),
        }
    }

    /// Spawns the actor of one initialized region and registers it; a peer
    /// born from a split of a region this store led campaigns at once.
    fn spawn_peer(&mut self, region: Region, campaign: bool) -> Result<Addr<PeerActor>> {
        let meta = find_peer(&region, self.store_id).cloned().ok_or_else(|| {
            crate::Error::Other(format!("store has no peer in region {}", region.id))
        })?;
        self.spawn(region, meta, campaign)
    }

    fn spawn(
        &mut self,
        region: Region,
        meta: metapb::Peer,
        campaign: bool,
    ) -> Result<Addr<PeerActor>> {
        let mut peer = Peer::new(
            self.store_id,
            self.deps.cfg.clone(),
            self.engines.clone(),
            self.snap_mgr.clone(),
            region.clone(),
            meta,
        )?;
        if campaign {
            peer.campaign()?;
        }
        let addr = PeerActor::new(peer, self.deps.clone()).start();
        self.router.register(region.id, addr.clone());
        self.meta.lock().set_region(region);
        Ok(addr)
    }

    /// Records both halves of a split applied by a peer here and starts the
    /// new half's peer. An uninitialized peer of the new region (created by
    /// a message from its leader before this store applied the split) stops
    /// by itself once it sees the split's state on disk; its hard state
    /// (a vote it cast) is kept and taken over by the new peer.
    fn on_region_split(&mut self, msg: RegionSplit) -> Result<()> {
        self.meta.lock().set_region(msg.left);
        let Some(right) = msg.right else {
            return Ok(());
        };
        let existing = self.meta.lock().region(right.id).cloned();
        if let Some(r) = existing {
            if !r.peers.is_empty() {
                warn!(
                    region_id = right.id,
                    "split's new region already runs here; not replaced"
                );
                return Ok(());
            }
            info!(
                region_id = right.id,
                "replacing the new region's uninitialized peer"
            );
            // Its last vote may not be durable yet and the new peer builds
            // on it.
            self.engines.flush()?;
        }
        self.spawn_peer(right, msg.campaign)?;
        Ok(())
    }

    /// Creates a peer for a message from a region this store has no peer
    /// for: only for a leader's or candidate's first contact, only if the
    /// region was not tombstoned here with a newer epoch, and only if its
    /// range overlaps no region this store holds. The peer starts
    /// uninitialized and is caught up by a snapshot; it joins the range map
    /// only then.
    fn maybe_create_peer(&mut self, msg: &RaftMessage) -> Result<Option<Addr<PeerActor>>> {
        let Some(to) = msg.to_peer.filter(|p| p.store_id == self.store_id) else {
            return Ok(None);
        };
        if msg.is_tombstone || self.meta.lock().contains(msg.region_id) {
            return Ok(None);
        }
        if !is_initial_message(msg) {
            return Ok(None);
        }
        let state: Option<RegionLocalState> =
            get_msg(&self.engines.kv, &keys::region_state_key(msg.region_id))?;
        if let Some(state) = state {
            let local = state.region.unwrap_or_default();
            let stale = state.state != PeerState::Tombstone as i32
                || msg.region_epoch.is_none_or(|e| {
                    let tomb = crate::region::epoch(&local);
                    e.conf_ver <= tomb.conf_ver || is_epoch_stale(&e, &tomb)
                });
            if stale {
                debug!(
                    region_id = msg.region_id,
                    "message for a tombstoned peer; dropped"
                );
                return Ok(None);
            }
        }
        let overlapped = self
            .meta
            .lock()
            .overlapping(&msg.start_key, &msg.end_key, msg.region_id);
        if !overlapped.is_empty() {
            // This store has not applied a split (or a removal) that the
            // sender's region comes from; once it has, the sender's next
            // message creates the peer.
            debug!(
                region_id = msg.region_id,
                ?overlapped,
                "new peer would overlap a region here; refused"
            );
            return Ok(None);
        }
        let region = Region {
            id: msg.region_id,
            ..Default::default()
        };
        info!(
            region_id = msg.region_id,
            peer_id = to.id,
            "creating peer from a message"
        );
        crate::storage::PeerStorage::clear_stale_log(&self.engines, msg.region_id)?;
        self.spawn(region, to, false).map(Some)
    }

    fn load_regions(&mut self) -> Result<()> {
        for state in self.engines.region_states()? {
            let Some(region) = state.region else { continue };
            if state.state != PeerState::Normal as i32 {
                continue;
            }
            if find_peer(&region, self.store_id).is_none() {
                // It applied its own removal and crashed before its tombstone:
                // finish the destroy now.
                warn!(
                    region_id = region.id,
                    "region without a peer here; destroying it"
                );
                let mut storage = crate::storage::PeerStorage::new(
                    self.engines.clone(),
                    self.snap_mgr.clone(),
                    self.store_id,
                    region.clone(),
                )?;
                storage.destroy(region)?;
                continue;
            }
            self.spawn_peer(region, false)?;
        }
        info!(regions = self.meta.lock().len(), "store started");
        Ok(())
    }

    fn heartbeat(&mut self) {
        let stats = StoreStats {
            store_id: self.store_id,
            region_count: self.meta.lock().len() as u32,
            leader_count: 0,
            used_size: self.engines.db.size_on_disk().unwrap_or(0),
        };
        self.deps.scheduler.do_send(StoreHeartbeat(stats));
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let span = info_span!("store", store_id = self.store_id);
        let _g = span.enter();
        if let Err(e) = self.load_regions() {
            error!(error = %e, "cannot load regions; store stops");
            ctx.stop();
            return;
        }
        self.heartbeat();
        ctx.run_interval(self.deps.cfg.store_heartbeat_tick_interval, |act, _| {
            act.heartbeat()
        });
    }
}

impl Handler<StepRaft> for StoreActor {
    type Result = ();

    /// A message for a region this store has no running peer for.
    fn handle(&mut self, StepRaft(msg): StepRaft, _ctx: &mut Context<Self>) {
        let span = info_span!("store", store_id = self.store_id);
        let _g = span.enter();
        // The peer may have been created by an earlier message.
        if let Some(addr) = self.router.peer(msg.region_id).filter(|a| a.connected()) {
            addr.do_send(StepRaft(msg));
            return;
        }
        match self.maybe_create_peer(&msg) {
            Ok(Some(addr)) => addr.do_send(StepRaft(msg)),
            Ok(None) => {}
            Err(e) => error!(region_id = msg.region_id, error = %e, "cannot create peer"),
        }
    }
}

impl Handler<PeerDestroyed> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: PeerDestroyed, _ctx: &mut Context<Self>) {
        let region_id = msg.region.id;
        self.meta.lock().remove_region(region_id);
        self.router.unregister(region_id);
        info!(
            store_id = self.store_id,
            region_id,
            peer_id = msg.peer_id,
            "peer removed from the store"
        );
    }
}

impl Handler<PeerFailed> for StoreActor {
    type Result = ();

    /// One region's fault stays in that region: its peer is restarted from
    /// disk after a pause that doubles, and after `MAX_PEER_RESTARTS` the
    /// region is left failed here (its range stays reserved, so no other
    /// peer takes it; the other replicas keep the region available).
    fn handle(&mut self, msg: PeerFailed, ctx: &mut Context<Self>) {
        let region_id = msg.region_id;
        self.router.unregister(region_id);
        let n = self.failures.entry(region_id).or_default();
        *n += 1;
        if *n > MAX_PEER_RESTARTS {
            error!(
                store_id = self.store_id,
                region_id,
                peer_id = msg.peer_id,
                error = %msg.error,
                failures = *n,
                "region failed on this store; its peer is not restarted again"
            );
            crate::metrics::FAILED_REGIONS.inc();
            return;
        }
        let pause = FIRST_RESTART_PAUSE * 2u32.pow(*n - 1);
        warn!(
            store_id = self.store_id,
            region_id,
            peer_id = msg.peer_id,
            error = %msg.error,
            failures = *n,
            ?pause,
            "peer failed; restarting it from disk"
        );
        ctx.run_later(pause, move |act, _| act.restart_peer(region_id));
    }
}

impl Handler<RegionChanged> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: RegionChanged, _ctx: &mut Context<Self>) {
        self.meta.lock().set_region(msg.region);
    }
}

impl Handler<RegionSplit> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: RegionSplit, _ctx: &mut Context<Self>) {
        let span = info_span!("store", store_id = self.store_id);
        let _g = span.enter();
        let right = msg.right.as_ref().map(|r| r.id);
        if let Err(e) = self.on_region_split(msg) {
            // The split is applied and durable with the old region's apply
            // state; a restart starts the new region's peer from it.
            error!(region_id = ?right, error = %e, "cannot start the new region's peer");
        }
    }
}

/// Everything a store needs from its surroundings.
pub struct StoreContext {
    pub store_id: StoreId,
    pub cfg: Arc<crate::Config>,
    pub engines: Engines,
    pub snap_mgr: SnapManager,
    pub transport: Arc<dyn super::transport::Transport>,
    pub writer: Addr<super::writer_actor::WriterActor>,
    pub scheduler: Arc<dyn crate::scheduler::SchedulerClient>,
}

/// Starts a store actor in the current arbiter; returns its router.
pub fn start_store(sc: StoreContext) -> Router {
    let (tx, rx) = std::sync::mpsc::channel();
    StoreActor::create(move |ctx| {
        let router = Router::new(sc.store_id, ctx.address());
        let scheduler = SchedulerClientActor::new(sc.scheduler, router.clone()).start();
        let engines = sc.engines.clone();
        let split_checker = SyncArbiter::start(1, move || SplitCheckActor::new(engines.clone()));
        let deps = PeerDeps {
            cfg: sc.cfg,
            transport: sc.transport,
            writer: sc.writer,
            store: ctx.address(),
            scheduler,
            split_checker,
            meta: SharedStoreMeta::default(),
        };
        let _ = tx.send(router.clone());
        StoreActor::new(sc.store_id, sc.engines, sc.snap_mgr, router, deps)
    });
    rx.recv()
        .expect("StoreActor::create runs its closure before returning")
}

/// A leader's or candidate's first contact: the only messages that may create
/// a peer (a heartbeat to a new member carries commit 0, since nothing is
/// known to be replicated there).
fn is_initial_message(msg: &RaftMessage) -> bool {
    use protobuf::Message as _;
    use raft::eraftpb::{Message, MessageType};
    let t = msg.msg_type;
    if t == MessageType::MsgRequestVote as i32 || t == MessageType::MsgRequestPreVote as i32 {
        return true;
    }
    if t != MessageType::MsgHeartbeat as i32 {
        return false;
    }
    let mut m = Message::default();
    m.merge_from_bytes(&msg.message).is_ok() && m.commit == 0
}
