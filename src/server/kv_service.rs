//! The Kv gRPC service: turns each client call into one raft command for the
//! region named in its context and hands it to that region's peer on this
//! node. Region errors travel back as data (`region_error`); malformed or
//! oversized requests get InvalidArgument before they reach a peer.

use std::time::Duration;

use futures::channel::oneshot;
use tonic::{Request, Response, Status};

use crate::actors::msg::SplitRegion;
use crate::actors::router::Router;
use crate::error::RegionError;
use crate::proto::errorpb;
use crate::proto::kvpb::kv_server::Kv;
use crate::proto::kvpb::*;
use crate::proto::raft_cmdpb::{
    self, CmdType, RaftCmdRequest, RaftCmdResponse, RaftRequestHeader, Request as CmdRequest,
    Session,
};
use prost::Message as _;

/// Largest key a client may write.
pub const MAX_KEY_BYTES: usize = 8 * 1024;
/// Largest value a client may write.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most keys in one batch call.
pub const MAX_BATCH_KEYS: usize = 1024;
/// How long a command may wait for its region to answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct KvService {
    router: Router,
}

impl KvService {
    pub fn new(router: Router) -> KvService {
        KvService { router }
    }

    pub fn into_server(self) -> kv_server::KvServer<KvService> {
        kv_server::KvServer::new(self)
    }

    /// Proposes one command and waits for its answer; a region error is
    /// returned as `Err` for the caller to put into its response.
    async fn call(
        &self,
        ctx: Option<Context>,
        requests: Vec<CmdRequest>,
    ) -> Result<std::result::Result<RaftCmdResponse, errorpb::Error>, Status> {
        self.call_in_session(ctx, requests, None).await
    }

    /// [`KvService::call`] for a write that may carry a client session.
    async fn call_in_session(
        &self,
        ctx: Option<Context>,
        requests: Vec<CmdRequest>,
        session: Option<Session>,
    ) -> Result<std::result::Result<RaftCmdResponse, errorpb::Error>, Status> {
        let timer = crate::metrics::KV_DURATION.start_timer();
        let call = requests
            .first()
            .map_or("empty", |r| match (r.cmd_type(), requests.len()) {
                (CmdType::Get, 1) => "get",
                (CmdType::Put, 1) => "put",
                (CmdType::Delete, 1) => "delete",
                (CmdType::Snap, _) => "scan",
                (CmdType::Get, _) => "batch_get",
                (CmdType::Put, _) => "batch_put",
                (CmdType::Delete, _) => "batch_delete",
                _ => "other",
            });
        let res = self.call_inner(ctx, requests, session).await;
        let outcome = match &res {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "region_error",
            Err(_) => "failed",
        };
        crate::metrics::KV_REQUESTS
            .with_label_values(&[call, outcome])
            .inc();
        timer.observe_duration();
        res
    }

