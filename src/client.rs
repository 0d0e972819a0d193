//! `Client`: the routing client of a networked cluster. It learns regions
//! from the scheduler, caches them with their leaders, sends each request to
//! the node of the region's (believed) leader, and on a region error
//! re-routes: NotLeader follows the hint, EpochNotMatch takes the regions
//! the node reported, KeyNotInRegion / RegionNotFound ask the scheduler
//! again, StaleCommand / ServerIsBusy / an unreachable node back off and
//! retry. Batches and scans are split by region. Every call gives up with
//! [`Error::Timeout`] after the client's deadline.
//!
//! Writes are retried only after errors that prove they did not take effect
//! (NotLeader, EpochNotMatch, KeyNotInRegion, RegionNotFound, StaleCommand,
//! ServerIsBusy, a refused connection). After anything else (an
//! `Undetermined` answer, a call that failed once sent) a write returns
//! [`RegionError::Undetermined`]: it may or may not have been applied, and a
//! blind retry could apply it again after another client's write (etcd's
//! client draws the same line). Reads are always retried.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::error::{Error, RegionError, Result};
use crate::proto::errorpb;
use crate::proto::kvpb::kv_client::KvClient;
use crate::proto::kvpb::*;
use crate::proto::metapb::{Peer, Region};
use crate::proto::raft_cmdpb::Session;
use crate::region::{key_in_region, RegionMap, Regional};
use crate::scheduler::GrpcSchedulerClient;
use crate::StoreId;

/// How long one client call keeps retrying by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Default)]
struct RegionCache {
    regions: RegionMap<Cached>,
}

/// A cached region and the leader last seen for it.
#[derive(Debug)]
struct Cached {
    region: Region,
    leader: Option<Peer>,
}

impl Regional for Cached {
    fn region(&self) -> &Region {
        &self.region
    }
}

impl RegionCache {
    fn locate(&self, key: &[u8]) -> Option<(Region, Option<Peer>)> {
        let c = self.regions.locate(key)?;
        Some((c.region.clone(), c.leader))
    }

    /// Caches `region`, dropping every cached region it overlaps: it is
    /// newer.
    fn insert(&mut self, region: Region, leader: Option<Peer>) {
        self.regions.insert(Cached { region, leader });
    }

    fn remove(&mut self, region_id: u64) {
        self.regions.remove(region_id);
    }

    fn set_leader(&mut self, region_id: u64, leader: Peer) {
        if let Some(c) = self.regions.get_mut(region_id) {
            c.leader = Some(leader);
        }
    }
}

/// One request to one region.
#[derive(Clone, Debug)]
enum Op {
    Get(Vec<u8>),
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    },
    BatchGet(Vec<Vec<u8>>),
    BatchPut(Vec<KvPair>),
    BatchDelete(Vec<Vec<u8>>),
    Split(Vec<u8>),
}

impl Op {
    fn is_batch(&self) -> bool {
        matches!(self, Op::BatchGet(_) | Op::BatchPut(_) | Op::BatchDelete(_))
    }

    /// Whether applying the op twice could differ from applying it once
    /// (a retry of a put that lost to another client's put would undo it).
    fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put(..) | Op::Delete(_) | Op::BatchPut(_) | Op::BatchDelete(_)
        )
    }
}

/// Whether a failed call provably never reached the node: the connection
/// was refused. Anything else (a reset, a timeout) may have delivered it.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// What a region answered.
enum Reply {
    Value(Option<Vec<u8>>),
    Done,
    Pairs(Vec<KvPair>, Option<Region>),
}

/// One client session (see `raft_cmdpb.Session`): a client id from the
/// scheduler's allocator and the next sequence number. A session carries one
/// write at a time, so a client keeps a pool of them: a write takes one for
/// its whole life, retries included, and gives it back when it returns.
#[derive(Clone, Copy, Debug)]
struct Lane {
    client_id: u64,
    next: u64,
}

