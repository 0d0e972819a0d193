//! `SchedulerClientActor`: a store's line to the scheduler. Peers and the
//! store send it heartbeats without waiting; it forwards them through a
//! `SchedulerClient` and routes the operators that come back.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{debug, warn};

use super::msg::{RegionHeartbeat, StoreHeartbeat};
use crate::scheduler::SchedulerClient;

pub struct SchedulerClientActor {
    client: Arc<dyn SchedulerClient>,
}

impl SchedulerClientActor {
    pub fn new(client: Arc<dyn SchedulerClient>) -> SchedulerClientActor {
        SchedulerClientActor { client }
    }
}

impl Actor for SchedulerClientActor {
    type Context = Context<Self>;
}

impl Handler<RegionHeartbeat> for SchedulerClientActor {
    type Result = ();

    fn handle(&mut self, RegionHeartbeat(req): RegionHeartbeat, ctx: &mut Context<Self>) {
        let region_id = req.region.as_ref().map_or(0, |r| r.id);
        let fut = self.client.region_heartbeat(req);
        ctx.spawn(fut.into_actor(self).map(move |res, _act, _ctx| match res {
            Ok(Some(resp)) => {
                // Operators are carried out by the membership and split
                // paths; this version only records that one is pending.
                debug!(region_id, op = ?resp.operator, "scheduler sent an operator");
            }
            Ok(None) => {}
            Err(e) => debug!(region_id, error = %e, "region heartbeat refused"),
        }));
    }
}

impl Handler<StoreHeartbeat> for SchedulerClientActor {
    type Result = ();

    fn handle(&mut self, StoreHeartbeat(stats): StoreHeartbeat, ctx: &mut Context<Self>) {
        let fut = self.client.store_heartbeat(stats);
        ctx.spawn(fut.into_actor(self).map(|res, _act, _ctx| {
            if let Err(e) = res {
                warn!(error = %e, "store heartbeat failed");
            }
        }));
    }
}
