//! `GrpcSchedulerClient`: a store's (or a client's) line to the scheduler
//! process. Unary calls for everything but region heartbeats, which share one
//! long-lived stream; each heartbeat is answered in order on it, so answers
//! are paired with their requests by position. A broken stream fails the
//! heartbeats waiting on it and is re-opened by the next one (the channel
//! itself reconnects with backoff).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use super::SchedulerClient;
use crate::error::{Error, Result};
use crate::proto::metapb::{Region, Store};
use crate::proto::schedulerpb::scheduler_client::SchedulerClient as Api;
use crate::proto::schedulerpb::*;

/// How long one call to the scheduler may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

type Answer = oneshot::Sender<Result<Option<RegionHeartbeatResponse>>>;

struct HeartbeatStream {
    tx: mpsc::UnboundedSender<RegionHeartbeatRequest>,
    waiting: Arc<Mutex<VecDeque<Answer>>>,
}

#[derive(Clone)]
/// A [`SchedulerClient`] that reaches the scheduler process over gRPC,
/// plus the lookups operators and clients use. Clones share one channel and
/// one heartbeat stream. Create and use it on a tokio runtime: the channel
/// and the heartbeat stream's task live there.
pub struct GrpcSchedulerClient {
    api: Api<Channel>,
    hb: Arc<Mutex<Option<HeartbeatStream>>>,
}

fn rpc_err(e: tonic::Status) -> Error {
    Error::Unavailable(format!("scheduler: {}", e.message()))
}

impl GrpcSchedulerClient {
    /// A client of the scheduler at `addr` (host:port). Connects lazily and
    /// reconnects by itself; calls fail after 3 s without an answer.
    pub fn new(addr: &str) -> Result<GrpcSchedulerClient> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Config(format!("bad scheduler address {addr:?}: {e}")))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        Ok(GrpcSchedulerClient {
            api: Api::new(endpoint.connect_lazy()),
            hb: Arc::default(),
        })
    }

    /// The raw gRPC stub of the Scheduler service, sharing this client's
    /// channel and its 3 s call timeout.
    pub fn api(&self) -> Api<Channel> {
        self.api.clone()
    }

    /// Whether the cluster already has its first region, and the cluster id
    /// the scheduler recorded.
    pub async fn is_bootstrapped(&self) -> Result<IsBootstrappedResponse> {
        let r = self
            .api()
            .is_bootstrapped(IsBootstrappedRequest {})
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner())
    }

    /// Asks the scheduler to record the first store and the first region of
    /// an empty cluster; refused if the cluster is already bootstrapped.
    pub async fn bootstrap(&self, cluster_id: u64, store: Store, region: Region) -> Result<()> {
        self.api()
            .bootstrap(BootstrapRequest {
                cluster_id,
                store: Some(store),
                region: Some(region),
            })
            .await
            .map_err(rpc_err)?;
        Ok(())
    }

    /// The region holding `key` as last reported, with its leader and size;
    /// the response's `region` is unset when none is known.
    pub async fn get_region(&self, key: &[u8]) -> Result<GetRegionResponse> {
        let r = self
            .api()
            .get_region(GetRegionRequest { key: key.to_vec() })
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner())
    }

    /// What the scheduler knows of region `region_id`; the response's
    /// `region` is unset when it knows none.
    pub async fn get_region_by_id(&self, region_id: u64) -> Result<GetRegionResponse> {
        let r = self
            .api()
            .get_region_by_id(GetRegionByIdRequest { region_id })
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner())
    }

    /// Every known region overlapping `[start, end)`, in key order; an empty
    /// `end` means the end of the key space.
    pub async fn scan_regions(&self, start: &[u8], end: &[u8]) -> Result<Vec<GetRegionResponse>> {
        let r = self
            .api()
            .scan_regions(ScanRegionsRequest {
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                limit: 0,
            })
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner().regions)
    }

    /// Every store the scheduler knows, with its last reported statistics.
    pub async fn get_all_stores(&self) -> Result<Vec<GetStoreResponse>> {
        let r = self
            .api()
            .get_all_stores(GetAllStoresRequest {})
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner().stores)
    }

    /// Store `store_id` and its last reported statistics; fails if the
    /// scheduler does not know it.
    pub async fn get_store(&self, store_id: u64) -> Result<GetStoreResponse> {
        let r = self
            .api()
            .get_store(GetStoreRequest { store_id })
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner())
    }

    /// Queues `op` for region `region_id`, replacing any operator queued
    /// before; the region's leader gets it in the answers to its heartbeats
    /// until the region shows it done. Fails if the region is not known.
    pub async fn schedule_operator(&self, region_id: u64, op: Operator) -> Result<()> {
        self.api()
            .schedule_operator(ScheduleOperatorRequest {
                region_id,
                operator: Some(op),
            })
            .await
            .map_err(rpc_err)?;
        Ok(())
    }

    /// Every operator the scheduler has not yet seen done, timed out or
    /// cancelled, by region.
    pub async fn list_operators(&self) -> Result<Vec<PendingOperator>> {
        let r = self
            .api()
            .list_operators(ListOperatorsRequest {})
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner().operators)
    }

    /// Drops the region's pending operator; resolves to it, or None if none
    /// was pending.
    pub async fn cancel_operator(&self, region_id: u64) -> Result<Option<Operator>> {
        let r = self
            .api()
            .cancel_operator(CancelOperatorRequest { region_id })
            .await
            .map_err(rpc_err)?;
        Ok(r.into_inner().cancelled)
    }

    /// Opens the heartbeat stream: answers are handed, in order, to the
    /// heartbeats waiting for them; when the stream ends they all fail.
    fn open_stream(&self) -> HeartbeatStream {
        let (tx, rx) = mpsc::unbounded();
        let waiting: Arc<Mutex<VecDeque<Answer>>> = Arc::default();
        let mut api = self.api();
        let w = waiting.clone();
        let hb = self.hb.clone();
        let tx_for_task = tx.clone();
        tokio::spawn(async move {
            let mut why = String::from("heartbeat stream ended");
            match api.region_heartbeat(rx).await {
                Ok(resp) => {
                    let mut answers = resp.into_inner();
                    while let Some(item) = answers.next().await {
                        match item {
                            Ok(r) => {
                                let op = r.operator.is_some().then_some(r);
                                if let Some(a) = w.lock().pop_front() {
                                    let _ = a.send(Ok(op));
                                }
                            }
                            Err(e) => {
                                why = format!("heartbeat stream broke: {}", e.message());
                                break;
                            }
                        }
                    }
                }
                Err(e) => why = format!("cannot open heartbeat stream: {}", e.message()),
            }
            // Forget this stream (unless already replaced), then fail its waiters.
            let mut cur = hb.lock();
            if cur
                .as_ref()
                .is_some_and(|s| s.tx.same_receiver(&tx_for_task))
            {
                *cur = None;
            }
            drop(cur);
            for a in w.lock().drain(..) {
                let _ = a.send(Err(Error::Unavailable(why.clone())));
            }
        });
        HeartbeatStream { tx, waiting }
    }
}

