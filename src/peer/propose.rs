//! Commands in: checks a command against the region (leadership, epoch, key
//! range) and proposes it to raft, remembering who to answer.

use prost::Message as _;

use super::{error_response, Callback, Effects, Peer, Proposal};
use crate::error::{Error, RegionError, Result};
use crate::proto::metapb::RegionEpoch;
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, AdminResponse, CmdType, RaftCmdRequest, RaftCmdResponse,
    RaftRequestHeader, RaftResponseHeader, Request, Session, TransferLeaderResponse,
};
use crate::region::{check_epoch, check_key_in_region, find_peer_by_id};

/// Which epoch dimensions a command depends on: (conf_ver, version).
pub(crate) fn epoch_checks(req: &RaftCmdRequest) -> (bool, bool) {
    match req.admin_request.as_ref().map(|a| a.cmd_type()) {
        None => (false, true),
        Some(AdminCmdType::CompactLog) | Some(AdminCmdType::InvalidAdmin) => (false, false),
        Some(AdminCmdType::ChangePeer) | Some(AdminCmdType::ChangePeerV2) => (true, false),
        Some(AdminCmdType::TransferLeader) | Some(AdminCmdType::Split) => (true, true),
    }
}

/// The key a data request touches, if any.
pub(crate) fn request_key(r: &Request) -> Option<&[u8]> {
    match r.cmd_type() {
        CmdType::Get => r.get.as_ref().map(|g| g.key.as_slice()),
        CmdType::Put => r.put.as_ref().map(|p| p.key.as_slice()),
        CmdType::Delete => r.delete.as_ref().map(|d| d.key.as_slice()),
        CmdType::Snap => r.snap.as_ref().map(|s| s.start_key.as_slice()),
        CmdType::Invalid => None,
    }
}

