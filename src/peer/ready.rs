//! The Ready loop: persist, send, apply, advance (raft-rs's async-ready
//! protocol). Writes go into sled at once, so raft can read them back, but
//! only count as persisted when the store writer's flush covers them; follower
//! messages wait for that, leader messages may go first (thesis §10.2.1).

use raft::eraftpb;
use raft::StateRole;
use tracing::info;

use super::{error_response, Effects, Peer};
use crate::error::{RegionError, Result};

/// A received snapshot whose data is being ingested off the peer's thread.
pub(super) struct Ingesting {
    /// The Ready that held it: neither it nor any later Ready counts as
    /// persisted before the ingest is done.
    pub ready: u64,
    /// The snapshot's region, for the store once the data is in.
    pub region: crate::proto::metapb::Region,
}

impl Peer {
    /// Handles one Ready if raft has one. On an error the peer cannot go
    /// on: the caller stops it and the store restarts it from disk.
    pub fn handle_ready(&mut self) -> Result<Effects> {
        if self.superseded() {
            return Ok(Effects::stop());
        }
        self.flush_reads();
        if self.pending_remove || !self.raft.has_ready() {
            return Ok(self.take_effects());
        }
        let mut rd = self.raft.ready();
        if let Some(ss) = rd.ss() {
            if ss.raft_state == StateRole::Leader {
                info!(term = self.term(), "became leader");
                self.heartbeat_now = true;
            }
        }
        let msgs = rd.take_messages();
        self.push_messages(msgs);
        let read_states = rd.take_read_states();
        self.on_read_states(read_states);

        let snap_index = rd.snapshot().get_metadata().index;
        let applied_snap =
            self.raft
                .mut_store()
                .save_ready(rd.snapshot(), rd.entries(), rd.hs())?;
        let number = rd.number();
        if let Some(s) = applied_snap {
            self.answer_covered_proposals(snap_index);
            for p in &s.region.peers {
                self.peer_cache.insert(p.id, *p);
            }
            // The store records the new range once the data is in
            // (`on_snapshot_applied`); until then it keeps the old one and
            // the snapshot's reservation.
            self.ingesting = Some(Ingesting {
                ready: number,
                region: s.region,
            });
        }

        let must_sync = rd.must_sync();
        let persisted_msgs = rd.take_persisted_messages();
        let committed = rd.take_committed_entries();
        self.raft.advance_append_async(rd);
        // Readies are persisted in order: one that needs no fsync still waits
        // behind an earlier one that does (or behind a snapshot's ingest).
        if must_sync || !self.unpersisted.is_empty() || self.ingesting.is_some() {
            self.unpersisted.push_back((number, persisted_msgs));
            self.effects.persist = Some(number);
        } else {
            self.raft.on_persist_ready(number);
            self.push_messages(persisted_msgs);
        }
        self.apply_committed(committed)?;
        self.advance_applied();
        self.serve_reads();
        if let Some(region) = self.region_changed.take() {
            self.effects.region_changed = Some(region);
        }
        let splits = std::mem::take(&mut self.splits);
        self.effects.splits.extend(splits);
        Ok(self.take_effects())
    }

    /// A snapshot replaced the log up to `index` without showing this peer
    /// the entries: a proposal waiting for one of them may or may not be in
    /// the snapshot's state, so it is answered Undetermined now rather than
    /// when (if ever) a later entry applies.
    fn answer_covered_proposals(&mut self, index: u64) {
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("front checked above");
            let e = RegionError::Undetermined(format!(
                "entry {} was covered by a snapshot before it was seen applied",
                p.index
            ));
            self.reply(p.cb, error_response(e));
        }
    }

    /// The store writer reports Ready `number` (and all before it) durable:
    /// the messages that waited for it may go. A Ready holding a snapshot
    /// counts as persisted only once its data is ingested as well.
    pub fn on_persisted(&mut self, number: u64) -> Effects {
        self.flushed_ready = self.flushed_ready.max(number);
        self.release_persisted();
        self.take_effects()
    }

    fn release_persisted(&mut self) {
        let number = match &self.ingesting {
            Some(i) => self.flushed_ready.min(i.ready - 1),
            None => self.flushed_ready,
        };
        while self.unpersisted.front().is_some_and(|(n, _)| *n <= number) {
            let (_, msgs) = self.unpersisted.pop_front().expect("front checked above");
            self.push_messages(msgs);
        }
        if number > 0 {
            self.raft.on_persist_ready(number);
        }
        self.advance_applied();
    }

    /// The result of the `Task::ApplySnapshot` this peer handed out. On an
    /// error the region's data is in an unknown state: the caller stops the
    /// peer, and the region stays Applying for the next start to finish.
    pub fn on_snapshot_applied(&mut self, result: Result<()>) -> Result<Effects> {
        result?;
        if let Some(i) = self.ingesting.take() {
            self.effects.region_changed = Some(i.region);
        }
        self.release_persisted();
        Ok(self.take_effects())
    }

    /// Whether a received snapshot's data is still being ingested.
    pub fn is_ingesting(&self) -> bool {
        self.ingesting.is_some()
    }

    /// Tells raft how far the state machine has applied, once raft allows it
    /// (a snapshot counts as applied only after it is persisted).
    fn advance_applied(&mut self) {
        let applied = self.storage().applied_index();
        let log = &self.raft.raft.raft_log;
        if applied > log.applied && applied <= log.committed.min(log.persisted) {
            self.raft.advance_apply_to(applied);
        }
    }

    fn push_messages(&mut self, msgs: Vec<eraftpb::Message>) {
        for mut m in msgs {
            self.tag_leave_heartbeat(&mut m);
            let msg_type = m.get_msg_type();
            let term = m.term;
            if let Some(rm) = self.wrap_raft_message(m) {
                self.note_campaign(&rm, msg_type, term);
                self.effects.messages.push(rm);
            }
        }
    }
}