/// A client of a Tessel cluster. Cheap to clone; clones share caches.
#[derive(Clone)]
pub struct Client {
    scheduler: GrpcSchedulerClient,
    cache: std::sync::Arc<Mutex<RegionCache>>,
    nodes: std::sync::Arc<Mutex<HashMap<StoreId, KvClient<Channel>>>>,
    timeout: Duration,
    /// Idle sessions; None: writes carry no session (at-most-once retries).
    lanes: Option<std::sync::Arc<Mutex<Vec<Lane>>>>,
}

impl Client {
    /// A client of the cluster whose scheduler listens at `scheduler`
    /// (host:port). Connections are made lazily.
    pub fn new(scheduler: &str) -> Result<Client> {
        Ok(Client {
            scheduler: GrpcSchedulerClient::new(scheduler)?,
            cache: Default::default(),
            nodes: Default::default(),
            timeout: DEFAULT_TIMEOUT,
            lanes: Some(Default::default()),
        })
    }

    /// Writes without client sessions: a write is then retried only after
    /// errors that prove it did not apply, and otherwise fails with
    /// [`RegionError::Undetermined`]. (Sessions are on by default; this exists to
    /// measure what they cost and for clients that must not allocate ids.)
    pub fn without_sessions(mut self) -> Client {
        self.lanes = None;
        self
    }

    /// A session for one write: an idle one, or a new one whose client id
    /// comes from the scheduler's allocator (unique in the cluster).
    async fn take_lane(&self) -> Result<Option<Lane>> {
        let Some(lanes) = &self.lanes else {
            return Ok(None);
        };
        if let Some(mut lane) = lanes.lock().pop() {
            lane.next += 1;
            return Ok(Some(lane));
        }
        let client_id = crate::scheduler::SchedulerClient::alloc_id(&self.scheduler).await?;
        Ok(Some(Lane { client_id, next: 1 }))
    }

    fn give_back(&self, lane: Option<Lane>) {
        if let (Some(lanes), Some(lane)) = (&self.lanes, lane) {
            lanes.lock().push(lane);
        }
    }

    /// Gives up on a call after `timeout` (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The scheduler connection this client routes with (ids, regions, stores).
    pub fn scheduler(&self) -> &GrpcSchedulerClient {
        &self.scheduler
    }

