//! `PeerActor`: runs one region replica. It delivers inputs (ticks, raft
//! messages, commands, persistence notices) to its `Peer` and carries out the
//! outputs: sends messages, asks the store writer for durability, reports to
//! the scheduler and the store. Every handler runs inside the peer's span.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{debug, info_span, Span};

use super::msg::{
    AskSplit, CheckMembership, GetPeerStatus, PeerDestroyed, PeerFailed, PeerStatus,
    PeerUnreachable, PersistReady, Persisted, Propose, ProposeSplit, RegionChanged,
    RegionHeartbeat, RegionSplit, ReportSplit, SchedulerOperator, SchedulerRegion, SnapshotApplied,
    SnapshotGenerated, SnapshotReport, SplitCheck, SplitCheckResult, SplitRegion, StepRaft,
};
use super::scheduler_client_actor::SchedulerClientActor;
use super::split_checker::SplitCheckActor;
use super::store_actor::StoreActor;
use super::transport::Transport;
use super::writer_actor::WriterActor;
use crate::config::Config;
use crate::error::{Error, RegionError};
use crate::peer::{error_response, Callback, Effects, Peer};
use crate::proto::metapb::RegionEpoch;
use crate::storage::tasks::Task;

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
    pub split_checker: Addr<SplitCheckActor>,
}

pub struct PeerActor {
    peer: Peer,
    deps: PeerDeps,
    span: Span,
    /// A `HandleReady` is queued; inputs arriving meanwhile share it.
    ready_scheduled: bool,
    /// The peer's data is gone; the actor is stopping.
    destroyed: bool,
    /// Whether the leaders gauge counts this peer.
    counted_leader: bool,
}

/// Internal: run the Ready loop once the mailbox's current inputs are in.
#[derive(Message)]
#[rtype(result = "()")]
struct HandleReady;

