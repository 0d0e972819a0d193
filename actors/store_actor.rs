//! `StoreActor`: the supervisor of one store. It owns the region map (region
//! id -> peer actor, published through the `Router`) and the range map (end
//! key -> region id); it spawns a peer actor for every Normal region on start,
//! receives raft messages for regions it has no peer for, and reports the
//! store to the scheduler.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use tracing::{debug, error, info, info_span};

use super::msg::{RegionChanged, StepRaft, StoreHeartbeat};
use super::peer_actor::{PeerActor, PeerDeps};
use super::router::Router;
use crate::error::Result;
use crate::peer::Peer;
use crate::proto::metapb::Region;
use crate::proto::raft_serverpb::PeerState;
use crate::proto::schedulerpb::StoreStats;
use crate::region::find_peer;
use crate::storage::{Engines, SnapManager};
use crate::{RegionId, StoreId};

/// End keys ordered with "" as +infinity, for the range map.
fn range_key(end_key: &[u8]) -> Vec<u8> {
    if end_key.is_empty() {
        vec![1]
    } else {
        let mut k = vec![0];
        k.extend_from_slice(end_key);
        k
    }
}

pub struct StoreActor {
    store_id: StoreId,
    engines: Engines,
    snap_mgr: SnapManager,
    router: Router,
    deps: PeerDeps,
    /// Region id -> the region as this store last knew it.
    regions: HashMap<RegionId, Region>,
    /// Range map of initialized regions: end key -> region id.
    ranges: BTreeMap<Vec<u8>, RegionId>,
}

impl StoreActor {
    pub fn new(
        store_id: StoreId,
        engines: Engines,
        snap_mgr: SnapManager,
        router: Router,
        deps: PeerDeps,
    ) -> StoreActor {
        StoreActor {
            store_id,
            engines,
            snap_mgr,
            router,
            deps,
            regions: HashMap::new(),
            ranges: BTreeMap::new(),
        }
    }

    /// Spawns the actor of one initialized region and registers it.
    fn spawn_peer(&mut self, region: Region) -> Result<()> {
        let meta = find_peer(&region, self.store_id).cloned().ok_or_else(|| {
            crate::Error::Other(format!("store has no peer in region {}", region.id))
        })?;
        let peer = Peer::new(
            self.store_id,
            self.deps.cfg.clone(),
            self.engines.clone(),
            self.snap_mgr.clone(),
            region.clone(),
            meta,
        )?;
        let addr = PeerActor::new(peer, self.deps.clone()).start();
        self.router.register(region.id, addr);
        self.update_region(region);
        Ok(())
    }

    fn update_region(&mut self, region: Region) {
        if let Some(old) = self.regions.get(&region.id) {
            let k = range_key(&old.end_key);
            if self.ranges.get(&k) == Some(&region.id) {
                self.ranges.remove(&k);
            }
        }
        if !region.peers.is_empty() {
            self.ranges.insert(range_key(&region.end_key), region.id);
        }
        self.regions.insert(region.id, region);
    }

    fn load_regions(&mut self) -> Result<()> {
        for state in self.engines.region_states()? {
            let Some(region) = state.region else { continue };
            if state.state != PeerState::Normal as i32 {
                continue;
            }
            self.spawn_peer(region)?;
        }
        info!(regions = self.regions.len(), "store started");
        Ok(())
    }

    fn heartbeat(&mut self) {
        let stats = StoreStats {
            store_id: self.store_id,
            region_count: self.regions.len() as u32,
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
        debug!(
            store_id = self.store_id,
            region_id = msg.region_id,
            "message for a region without a peer here; dropped"
        );
    }
}

impl Handler<RegionChanged> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: RegionChanged, _ctx: &mut Context<Self>) {
        self.update_region(msg.region);
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
    pub scheduler: Addr<super::scheduler_client_actor::SchedulerClientActor>,
}

/// Starts a store actor in the current arbiter; returns its router.
pub fn start_store(sc: StoreContext) -> Router {
    let (tx, rx) = std::sync::mpsc::channel();
    StoreActor::create(move |ctx| {
        let router = Router::new(sc.store_id, ctx.address());
        let deps = PeerDeps {
            cfg: sc.cfg,
            transport: sc.transport,
            writer: sc.writer,
            store: ctx.address(),
            scheduler: sc.scheduler,
        };
        let _ = tx.send(router.clone());
        StoreActor::new(sc.store_id, sc.engines, sc.snap_mgr, router, deps)
    });
    rx.recv()
        .expect("StoreActor::create runs its closure before returning")
}
