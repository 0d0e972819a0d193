//! The Scheduler gRPC service: the scheduler process's face. Every call is
//! a thin translation onto the same [`Scheduler`](crate::scheduler::Scheduler) logic the in-process test
//! kit uses.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::proto::schedulerpb::scheduler_server::Scheduler as SchedulerApi;
use crate::proto::schedulerpb::*;
use crate::scheduler::{operator_timeout, LocalSchedulerClient, RegionInfo, SchedulerError};

/// Serves a scheduler (shared with whoever else holds the client).
#[derive(Clone)]
pub struct SchedulerService {
    inner: LocalSchedulerClient,
}

impl SchedulerService {
    /// A service answering from the scheduler behind `inner`; whoever else
    /// holds a clone of `inner` sees the same state.
    pub fn new(inner: LocalSchedulerClient) -> SchedulerService {
        SchedulerService { inner }
    }

    /// Wraps the service as a tonic server, ready to be added to a
    /// `tonic::transport::Server`.
    pub fn into_server(self) -> scheduler_server::SchedulerServer<SchedulerService> {
        scheduler_server::SchedulerServer::new(self)
    }
}

fn status(e: SchedulerError) -> Status {
    match e {
        SchedulerError::StaleRegion { .. } => Status::failed_precondition(e.to_string()),
        SchedulerError::Invalid(_) => Status::invalid_argument(e.to_string()),
        SchedulerError::Storage(_) => Status::unavailable(e.to_string()),
    }
}

fn region_response(info: Option<RegionInfo>) -> GetRegionResponse {
    match info {
        Some(i) => GetRegionResponse {
            region: Some(i.region),
            leader: i.leader,
            approximate_size: i.approximate_size,
            pending_peers: i.pending_peers,
        },
        None => GetRegionResponse::default(),
    }
}