impl PeerActor {
    pub fn new(peer: Peer, deps: PeerDeps) -> PeerActor {
        let span = info_span!(
            "peer",
            store_id = peer.store_id(),
            region_id = peer.region_id(),
            peer_id = peer.meta().id
        );
        PeerActor {
            peer,
            deps,
            span,
            ready_scheduled: false,
            destroyed: false,
            counted_leader: false,
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
        if self.destroyed {
            return;
        }
        let effects = self.peer.on_tick();
        self.execute(ctx, effects);
    }

    /// Carries out what the core asked for after one input, then destroys
    /// the peer if it asked to be, or queues a Ready turn if raft has work.
    fn execute(&mut self, ctx: &mut Context<Self>, effects: Effects) {
        let (destroy, stop) = (effects.destroy, effects.stop);
        self.run_effects(ctx, effects);
        if stop {
            self.destroyed = true;
            ctx.stop();
        } else if destroy {
            self.destroy(ctx);
        } else if self.peer.needs_ready() {
            self.schedule_ready(ctx);
        }
    }

    /// Carries out `effects` in the order `Effects` documents, all but
    /// `destroy` (the caller's). Decides nothing.
    fn run_effects(&mut self, ctx: &mut Context<Self>, effects: Effects) {
        let Effects {
            persist,
            messages,
            replies,
            region_changed,
            splits,
            heartbeat,
            split_check,
            check_membership,
            tasks,
            destroy: _,
            stop: _,
        } = effects;
        if let Some(number) = persist {
            self.deps.writer.do_send(PersistReady {
                number,
                peer: ctx.address().recipient(),
            });
        }
        for msg in messages {
            self.deps.transport.send(msg);
        }
        for (cb, resp) in replies {
            let _ = cb.send(resp);
        }
        if let Some(region) = region_changed {
            self.deps.store.do_send(RegionChanged { region });
        }
        for split in splits {
            if split.was_leader {
                if let Some(right) = &split.right {
                    self.deps.scheduler.do_send(ReportSplit {
                        left: split.left.clone(),
                        right: right.clone(),
                    });
                }
            }
            self.deps.store.do_send(RegionSplit {
                left: split.left,
                right: split.right,
                campaign: split.was_leader,
            });
        }
        if let Some(hb) = heartbeat {
            self.deps.scheduler.do_send(RegionHeartbeat(hb));
        }
        if split_check {
            let cfg = &self.deps.cfg;
            self.deps.split_checker.do_send(SplitCheck {
                region: self.peer.region().clone(),
                split_size: cfg.region_split_size_bytes,
                max_size: cfg.region_max_size_bytes,
                reply: ctx.address().recipient(),
            });
        }
        if check_membership {
            self.deps.scheduler.do_send(CheckMembership {
                region_id: self.peer.region_id(),
                reply: ctx.address().recipient(),
            });
        }
        for task in tasks {
            self.start_task(ctx, task);
        }
    }

    /// Runs a background task on a thread of its own; a generated
    /// snapshot comes back to this actor.
    fn start_task(&mut self, ctx: &mut Context<Self>, task: Task) {
        let me = ctx.address();
        let bg = task.background().clone();
        match task {
            Task::GenerateSnapshot(t) => {
                let name = format!("snap-gen-{}", t.region_id());
                if let Err(e) = bg.spawn(name, move || me.do_send(SnapshotGenerated(t.run()))) {
                    // Raft asks again when it next needs a snapshot.
                    ctx.notify(SnapshotGenerated(Err(e)));
                }
            }
            Task::ApplySnapshot(t) => {
                let name = format!("snap-apply-{}", t.region_id());
                if let Err(e) = bg.spawn(name, move || me.do_send(SnapshotApplied(t.run()))) {
                    // The region stays Applying; its next start ingests it.
                    ctx.notify(SnapshotApplied(Err(e)));
                }
            }
            Task::DeleteLog(d) => {
                if let Err(e) = bg.spawn("raftlog-gc".into(), move || d.run()) {
                    // The entries are deleted at the peer's next start.
                    tracing::warn!(error = %e, "cannot start the log deletion");
                }
            }
        }
    }

    /// Step 1 of a split: checks on the leader, then asks the scheduler for
    /// ids; the answer comes back as `ProposeSplit`.
    fn start_split(
        &mut self,
        ctx: &mut Context<Self>,
        checked: Option<RegionEpoch>,
        split_key: Vec<u8>,
        cb: Option<Callback>,
    ) {
        match self.peer.check_split(checked.as_ref(), &split_key) {
            Ok(region) => {
                debug!(split_key = ?String::from_utf8_lossy(&split_key), "asking for split ids");
                self.deps.scheduler.do_send(AskSplit {
                    region,
                    split_key,
                    cb,
                    reply: ctx.address().recipient(),
                });
            }
            Err(e) => {
                debug!(error = %e, "split refused");
                if let Some(cb) = cb {
                    // Not the core's answer: the command never reached it.
                    let _ = cb.send(error_response(e.before_proposal()));
                }
            }
        }
    }

    /// Keeps the leaders gauge in step with this peer's role.
    fn count_leader(&mut self) {
        let leads = self.peer.is_leader() && !self.destroyed;
        if leads != self.counted_leader {
            if leads {
                crate::metrics::LEADERS.inc();
            } else {
                crate::metrics::LEADERS.dec();
            }
            self.counted_leader = leads;
        }
    }

    /// The Ready loop: persist, send, apply, advance, until raft is idle
    /// (at most 16 Readies a turn, so other inputs get their turn too).
    fn handle_ready(&mut self, ctx: &mut Context<Self>) {
        let _timer = crate::metrics::READY_DURATION.start_timer();
        self.ready_scheduled = false;
        for _ in 0..16 {
            let effects = match self.peer.handle_ready() {
                Ok(effects) => effects,
                Err(e) => {
                    self.fail(ctx, e);
                    return;
                }
            };
            let (destroy, stop) = (effects.destroy, effects.stop);
            self.run_effects(ctx, effects);
            if stop {
                self.destroyed = true;
                ctx.stop();
                return;
            }
            if destroy {
                self.destroy(ctx);
                return;
            }
            if !self.peer.needs_ready() {
                break;
            }
        }
        self.count_leader();
        if self.peer.needs_ready() {
            self.schedule_ready(ctx);
        }
    }
}

impl PeerActor {
    /// An error this peer cannot go on from: it stops, its region alone.
    /// What it had persisted stays on disk; the store restarts it from
    /// there (like a crash of this one peer), so nothing acknowledged is
    /// lost and the store's other regions never notice.
    fn fail(&mut self, ctx: &mut Context<Self>, e: Error) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        tracing::error!(error = %e, "peer failed; stopping it (the store restarts it from disk)");
        crate::metrics::PEER_FAILURES.inc();
        let answers = self.peer.fail_all_proposals(|| {
            Error::Region(RegionError::Undetermined(
                "the peer failed with the command in flight".into(),
            ))
        });
        self.run_effects(ctx, answers);
        self.deps.store.do_send(PeerFailed {
            region_id: self.peer.region_id(),
            peer_id: self.peer.meta().id,
            error: e.to_string(),
        });
        ctx.stop();
    }

    /// Destroys the peer (`Peer::destroy`), tells the store, stops. A
    /// second call does nothing.
    fn destroy(&mut self, ctx: &mut Context<Self>) {
        if self.destroyed {
            return;
        }
        let effects = match self.peer.destroy() {
            Ok(effects) => effects,
            Err(e) => {
                self.fail(ctx, e);
                return;
            }
        };
        self.destroyed = true;
        let stop = effects.stop;
        self.run_effects(ctx, effects);
        if !stop {
            self.deps.store.do_send(PeerDestroyed {
                region: self.peer.region().clone(),
                peer_id: self.peer.meta().id,
            });
        }
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
        // A peer born campaigning (a split's leader side) has a Ready now.
        self.schedule_ready(ctx);
        crate::metrics::REGIONS.inc();
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::REGIONS.dec();
        self.destroyed = true;
        self.count_leader();
        // The peer's store or actor stops; its log may still commit them.
        let answers = self.peer.fail_all_proposals(|| {
            Error::Region(RegionError::Undetermined(
                "the peer stopped with the command in flight".into(),
            ))
        });
        self.run_effects(ctx, answers);
    }
}

