//! `Peer`: the pure, synchronous state machine of one region replica. It owns
//! the raft-rs `RawNode`, the region meta and the pending proposals, and
//! decides; it never sends a message, touches the network or reads a clock.
//! Every input is an `on_*` call returning one [`Effects`] value (messages,
//! replies, a persist request, notices for the store and the scheduler),
//! which `PeerActor` carries out.
//!
//! The operations live in files of their own: `propose` (commands in),
//! `ready` (the Ready loop), `apply` (committed entries out), `effects` (the
//! one way out).

mod admission;
mod apply;
mod conf_change;
mod effects;
mod leave;
mod log_gc;
pub mod message;
mod operator;
mod propose;
mod read;
mod ready;
mod session;
mod split;
mod stale;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures::channel::oneshot;
use raft::eraftpb;
use raft::{RawNode, StateRole};

use crate::config::Config;
use crate::error::{Error, RegionError, Result};
use crate::proto::metapb;
use crate::proto::raft_cmdpb::{RaftCmdResponse, RaftResponseHeader};
use crate::proto::raft_serverpb::RaftMessage;
use crate::proto::schedulerpb::RegionHeartbeatRequest;
use crate::storage::PeerStorage;
use crate::store::{SharedStoreMeta, StoreEnv};
use crate::{PeerId, RegionId, StoreId};

pub use effects::Effects;
pub use message::Inbound;
pub use split::SplitApplied;

/// Answers one command, exactly once.
pub type Callback = oneshot::Sender<RaftCmdResponse>;

/// A proposed command waiting for its entry to be applied.
struct Proposal {
    index: u64,
    term: u64,
    cb: Callback,
}

/// Builds an error response.
pub fn error_response(e: impl Into<Error>) -> RaftCmdResponse {
    RaftCmdResponse {
        header: Some(RaftResponseHeader {
            error: Some(e.into().into_region_error()),
            current_term: 0,
        }),
        ..Default::default()
    }
}

/// The state machine of one region replica on one store: it owns the
/// raft-rs `RawNode` and the pending proposals, takes every input through an
/// `on_*` method and answers with [`Effects`] for `PeerActor` to carry out.
/// It never touches the network or reads a clock; it writes to disk only
/// through its storage.
pub struct Peer {
    store_id: StoreId,
    /// This replica's own id and store.
    meta: metapb::Peer,
    raft: RawNode<PeerStorage>,
    cfg: Arc<Config>,
    /// The store's range map: snapshot admission and stale-epoch answers
    /// consult it (`admission.rs`).
    store_meta: SharedStoreMeta,
    /// Proposals in index order; answered when applied or found stale.
    proposals: VecDeque<Proposal>,
    /// Every peer this replica has heard of, to address raft-rs messages.
    peer_cache: HashMap<PeerId, metapb::Peer>,
    /// Messages of Readies whose writes are not yet durable, by Ready number;
    /// followers may only send them once the writes are fsynced.
    unpersisted: VecDeque<(u64, Vec<eraftpb::Message>)>,
    /// The highest Ready number the store writer reported durable.
    flushed_ready: u64,
    /// A received snapshot whose data a worker is ingesting.
    ingesting: Option<ready::Ingesting>,
    /// What the current input has asked for so far (see `effects.rs`).
    effects: Effects,
    ticks: u64,
    /// Bytes written to the region since its size was last checked.
    size_diff_hint: u64,
    approximate_size: Option<u64>,
    /// Set when the leader must report its region at once (role or region change).
    heartbeat_now: bool,
    /// A learner an operator waits to promote once it has caught up.
    awaiting_promotion: Option<PeerId>,
    /// The region's meta changed while applying; the store must learn it.
    region_changed: Option<metapb::Region>,
    /// This peer applied its own removal and must be destroyed.
    pending_remove: bool,
    /// This peer applied its own removal while leading and waits until the
    /// remaining peers know it committed (see `leave.rs`).
    leaving: Option<leave::Leaving>,
    /// Reads waiting for a leadership confirmation or for apply.
    reads: read::ReadQueue,
    /// Splits applied since the last Ready, for the store to record.
    splits: Vec<SplitApplied>,
    /// (version, tick) of the last split the checker asked for, so a split
    /// in flight is not asked for again.
    split_asked: Option<(u64, u64)>,
    /// The vote requests of the current campaign, re-sent every tick while
    /// it lasts (see `resend_campaign`).
    campaign: Vec<RaftMessage>,
    /// The type and term of the campaign's vote requests.
    campaign_kind: (i32, u64),
    /// The MsgTimeoutNow of a leadership transfer under way, re-sent every
    /// tick while it lasts.
    handover: Option<RaftMessage>,
    /// Ticks since this peer last led or heard from its leader (see
    /// `stale.rs`).
    leader_missing_ticks: u64,
}

