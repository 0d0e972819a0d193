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

pub trait SchedulerClient: Send + Sync + 'static {
    fn alloc_id(&self) -> BoxFuture<'static, Result<u64>>;
    fn put_store(&self, store: Store) -> BoxFuture<'static, Result<()>>;
    fn store_heartbeat(&self, stats: StoreStats) -> BoxFuture<'static, Result<()>>;
    /// Reports a leader's region; the answer carries an operator to carry out.
    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'static, Result<Option<RegionHeartbeatResponse>>>;
    fn ask_split(&self, region: Region) -> BoxFuture<'static, Result<AskSplitResponse>>;
    /// Reports both halves of a split applied by the old region's leader.
    fn report_split(&self, left: Region, right: Region) -> BoxFuture<'static, Result<()>>;
}

/// A scheduler living in this process (test kit, playground).
#[derive(Clone, Default)]
pub struct LocalSchedulerClient {
    inner: Arc<Mutex<Scheduler>>,
}

impl LocalSchedulerClient {
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
}
