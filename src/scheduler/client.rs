//! `SchedulerClient`: how a store talks to the scheduler. Calls return
//! futures so a networked client fits the same trait; `LocalSchedulerClient`
//! serves them from an in-process [`Scheduler`].

use std::sync::Arc;

use futures::future::{self, BoxFuture};
use parking_lot::Mutex;

use super::Scheduler;
use crate::error::{Error, Result};
use crate::proto::metapb::{Region, Store};
use crate::proto::schedulerpb::{
    AskSplitResponse, RegionHeartbeatRequest, RegionHeartbeatResponse, StoreStats,
};
use crate::RegionId;

/// What a store asks of the scheduler. Every call returns a boxed future,
/// so an in-process scheduler and one across the network fit the same
/// trait.
pub trait SchedulerClient: Send + Sync + 'static {
    /// Resolves to a new cluster-wide unique id, for a store, region or
    /// peer.
    fn alloc_id(&self) -> BoxFuture<'static, Result<u64>>;
    /// Registers a store (its id and address) with the scheduler, replacing
    /// what it knew of that store. The networked scheduler refuses an
    /// address still held by another store that has replicas.
    fn put_store(&self, store: Store) -> BoxFuture<'static, Result<()>>;
    /// Reports a store's periodic statistics: its region and leader counts
    /// and bytes used on disk.
    fn store_heartbeat(&self, stats: StoreStats) -> BoxFuture<'static, Result<()>>;
    /// Reports a leader's region; the answer carries an operator to carry out.
    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'static, Result<Option<RegionHeartbeatResponse>>>;
    /// Resolves to the ids a split of `region` needs: one new region id and
    /// one new peer id for each of the region's peers.
    fn ask_split(&self, region: Region) -> BoxFuture<'static, Result<AskSplitResponse>>;
    /// Reports both halves of a split applied by the old region's leader.
    fn report_split(&self, left: Region, right: Region) -> BoxFuture<'static, Result<()>>;
    /// Resolves to the region `region_id` as the scheduler last heard of
    /// it, or None if it knows no such region.
    fn get_region_by_id(&self, region_id: RegionId) -> BoxFuture<'static, Result<Option<Region>>>;
}

/// A scheduler living in this process (test kit, playground).
#[derive(Clone, Default)]
pub struct LocalSchedulerClient {
    inner: Arc<Mutex<Scheduler>>,
}

impl LocalSchedulerClient {
    /// Wraps `scheduler` for in-process use; clones share it.
    pub fn new(scheduler: Scheduler) -> LocalSchedulerClient {
        LocalSchedulerClient {
            inner: Arc::new(Mutex::new(scheduler)),
        }
    }

    /// Direct access to the scheduler's state (tests, the playground shell).
    pub fn with<R>(&self, f: impl FnOnce(&mut Scheduler) -> R) -> R {
        f(&mut self.inner.lock())
    }
}

impl SchedulerClient for LocalSchedulerClient {
    fn alloc_id(&self) -> BoxFuture<'static, Result<u64>> {
        let res = self.inner.lock().alloc_id().map_err(Error::from);
        Box::pin(future::ready(res))
    }

    fn put_store(&self, store: Store) -> BoxFuture<'static, Result<()>> {
        self.inner.lock().put_store(store);
        Box::pin(future::ready(Ok(())))
    }

    fn store_heartbeat(&self, stats: StoreStats) -> BoxFuture<'static, Result<()>> {
        self.inner.lock().store_heartbeat(stats);
        Box::pin(future::ready(Ok(())))
    }

    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'static, Result<Option<RegionHeartbeatResponse>>> {
        let res = self.inner.lock().region_heartbeat(req).map_err(Error::from);
        Box::pin(future::ready(res))
    }

    fn ask_split(&self, region: Region) -> BoxFuture<'static, Result<AskSplitResponse>> {
        let res = self.inner.lock().ask_split(&region).map_err(Error::from);
        Box::pin(future::ready(res))
    }

    fn report_split(&self, left: Region, right: Region) -> BoxFuture<'static, Result<()>> {
        let res = self
            .inner
            .lock()
            .report_split(left, right)
            .map_err(Error::from);
        Box::pin(future::ready(res))
    }

    fn get_region_by_id(&self, region_id: RegionId) -> BoxFuture<'static, Result<Option<Region>>> {
        let region = self
            .inner
            .lock()
            .get_region_by_id(region_id)
            .map(|i| i.region);
        Box::pin(future::ready(Ok(region)))
    }
}