impl Peer {
    /// The replica `meta` of `region` on the store of `env`, from what the
    /// store's engines hold for it.
    pub fn new(env: &StoreEnv, region: metapb::Region, meta: metapb::Peer) -> Result<Peer> {
        Peer::build(env, region, meta, None)
    }

    /// [`Peer::new`] with a fixed election timeout of `election_ticks`
    /// instead of one drawn anew from `[election, 2 * election)` ticks at
    /// every election. raft-rs draws it from an unseeded thread RNG, so a
    /// simulator that must replay a run from its seed fixes each peer's
    /// timeout itself (drawn from its seed, one per peer).
    pub fn with_election_ticks(
        env: &StoreEnv,
        region: metapb::Region,
        meta: metapb::Peer,
        election_ticks: usize,
    ) -> Result<Peer> {
        Peer::build(env, region, meta, Some(election_ticks))
    }

    fn build(
        env: &StoreEnv,
        region: metapb::Region,
        meta: metapb::Peer,
        election_ticks: Option<usize>,
    ) -> Result<Peer> {
        let (store_id, cfg) = (env.store_id, env.cfg.clone());
        let storage = PeerStorage::new(
            env.engines.clone(),
            env.snap_mgr.clone(),
            store_id,
            region.clone(),
        )?;
        let raft_cfg = raft::Config {
            id: meta.id,
            election_tick: cfg.raft_election_timeout_ticks,
            heartbeat_tick: cfg.raft_heartbeat_ticks,
            applied: storage.applied_index(),
            max_size_per_msg: cfg.raft_max_size_per_msg,
            max_inflight_msgs: cfg.raft_max_inflight_msgs,
            check_quorum: cfg.raft_check_quorum,
            pre_vote: cfg.raft_pre_vote,
            // raft-rs draws from [min, max): one value only.
            min_election_tick: election_ticks.unwrap_or(0),
            max_election_tick: election_ticks.map_or(0, |t| t + 1),
            ..Default::default()
        };
        raft_cfg.validate()?;
        let raft = RawNode::new(&raft_cfg, storage, &crate::logging::raft_logger())?;
        let peer_cache = region.peers.iter().map(|p| (p.id, *p)).collect();
        Ok(Peer {
            store_id,
            meta,
            raft,
            cfg,
            store_meta: env.meta.clone(),
            proposals: VecDeque::new(),
            peer_cache,
            unpersisted: VecDeque::new(),
            flushed_ready: 0,
            ingesting: None,
            effects: Effects::default(),
            ticks: 0,
            size_diff_hint: 0,
            approximate_size: None,
            heartbeat_now: false,
            awaiting_promotion: None,
            region_changed: None,
            pending_remove: false,
            leaving: None,
            reads: Default::default(),
            splits: Vec::new(),
            split_asked: None,
            campaign: Vec::new(),
            campaign_kind: (0, 0),
            handover: None,
            leader_missing_ticks: 0,
        })
    }

    /// The region as this replica has applied it: range, epoch and peers.
    pub fn region(&self) -> &metapb::Region {
        &self.raft.store().region
    }

    /// This replica's own id and store.
    pub fn meta(&self) -> metapb::Peer {
        self.meta
    }

    /// The store this replica runs on.
    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// The region's size in bytes as the split checker last measured it;
    /// `None` before the first measurement and right after a split.
    pub fn approximate_size(&self) -> Option<u64> {
        self.approximate_size
    }

    /// The last index of the raft log, persisted or not.
    pub fn last_index(&self) -> u64 {
        self.raft.raft.raft_log.last_index()
    }

    /// The term of the entry at `last_index`.
    pub fn last_term(&self) -> u64 {
        self.raft.raft.raft_log.last_term()
    }

    /// The highest index this peer knows committed.
    pub fn commit_index(&self) -> u64 {
        self.raft.raft.raft_log.committed
    }

    /// The id of the region this replica belongs to.
    pub fn region_id(&self) -> RegionId {
        self.raft.store().region.id
    }

    /// The replica's durable raft and apply state.
    pub fn storage(&self) -> &PeerStorage {
        self.raft.store()
    }

    /// Whether raft currently makes this replica the region's leader.
    pub fn is_leader(&self) -> bool {
        self.raft.raft.state == StateRole::Leader
    }

    /// The peer id of the leader as raft knows it; 0 when no leader is
    /// known.
    pub fn leader_id(&self) -> PeerId {
        self.raft.raft.leader_id
    }