impl Peer {
    /// An admin command of this leader for its region at `epoch` (the
    /// epoch the command was decided under; apply refuses it if the region
    /// moved on since).
    pub(crate) fn admin_command(
        &self,
        epoch: Option<RegionEpoch>,
        admin: AdminRequest,
    ) -> RaftCmdRequest {
        RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: self.region_id(),
                peer: Some(self.meta),
                region_epoch: epoch,
                term: self.term(),
            }),
            requests: vec![],
            admin_request: Some(admin),
        }
    }

    /// Checks that the command is for this region and still valid against its
    /// epoch and range. Used both at propose time and at apply time.
    pub(crate) fn check_command(&self, req: &RaftCmdRequest) -> Result<()> {
        let region = self.region();
        let header = req.header.unwrap_or_default();
        if header.region_id != region.id {
            return Err(Error::Region(RegionError::RegionNotFound(header.region_id)));
        }
        let (conf_ver, version) = epoch_checks(req);
        if req.admin_request.is_none() || conf_ver || version {
            check_epoch(header.region_epoch.as_ref(), region, conf_ver, version)?;
        }
        for r in &req.requests {
            let key = request_key(r).ok_or_else(|| {
                RegionError::InvalidRequest(format!("malformed {:?} request", r.cmd_type()))
            })?;
            check_key_in_region(key, region)?;
        }
        Ok(())
    }

    /// Proposes a command from a client; `cb` is answered exactly once.
    /// A Split is refused here: its ids must come from the scheduler
    /// ([`Peer::propose_split`]).
    pub fn on_propose(&mut self, req: RaftCmdRequest, cb: Callback) -> Effects {
        self.on_propose_in_session(req, None, cb)
    }

    /// [`Peer::on_propose`] for a command of a client session: the session
    /// travels in the entry's context and is checked at apply
    /// (`session.rs`).
    pub fn on_propose_in_session(
        &mut self,
        req: RaftCmdRequest,
        session: Option<Session>,
        cb: Callback,
    ) -> Effects {
        let admin = req.admin_request.as_ref().map(|a| a.cmd_type());
        if admin == Some(AdminCmdType::Split) {
            let e = RegionError::InvalidRequest(
                "a split is asked for with SplitRegion, not proposed".into(),
            );
            self.reply(cb, error_response(e));
        } else {
            self.propose_in_session(req, session, cb);
        }
        self.take_effects()
    }

    /// Proposes a command already known to come from this store (a split
    /// with ids from the scheduler, an operator's command).
    pub(crate) fn propose(&mut self, req: RaftCmdRequest, cb: Callback) {
        self.propose_in_session(req, None, cb)
    }

    fn propose_in_session(&mut self, req: RaftCmdRequest, session: Option<Session>, cb: Callback) {
        let serves_reads = self.is_leader() && !self.is_leaving();
        if super::read::is_read_only(&req) && serves_reads && self.check_command(&req).is_ok() {
            self.propose_read(req, cb);
            return;
        }
        if !self.is_leader() {
            let e = self.not_leader();
            self.reply(cb, error_response(e));
            return;
        }
        if self.is_leaving() {
            // A removed leader applies nothing more: a command it took would
            // never be answered. Refused before proposing, so definitely not
            // applied; no hint, the client asks the scheduler.
            let e = RegionError::NotLeader {
                region_id: self.region_id(),
                leader: None,
            };
            self.reply(cb, error_response(e));
            return;
        }
        if let Err(e) = self.check_command(&req) {
            let e = self.with_right_sibling(e);
            self.reply(cb, error_response(e));
            return;
        }
        let admin = req.admin_request.as_ref().map(|a| a.cmd_type());
        let result = match admin {
            Some(AdminCmdType::TransferLeader) => {
                let resp = self.transfer_leader(&req);
                self.reply(cb, resp);
                return;
            }
            Some(AdminCmdType::ChangePeer) | Some(AdminCmdType::ChangePeerV2) => {
                self.propose_conf_change(&req)
            }
            _ => self.propose_normal(&req, session),
        };
        match result {
            Ok((index, term)) => {
                // A re-elected leader may propose below proposals of its
                // earlier term whose entries it no longer holds. Those are not
                // provably lost: another leader holding them could still
                // commit them (thesis §3.6.2). They wait in index order until
                // their index is applied, which tells (by the entry's term)
                // whether they took effect.
                let at = self
                    .proposals
                    .partition_point(|p| (p.index, p.term) <= (index, term));
                self.proposals.insert(at, Proposal { index, term, cb })
            }
            // Nothing was appended: whatever failed, the command is not in the log.
            Err(e) => self.reply(cb, error_response(e.before_proposal())),
        }
    }

    /// A client behind a split learns both halves held here at once: the
    /// region split off this one's right, if this store holds it, joins
    /// an EpochNotMatch.
    fn with_right_sibling(&self, e: Error) -> Error {
        let Error::Region(RegionError::EpochNotMatch {
            message,
            mut current_regions,
        }) = e
        else {
            return e;
        };
        if let Some(right) = self.store_meta.lock().right_sibling(self.region()) {
            current_regions.push(right.clone());
        }
        Error::Region(RegionError::EpochNotMatch {
            message,
            current_regions,
        })
    }

    /// Proposes an entry; returns its (index, term) or why raft refused it.
    pub(super) fn propose_normal(
        &mut self,
        req: &RaftCmdRequest,
        session: Option<Session>,
    ) -> Result<(u64, u64)> {
        let index = self.raft.raft.raft_log.last_index() + 1;
        let term = self.term();
        let context = session.map(|s| s.encode_to_vec()).unwrap_or_default();
        self.raft.propose(context, req.encode_to_vec())?;
        crate::metrics::PROPOSALS.inc();
        if self.raft.raft.raft_log.last_index() != index {
            // raft-rs drops proposals while a leadership transfer is under
            // way: nothing was appended, so this is definite and retryable.
            return Err(Error::Region(RegionError::ServerIsBusy(
                "leader transfer in progress; proposal not accepted".into(),
            )));
        }
        Ok((index, term))
    }

    /// TransferLeader is not replicated: the leader asks raft to hand over and
    /// answers at once. The caller watches the leader change.
    fn transfer_leader(&mut self, req: &RaftCmdRequest) -> RaftCmdResponse {
        let target = req
            .admin_request
            .as_ref()
            .and_then(|a| a.transfer_leader.as_ref())
            .and_then(|t| t.peer);
        let Some(target) = target else {
            return error_response(RegionError::InvalidRequest(
                "TransferLeader without a target peer".into(),
            ));
        };
        if find_peer_by_id(self.region(), target.id).is_none() {
            return error_response(RegionError::InvalidRequest(format!(
                "peer {} is not a member of region {}",
                target.id,
                self.region_id()
            )));
        }
        if !crate::region::roles::is_voter(self.region(), target.id) {
            return error_response(RegionError::InvalidRequest(format!(
                "peer {} of region {} is not a voter and cannot lead",
                target.id,
                self.region_id()
            )));
        }
        if target.id != self.meta.id {
            let truncated = self.storage().truncated_index();
            let matched = self.raft.raft.prs().get(target.id).map_or(0, |p| p.matched);
            // A leader elected a moment ago knows no follower's progress yet
            // (matched 0): raft-rs catches the target up before handing over.
            // A target known to need entries compacted away would need a
            // snapshot first: refused, typed and retryable.
            if matched != 0 && matched < truncated {
                return error_response(RegionError::ServerIsBusy(format!(
                    "peer {} is too far behind to lead (matched {matched}, log starts after \
                     {truncated}); retry once it has caught up",
                    target.id
                )));
            }
            self.raft.transfer_leader(target.id);
        }
        RaftCmdResponse {
            header: Some(RaftResponseHeader {
                error: None,
                current_term: self.term(),
            }),
            admin_response: Some(AdminResponse {
                cmd_type: AdminCmdType::TransferLeader as i32,
                transfer_leader: Some(TransferLeaderResponse {}),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
