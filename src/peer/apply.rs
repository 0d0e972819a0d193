//! Committed entries out: executes each committed command against the kv
//! tree. A Ready's writes and the new apply state go to sled in one atomic
//! batch; a read in the middle first commits the batch so far (with the apply
//! state of the entry before it), so it sees every earlier write.
//!
//! Apply reads the kv tree as well as writing it: a read command, a split
//! (looking for an orphaned right half) and a client session's check
//! (`session.rs`) need it. Where a read must see writes of the batch being
//! built, the batch is committed first (reads, splits, session expiry) or
//! kept in an overlay (the sessions written by this batch).

use prost::Message as _;
use raft::eraftpb::{Entry, EntryType};
use tracing::warn;

use super::session::{self, SessionOverlay, Verdict};
use super::{error_response, Peer};
use crate::error::{Error, RegionError, Result};
use crate::keys;
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminResponse, CmdType, CompactLogResponse, GetResponse, KvPair, RaftCmdRequest,
    RaftCmdResponse, RaftResponseHeader, Request, Response, SnapResponse,
};
use crate::proto::raft_serverpb::RaftTruncatedState;
use crate::region::exceeds_end_key;
use crate::storage::state;

/// Writes and answers gathered while applying one Ready's entries.
#[derive(Default)]
struct ApplyBatch {
    wb: sled::Batch,
    dirty: bool,
    answers: Vec<(super::Callback, RaftCmdResponse)>,
    /// Log entries `[from, to]` to delete once the batch is written.
    compact: Option<(u64, u64)>,
    /// Client sessions written by this batch, readable before it commits.
    sessions: SessionOverlay,
}

