//! Client sessions: exactly-once writes (Raft thesis §6.3).
//!
//! A write command may carry a session, `(client_id, sequence)` in its
//! header. A session has at most one write in flight and numbers its writes
//! 1, 2, 3, ...; per region the apply path keeps the last applied sequence of
//! each session and its response (`ClientSession`, under `keys::session_key`
//! in the kv tree, written in the same batch as the apply state). A command
//! whose sequence was applied already is answered with the stored response
//! and changes nothing; an older one is answered StaleCommand (its client
//! moved on long ago). So a client may retry a write after any ambiguous
//! failure and it takes effect at most once.
//!
//! Everything here is a function of the log, so every replica holds the same
//! table at the same index: the table travels in snapshots (read on the peer
//! at the snapshot's index, see `snapshot.rs`), is copied into both halves of
//! a split (a retry may reach either half), and expires deterministically:
//! at every `GC_INTERVAL_ENTRIES`-th index, sessions unused for
//! `EXPIRY_ENTRIES` entries are dropped. A retry that arrives after its
//! session expired would apply again; with a million entries between, that
//! is far beyond any client's retry deadline.

use std::collections::HashMap;

use prost::Message as _;

use crate::error::Result;
use crate::keys;
use crate::proto::raft_cmdpb::{CmdType, RaftCmdRequest, RaftCmdResponse, Session};
use crate::proto::raft_serverpb::ClientSession;
use crate::storage::sessions::load_sessions;
use crate::RegionId;

/// Sessions unused for this many log entries of the region are dropped.
pub const EXPIRY_ENTRIES: u64 = 1_000_000;
/// How often (in log indexes) expired sessions are looked for.
pub const GC_INTERVAL_ENTRIES: u64 = 4096;

/// The session of a write command, from its entry's context, if it has
/// one. Reads need none: applying them twice changes nothing.
pub(crate) fn session_of(req: &RaftCmdRequest, context: &[u8]) -> Option<(u64, u64)> {
    if context.is_empty() || req.admin_request.is_some() {
        return None;
    }
    let writes = req
        .requests
        .iter()
        .any(|r| matches!(r.cmd_type(), CmdType::Put | CmdType::Delete));
    let s = Session::decode(context).ok()?;
    (s.client_id != 0 && writes).then_some((s.client_id, s.sequence))
}

/// What to do with a session's command.
pub(crate) enum Verdict {
    /// Not seen before: apply it.
    Apply,
    /// Applied already: answer with this response.
    Answered(Box<RaftCmdResponse>),
    /// Older than the last applied command of its session.
    Superseded,
}

/// The sessions written by the apply batch being built: the tree does not
/// show a batch's writes until it is committed, and a retry can sit in the
/// same batch as its first attempt.
#[derive(Default)]
pub(crate) struct SessionOverlay {
    written: HashMap<u64, ClientSession>,
}

impl SessionOverlay {
    /// The batch was written to the tree: the tree shows it all now.
    pub(crate) fn clear(&mut self) {
        self.written.clear();
    }

    fn get(
        &self,
        kv: &sled::Tree,
        region_id: RegionId,
        client: u64,
    ) -> Result<Option<ClientSession>> {
        if let Some(s) = self.written.get(&client) {
            return Ok(Some(s.clone()));
        }
        crate::storage::engine::get_msg(kv, &keys::session_key(region_id, client))
    }

    /// Judges a command of session `(client, sequence)`.
    pub(crate) fn judge(
        &self,
        kv: &sled::Tree,
        region_id: RegionId,
        (client, sequence): (u64, u64),
    ) -> Result<Verdict> {
        let Some(s) = self.get(kv, region_id, client)? else {
            return Ok(Verdict::Apply);
        };
        Ok(if sequence > s.sequence {
            Verdict::Apply
        } else if sequence == s.sequence {
            Verdict::Answered(Box::new(RaftCmdResponse::decode(s.response.as_slice())?))
        } else {
            Verdict::Superseded
        })
    }

    /// Records an applied command into `wb` (and the overlay).
    pub(crate) fn record(
        &mut self,
        region_id: RegionId,
        (client, sequence): (u64, u64),
        index: u64,
        resp: &RaftCmdResponse,
        wb: &mut sled::Batch,
    ) {
        let s = ClientSession {
            client_id: client,
            sequence,
            applied_index: index,
            response: resp.encode_to_vec(),
        };
        wb.insert(keys::session_key(region_id, client), s.encode_to_vec());
        self.written.insert(client, s);
    }
}

/// At every `GC_INTERVAL_ENTRIES`-th index, drops the sessions unused for
/// `EXPIRY_ENTRIES` entries. Reads the tree: the caller commits its batch
/// first, so the tree holds every session written before `index`.
pub(crate) fn maybe_expire(
    kv: &sled::Tree,
    region_id: RegionId,
    index: u64,
    wb: &mut sled::Batch,
) -> Result<usize> {
    if !index.is_multiple_of(GC_INTERVAL_ENTRIES) || index < EXPIRY_ENTRIES {
        return Ok(0);
    }
    let mut n = 0;
    for s in load_sessions(kv, region_id)? {
        if s.applied_index + EXPIRY_ENTRIES <= index {
            wb.remove(keys::session_key(region_id, s.client_id));
            n += 1;
        }
    }
    Ok(n)
}
