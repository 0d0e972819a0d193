//! The cluster's client helpers: route a command to the leader of the region
//! holding a key, follow NotLeader hints, retry on EpochNotMatch,
//! StaleCommand or silence, re-resolve on KeyNotInRegion / RegionNotFound,
//! and scan region by region.

use std::time::{Duration, Instant};

use futures::channel::oneshot;

use super::Cluster;
use crate::error::{Error, RegionError, Result};
use crate::keys;
use crate::proto::metapb::{Peer, Region};
use crate::proto::raft_cmdpb::{
    CmdType, ColumnFamily, DeleteRequest, GetRequest, PutRequest, RaftCmdRequest, RaftCmdResponse,
    RaftRequestHeader, Request, Session, SnapRequest,
};
use crate::region::exceeds_end_key;
use crate::StoreId;

/// How long one helper call keeps retrying before it gives up.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// How long one attempt waits for an answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause between attempts; it doubles after every failed attempt
/// up to [`MAX_RETRY_PAUSE`], so a region whose every peer sits on a stopped
/// store does not spin (and starve the runtime that would restart them).
const RETRY_PAUSE: Duration = Duration::from_millis(10);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The outcome of one attempt ([`Cluster::request_once`]).
#[derive(Debug)]
pub enum OnceOutcome {
    /// Served without a region error.
    Ok(Box<RaftCmdResponse>),
    /// Never reached a peer: it did not take effect.
    NotSent(String),
    /// A definite region error: it did not and will not take effect.
    Failed(String),
    /// No answer, a dropped answer, `Undetermined` or an untyped error: it
    /// may have taken effect, now or later.
    Unknown(String),
}

fn cf_of(cf: u8) -> i32 {
    match cf {
        keys::CF_LOCK => ColumnFamily::Lock as i32,
        keys::CF_WRITE => ColumnFamily::Write as i32,
        _ => ColumnFamily::Default as i32,
    }
}

fn header(region: &Region, peer: &Peer) -> RaftRequestHeader {
    RaftRequestHeader {
        region_id: region.id,
        peer: Some(*peer),
        region_epoch: region.region_epoch,
        term: 0,
    }
}

impl Cluster {
    /// Sends one command to the store of `request.header.peer` (or, without
    /// one, to the region's cached or reported leader) and returns the raw
    /// answer, region errors included.
    pub async fn call_command(
        &self,
        request: RaftCmdRequest,
        timeout: Duration,
    ) -> Result<RaftCmdResponse> {
        let h = request.header.unwrap_or_default();
        let store_id = match h.peer {
            Some(p) if p.store_id != 0 => p.store_id,
            _ => {
                let cached = self.inner.leaders.lock().get(&h.region_id).cloned();
                let leader = match cached {
                    Some(l) => Some(l),
                    None => self.leader_of_region(h.region_id).await,
                };
                leader
                    .ok_or(RegionError::RegionNotFound(h.region_id))?
                    .store_id
            }
        };
        self.call_store(store_id, request, timeout).await
    }

    /// Sends one command to one store's peer of the region.
    pub async fn call_store(
        &self,
        store_id: StoreId,
        request: RaftCmdRequest,
        timeout: Duration,
    ) -> Result<RaftCmdResponse> {
        self.call_store_in_session(store_id, request, None, timeout)
            .await
    }