    /// The replica's current raft term.
    pub fn term(&self) -> u64 {
        self.raft.raft.term
    }

    /// Whether the replica holds the region's meta; false for one created
    /// from a message that waits for its first snapshot.
    pub fn is_initialized(&self) -> bool {
        self.storage().is_initialized()
    }

    /// The leader as a `metapb::Peer`, if known.
    pub fn leader(&self) -> Option<metapb::Peer> {
        self.peer_cache.get(&self.leader_id()).cloned()
    }

    /// The `NotLeader` error for a request this replica cannot serve, naming
    /// the leader when it is known so the client can go there.
    pub fn not_leader(&self) -> RegionError {
        RegionError::NotLeader {
            region_id: self.region_id(),
            leader: self.leader(),
        }
    }

    /// Hands out what the current input asked for, with the scheduler
    /// report a role or region change made due.
    fn take_effects(&mut self) -> Effects {
        // A removed leader does not speak for the region it left.
        if self.is_leader() && !self.is_leaving() && std::mem::take(&mut self.heartbeat_now) {
            self.effects.heartbeat = Some(self.heartbeat_request());
        }
        // A peer whose snapshot is being ingested goes once the ingest is
        // done: destroying it now would race the worker's writes.
        if self.pending_remove && self.ingesting.is_none() {
            self.effects.destroy = true;
        }
        self.effects.tasks.extend(self.raft.store().take_tasks());
        std::mem::take(&mut self.effects)
    }

    /// Answers one command (sent when the effects are executed).
    pub(crate) fn reply(&mut self, cb: Callback, resp: RaftCmdResponse) {
        self.effects.replies.push((cb, resp));
    }