    /// Reads `key` from its region's leader (linearizable); `None` if absent.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.route(key, Op::Get(key.to_vec())).await? {
            Reply::Value(v) => Ok(v),
            _ => Err(Error::Protocol("unexpected reply to Get".into())),
        }
    }

    /// Writes `key`; with sessions (the default) a retried put applies once.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.route(key, Op::Put(key.to_vec(), value.to_vec()))
            .await
            .map(|_| ())
    }

    /// Deletes `key` (absent already is not an error); retried like `put`.
    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        self.route(key, Op::Delete(key.to_vec())).await.map(|_| ())
    }

    /// Pairs of `[start, end)` (empty end: to the end of the key space), at
    /// most `limit` (0: all), read region by region; each region's read is
    /// linearizable.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut cur = start.to_vec();
        loop {
            let left = if limit == 0 { 0 } else { limit - out.len() };
            let op = Op::Scan {
                start: cur.clone(),
                end: end.to_vec(),
                limit: u32::try_from(left).unwrap_or(u32::MAX),
            };
            let Reply::Pairs(pairs, region) = self.route(&cur, op).await? else {
                return Err(Error::Protocol("unexpected reply to Scan".into()));
            };
            out.extend(pairs.into_iter().map(|p| (p.key, p.value)));
            let region_end = region.map(|r| r.end_key).unwrap_or_default();
            // The region reached past `end` (an empty region end is
            // +infinity), or enough pairs were read.
            let done = region_end.is_empty()
                || (!end.is_empty() && region_end.as_slice() >= end)
                || (limit != 0 && out.len() >= limit);
            if done {
                return Ok(out);
            }
            cur = region_end;
        }
    }

    /// Reads many keys; returns the pairs found.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for (first, group) in self.group_by_region(keys.to_vec()).await? {
            if let Reply::Pairs(pairs, _) = self.route_group(&first, Op::BatchGet(group)).await? {
                out.extend(pairs.into_iter().map(|p| (p.key, p.value)));
            }
        }
        Ok(out)
    }

    /// Writes many pairs; each region's share is atomic, the whole is not.
    pub async fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let values: HashMap<Vec<u8>, Vec<u8>> = pairs.iter().cloned().collect();
        let keys = pairs.iter().map(|(k, _)| k.clone()).collect();
        for (first, group) in self.group_by_region(keys).await? {
            let kvs = group
                .into_iter()
                .map(|k| KvPair {
                    value: values.get(&k).cloned().unwrap_or_default(),
                    key: k,
                })
                .collect();
            self.route_group(&first, Op::BatchPut(kvs)).await?;
        }
        Ok(())
    }

    /// Deletes `keys`, one command per region they fall in: each region's
    /// group applies atomically, the groups independently.
    pub async fn batch_delete(&self, keys: &[Vec<u8>]) -> Result<()> {
        for (first, group) in self.group_by_region(keys.to_vec()).await? {
            self.route_group(&first, Op::BatchDelete(group)).await?;
        }
        Ok(())
    }

    /// Splits the region holding `key` so that `key` starts a region.
    pub async fn split(&self, key: &[u8]) -> Result<()> {
        let (region, _) = self.locate(key).await?;
        if region.start_key == key {
            return Ok(());
        }
        self.route(key, Op::Split(key.to_vec())).await.map(|_| ())
    }

    /// The region holding `key` and its leader, as the scheduler knows them.
    pub async fn region_of(&self, key: &[u8]) -> Result<(Region, Option<Peer>)> {
        let r = self.scheduler.get_region(key).await?;
        let region = r
            .region
            .ok_or_else(|| Error::Unavailable("no region holds the key yet".into()))?;
        Ok((region, r.leader))
    }

    async fn locate(&self, key: &[u8]) -> Result<(Region, Option<Peer>)> {
        if let Some(hit) = self.cache.lock().locate(key) {
            return Ok(hit);
        }
        let (region, leader) = self.region_of(key).await?;
        self.cache.lock().insert(region.clone(), leader);
        Ok((region, leader))
    }

    /// Groups keys by the region (cached) holding them, in key order; each
    /// group is named by its first key.
    async fn group_by_region(
        &self,
        mut keys: Vec<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, Vec<Vec<u8>>)>> {
        keys.sort();
        keys.dedup();
        let mut groups: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
        let mut current: Option<Region> = None;
        for k in keys {
            let same = current.as_ref().is_some_and(|r| key_in_region(&k, r));
            if !same {
                let (region, _) = self.locate(&k).await?;
                current = Some(region);
                groups.push((k.clone(), Vec::new()));
            }
            groups.last_mut().expect("pushed above").1.push(k);
        }
        Ok(groups)
    }

    /// Sends a batch to the region of its first key; if the region no longer
    /// holds the whole batch (a split), the batch is regrouped and resent.
    async fn route_group(&self, first: &[u8], op: Op) -> Result<Reply> {
        match self.route(first, op.clone()).await {
            Err(Error::Region(RegionError::KeyNotInRegion { .. })) => {
                let keys: Vec<Vec<u8>> = match &op {
                    Op::BatchGet(k) | Op::BatchDelete(k) => k.clone(),
                    Op::BatchPut(p) => p.iter().map(|p| p.key.clone()).collect(),
                    _ => return Err(Error::Protocol("not a batch".into())),
                };
                let mut found = Vec::new();
                for (f, group) in self.group_by_region(keys).await? {
                    let sub = match &op {
                        Op::BatchGet(_) => Op::BatchGet(group),
                        Op::BatchDelete(_) => Op::BatchDelete(group),
                        Op::BatchPut(p) => Op::BatchPut(
                            p.iter()
                                .filter(|kv| group.contains(&kv.key))
                                .cloned()
                                .collect(),
                        ),
                        _ => unreachable!("checked above"),
                    };
                    if let Reply::Pairs(pairs, _) = Box::pin(self.route_group(&f, sub)).await? {
                        found.extend(pairs);
                    }
                }
                Ok(Reply::Pairs(found, None))
            }
            other => other,
        }
    }

    async fn node(&self, store_id: StoreId) -> Result<KvClient<Channel>> {
        if let Some(c) = self.nodes.lock().get(&store_id) {
            return Ok(c.clone());
        }
        let store = self
            .scheduler
            .get_store(store_id)
            .await?
            .store
            .ok_or_else(|| Error::Unavailable(format!("store {store_id} is not known")))?;
        let channel = Endpoint::from_shared(format!("http://{}", store.address))
            .map_err(|e| Error::Config(format!("bad address of store {store_id}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let client =
            KvClient::new(channel).max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES);
        self.nodes.lock().insert(store_id, client.clone());
        Ok(client)
    }

    /// Sends `op` to the region holding `key` until it is answered without a
    /// region error, or the deadline passes. A write takes a session for
    /// its whole life, so all its attempts apply at most once.
    async fn route(&self, key: &[u8], op: Op) -> Result<Reply> {
        let lane = if op.is_write() {
            self.take_lane().await?
        } else {
            None
        };
        let res = self.route_in_session(key, op, lane).await;
        self.give_back(lane);
        res
    }

    async fn route_in_session(&self, key: &[u8], op: Op, lane: Option<Lane>) -> Result<Reply> {
        let session = lane.map(|l| Session {
            client_id: l.client_id,
            sequence: l.next,
        });
        // Whether an attempt may have been applied: the final error must
        // then say the outcome is unknown, not that the write failed.
        let mut ambiguous = false;
        let deadline = Instant::now() + self.timeout;
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0usize;
        let mut last = String::from("no attempt finished");
        loop {
            if Instant::now() >= deadline {
                let msg = format!(
                    "request for key {:?} not served within {:?}: {last}",
                    String::from_utf8_lossy(key),
                    self.timeout
                );
                return Err(if ambiguous {
                    Error::Region(RegionError::Undetermined(msg))
                } else {
                    Error::Timeout(msg)
                });
            }
            attempt += 1;
            let (region, leader) = match self.locate(key).await {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if region.peers.is_empty() {
                self.cache.lock().remove(region.id);
                continue;
            }
            let peer = leader
                .filter(|l| region.peers.contains(l))
                .unwrap_or(region.peers[attempt % region.peers.len()]);
            let ctx = Context {
                region_id: region.id,
                region_epoch: region.region_epoch,
                peer: Some(peer),
            };
            let answer = match self.node(peer.store_id).await {
                Ok(mut kv) => call(&mut kv, ctx, &op, session).await,
                Err(e) => {
                    // No channel to the node: nothing was sent.
                    last = e.to_string();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            match answer {
                Ok((None, reply)) => {
                    self.cache.lock().set_leader(region.id, peer);
                    return Ok(reply);
                }
                Ok((Some(err), _)) => {
                    last = err.message.clone();
                    if err.undetermined.is_some() && op.is_write() {
                        if session.is_none() {
                            // It may have been applied: a blind retry could
                            // apply it twice, after another client's write.
                            return Err(Error::Region(RegionError::Undetermined(err.message)));
                        }
                        // With a session a retry applies at most once.
                        ambiguous = true;
                    }
                    if let Some(bad) = err.invalid_request {
                        // Refused for what it asks: every retry would be too.
                        return Err(RegionError::InvalidRequest(bad.reason).into());
                    }
                    if let (Some(k), true) = (&err.key_not_in_region, op.is_batch()) {
                        // The region no longer holds the whole batch (a
                        // split): the caller regroups it by region.
                        self.cache.lock().remove(region.id);
                        return Err(Error::Region(RegionError::KeyNotInRegion {
                            key: k.key.clone(),
                            region_id: k.region_id,
                            start_key: k.start_key.clone(),
                            end_key: k.end_key.clone(),
                        }));
                    }
                    self.on_region_error(&region, peer, err);
                }
                Err(status) if status.code() == Code::InvalidArgument => {
                    return Err(RegionError::InvalidRequest(status.message().to_string()).into());
                }
                Err(status) if op.is_write() && !never_sent(&status) && session.is_none() => {
                    self.nodes.lock().remove(&peer.store_id);
                    return Err(Error::Region(RegionError::Undetermined(format!(
                        "store {}: {} (the write may have been applied)",
                        peer.store_id,
                        status.message()
                    ))));
                }
                Err(status) => {
                    // The node is down or slow: try another peer.
                    ambiguous |= op.is_write() && !never_sent(&status);
                    last = format!("store {}: {}", peer.store_id, status.message());
                    self.nodes.lock().remove(&peer.store_id);
                    let next = region.peers[attempt % region.peers.len()];
                    self.cache.lock().set_leader(region.id, next);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Updates the cache from a region error before a retry.
    fn on_region_error(&self, region: &Region, tried: Peer, err: errorpb::Error) {
        let mut cache = self.cache.lock();
        if let Some(nl) = err.not_leader {
            match nl.leader.filter(|l| l.id != tried.id) {
                Some(hint) => cache.set_leader(region.id, hint),
                None => {
                    // No hint: an election may be under way; try the others.
                    let next = region
                        .peers
                        .iter()
                        .find(|p| p.id != tried.id)
                        .copied()
                        .unwrap_or(tried);
                    cache.set_leader(region.id, next);
                }
            }
        } else if let Some(e) = err.epoch_not_match {
            cache.remove(region.id);
            for r in e.current_regions {
                if !r.peers.is_empty() {
                    cache.insert(r, None);
                }
            }
        } else if err.key_not_in_region.is_some() || err.region_not_found.is_some() {
            cache.remove(region.id);
        }
        // StaleCommand, ServerIsBusy and the rest: retry after a backoff.
    }
}

/// A write request carrying its session in the metadata.
fn with_session<T>(msg: T, session: Option<Session>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(s) = session {
        req.metadata_mut().insert_bin(
            crate::server::kv_service::SESSION_METADATA,
            tonic::metadata::MetadataValue::from_bytes(&prost::Message::encode_to_vec(&s)),
        );
    }
    req
}

/// One call to one node.
async fn call(
    kv: &mut KvClient<Channel>,
    context: Context,
    op: &Op,
    session: Option<Session>,
) -> std::result::Result<(Option<errorpb::Error>, Reply), tonic::Status> {
    let ctx = Some(context);
    Ok(match op.clone() {
        Op::Get(key) => {
            let r = kv.get(GetRequest { context: ctx, key }).await?.into_inner();
            (r.region_error, Reply::Value(r.found.then_some(r.value)))
        }
        Op::Put(key, value) => {
            let r = kv
                .put(with_session(
                    PutRequest {
                        context: ctx,
                        key,
                        value,
                    },
                    session,
                ))
                .await?
                .into_inner();
            (r.region_error, Reply::Done)
        }
        Op::Delete(key) => {
            let r = kv
                .delete(with_session(DeleteRequest { context: ctx, key }, session))
                .await?
                .into_inner();
            (r.region_error, Reply::Done)
        }
        Op::Scan { start, end, limit } => {
            let r = kv
                .scan(ScanRequest {
                    context: ctx,
                    start_key: start,
                    end_key: end,
                    limit,
                })
                .await?
                .into_inner();
            (r.region_error, Reply::Pairs(r.pairs, r.region))
        }
        Op::BatchGet(keys) => {
            let r = kv
                .batch_get(BatchGetRequest { context: ctx, keys })
                .await?
                .into_inner();
            (r.region_error, Reply::Pairs(r.pairs, None))
        }
        Op::BatchPut(pairs) => {
            let r = kv
                .batch_put(with_session(
                    BatchPutRequest {
                        context: ctx,
                        pairs,
                    },
                    session,
                ))
                .await?
                .into_inner();
            (r.region_error, Reply::Done)
        }
        Op::BatchDelete(keys) => {
            let r = kv
                .batch_delete(with_session(
                    BatchDeleteRequest { context: ctx, keys },
                    session,
                ))
                .await?
                .into_inner();
            (r.region_error, Reply::Done)
        }
        Op::Split(split_key) => {
            let r = kv
                .split_region(SplitRegionRequest {
                    context: ctx,
                    split_key,
                })
                .await?
                .into_inner();
            (r.region_error, Reply::Done)
        }
    })
}
