//! `StoreActor`: the supervisor of one store. It owns the region map (region
//! id -> peer actor, published through the `Router`) and the region and range
//! maps (`StoreMeta`, shared read-mostly with the peers); it spawns a peer
//! actor for every Normal region on start, for the new half of every split,
//! and for raft messages of regions it has no peer for, and reports the store
//! to the scheduler.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{error, info, info_span, warn};

use super::msg::{PeerDestroyed, PeerFailed, RegionChanged, RegionSplit, StepRaft, StoreHeartbeat};
use super::peer_actor::{PeerActor, PeerDeps};
use super::router::Router;
use super::scheduler_client_actor::SchedulerClientActor;
use super::split_checker::SplitCheckActor;
use crate::error::Result;
use crate::peer::Peer;
use crate::proto::metapb::{self, Region};
use crate::proto::raft_serverpb::{PeerState, RegionLocalState};
use crate::proto::schedulerpb::StoreStats;
use crate::region::find_peer;
use crate::storage::state;
use crate::storage::{Engines, SnapManager};
use crate::store::{SharedStoreMeta, SplitStart, StoreEnv, Unrouted};
use crate::StoreId;

pub struct StoreActor {
    store_id: StoreId,
    /// The store's engines and range map, which this actor is the only
    /// writer of.
    env: StoreEnv,
    router: Router,
    deps: PeerDeps,
    meta: SharedStoreMeta,
    /// How often each region's peer failed since the store started.
    failures: std::collections::HashMap<crate::RegionId, u32>,
}

/// A region whose peer failed this often is left failed, not restarted.
const MAX_PEER_RESTARTS: u32 = 5;
/// The pause before the first restart of a failed peer; it doubles.
const FIRST_RESTART_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl StoreActor {
    pub fn new(env: StoreEnv, router: Router, deps: PeerDeps) -> StoreActor {
        let meta = env.meta.clone();
        StoreActor {
            store_id: env.store_id,
            env,
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
            match state::region_state(&self.env.engines.kv, region_id) {
                Ok(s) => s,
                Err(e) => {
                    error!(region_id, error = %e, "cannot read a failed region's state");
                    return;
                }
            };
        if state
            .as_ref()
            .is_some_and(|s| s.state == PeerState::Applying as i32)
        {
            // Its snapshot's ingest may still be running on a worker: the
            // next store start finishes it (`regions_to_start`). The range
            // stays claimed meanwhile.
            error!(
                region_id,
                "region failed while ingesting a snapshot; left failed until the store restarts"
            );
            return;
        }
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
        if let Err(e) = self.env.engines.flush() {
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
            crate::Error::Internal(format!("store has no peer in region {}", region.id))
        })?;
        self.spawn(region, meta, campaign)
    }

    fn spawn(
        &mut self,
        region: Region,
        meta: metapb::Peer,
        campaign: bool,
    ) -> Result<Addr<PeerActor>> {
        let mut peer = Peer::new(&self.env, region.clone(), meta)?;
        if campaign {
            peer.campaign()?;
        }
        let addr = PeerActor::new(peer, self.deps.clone()).start();
        self.router.register(region.id, addr.clone());
        self.meta.lock().set_region(region);
        Ok(addr)
    }

    /// Records both halves of a split applied by a peer here and starts the
    /// new half's peer (`store::on_split_applied` decides).
    fn on_region_split(&mut self, msg: RegionSplit) -> Result<()> {
        match crate::store::on_split_applied(&self.env, msg.left, msg.right) {
            SplitStart::Nothing => {}
            SplitStart::Start(right) => {
                self.spawn_peer(right, msg.campaign)?;
            }
            SplitStart::FlushThenStart(right) => {
                if let Err(e) = self.env.engines.flush() {
                    crate::storage::durable::flush_failed(&e);
                }
                self.spawn_peer(right, msg.campaign)?;
            }
        }
        Ok(())
    }

    fn load_regions(&mut self) -> Result<()> {
        for region in crate::store::regions_to_start(&self.env)? {
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
            used_size: self.env.engines.db.size_on_disk().unwrap_or(0),
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
        if let Some(addr) = self.router.peer(msg.region_id()).filter(|a| a.connected()) {
            addr.do_send(StepRaft(msg));
            return;
        }
        let region_id = msg.region_id();
        let created = match crate::store::unrouted_message(&self.env, &msg) {
            Ok(Unrouted::Create(to)) => {
                let empty = Region {
                    id: region_id,
                    ..Default::default()
                };
                self.spawn(empty, to, false)
            }
            Ok(Unrouted::TellRemoved(notice)) => {
                self.deps.transport.send(notice);
                return;
            }
            Ok(Unrouted::Drop) => return,
            Err(e) => Err(e),
        };
        match created {
            Ok(addr) => addr.do_send(StepRaft(msg)),
            Err(e) => error!(region_id, error = %e, "cannot create peer"),
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
        let env = StoreEnv {
            store_id: sc.store_id,
            cfg: sc.cfg.clone(),
            engines: sc.engines,
            snap_mgr: sc.snap_mgr,
            meta: SharedStoreMeta::default(),
        };
        let deps = PeerDeps {
            cfg: sc.cfg,
            transport: sc.transport,
            writer: sc.writer,
            store: ctx.address(),
            scheduler,
            split_checker,
        };
        let _ = tx.send(router.clone());
        StoreActor::new(env, router, deps)
    });
    rx.recv()
        .expect("StoreActor::create runs its closure before returning")
}