    /// The transport's report on a snapshot sent to `to`: raft retries a
    /// failed one instead of waiting for it.
    pub fn on_snapshot_report(&mut self, to: PeerId, finished: bool) -> Effects {
        let status = if finished {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raft.report_snapshot(to, status);
        self.take_effects()
    }

    /// The result of the `Task::GenerateSnapshot` this peer handed out:
    /// raft picks it up the next time it needs a snapshot for a follower.
    pub fn on_snapshot_generated(&mut self, result: Result<raft::eraftpb::Snapshot>) -> Effects {
        self.raft.store().on_snapshot_generated(result);
        self.take_effects()
    }

    /// The transport could not reach `to`: raft probes it instead of
    /// streaming entries into the void.
    pub fn on_unreachable(&mut self, to: PeerId) -> Effects {
        self.raft.report_unreachable(to);
        self.take_effects()
    }

    /// Starts an election at once, before the peer runs (the new half of a
    /// split led by this store campaigns without waiting for a timeout).
    /// The vote requests come out of the first `handle_ready`.
    pub fn campaign(&mut self) -> Result<()> {
        self.raft.campaign()?;
        Ok(())
    }

    /// Whether `handle_ready` has work: raft output, or reads to batch
    /// into one leadership confirmation.
    pub fn needs_ready(&self) -> bool {
        self.raft.has_ready()
            || self.has_reads_to_flush()
            || (self.pending_remove && self.ingesting.is_none())
    }

    /// Whether raft holds a snapshot it has accepted but not yet installed.
    pub fn has_pending_snapshot(&self) -> bool {
        self.raft.raft.raft_log.unstable_snapshot().is_some()
    }

    /// One base tick: drives raft's clocks and the periodic duties of a
    /// leader (log GC, split check, region heartbeat).
    pub fn on_tick(&mut self) -> Effects {
        if self.superseded() {
            return Effects::stop();
        }
        self.ticks += 1;
        if self.ingesting.is_some() {
            // Busy taking a snapshot in: its data is not there yet, so it
            // must not campaign (it could win and serve from it), and it
            // has no other duty.
            return self.take_effects();
        }
        self.raft.tick();
        self.resend_campaign();
        self.expire_reads();
        self.tick_leader_missing();
        if self.tick_leaving() {
            // A removed leader only helps its followers catch up.
            if self.is_leader() {
                self.reprobe_followers();
            }
            return self.take_effects();
        }
        if !self.is_leader() {
            return self.take_effects();
        }
        self.reprobe_followers();
        self.tick_membership();
        if self
            .ticks
            .is_multiple_of(self.cfg.ticks_of(self.cfg.raft_log_gc_tick_interval))
        {
            self.maybe_propose_compact_log();
        }
        self.effects.split_check = self.split_check_due();
        let hb = self
            .ticks
            .is_multiple_of(self.cfg.ticks_of(self.cfg.region_heartbeat_tick_interval));
        if hb {
            self.heartbeat_now = true;
        }
        self.take_effects()
    }

    /// raft-rs sends a candidate's vote requests once per election; on a
    /// lossy network most elections then fail and a region stays leaderless
    /// for several timeouts. A candidate re-sends them every tick instead:
    /// duplicates are harmless (a vote for the same candidate in the same term
    /// is granted again, and votes are counted per voter).
    fn resend_campaign(&mut self) {
        use raft::StateRole::{Candidate, PreCandidate};
        let campaigning = matches!(self.raft.raft.state, Candidate | PreCandidate);
        if !campaigning {
            self.campaign.clear();
        }
        self.effects.messages.extend(self.campaign.iter().cloned());
        // Likewise a lost MsgTimeoutNow stalls a transfer (and every proposal)
        // for an election timeout. A duplicate is harmless: the transferee
        // ignores it once it campaigns, and a stale term once it has won.
        if !self.is_leader() || self.raft.raft.lead_transferee.is_none() {
            self.handover = None;
        }
        self.effects.messages.extend(self.handover.iter().cloned());
    }

    /// A follower the leader is probing gets one append per successful
    /// heartbeat round trip in raft-rs; when half the messages are lost that
    /// is a few a second, and a lagging follower (or a new one) takes many
    /// seconds to catch up. The leader re-sends the probe every tick instead,
    /// exactly as a heartbeat response would (resume, then send_append).
    fn reprobe_followers(&mut self) {
        use raft::ProgressState;
        let me = self.meta.id;
        let last = self.raft.raft.raft_log.last_index();
        let lagging: Vec<u64> = self
            .raft
            .raft
            .prs()
            .iter()
            .filter(|(id, pr)| {
                **id != me && pr.state == ProgressState::Probe && pr.paused && pr.matched < last
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lagging {
            if let Some(pr) = self.raft.raft.mut_prs().get_mut(id) {
                pr.resume();
            }
            self.raft.raft.send_append(id);
        }
    }

    /// The leader's view of its region for the scheduler.
    pub fn heartbeat_request(&self) -> RegionHeartbeatRequest {
        let last = self.raft.raft.raft_log.last_index();
        let slowest = self
            .raft
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.meta.id)
            .map(|(_, pr)| pr.matched)
            .min()
            .unwrap_or(last);
        crate::metrics::LOG_LAG.observe(last.saturating_sub(slowest) as f64);
        let truncated = self.storage().truncated_index();
        let pending_peers = self
            .region()
            .peers
            .iter()
            .filter(|p| {
                self.raft
                    .raft
                    .prs()
                    .get(p.id)
                    .is_some_and(|pr| pr.matched < truncated)
            })
            .cloned()
            .collect();
        RegionHeartbeatRequest {
            region: Some(self.region().clone()),
            leader: Some(self.meta),
            pending_peers,
            approximate_size: self.approximate_size.unwrap_or(0),
            term: self.term(),
        }
    }

    /// Answers every pending proposal and read with `e` (the peer is
    /// going away).
    pub fn fail_all_proposals(&mut self, e: impl Fn() -> Error) -> Effects {
        let proposals: Vec<Proposal> = self.proposals.drain(..).collect();
        for p in proposals {
            self.reply(p.cb, error_response(e()));
        }
        self.fail_reads(e);
        self.take_effects()
    }

    /// Remembers the vote requests of a new campaign for `resend_campaign`.
    pub(crate) fn note_campaign(
        &mut self,
        msg: &RaftMessage,
        msg_type: eraftpb::MessageType,
        term: u64,
    ) {
        use eraftpb::MessageType::{MsgRequestPreVote, MsgRequestVote, MsgTimeoutNow};
        if msg_type == MsgTimeoutNow {
            self.handover = Some(msg.clone());
            return;
        }
        if !matches!(msg_type, MsgRequestVote | MsgRequestPreVote) {
            return;
        }
        if self.campaign.is_empty() || self.campaign_kind != (msg.msg_type, term) {
            self.campaign.clear();
            self.campaign_kind = (msg.msg_type, term);
        }
        // A pre-candidate that keeps losing campaigns again at the same
        // pre-vote term, so the kind above does not change: without this the
        // list grew by one request per voter per election, and every tick
        // re-sent all of them. Only the latest request to each voter counts.
        let to = msg.to_peer.map(|p| p.id);
        self.campaign.retain(|m| m.to_peer.map(|p| p.id) != to);
        self.campaign.push(msg.clone());
    }

    pub(crate) fn wrap_raft_message(&self, m: eraftpb::Message) -> Option<RaftMessage> {
        let to = *self.peer_cache.get(&m.to)?;
        message::seal(self.region(), self.meta, to, &m).ok()
    }
}