impl SchedulerClient for GrpcSchedulerClient {
    fn alloc_id(&self) -> BoxFuture<'static, Result<u64>> {
        let mut api = self.api();
        Box::pin(async move {
            let r = api.alloc_id(AllocIdRequest {}).await.map_err(rpc_err)?;
            Ok(r.into_inner().id)
        })
    }

    fn put_store(&self, store: Store) -> BoxFuture<'static, Result<()>> {
        let mut api = self.api();
        Box::pin(async move {
            api.put_store(PutStoreRequest { store: Some(store) })
                .await
                .map_err(rpc_err)?;
            Ok(())
        })
    }

    fn store_heartbeat(&self, stats: StoreStats) -> BoxFuture<'static, Result<()>> {
        let mut api = self.api();
        Box::pin(async move {
            api.store_heartbeat(StoreHeartbeatRequest { stats: Some(stats) })
                .await
                .map_err(rpc_err)?;
            Ok(())
        })
    }

    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'static, Result<Option<RegionHeartbeatResponse>>> {
        let (answer, rx) = oneshot::channel();
        {
            let mut hb = self.hb.lock();
            if hb.as_ref().is_none_or(|s| s.tx.is_closed()) {
                *hb = Some(self.open_stream());
            }
            let s = hb.as_ref().expect("opened above");
            // Queue the waiter before sending, under the lock: answers come
            // back in the order requests went out.
            s.waiting.lock().push_back(answer);
            if s.tx.unbounded_send(req).is_err() {
                *hb = None;
            }
        }
        Box::pin(async move {
            match tokio::time::timeout(CALL_TIMEOUT, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(Error::Unavailable("heartbeat stream closed".into())),
                Err(_) => Err(Error::Timeout("no answer to a region heartbeat".into())),
            }
        })
    }

    fn ask_split(&self, region: Region) -> BoxFuture<'static, Result<AskSplitResponse>> {
        let mut api = self.api();
        Box::pin(async move {
            let r = api
                .ask_split(AskSplitRequest {
                    region: Some(region),
                })
                .await
                .map_err(rpc_err)?;
            Ok(r.into_inner())
        })
    }

    fn report_split(&self, left: Region, right: Region) -> BoxFuture<'static, Result<()>> {
        let mut api = self.api();
        Box::pin(async move {
            api.report_split(ReportSplitRequest {
                left: Some(left),
                right: Some(right),
            })
            .await
            .map_err(rpc_err)?;
            Ok(())
        })
    }

    fn get_region_by_id(&self, region_id: u64) -> BoxFuture<'static, Result<Option<Region>>> {
        let mut api = self.api();
        Box::pin(async move {
            let r = api
                .get_region_by_id(GetRegionByIdRequest { region_id })
                .await
                .map_err(rpc_err)?;
            Ok(r.into_inner().region)
        })
    }
}