impl Peer {
    pub(crate) fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.is_leaving() {
            // Removed: later entries are the remaining peers' business.
            return Ok(());
        }
        let mut batch = ApplyBatch::default();
        for e in entries {
            let applied = self.storage().applied_index();
            if e.index <= applied {
                continue;
            }
            // Failpoint `apply::entry`: configured as `return(STORE:REGION)`,
            // that region's apply on that store fails with an I/O error.
            if let Some(Some(target)) = fail::eval("apply::entry", |arg| arg) {
                if target == format!("{}:{}", self.store_id, self.region_id()) {
                    return Err(Error::Io(std::io::Error::other(
                        "failpoint apply::entry: injected apply error",
                    )));
                }
            }
            if e.index != applied + 1 {
                panic!(
                    "region {} peer {}: applying entry {} after {}",
                    self.region_id(),
                    self.meta.id,
                    e.index,
                    applied
                );
            }
            if e.index.is_multiple_of(session::GC_INTERVAL_ENTRIES) {
                // Expiry reads the tree: commit what came before first.
                self.commit_batch(&mut batch)?;
                let kv = self.storage().engines.kv.clone();
                let region_id = self.region_id();
                if session::maybe_expire(&kv, region_id, e.index, &mut batch.wb)? > 0 {
                    batch.dirty = true;
                }
            }
            let resp = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => None,
                EntryType::EntryNormal => match RaftCmdRequest::decode(e.data.as_ref()) {
                    Ok(req) => Some(self.apply_command(&req, e.index, &e.context, &mut batch)?),
                    Err(err) => {
                        warn!(index = e.index, error = %err, "skipping undecodable entry");
                        None
                    }
                },
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    // Raft may generate a snapshot while taking the change in:
                    // the writes before it must already be in the tree.
                    self.commit_batch(&mut batch)?;
                    batch.dirty = true;
                    match self.apply_conf_change_entry(&e, &mut batch.wb) {
                        Ok(applied) => {
                            if let Some(region) = applied.region {
                                self.region_changed = Some(region);
                            }
                            Some(applied.response)
                        }
                        Err(err) => {
                            self.skip_bad_conf_change(e.index, &err);
                            None
                        }
                    }
                }
            };
            self.raft.mut_store().apply_state.applied_index = e.index;
            self.answer_proposals(e.index, e.term, resp, &mut batch);
            if self.pending_remove || self.is_leaving() {
                // This peer was removed: nothing after this entry concerns it.
                break;
            }
        }
        self.commit_batch(&mut batch)?;
        if let Some((from, to)) = batch.compact {
            self.raft.mut_store().compact_log_to(from, to)?;
        }
        for (cb, resp) in batch.answers {
            self.reply(cb, resp);
        }
        Ok(())
    }

    /// Writes the batch so far together with the current apply state.
    fn commit_batch(&mut self, batch: &mut ApplyBatch) -> Result<()> {
        let committed = self.raft.raft.raft_log.committed;
        let commit_term = self.raft.raft.raft_log.term(committed).unwrap_or(0);
        let store = self.raft.mut_store();
        store.apply_state.commit_index = committed;
        store.apply_state.commit_term = commit_term;
        let mut wb = std::mem::take(&mut batch.wb);
        state::put_apply_state(&mut wb, store.region.id, &store.apply_state);
        store.engines.kv.apply_batch(wb)?;
        batch.dirty = false;
        batch.sessions.clear();
        Ok(())
    }

    /// Pairs an applied entry with the proposal waiting for it. A proposal
    /// for this index in another term lost its entry to another leader's
    /// (thesis §3.6): StaleCommand, definite. A proposal for an earlier index
    /// was skipped without seeing its entry, which only an installed snapshot
    /// does; the snapshot may include it: Undetermined.
    fn answer_proposals(
        &mut self,
        index: u64,
        term: u64,
        resp: Option<RaftCmdResponse>,
        batch: &mut ApplyBatch,
    ) {
        let mut resp = resp;
        while let Some(p) = self.proposals.front() {
            if p.index > index {
                break;
            }
            let p = self.proposals.pop_front().expect("front checked above");
            let answer = if p.index < index {
                error_response(RegionError::Undetermined(format!(
                    "entry {} was covered by a snapshot before it was seen applied",
                    p.index
                )))
            } else if p.term == term {
                // Our entry, consumed without effect (a refused conf change,
                // an undecodable command): definitely not applied.
                resp.take()
                    .unwrap_or_else(|| error_response(RegionError::StaleCommand))
            } else {
                error_response(RegionError::StaleCommand)
            };
            batch.answers.push((p.cb, answer));
        }
    }

    fn apply_command(
        &mut self,
        req: &RaftCmdRequest,
        index: u64,
        context: &[u8],
        batch: &mut ApplyBatch,
    ) -> Result<RaftCmdResponse> {
        if let Err(e) = self.check_command(req) {
            let admin = req.admin_request.as_ref().map(|a| a.cmd_type());
            if admin == Some(crate::proto::raft_cmdpb::AdminCmdType::Split) {
                // Stale by the time it applied: let the checker ask again.
                self.split_refused();
            }
            return Ok(error_response(e));
        }
        let session = session::session_of(req, context);
        if let Some(s) = session {
            let kv = &self.storage().engines.kv;
            match batch.sessions.judge(kv, self.region_id(), s)? {
                Verdict::Apply => {}
                Verdict::Answered(resp) => return Ok(*resp),
                Verdict::Superseded => return Ok(error_response(RegionError::StaleCommand)),
            }
        }
        let mut resp = RaftCmdResponse {
            header: Some(RaftResponseHeader {
                error: None,
                current_term: self.term(),
            }),
            ..Default::default()
        };
        if let Some(admin) = &req.admin_request {
            if admin.cmd_type() == AdminCmdType::Split {
                // The split may delete an orphaned right half: earlier writes
                // of this batch must be in the tree for it to see them.
                self.commit_batch(batch)?;
                batch.dirty = true;
                return self.apply_split(req, &mut batch.wb);
            }
            if admin.cmd_type() == AdminCmdType::CompactLog {
                if let Some(c) = &admin.compact_log {
                    self.apply_compact_log(c.compact_index, c.compact_term, batch);
                }
                resp.admin_response = Some(AdminResponse {
                    cmd_type: AdminCmdType::CompactLog as i32,
                    compact_log: Some(CompactLogResponse {}),
                    ..Default::default()
                });
            }
            return Ok(resp);
        }
        for r in &req.requests {
            // Bodies were checked above, so only storage errors remain.
            resp.responses.push(self.apply_request(r, batch)?);
        }
        if let Some(s) = session {
            let region_id = self.region_id();
            batch
                .sessions
                .record(region_id, s, index, &resp, &mut batch.wb);
            batch.dirty = true;
        }
        Ok(resp)
    }

    /// Advances the truncated state (never backwards); the entries are
    /// deleted after the batch recording it is written.
    fn apply_compact_log(&mut self, index: u64, term: u64, batch: &mut ApplyBatch) {
        let store = self.raft.mut_store();
        let first = store.first_index();
        if index < first || index > store.applied_index() {
            return;
        }
        store.apply_state.truncated_state = Some(RaftTruncatedState { index, term });
        let from = batch.compact.map_or(first, |(f, _)| f);
        batch.compact = Some((from, index));
    }

    fn apply_request(&mut self, r: &Request, batch: &mut ApplyBatch) -> Result<Response> {
        let out = Response {
            cmd_type: r.cmd_type,
            ..Default::default()
        };
        match r.cmd_type() {
            CmdType::Put => {
                let p = r.put.as_ref().ok_or_else(|| bad("Put without body"))?;
                self.size_diff_hint += (p.key.len() + p.value.len()) as u64;
                batch
                    .wb
                    .insert(keys::data_key(p.cf as u8, &p.key), p.value.as_slice());
                batch.dirty = true;
            }
            CmdType::Delete => {
                let d = r
                    .delete
                    .as_ref()
                    .ok_or_else(|| bad("Delete without body"))?;
                self.size_diff_hint += d.key.len() as u64;
                batch.wb.remove(keys::data_key(d.cf as u8, &d.key));
                batch.dirty = true;
            }
            CmdType::Get | CmdType::Snap => {
                // A read sees every write before it in the log.
                if batch.dirty {
                    self.commit_batch(batch)?;
                }
                return self.read_request(r);
            }
            CmdType::Invalid => return Err(bad("invalid command type")),
        }
        Ok(out)
    }

    /// Serves a Get or Snap from the applied state.
    pub(crate) fn read_request(&self, r: &Request) -> Result<Response> {
        let mut out = Response {
            cmd_type: r.cmd_type,
            ..Default::default()
        };
        match r.cmd_type() {
            CmdType::Get => {
                let g = r.get.as_ref().ok_or_else(|| bad("Get without body"))?;
                let v = self
                    .storage()
                    .engines
                    .kv
                    .get(keys::data_key(g.cf as u8, &g.key))?;
                out.get = Some(GetResponse {
                    found: v.is_some(),
                    value: v.map(|v| v.to_vec()).unwrap_or_default(),
                });
            }
            CmdType::Snap => {
                let s = r.snap.as_ref().ok_or_else(|| bad("Snap without body"))?;
                out.snap = Some(self.scan(s)?);
            }
            _ => return Err(bad("not a read")),
        }
        Ok(out)
    }

    /// Reads `[start, end)` clipped to the region, with the region it was read from.
    fn scan(&self, s: &crate::proto::raft_cmdpb::SnapRequest) -> Result<SnapResponse> {
        let region = self.region().clone();
        let end = if s.end_key.is_empty() || exceeds_end_key(&s.end_key, &region.end_key) {
            region.end_key.clone()
        } else {
            s.end_key.clone()
        };
        let start = s.start_key.as_slice().max(region.start_key.as_slice());
        let (lo, hi) = keys::data_range(s.cf as u8, start, &end);
        let limit = if s.limit == 0 {
            usize::MAX
        } else {
            s.limit as usize
        };
        let mut pairs = Vec::new();
        for item in self.storage().engines.kv.range(lo..hi).take(limit) {
            let (k, v) = item?;
            pairs.push(KvPair {
                key: keys::origin_key(&k).to_vec(),
                value: v.to_vec(),
            });
        }
        Ok(SnapResponse {
            region: Some(region),
            pairs,
        })
    }
}

fn bad(msg: &str) -> Error {
    Error::Region(RegionError::InvalidRequest(msg.to_string()))
}