impl Handler<HandleReady> for PeerActor {
    type Result = ();

    fn handle(&mut self, _: HandleReady, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if !self.destroyed {
            self.handle_ready(ctx);
        }
    }
}

impl Handler<StepRaft> for PeerActor {
    type Result = ();

    fn handle(&mut self, StepRaft(msg): StepRaft, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if !self.destroyed {
            let effects = self.peer.on_raft_message(msg);
            self.execute(ctx, effects);
        }
    }
}

impl Handler<Propose> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed {
            let _ = msg.cb.send(error_response(RegionError::RegionNotFound(
                self.peer.region_id(),
            )));
            return;
        }
        let effects = self
            .peer
            .on_propose_in_session(msg.request, msg.session, msg.cb);
        self.execute(ctx, effects);
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
        let effects = self.peer.on_persisted(msg.number);
        self.execute(ctx, effects);
    }
}

impl Handler<SnapshotReport> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: SnapshotReport, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed {
            return;
        }
        let effects = self.peer.on_snapshot_report(msg.to_peer, msg.finished);
        self.execute(ctx, effects);
    }
}

impl Handler<SnapshotApplied> for PeerActor {
    type Result = ();

    fn handle(&mut self, SnapshotApplied(result): SnapshotApplied, ctx: &mut Context<Self>) {
        if self.destroyed {
            return;
        }
        match self.peer.on_snapshot_applied(result) {
            Ok(effects) => self.execute(ctx, effects),
            Err(e) => self.fail(ctx, e),
        }
    }
}

impl Handler<SnapshotGenerated> for PeerActor {
    type Result = ();

    fn handle(&mut self, SnapshotGenerated(result): SnapshotGenerated, ctx: &mut Context<Self>) {
        if !self.destroyed {
            let effects = self.peer.on_snapshot_generated(result);
            self.execute(ctx, effects);
        }
    }
}

impl Handler<GetPeerStatus> for PeerActor {
    type Result = MessageResult<GetPeerStatus>;

    fn handle(&mut self, _: GetPeerStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let p = &self.peer;
        MessageResult(PeerStatus {
            region: p.region().clone(),
            peer_id: p.meta().id,
            is_leader: p.is_leader(),
            leader_id: p.leader_id(),
            term: p.term(),
            applied_index: p.storage().applied_index(),
            truncated_index: p.storage().truncated_index(),
            last_index: p.last_index(),
            last_term: p.last_term(),
            commit_index: p.commit_index(),
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
        if op.kind() == crate::proto::schedulerpb::OperatorKind::Split {
            // Already done when the key starts this region or lies outside
            // it; `start_split` refuses those.
            self.start_split(ctx, None, op.split_key, None);
            return;
        }
        if let Some(req) = self.peer.request_for_operator(&op) {
            debug!(?op, "carrying out a scheduler operator");
            // Nobody waits for the answer: the scheduler watches heartbeats.
            let (cb, _) = futures::channel::oneshot::channel();
            let effects = self.peer.on_propose(req, cb);
            self.execute(ctx, effects);
        }
    }
}

impl Handler<SchedulerRegion> for PeerActor {
    type Result = ();

    fn handle(&mut self, SchedulerRegion(region): SchedulerRegion, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed {
            return;
        }
        let effects = self.peer.on_scheduler_region(region);
        self.execute(ctx, effects);
    }
}

impl Handler<SplitCheckResult> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: SplitCheckResult, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed || !self.peer.is_leader() {
            return;
        }
        let epoch = msg.region_epoch;
        if let Some(key) = self
            .peer
            .on_split_check_result(&epoch, msg.size, msg.split_key)
        {
            self.start_split(ctx, Some(epoch), key, None);
        }
    }
}

impl Handler<SplitRegion> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: SplitRegion, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.destroyed {
            if let Some(cb) = msg.cb {
                let _ = cb.send(error_response(self.peer.not_leader()));
            }
            return;
        }
        self.start_split(ctx, msg.region_epoch, msg.split_key, msg.cb);
    }
}

impl Handler<ProposeSplit> for PeerActor {
    type Result = ();

    /// Step 2 of a split: propose it under the epoch of step 1 (the
    /// propose-time check refuses it if the region changed meanwhile).
    fn handle(&mut self, msg: ProposeSplit, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _g = span.enter();
        let cb = msg
            .cb
            .unwrap_or_else(|| futures::channel::oneshot::channel().0);
        if self.destroyed {
            let _ = cb.send(error_response(RegionError::RegionNotFound(
                self.peer.region_id(),
            )));
            return;
        }
        let effects = self
            .peer
            .propose_split(&msg.region, msg.split_key, msg.ids, cb);
        self.execute(ctx, effects);
    }
}

impl Handler<PeerUnreachable> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: PeerUnreachable, ctx: &mut Context<Self>) {
        if !self.destroyed {
            let effects = self.peer.on_unreachable(msg.to_peer);
            self.execute(ctx, effects);
        }
    }
}
