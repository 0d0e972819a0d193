//! Linearizable reads without the log (Raft thesis §6.4, ReadIndex): the
//! leader notes its commit index, confirms with a quorum of heartbeats that
//! it still leads (raft-rs `read_index`), waits until it has applied up to
//! that index, then serves the read from its state machine. No entry is
//! appended and nothing is fsynced. Reads arriving together share one
//! confirmation round.
//!
//! A new leader knows its commit index only once it has committed an entry
//! of its own term (thesis §6.4, the no-op it appends on election); raft-rs
//! silently drops a read-index request made before that. Reads that arrive
//! in that window wait here until the no-op commits, instead of being sent
//! to raft and lost (they used to fail only when their confirmation expired,
//! two election timeouts later, and held up every read queued behind them).

use std::collections::VecDeque;

use super::{error_response, Callback, Peer};
use crate::error::{Error, RegionError};
use crate::proto::raft_cmdpb::{CmdType, RaftCmdRequest, RaftCmdResponse, RaftResponseHeader};

pub(crate) struct PendingRead {
    req: RaftCmdRequest,
    cb: Callback,
    /// The tick it arrived at, to fail it if no confirmation ever starts.
    arrived_at_tick: u64,
}

/// Reads waiting for one quorum confirmation.
pub(crate) struct ReadBatch {
    ctx: u64,
    /// The commit index the quorum confirmed; None until it answers.
    index: Option<u64>,
    asked_at_tick: u64,
    reads: Vec<PendingRead>,
}

/// The reads of one peer: not yet sent for confirmation, then in flight.
#[derive(Default)]
pub(crate) struct ReadQueue {
    new: Vec<PendingRead>,
    batches: VecDeque<ReadBatch>,
    next_ctx: u64,
}

/// A command that only reads (Get / Snap) and may skip the log.
pub(crate) fn is_read_only(req: &RaftCmdRequest) -> bool {
    req.admin_request.is_none()
        && !req.requests.is_empty()
        && req
            .requests
            .iter()
            .all(|r| matches!(r.cmd_type(), CmdType::Get | CmdType::Snap))
}

impl Peer {
    /// Queues a checked read on the leader.
    pub(crate) fn propose_read(&mut self, req: RaftCmdRequest, cb: Callback) {
        let arrived_at_tick = self.ticks;
        self.reads.new.push(PendingRead {
            req,
            cb,
            arrived_at_tick,
        });
    }

    /// Whether reads wait for a confirmation that raft can start now: it
    /// can once this leader has committed an entry of its term.
    pub(crate) fn has_reads_to_flush(&self) -> bool {
        !self.reads.new.is_empty() && self.raft.raft.commit_to_current_term()
    }

    /// Asks raft to confirm leadership for the reads queued since the last
    /// call (one round for all of them).
    pub(crate) fn flush_reads(&mut self) {
        if !self.has_reads_to_flush() {
            return;
        }
        let reads = std::mem::take(&mut self.reads.new);
        let ctx = self.reads.next_ctx;
        self.reads.next_ctx += 1;
        self.raft.read_index(ctx.to_be_bytes().to_vec());
        self.reads.batches.push_back(ReadBatch {
            ctx,
            index: None,
            asked_at_tick: self.ticks,
            reads,
        });
    }

    /// Records the read indexes a Ready brought.
    pub(crate) fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            let ctx = u64::from_be_bytes(bytes);
            if let Some(b) = self.reads.batches.iter_mut().find(|b| b.ctx == ctx) {
                b.index = Some(rs.index);
            }
        }
    }

    /// Serves, in order, every confirmed batch whose index is applied.
    pub(crate) fn serve_reads(&mut self) {
        let applied = self.storage().applied_index();
        while self
            .reads
            .batches
            .front()
            .is_some_and(|b| b.index.is_some_and(|i| i <= applied))
        {
            let batch = self.reads.batches.pop_front().expect("front checked above");
            for read in batch.reads {
                crate::metrics::READS.inc();
                let resp = self.serve_read(&read.req);
                self.reply(read.cb, resp);
            }
        }
    }

    fn serve_read(&self, req: &RaftCmdRequest) -> RaftCmdResponse {
        // The region may have changed (split, conf change) since the check
        // at propose time.
        if let Err(e) = self.check_command(req) {
            return error_response(e);
        }
        let mut resp = RaftCmdResponse {
            header: Some(RaftResponseHeader {
                error: None,
                current_term: self.term(),
            }),
            ..Default::default()
        };
        for r in &req.requests {
            match self.read_request(r) {
                Ok(out) => resp.responses.push(out),
                Err(e) => return error_response(e),
            }
        }
        resp
    }

    /// Fails reads that can no longer be confirmed: all of them when this
    /// peer stopped leading (raft forgets its pending read requests then),
    /// and a confirmation that took longer than two election timeouts (a
    /// leader cut off from its quorum without knowing it). Confirmed reads
    /// stay: they are served once applied.
    pub(crate) fn expire_reads(&mut self) {
        let leader = self.is_leader();
        let limit = 2 * self.cfg.raft_election_timeout_ticks as u64;
        let ticks = self.ticks;
        let mut failed = Vec::new();
        if !leader {
            failed.append(&mut self.reads.new);
        } else {
            // A leader that never commits in its term (cut off from its
            // quorum without check-quorum to depose it) cannot confirm.
            let (old, young) = std::mem::take(&mut self.reads.new)
                .into_iter()
                .partition(|r| ticks > r.arrived_at_tick + limit);
            self.reads.new = young;
            failed.extend::<Vec<PendingRead>>(old);
        }
        self.reads.batches.retain_mut(|b| {
            let stale = b.index.is_none() && (!leader || ticks > b.asked_at_tick + limit);
            if stale {
                failed.append(&mut b.reads);
            }
            !stale
        });
        for read in failed {
            let e = if leader {
                RegionError::StaleCommand
            } else {
                self.not_leader()
            };
            self.reply(read.cb, error_response(e));
        }
    }

    /// Answers every waiting read (the peer is going away).
    pub(crate) fn fail_reads(&mut self, e: impl Fn() -> Error) {
        let mut failed: Vec<PendingRead> = self.reads.new.drain(..).collect();
        for b in self.reads.batches.drain(..) {
            failed.extend(b.reads);
        }
        for read in failed {
            self.reply(read.cb, error_response(e()));
        }
    }
}
