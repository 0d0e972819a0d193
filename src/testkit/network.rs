//! The test kit's in-process network: every store of a `Cluster`
//! registers its router here, and raft messages pass the installed
//! filters (partitions, random drops, isolation, by message type) before
//! delivery. Messages between one pair of stores stay in order, except
//! snapshots, which are delivered after their file has been copied.
//!
//! Random drops draw from one generator seeded with the cluster's seed, so a
//! run's drop decisions follow from its seed (the actors' timing does not:
//! replaying by seed is the simulator's job, `tests/sim`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::MessageType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, warn};

use crate::actors::router::Router;
use crate::actors::transport::Transport;
use crate::peer::message::{self, Inbound};
use crate::proto::raft_serverpb::RaftMessage;
use crate::storage::snapshot::copy_in_chunks;
use crate::storage::SnapManager;
use crate::StoreId;

/// A fault on store-to-store traffic. A message is delivered only if every
/// installed filter lets it pass.
#[derive(Clone)]
pub enum Filter {
    /// Drops every message crossing between the two groups of stores.
    Partition(Vec<StoreId>, Vec<StoreId>),
    /// Drops each message with this probability (0.0 to 1.0).
    Drop(f64),
    /// Drops every message to or from this store.
    Isolate(StoreId),
    /// Drops every message of this raft type.
    DropType(MessageType),
    /// Drops the messages for which the function returns false.
    Custom(Arc<dyn Fn(&RaftMessage) -> bool + Send + Sync>),
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::Partition(a, b) => write!(f, "Partition({a:?}, {b:?})"),
            Filter::Drop(p) => write!(f, "Drop({p})"),
            Filter::Isolate(s) => write!(f, "Isolate({s})"),
            Filter::DropType(t) => write!(f, "DropType({t:?})"),
            Filter::Custom(_) => write!(f, "Custom"),
        }
    }
}

fn store_of(p: &Option<crate::proto::metapb::Peer>) -> StoreId {
    p.as_ref().map_or(0, |p| p.store_id)
}

impl Filter {
    /// Whether the message passes; a random drop draws from `rng`.
    fn allows(&self, msg: &RaftMessage, rng: &mut StdRng) -> bool {
        let (from, to) = (store_of(&msg.from_peer), store_of(&msg.to_peer));
        match self {
            Filter::Partition(a, b) => {
                let cross = (a.contains(&from) && b.contains(&to))
                    || (b.contains(&from) && a.contains(&to));
                !cross
            }
            Filter::Drop(p) => rng.gen::<f64>() >= *p,
            Filter::Isolate(s) => from != *s && to != *s,
            Filter::DropType(t) => msg.msg_type != *t as i32,
            Filter::Custom(f) => f(msg),
        }
    }
}

/// One store's endpoint on the simulated network.
#[derive(Clone)]
struct Endpoint {
    router: Router,
    snap_mgr: SnapManager,
}

/// The in-process network: every store registers its router here.
pub(crate) struct SimNetwork {
    endpoints: RwLock<HashMap<StoreId, Endpoint>>,
    filters: RwLock<Vec<Filter>>,
    snapshot_chunk_size: usize,
    /// Random drops draw from this, seeded with the cluster's seed.
    rng: Mutex<StdRng>,
}

impl SimNetwork {
    pub fn new(snapshot_chunk_size: usize, seed: u64) -> Arc<SimNetwork> {
        Arc::new(SimNetwork {
            endpoints: RwLock::default(),
            filters: RwLock::default(),
            snapshot_chunk_size,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        })
    }

    pub fn register(&self, router: Router, snap_mgr: SnapManager) {
        self.endpoints
            .write()
            .insert(router.store_id(), Endpoint { router, snap_mgr });
    }

    pub fn unregister(&self, store_id: StoreId) {
        self.endpoints.write().remove(&store_id);
    }

    pub fn add_filter(&self, f: Filter) {
        self.filters.write().push(f);
    }

