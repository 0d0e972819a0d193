//! `PeerActor`: runs one region replica. It delivers inputs (ticks, raft
//! messages, commands, persistence notices) to its `Peer` and carries out the
//! outputs: sends messages, asks the store writer for durability, reports to
//! the scheduler and the store. Every handler runs inside the peer's span.

use std::sync::Arc;

use actix::prelude::*;
use raft::SnapshotStatus;
use tracing::{debug, info_span, Span};

use super::msg::{
    GetPeerStatus, PeerDestroyed, PeerStatus, PersistReady, Persisted, Propose, RegionChanged,
    RegionHeartbeat, SchedulerOperator, SnapshotReport, StepRaft,
};
use super::scheduler_client_actor::SchedulerClientActor;
use super::store_actor::StoreActor;
use super::transport::Transport;
use super::writer_actor::WriterActor;
use crate::config::Config;
use crate::error::Error;
use crate::peer::{MessageVerdict, Peer};

/// Client commands that may wait in one peer's mailbox.
const PEER_MAILBOX_CAPACITY: usize = 4096;

/// What every peer actor of a store shares.
#[derive(Clone)]
pub struct PeerDeps {
    pub cfg: Arc<Config>,
    pub transport: Arc<dyn Transport>,
    pub writer: Addr<WriterActor>,
    pub store: Addr<StoreActor>,
    pub scheduler: Addr<SchedulerClientActor>,
}

pub struct PeerActor {
    peer: Peer,
    deps: PeerDeps,
    span: Span,
    /// A `HandleReady` is queued; inputs arriving meanwhile share it.
    ready_scheduled: bool,
    /// The peer's data is gone; the actor is stopping.
    destroyed: bool,
}

/// Internal: run the Ready loop once the mailbox's current inputs are in.
#[derive(Message)]
#[rtype(result = "()")]
struct HandleReady;

impl PeerActor {
    pub fn new(peer: Peer, deps: PeerDeps) -> PeerActor {
        let span = info_span!(
            "peer",
            store_id = peer.store_id,
            region_id = peer.region_id(),
            peer_id = peer.meta.id
        );
        PeerActor {
            peer,
            deps,
            span,
            ready_scheduled: false,
            destroyed: false,
        }
    }

    fn schedule_ready(&mut self, ctx: &mut Context<Self>) {
        if !self.ready_scheduled && !self.destroyed {
            self.ready_scheduled = true;
            ctx.notify(HandleReady);
        }
    }

    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if let Some(hb) = self.peer.on_tick() {
            self.deps.scheduler.do_send(RegionHeartbeat(hb));
        }
        self.schedule_ready(ctx);
    }

    /// The Ready loop: persist, send, apply, advance, until raft is idle.
    fn handle_ready(&mut self, ctx: &mut Context<Self>) {
        self.ready_scheduled = false;
        for _ in 0..16 {
            let out = match self.peer.handle_ready() {
                Ok(out) => out,
                Err(e) => panic!(
                    "region {} peer {}: cannot persist or apply a Ready: {e}",
                    self.peer.region_id(),
                    self.peer.meta.id
                ),
            };
            if let Some(number) = out.persist {
                self.deps.writer.do_send(PersistReady {
                    number,
                    peer: ctx.address().recipient(),
                });
            }
            if let Some(region) = out.region_changed {
                self.deps.store.do_send(RegionChanged { region });
            }
            if out.destroy {
                self.flush_outbox();
                self.destroy(ctx);
                return;
            }
            if !self.peer.raft.has_ready() {
                break;
            }
        }
        self.flush_outbox();
        if let Some(hb) = self.peer.take_heartbeat_now() {
            self.deps.scheduler.do_send(RegionHeartbeat(hb));
        }
        if self.peer.raft.has_ready() {
            self.schedule_ready(ctx);
        }
    }
}

impl PeerActor {
    fn flush_outbox(&mut self) {
        for msg in self.peer.take_outbox() {
            self.deps.transport.send(msg);
        }
    }