type HeartbeatStream =
    Pin<Box<dyn Stream<Item = Result<RegionHeartbeatResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SchedulerApi for SchedulerService {
    async fn is_bootstrapped(
        &self,
        _: Request<IsBootstrappedRequest>,
    ) -> Result<Response<IsBootstrappedResponse>, Status> {
        let (bootstrapped, cluster_id) = self.inner.with(|s| (s.is_bootstrapped(), s.cluster_id()));
        Ok(Response::new(IsBootstrappedResponse {
            bootstrapped,
            cluster_id,
        }))
    }

    async fn bootstrap(
        &self,
        req: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let req = req.into_inner();
        let store = req
            .store
            .ok_or_else(|| Status::invalid_argument("bootstrap without a store"))?;
        let region = req
            .region
            .ok_or_else(|| Status::invalid_argument("bootstrap without a region"))?;
        self.inner
            .with(|s| s.bootstrap_cluster(req.cluster_id, store, region))
            .map_err(status)?;
        Ok(Response::new(BootstrapResponse {}))
    }

    async fn alloc_id(
        &self,
        _: Request<AllocIdRequest>,
    ) -> Result<Response<AllocIdResponse>, Status> {
        let id = self.inner.with(|s| s.alloc_id()).map_err(status)?;
        Ok(Response::new(AllocIdResponse { id }))
    }

    async fn put_store(
        &self,
        req: Request<PutStoreRequest>,
    ) -> Result<Response<PutStoreResponse>, Status> {
        let store = req
            .into_inner()
            .store
            .filter(|s| s.id != 0)
            .ok_or_else(|| Status::invalid_argument("PutStore without a store id"))?;
        self.inner
            .with(|s| s.put_store_checked(store))
            .map_err(status)?;
        Ok(Response::new(PutStoreResponse {}))
    }

    async fn get_store(
        &self,
        req: Request<GetStoreRequest>,
    ) -> Result<Response<GetStoreResponse>, Status> {
        let id = req.into_inner().store_id;
        let found = self
            .inner
            .with(|s| s.stores().into_iter().find(|(store, _)| store.id == id));
        let (store, stats) =
            found.ok_or_else(|| Status::not_found(format!("store {id} is not known")))?;
        Ok(Response::new(GetStoreResponse {
            store: Some(store),
            stats: Some(stats),
        }))
    }

    async fn get_all_stores(
        &self,
        _: Request<GetAllStoresRequest>,
    ) -> Result<Response<GetAllStoresResponse>, Status> {
        let stores = self
            .inner
            .with(|s| s.stores())
            .into_iter()
            .map(|(store, stats)| GetStoreResponse {
                store: Some(store),
                stats: Some(stats),
            })
            .collect();
        Ok(Response::new(GetAllStoresResponse { stores }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let stats = req
            .into_inner()
            .stats
            .ok_or_else(|| Status::invalid_argument("store heartbeat without stats"))?;
        self.inner.with(|s| s.store_heartbeat(stats));
        Ok(Response::new(StoreHeartbeatResponse {}))
    }

    type RegionHeartbeatStream = HeartbeatStream;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> Result<Response<HeartbeatStream>, Status> {
        let inner = self.inner.clone();
        let out = req.into_inner().map(move |hb| {
            let hb = hb?;
            crate::metrics::SCHEDULER_HEARTBEATS.inc();
            let region_id = hb.region.as_ref().map_or(0, |r| r.id);
            // A refused (stale) heartbeat still gets its answer: one per
            // request keeps the stream's pairing; it carries no operator.
            let resp = inner
                .with(|s| {
                    let r = s.region_heartbeat(hb);
                    crate::metrics::SCHEDULER_REGIONS.set(s.region_count() as i64);
                    crate::metrics::SCHEDULER_STORES.set(s.store_count() as i64);
                    r
                })
                .unwrap_or_else(|e| {
                    tracing::debug!(region_id, error = %e, "region heartbeat refused");
                    None
                });
            Ok(resp.unwrap_or(RegionHeartbeatResponse {
                region_id,
                ..Default::default()
            }))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_region(
        &self,
        req: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let key = req.into_inner().key;
        let info = self.inner.with(|s| s.get_region(&key));
        Ok(Response::new(region_response(info)))
    }

    async fn get_region_by_id(
        &self,
        req: Request<GetRegionByIdRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let id = req.into_inner().region_id;
        let info = self.inner.with(|s| s.get_region_by_id(id));
        Ok(Response::new(region_response(info)))
    }

    async fn scan_regions(
        &self,
        req: Request<ScanRegionsRequest>,
    ) -> Result<Response<ScanRegionsResponse>, Status> {
        let req = req.into_inner();
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let regions = self.inner.with(|s| s.regions());
        let regions = regions
            .into_iter()
            .filter(|i| {
                crate::region::ranges_overlap(
                    &i.region.start_key,
                    &i.region.end_key,
                    &req.start_key,
                    &req.end_key,
                )
            })
            .take(limit)
            .map(|i| region_response(Some(i)))
            .collect();
        Ok(Response::new(ScanRegionsResponse { regions }))
    }

    async fn ask_split(
        &self,
        req: Request<AskSplitRequest>,
    ) -> Result<Response<AskSplitResponse>, Status> {
        let region = req
            .into_inner()
            .region
            .ok_or_else(|| Status::invalid_argument("AskSplit without a region"))?;
        let ids = self.inner.with(|s| s.ask_split(&region)).map_err(status)?;
        Ok(Response::new(ids))
    }

    async fn report_split(
        &self,
        req: Request<ReportSplitRequest>,
    ) -> Result<Response<ReportSplitResponse>, Status> {
        let req = req.into_inner();
        let (Some(left), Some(right)) = (req.left, req.right) else {
            return Err(Status::invalid_argument("ReportSplit needs both halves"));
        };
        self.inner
            .with(|s| s.report_split(left, right))
            .map_err(status)?;
        Ok(Response::new(ReportSplitResponse {}))
    }

    async fn schedule_operator(
        &self,
        req: Request<ScheduleOperatorRequest>,
    ) -> Result<Response<ScheduleOperatorResponse>, Status> {
        let req = req.into_inner();
        let op = req
            .operator
            .ok_or_else(|| Status::invalid_argument("ScheduleOperator without an operator"))?;
        let known = self
            .inner
            .with(|s| s.get_region_by_id(req.region_id).is_some());
        if !known {
            return Err(Status::not_found(format!(
                "region {} is not known",
                req.region_id
            )));
        }
        self.inner.with(|s| s.add_operator(req.region_id, op));
        Ok(Response::new(ScheduleOperatorResponse {}))
    }

    async fn list_operators(
        &self,
        _req: Request<ListOperatorsRequest>,
    ) -> Result<Response<ListOperatorsResponse>, Status> {
        let operators = self
            .inner
            .with(|s| s.operators())
            .into_iter()
            .map(|(region_id, p)| PendingOperator {
                region_id,
                age_ms: p.since.elapsed().as_millis() as u64,
                timeout_ms: operator_timeout(p.op.kind()).as_millis() as u64,
                operator: Some(p.op),
            })
            .collect();
        Ok(Response::new(ListOperatorsResponse { operators }))
    }

    async fn cancel_operator(
        &self,
        req: Request<CancelOperatorRequest>,
    ) -> Result<Response<CancelOperatorResponse>, Status> {
        let region_id = req.into_inner().region_id;
        let cancelled = self.inner.with(|s| s.cancel_operator(region_id));
        Ok(Response::new(CancelOperatorResponse { cancelled }))
    }
}