    pub fn clear_filters(&self) {
        self.filters.write().clear();
    }

    /// A transport sending from `store_id` over this network.
    pub fn transport(self: &Arc<Self>, store_id: StoreId) -> Arc<dyn Transport> {
        Arc::new(SimTransport {
            net: self.clone(),
            store_id,
        })
    }

    fn deliver(&self, from_store: StoreId, msg: RaftMessage) {
        let is_snapshot = msg.msg_type == MessageType::MsgSnapshot as i32;
        let to_store = store_of(&msg.to_peer);
        let (src, dst) = {
            let eps = self.endpoints.read();
            (eps.get(&from_store).cloned(), eps.get(&to_store).cloned())
        };
        let Some(src) = src else { return };
        let allowed = {
            let filters = self.filters.read();
            let mut rng = self.rng.lock();
            filters.iter().all(|f| f.allows(&msg, &mut rng))
        };
        tracing::trace!(
            from = from_store,
            to = store_of(&msg.to_peer),
            region_id = msg.region_id,
            msg_type = msg.msg_type,
            allowed,
            "network"
        );
        let dst = match dst {
            Some(dst) if allowed => dst,
            _ => {
                if is_snapshot {
                    src.router.report_snapshot(&msg, false);
                }
                return;
            }
        };
        if !is_snapshot {
            deliver_to(&dst.router, msg);
            return;
        }
        // The snapshot file goes first, in chunks, off every actor's thread;
        // the message follows once the file is complete at the receiver.
        let chunk = self.snapshot_chunk_size;
        std::thread::spawn(move || match snapshot_file(&msg) {
            Some(name) => {
                let copied = src
                    .snap_mgr
                    .path(&name)
                    .and_then(|s| Ok((s, dst.snap_mgr.path(&name)?)))
                    .and_then(|(s, d)| copy_in_chunks(&s, &d, chunk));
                match copied {
                    Ok(bytes) => {
                        debug!(file = %name, bytes, "snapshot file sent");
                        src.router.report_snapshot(&msg, true);
                        deliver_to(&dst.router, msg);
                    }
                    Err(e) => {
                        warn!(file = %name, error = %e, "snapshot file not sent");
                        src.router.report_snapshot(&msg, false);
                    }
                }
            }
            None => {
                warn!("snapshot message without a snapshot file");
                src.router.report_snapshot(&msg, false);
            }
        });
    }
}

/// The file name inside a MsgSnapshot.
fn snapshot_file(msg: &RaftMessage) -> Option<String> {
    message::snapshot_data(msg).ok().map(|d| d.file_name)
}

/// Opens the envelope (once, as a node's Raft service does) and hands it
/// to the receiving store.
fn deliver_to(router: &Router, msg: RaftMessage) {
    match Inbound::open(msg) {
        Ok(inbound) => router.send_raft_message(inbound),
        Err(e) => warn!(error = %e, "undecodable raft message dropped"),
    }
}

struct SimTransport {
    net: Arc<SimNetwork>,
    store_id: StoreId,
}

impl Transport for SimTransport {
    fn send(&self, msg: RaftMessage) {
        self.net.deliver(self.store_id, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions(seed: u64) -> Vec<bool> {
        let mut rng = StdRng::seed_from_u64(seed);
        let drop = Filter::Drop(0.5);
        let msg = RaftMessage::default();
        (0..64).map(|_| drop.allows(&msg, &mut rng)).collect()
    }

    /// The drop filter's decisions follow from the seed alone.
    #[test]
    fn random_drops_follow_the_seed() {
        assert_eq!(decisions(7), decisions(7));
        assert_ne!(decisions(7), decisions(8));
        let passed = decisions(7).iter().filter(|&&ok| ok).count();
        assert!(
            (16..=48).contains(&passed),
            "{passed} of 64 passed a 50% drop"
        );
    }
}