    /// Deletes the peer's log, states and data (leaving a tombstone with the
    /// last region), answers its pending proposals, tells the store, stops.
    /// A second call does nothing.
    fn destroy(&mut self, ctx: &mut Context<Self>) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        let region = self.peer.region().clone();
        if let Err(e) = self.peer.raft.mut_store().destroy(region.clone()) {
            panic!(
                "region {} peer {}: cannot delete the peer's state: {e}",
                region.id, self.peer.meta.id
            );
        }
        let region_id = region.id;
        self.peer
            .fail_all_proposals(|| Error::RegionNotFound(region_id));
        tracing::info!("peer destroyed");
        self.deps.store.do_send(PeerDestroyed {
            region,
            peer_id: self.peer.meta.id,
        });
        ctx.stop();
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounds the client commands waiting for this peer (the router answers
        // ServerIsBusy beyond it); raft messages are not bounded by it.
        ctx.set_mailbox_capacity(PEER_MAILBOX_CAPACITY);
        ctx.run_interval(self.deps.cfg.raft_base_tick_interval, |act, ctx| {
            act.on_tick(ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let region_id = self.peer.region_id();
        self.peer
            .fail_all_proposals(|| Error::RegionNotFound(region_id));
    }
}

impl Handler<HandleReady> for PeerActor {
    type Result = ();

    fn handle(&mut self, _: HandleReady, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        self.handle_ready(ctx);
    }
}

impl Handler<StepRaft> for PeerActor {
    type Result = ();

    fn handle(&mut self, StepRaft(msg): StepRaft, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed {
            return;
        }
        if msg.msg_type == raft::eraftpb::MessageType::MsgSnapshot as i32 {
            if let Err(e) = self.peer.check_snapshot_file(&msg) {
                tracing::warn!(error = %e, "snapshot refused");
                return;
            }
        }
        match self.peer.judge_message(&msg) {
            MessageVerdict::Step => {
                if let Err(e) = self.peer.on_raft_message(msg) {
                    debug!(error = %e, "raft message not stepped");
                }
                self.schedule_ready(ctx);
            }
            MessageVerdict::ReplyTombstone(reply) => {
                debug!(to = ?reply.to_peer, "message from a removed peer; telling it");
                self.deps.transport.send(reply);
            }
            MessageVerdict::DestroySelf => {
                tracing::info!("told by a newer member that this peer was removed");
                self.destroy(ctx);
            }
            MessageVerdict::Drop => {}
        }
    }
}

impl Handler<Propose> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        self.peer.on_propose(msg.request, msg.cb);
        self.schedule_ready(ctx);
    }
}

impl Handler<Persisted> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Persisted, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed {
            return;
        }
        self.peer.on_persisted(msg.number);
        for m in self.peer.take_outbox() {
            self.deps.transport.send(m);
        }
        self.schedule_ready(ctx);
    }
}

impl Handler<SnapshotReport> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: SnapshotReport, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        let status = if msg.finished {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.peer.raft.report_snapshot(msg.to_peer, status);
        self.schedule_ready(ctx);
    }
}

impl Handler<GetPeerStatus> for PeerActor {
    type Result = MessageResult<GetPeerStatus>;

    fn handle(&mut self, _: GetPeerStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let p = &self.peer;
        MessageResult(PeerStatus {
            region: p.region().clone(),
            peer_id: p.meta.id,
            is_leader: p.is_leader(),
            leader_id: p.leader_id(),
            term: p.term(),
            applied_index: p.storage().applied_index(),
            truncated_index: p.storage().truncated_index(),
        })
    }
}

impl Handler<SchedulerOperator> for PeerActor {
    type Result = ();

    fn handle(&mut self, SchedulerOperator(resp): SchedulerOperator, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed || !self.peer.is_leader() {
            return;
        }
        let Some(op) = resp.operator else { return };
        if let Some(req) = self.peer.request_for_operator(&op) {
            debug!(?op, "carrying out a scheduler operator");
            // Nobody waits for the answer: the scheduler watches heartbeats.
            let (cb, _) = futures::channel::oneshot::channel();
            self.peer.on_propose(req, cb);
            self.schedule_ready(ctx);
        }
    }
}