    async fn call_inner(
        &self,
        ctx: Option<Context>,
        requests: Vec<CmdRequest>,
        session: Option<Session>,
    ) -> Result<std::result::Result<RaftCmdResponse, errorpb::Error>, Status> {
        let ctx = ctx.ok_or_else(|| Status::invalid_argument("request without a context"))?;
        if ctx.region_id == 0 {
            return Err(Status::invalid_argument("context without a region id"));
        }
        let request = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: ctx.region_id,
                peer: ctx.peer,
                region_epoch: ctx.region_epoch,
                term: 0,
            }),
            requests,
            admin_request: None,
        };
        let (tx, rx) = oneshot::channel();
        self.router.send_command_in_session(request, session, tx);
        let resp = match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(resp)) => resp,
            // The command reached the store; whether it was proposed is
            // not known here.
            Ok(Err(_)) => {
                return Ok(Err(RegionError::Undetermined(
                    "the store dropped the command without an answer".into(),
                )
                .into_pb()))
            }
            Err(_) => {
                return Ok(Err(RegionError::Undetermined(format!(
                    "region {} did not answer within {COMMAND_TIMEOUT:?}",
                    ctx.region_id
                ))
                .into_pb()))
            }
        };
        match resp.header.as_ref().and_then(|h| h.error.clone()) {
            Some(e) => Ok(Err(e)),
            None => Ok(Ok(resp)),
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), Status> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Status> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Status::invalid_argument(format!(
            "value of {} bytes exceeds the limit of {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn check_batch(n: usize) -> Result<(), Status> {
    if n == 0 || n > MAX_BATCH_KEYS {
        return Err(Status::invalid_argument(format!(
            "a batch holds 1 to {MAX_BATCH_KEYS} keys, not {n}"
        )));
    }
    Ok(())
}

fn get(key: Vec<u8>) -> CmdRequest {
    CmdRequest {
        cmd_type: CmdType::Get as i32,
        get: Some(raft_cmdpb::GetRequest { cf: 0, key }),
        ..Default::default()
    }
}

fn put(key: Vec<u8>, value: Vec<u8>) -> CmdRequest {
    CmdRequest {
        cmd_type: CmdType::Put as i32,
        put: Some(raft_cmdpb::PutRequest { cf: 0, key, value }),
        ..Default::default()
    }
}

fn delete(key: Vec<u8>) -> CmdRequest {
    CmdRequest {
        cmd_type: CmdType::Delete as i32,
        delete: Some(raft_cmdpb::DeleteRequest { cf: 0, key }),
        ..Default::default()
    }
}

/// The gRPC metadata entry carrying a write's client session.
pub const SESSION_METADATA: &str = "tessel-session-bin";

/// The client session of a write request, from its metadata; a malformed
/// one is refused rather than ignored (ignoring it would drop exactly-once).
fn session_of<T>(req: &Request<T>) -> Result<Option<Session>, Status> {
    let Some(v) = req.metadata().get_bin(SESSION_METADATA) else {
        return Ok(None);
    };
    let bytes = v
        .to_bytes()
        .map_err(|e| Status::invalid_argument(format!("bad {SESSION_METADATA}: {e}")))?;
    let s = Session::decode(bytes.as_ref())
        .map_err(|e| Status::invalid_argument(format!("bad {SESSION_METADATA}: {e}")))?;
    if s.client_id == 0 || s.sequence == 0 {
        return Err(Status::invalid_argument(
            "a session needs a client id and a sequence above 0",
        ));
    }
    Ok(Some(s))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = req.into_inner();
        check_key(&req.key)?;
        let out = match self.call(req.context, vec![get(req.key)]).await? {
            Err(e) => GetResponse {
                region_error: Some(e),
                ..Default::default()
            },
            Ok(resp) => {
                let g = resp
                    .responses
                    .into_iter()
                    .next()
                    .and_then(|r| r.get)
                    .unwrap_or_default();
                GetResponse {
                    region_error: None,
                    found: g.found,
                    value: g.value,
                }
            }
        };
        Ok(Response::new(out))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let session = session_of(&req)?;
        let req = req.into_inner();
        check_key(&req.key)?;
        check_value(&req.value)?;
        let region_error = self
            .call_in_session(req.context, vec![put(req.key, req.value)], session)
            .await?
            .err();
        Ok(Response::new(PutResponse { region_error }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let session = session_of(&req)?;
        let req = req.into_inner();
        check_key(&req.key)?;
        let region_error = self
            .call_in_session(req.context, vec![delete(req.key)], session)
            .await?
            .err();
        Ok(Response::new(DeleteResponse { region_error }))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = req.into_inner();
        check_key(&req.start_key)?;
        check_key(&req.end_key)?;
        let snap = CmdRequest {
            cmd_type: CmdType::Snap as i32,
            snap: Some(raft_cmdpb::SnapRequest {
                cf: 0,
                start_key: req.start_key,
                end_key: req.end_key,
                limit: req.limit,
            }),
            ..Default::default()
        };
        let out = match self.call(req.context, vec![snap]).await? {
            Err(e) => ScanResponse {
                region_error: Some(e),
                ..Default::default()
            },
            Ok(resp) => {
                let s = resp
                    .responses
                    .into_iter()
                    .next()
                    .and_then(|r| r.snap)
                    .unwrap_or_default();
                ScanResponse {
                    region_error: None,
                    pairs: s
                        .pairs
                        .into_iter()
                        .map(|p| KvPair {
                            key: p.key,
                            value: p.value,
                        })
                        .collect(),
                    region: s.region,
                }
            }
        };
        Ok(Response::new(out))
    }

    async fn batch_get(
        &self,
        req: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let req = req.into_inner();
        check_batch(req.keys.len())?;
        for k in &req.keys {
            check_key(k)?;
        }
        let keys = req.keys.clone();
        let out = match self
            .call(req.context, req.keys.into_iter().map(get).collect())
            .await?
        {
            Err(e) => BatchGetResponse {
                region_error: Some(e),
                ..Default::default()
            },
            Ok(resp) => BatchGetResponse {
                region_error: None,
                pairs: keys
                    .into_iter()
                    .zip(resp.responses)
                    .filter_map(|(key, r)| {
                        let g = r.get?;
                        g.found.then_some(KvPair {
                            key,
                            value: g.value,
                        })
                    })
                    .collect(),
            },
        };
        Ok(Response::new(out))
    }

    async fn batch_put(
        &self,
        req: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        let session = session_of(&req)?;
        let req = req.into_inner();
        check_batch(req.pairs.len())?;
        for p in &req.pairs {
            check_key(&p.key)?;
            check_value(&p.value)?;
        }
        let requests = req.pairs.into_iter().map(|p| put(p.key, p.value)).collect();
        let region_error = self
            .call_in_session(req.context, requests, session)
            .await?
            .err();
        Ok(Response::new(BatchPutResponse { region_error }))
    }

    async fn batch_delete(
        &self,
        req: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let session = session_of(&req)?;
        let req = req.into_inner();
        check_batch(req.keys.len())?;
        for k in &req.keys {
            check_key(k)?;
        }
        let requests = req.keys.into_iter().map(delete).collect();
        let region_error = self
            .call_in_session(req.context, requests, session)
            .await?
            .err();
        Ok(Response::new(BatchDeleteResponse { region_error }))
    }

    async fn split_region(
        &self,
        req: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let req = req.into_inner();
        check_key(&req.split_key)?;
        let ctx = req
            .context
            .ok_or_else(|| Status::invalid_argument("request without a context"))?;
        let Some(addr) = self.router.peer(ctx.region_id) else {
            return Ok(Response::new(SplitRegionResponse {
                region_error: Some(RegionError::RegionNotFound(ctx.region_id).into_pb()),
                regions: vec![],
            }));
        };
        let (tx, rx) = oneshot::channel();
        addr.do_send(SplitRegion {
            region_epoch: ctx.region_epoch,
            split_key: req.split_key,
            cb: Some(tx),
        });
        let resp = match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) => {
                return Ok(Response::new(SplitRegionResponse {
                    region_error: Some(RegionError::RegionNotFound(ctx.region_id).into_pb()),
                    regions: vec![],
                }))
            }
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "the split did not finish in time",
                ))
            }
        };
        let region_error = resp.header.and_then(|h| h.error);
        let regions = resp
            .admin_response
            .and_then(|a| a.split)
            .map(|s| s.regions)
            .unwrap_or_default();
        Ok(Response::new(SplitRegionResponse {
            region_error,
            regions,
        }))
    }
}
