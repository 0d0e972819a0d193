//! The store's background threads (kept out of the simulated core, which only
//! calls [`Background::check`]): snapshot generation, snapshot ingest and
//! log deletion (`storage/tasks.rs`). They run beside the actors, so stopping the
//! actors does not stop them; a store that stops (cleanly, or crashed in the
//! test kit) first stops these with [`Background::stop`].
//!
//! Why it matters: a thread that outlives its store keeps writing. In one
//! process that reopens the store, it held sled's lock; in the test kit's
//! crash, an ingest finishing after the store's files were frozen removed
//! the snapshot file from the frozen copy, leaving a region Applying a file
//! that was gone (found by `conf_change_recover_many_clients`). A process
//! killed by the kernel has no such threads, so stopping them at one of
//! their checkpoints is a crash at one of the moments a real one may hit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Clone, Default)]
/// A handle to the store's background threads; every clone shares them.
pub struct Background {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopping: AtomicBool,
    running: Mutex<usize>,
    idle: Condvar,
}

/// Counts one running thread until dropped (also when its task panics).
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl Background {
    /// Runs `f` on a thread of its own named `name`. Refused once the store
    /// is stopping: the task's work is redone at the next start (an ingest
    /// resumes from the Applying state, a deletion from the first index, a
    /// generation when raft asks again).
    pub fn spawn(&self, name: String, f: impl FnOnce() + Send + 'static) -> Result<()> {
        {
            let mut n = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
            if self.inner.stopping.load(Ordering::Acquire) {
                return Err(stopping());
            }
            *n += 1;
        }
        let running = Running(self.inner.clone());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _running = running;
                f();
            })
            .map(|_| ())
            .map_err(|e| Error::Internal(format!("cannot start a background thread: {e}")))
    }

    /// A checkpoint of a long task: an error once the store is stopping,
    /// so the task gives up before its next write.
    pub fn check(&self) -> Result<()> {
        if self.inner.stopping.load(Ordering::Acquire) {
            Err(stopping())
        } else {
            Ok(())
        }
    }

    /// Starts no new task, asks the running ones to give up at their next
    /// checkpoint, and waits up to `timeout` for them to end. Returns
    /// whether they all did.
    pub fn stop(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.stopping.store(true, Ordering::Release);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    running = *n,
                    "background tasks still running at the store's stop"
                );
                return false;
            }
            n = self
                .inner
                .idle
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn stopping() -> Error {
    Error::Unavailable("the store is stopping".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn stop_waits_for_a_task_at_its_checkpoint_and_refuses_new_ones() {
        let bg = Background::default();
        let (started_tx, started_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let task = bg.clone();
        bg.spawn("test-bg".into(), move || {
            started_tx.send(()).unwrap();
            // A long task: loops until its checkpoint says stop (bounded).
            for _ in 0..10_000 {
                if task.check().is_err() {
                    done_tx.send(true).unwrap();
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            done_tx.send(false).unwrap();
        })
        .unwrap();
        started_rx.recv().unwrap();
        assert!(bg.stop(Duration::from_secs(10)));
        // The task ended (the count reached 0) because its checkpoint failed.
        assert!(done_rx.try_recv().unwrap());
        assert!(bg.spawn("late".into(), || {}).is_err());
    }

    #[test]
    fn stop_gives_up_after_its_timeout() {
        let bg = Background::default();
        let (tx, rx) = mpsc::channel::<()>();
        bg.spawn("test-stuck".into(), move || {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        })
        .unwrap();
        assert!(!bg.stop(Duration::from_millis(50)));
        drop(tx);
        assert!(bg.stop(Duration::from_secs(10)));
    }
}