    /// [`Cluster::call_store`] for a write of a client session
    /// (`raft_cmdpb.Session`): however often the same session and sequence
    /// are sent, the write applies at most once.
    pub async fn call_store_in_session(
        &self,
        store_id: StoreId,
        request: RaftCmdRequest,
        session: Option<Session>,
        timeout: Duration,
    ) -> Result<RaftCmdResponse> {
        let router = self
            .router(store_id)
            .ok_or_else(|| Error::Unavailable(format!("store {store_id} is not running")))?;
        let (tx, rx) = oneshot::channel();
        router.send_command_in_session(request, session, tx);
        match actix_rt::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(Error::Internal(format!(
                "store {store_id} dropped the command"
            ))),
            Err(_) => Err(Error::Timeout(format!("no answer from store {store_id}"))),
        }
    }

    /// One attempt, no retry: sends `requests` to the believed leader of the
    /// region holding `key` (the client cache, else the scheduler's view)
    /// and returns what came back. A model client recording a history uses
    /// it: each call's outcome is exactly one of ok, a definite error, or
    /// unknown (see [`OnceOutcome`]).
    pub async fn request_once(
        &self,
        key: &[u8],
        requests: Vec<Request>,
        timeout: Duration,
    ) -> OnceOutcome {
        let Some(info) = self.get_region_info(key, Duration::from_secs(2)).await else {
            return OnceOutcome::NotSent("no region for the key".into());
        };
        let region = info.region;
        let cached = self.inner.leaders.lock().get(&region.id).cloned();
        let Some(leader) = cached
            .filter(|l| region.peers.iter().any(|p| p.id == l.id))
            .or(info.leader)
            .or_else(|| region.peers.first().copied())
        else {
            return OnceOutcome::NotSent("the region has no peers".into());
        };
        let req = RaftCmdRequest {
            header: Some(header(&region, &leader)),
            requests,
            admin_request: None,
        };
        let Some(router) = self.router(leader.store_id) else {
            self.inner.leaders.lock().remove(&region.id);
            return OnceOutcome::NotSent(format!("store {} is not running", leader.store_id));
        };
        let (tx, rx) = oneshot::channel();
        router.send_command(req, tx);
        let resp = match actix_rt::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) => return OnceOutcome::Unknown("the command was dropped".into()),
            Err(_) => return OnceOutcome::Unknown("no answer in time".into()),
        };
        let Some(err) = resp.header.as_ref().and_then(|h| h.error.clone()) else {
            self.inner.leaders.lock().insert(region.id, leader);
            return OnceOutcome::Ok(Box::new(resp));
        };
        // Learn where to go next time, as the retrying helper does.
        match err.not_leader.as_ref().and_then(|nl| nl.leader) {
            Some(hint) => {
                self.inner.leaders.lock().insert(region.id, hint);
            }
            None => {
                self.inner.leaders.lock().remove(&region.id);
            }
        }
        if crate::error::is_definite(&err) {
            OnceOutcome::Failed(err.message)
        } else {
            OnceOutcome::Unknown(err.message)
        }
    }

    /// A fresh session (client id from the scheduler), or an idle one with
    /// its next sequence number.
    pub fn take_session(&self) -> Session {
        if let Some(mut s) = self.inner.sessions.lock().pop() {
            s.sequence += 1;
            return s;
        }
        let client_id = self
            .inner
            .scheduler
            .with(|s| s.alloc_id())
            .expect("the in-process scheduler keeps ids in memory");
        Session {
            client_id,
            sequence: 1,
        }
    }

    /// Returns a session taken with [`Cluster::take_session`] to the pool.
    pub fn give_back_session(&self, session: Session) {
        self.inner.sessions.lock().push(session);
    }

    /// Runs `requests` against the region holding `key` until it succeeds;
    /// returns the answer and the region it was served by. Writes carry a
    /// client session, so retrying them after an ambiguous failure applies
    /// them exactly once.
    pub async fn request(
        &self,
        key: &[u8],
        requests: Vec<Request>,
    ) -> Result<(RaftCmdResponse, Region)> {
        let writes = requests
            .iter()
            .any(|r| matches!(r.cmd_type(), CmdType::Put | CmdType::Delete));
        let session = writes.then(|| self.take_session());
        let res = self.request_in_session(key, requests, session).await;
        if let Some(s) = session {
            self.give_back_session(s);
        }
        res
    }

    async fn request_in_session(
        &self,
        key: &[u8],
        requests: Vec<Request>,
        session: Option<Session>,
    ) -> Result<(RaftCmdResponse, Region)> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let mut attempt = 0usize;
        let mut last_err = String::new();
        let mut pause = RETRY_PAUSE;
        while Instant::now() < deadline {
            if attempt > 0 {
                // Every path that did not return pauses here, with backoff:
                // a hint followed at once still waits the shortest pause.
                actix_rt::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            attempt += 1;
            let Some(info) = self.get_region_info(key, Duration::from_secs(2)).await else {
                last_err = "no region".into();
                continue;
            };
            let region = info.region;
            if region.peers.is_empty() {
                continue;
            }
            let cached = self.inner.leaders.lock().get(&region.id).cloned();
            let leader = cached
                .filter(|l| region.peers.iter().any(|p| p.id == l.id))
                .or(info.leader.filter(|_| attempt == 1))
                .unwrap_or_else(|| region.peers[attempt % region.peers.len()]);
            let req = RaftCmdRequest {
                header: Some(header(&region, &leader)),
                requests: requests.clone(),
                admin_request: None,
            };
            let resp = match self
                .call_store_in_session(leader.store_id, req, session, ATTEMPT_TIMEOUT)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last_err = e.to_string();
                    self.inner.leaders.lock().remove(&region.id);
                    let next = region.peers[attempt % region.peers.len()];
                    self.inner.leaders.lock().insert(region.id, next);
                    continue;
                }
            };
            let Some(err) = resp.header.as_ref().and_then(|h| h.error.clone()) else {
                self.inner.leaders.lock().insert(region.id, leader);
                return Ok((resp, region));
            };
            last_err = err.message.clone();
            match err.not_leader.and_then(|nl| nl.leader) {
                Some(hint) if hint.id != leader.id => {
                    self.inner.leaders.lock().insert(region.id, hint);
                    // A fresh hint is worth trying at the shortest pause.
                    pause = RETRY_PAUSE;
                }
                _ => {
                    let next = region.peers[attempt % region.peers.len()];
                    self.inner.leaders.lock().insert(region.id, next);
                }
            }
        }
        Err(Error::Timeout(format!(
            "request for key {:?} failed for {REQUEST_DEADLINE:?}: {last_err}",
            String::from_utf8_lossy(key)
        )))
    }

    /// Writes `value` under `key` in column family `cf` (one of the
    /// `keys::CF_*` bytes; any other byte means the default family). Retries
    /// for up to 60 s within one client session, so the write applies exactly
    /// once; errs with a timeout if the cluster never takes it.
    pub async fn put_cf(&self, cf: u8, key: &[u8], value: &[u8]) -> Result<()> {
        let r = Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest {
                cf: cf_of(cf),
                key: key.to_vec(),
                value: value.to_vec(),
            }),
            ..Default::default()
        };
        self.request(key, vec![r]).await.map(|_| ())
    }

    /// Writes `value` under `key` in the default column family; panics if
    /// the write does not succeed within the request deadline (60 s).
    pub async fn must_put(&self, key: &[u8], value: &[u8]) {
        self.must_put_cf(keys::CF_DEFAULT, key, value).await
    }

    /// [`Cluster::put_cf`] that panics instead of returning an error.
    pub async fn must_put_cf(&self, cf: u8, key: &[u8], value: &[u8]) {
        if let Err(e) = self.put_cf(cf, key, value).await {
            panic!("put {:?}: {e}", String::from_utf8_lossy(key));
        }
    }

    /// A linearizable read of `key` in column family `cf`; `None` when the
    /// key is absent. Retries for up to 60 s, then errs with a timeout.
    pub async fn get_cf(&self, cf: u8, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let r = Request {
            cmd_type: CmdType::Get as i32,
            get: Some(GetRequest {
                cf: cf_of(cf),
                key: key.to_vec(),
            }),
            ..Default::default()
        };
        let (resp, _) = self.request(key, vec![r]).await?;
        let g = resp
            .responses
            .first()
            .and_then(|r| r.get.clone())
            .ok_or_else(|| Error::Protocol("Get answered without a value".into()))?;
        Ok(g.found.then_some(g.value))
    }

    /// A linearizable read; None when the key is absent. Panics if the
    /// cluster cannot serve it within the request deadline.
    pub async fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_cf(keys::CF_DEFAULT, key)
            .await
            .unwrap_or_else(|e| panic!("get {:?}: {e}", String::from_utf8_lossy(key)))
    }

    /// A linearizable read of `key` in the default column family; panics if
    /// the key is absent or the read does not succeed within 60 s.
    pub async fn must_get(&self, key: &[u8]) -> Vec<u8> {
        self.get(key)
            .await
            .unwrap_or_else(|| panic!("key {:?} not found", String::from_utf8_lossy(key)))
    }

    /// Deletes `key` from the default column family; panics if the delete
    /// does not succeed within the request deadline (60 s).
    pub async fn must_delete(&self, key: &[u8]) {
        self.must_delete_cf(keys::CF_DEFAULT, key).await
    }

    /// [`Cluster::delete_cf`] that panics instead of returning an error.
    pub async fn must_delete_cf(&self, cf: u8, key: &[u8]) {
        if let Err(e) = self.delete_cf(cf, key).await {
            panic!("delete {:?}: {e}", String::from_utf8_lossy(key));
        }
    }

    /// Deletes `key` from column family `cf`; deleting an absent key
    /// succeeds. Retries for up to 60 s within one client session, so it
    /// applies exactly once; errs with a timeout if the cluster never takes it.
    pub async fn delete_cf(&self, cf: u8, key: &[u8]) -> Result<()> {
        let r = Request {
            cmd_type: CmdType::Delete as i32,
            delete: Some(DeleteRequest {
                cf: cf_of(cf),
                key: key.to_vec(),
            }),
            ..Default::default()
        };
        self.request(key, vec![r]).await.map(|_| ())
    }

    /// Every pair of `[start, end)` (empty end: to the end of the key
    /// space), read region by region; each region's read is linearizable and
    /// returns the region it was served by, where the next read starts.
    pub async fn scan(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut cur = start.to_vec();
        loop {
            let r = Request {
                cmd_type: CmdType::Snap as i32,
                snap: Some(SnapRequest {
                    cf: ColumnFamily::Default as i32,
                    start_key: cur.clone(),
                    end_key: end.to_vec(),
                    limit: 0,
                }),
                ..Default::default()
            };
            let (resp, _) = self
                .request(&cur, vec![r])
                .await
                .unwrap_or_else(|e| panic!("scan from {:?}: {e}", String::from_utf8_lossy(&cur)));
            let snap = resp
                .responses
                .into_iter()
                .next()
                .and_then(|r| r.snap)
                .expect("a Snap request is answered with a SnapResponse");
            out.extend(snap.pairs.into_iter().map(|p| (p.key, p.value)));
            let region_end = snap.region.map(|r| r.end_key).unwrap_or_default();
            if region_end.is_empty() || (!end.is_empty() && !exceeds_end_key(end, &region_end)) {
                break;
            }
            if !end.is_empty() && region_end.as_slice() >= end {
                break;
            }
            cur = region_end;
        }
        out
    }
}
