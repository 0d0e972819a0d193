//! `SchedulerClientActor`: a store's line to the scheduler. Peers and the
//! store send it heartbeats without waiting; it forwards them through a
//! `SchedulerClient` and routes the operators that come back.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{debug, warn};

use super::msg::{
    AskSplit, CheckMembership, ProposeSplit, RegionHeartbeat, ReportSplit, SchedulerOperator,
    SchedulerRegion, StoreHeartbeat,
};
use super::router::Router;
use crate::peer::error_response;
use crate::scheduler::SchedulerClient;

pub struct SchedulerClientActor {
    client: Arc<dyn SchedulerClient>,
    router: Router,
}

impl SchedulerClientActor {
    pub fn new(client: Arc<dyn SchedulerClient>, router: Router) -> SchedulerClientActor {
        SchedulerClientActor { client, router }
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
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok(Some(resp)) => {
                if let Some(peer) = act.router.peer(region_id) {
                    peer.do_send(SchedulerOperator(resp));
                }
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

impl Handler<AskSplit> for SchedulerClientActor {
    type Result = ();

    fn handle(&mut self, msg: AskSplit, ctx: &mut Context<Self>) {
        let fut = self.client.ask_split(msg.region.clone());
        ctx.spawn(fut.into_actor(self).map(move |res, _act, _ctx| match res {
            Ok(ids) => msg.reply.do_send(ProposeSplit {
                region: msg.region,
                split_key: msg.split_key,
                ids,
                cb: msg.cb,
            }),
            Err(e) => {
                warn!(region_id = msg.region.id, error = %e, "AskSplit failed");
                if let Some(cb) = msg.cb {
                    let _ = cb.send(error_response(e.before_proposal()));
                }
            }
        }));
    }
}

impl Handler<ReportSplit> for SchedulerClientActor {
    type Result = ();

    fn handle(&mut self, msg: ReportSplit, ctx: &mut Context<Self>) {
        let region_id = msg.left.id;
        let fut = self.client.report_split(msg.left, msg.right);
        ctx.spawn(fut.into_actor(self).map(move |res, _act, _ctx| {
            if let Err(e) = res {
                debug!(region_id, error = %e, "split report refused");
            }
        }));
    }
}

impl Handler<CheckMembership> for SchedulerClientActor {
    type Result = ();

    fn handle(&mut self, msg: CheckMembership, ctx: &mut Context<Self>) {
        let region_id = msg.region_id;
        let fut = self.client.get_region_by_id(region_id);
        ctx.spawn(fut.into_actor(self).map(move |res, _act, _ctx| match res {
            Ok(region) => msg.reply.do_send(SchedulerRegion(region)),
            // The peer asks again after another leaderless interval.
            Err(e) => warn!(region_id, error = %e, "cannot ask the scheduler for a region"),
        }));
    }
}
