//! `WriterActor`: the store-wide group commit. Peers write their Readies into
//! sled themselves (so raft can read them back at once) and ask this actor to
//! make them durable. One sled flush covers every request that arrived before
//! it started; requests arriving during a flush wait for the next one, so
//! under load one fsync serves many peers and many Readies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use super::msg::{PersistReady, Persisted};
use crate::storage::Engines;

/// Counters a benchmark or status page reads.
#[derive(Default, Debug)]
pub struct WriterStats {
    pub flushes: AtomicU64,
    pub requests: AtomicU64,
}

pub struct WriterActor {
    engines: Engines,
    pending: Vec<PersistReady>,
    flushing: bool,
    stats: Arc<WriterStats>,
}

impl WriterActor {
    pub fn new(engines: Engines, stats: Arc<WriterStats>) -> WriterActor {
        WriterActor {
            engines,
            pending: Vec::new(),
            flushing: false,
            stats,
        }
    }

    fn maybe_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.pending.is_empty() {
            return;
        }
        self.flushing = true;
        let batch = std::mem::take(&mut self.pending);
        let engines = self.engines.clone();
        // A blocking flush on a thread of tokio's blocking pool, not sled's
        // `flush_async`: sled's small IO pool can fill up with flushes that
        // wait on its process-wide batch lock while the log write they need
        // is queued behind them, which deadlocks the whole process.
        let fut = actix_rt::task::spawn_blocking(move || {
            let _timer = crate::metrics::FSYNC_DURATION.start_timer();
            engines.flush()
        });
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let res = res
                .unwrap_or_else(|e| Err(crate::Error::Internal(format!("flush task failed: {e}"))));
            if let Err(e) = res {
                crate::storage::durable::flush_failed(&e);
            }
            act.stats.flushes.fetch_add(1, Ordering::Relaxed);
            for r in batch {
                r.peer.do_send(Persisted { number: r.number });
            }
            act.flushing = false;
            act.maybe_flush(ctx);
        }));
    }
}

impl Actor for WriterActor {
    type Context = Context<Self>;
}

impl Handler<PersistReady> for WriterActor {
    type Result = ();

    fn handle(&mut self, msg: PersistReady, ctx: &mut Context<Self>) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.pending.push(msg);
        self.maybe_flush(ctx);
    }
}
