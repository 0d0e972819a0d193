//! The scheduler's logic, pure and synchronous: id allocation, the store
//! table, the latest region per range (by epoch) learned from heartbeats, and
//! operators re-sent with every heartbeat until the region shows them done,
//! or dropped when they time out or are cancelled.
//! The in-process client and the networked service both wrap this; with a
//! [`MetaStore`] it keeps its metadata durable across restarts.

mod client;
mod grpc_client;
mod meta_store;
mod operator;

use std::collections::{BTreeMap, HashMap};

use tracing::{debug, info, warn};

use crate::proto::metapb::{Peer, Region, Store};
use crate::proto::schedulerpb::{
    AskSplitResponse, Operator, OperatorKind, RegionHeartbeatRequest, RegionHeartbeatResponse,
    StoreStats,
};
use crate::region::{epoch, is_epoch_stale, roles, RegionMap, Regional};
use crate::{RegionId, StoreId};

pub use client::{LocalSchedulerClient, SchedulerClient};
pub use grpc_client::GrpcSchedulerClient;
pub use meta_store::MetaStore;
pub use operator::{operator_timeout, PendingOperator};

/// Ids reserved per durable write of the id high-water mark.
const ID_BATCH: u64 = 1000;

/// What the scheduler knows of one region.
#[derive(Clone, Debug, Default)]
pub struct RegionInfo {
    /// The region as its leader last reported it.
    pub region: Region,
    /// Its leader, as last reported (kept across a report without one).
    pub leader: Option<Peer>,
    /// Peers the leader reports as not yet caught up (a new peer waiting
    /// for its snapshot); no replica is added while there are any.
    pub pending_peers: Vec<Peer>,
    /// The leader's estimate of the region's data, in bytes.
    pub approximate_size: u64,
}

impl Regional for RegionInfo {
    fn region(&self) -> &Region {
        &self.region
    }
}

#[derive(Debug, thiserror::Error)]
/// Why the scheduler refused a request.
pub enum SchedulerError {
    #[error("region {region_id} heartbeat carries a stale epoch")]
    /// A heartbeat or split report older than what is known for the
    /// region or for a region overlapping it; the reporter is behind.
    StaleRegion {
        /// The region reported.
        region_id: RegionId,
    },
    #[error("{0}")]
    /// The request contradicts what the scheduler holds (a store taking the
    /// address of another that still has replicas, a bootstrap of a
    /// bootstrapped cluster).
    Invalid(String),
    #[error("scheduler metadata cannot be written: {0}")]
    /// The scheduler's own metadata could not be written: nothing changed.
    Storage(String),
}

impl From<crate::Error> for SchedulerError {
    fn from(e: crate::Error) -> Self {
        SchedulerError::Storage(e.to_string())
    }
}

#[derive(Debug, Default)]
/// The scheduler's state: ids, stores, regions, operators. The gRPC
/// service and the test kit drive it; with a `MetaStore` it survives
/// restarts.
pub struct Scheduler {
    next_id: u64,
    stores: BTreeMap<StoreId, (Store, StoreStats)>,
    /// The latest view of every region; a newer view of a range evicts the
    /// regions it overlaps, so ranges never overlap here.
    regions: RegionMap<RegionInfo>,
    operators: HashMap<RegionId, PendingOperator>,
    /// Heartbeats where conf_ver jumped by more than one change.
    conf_ver_violations: u64,
    cluster_id: u64,
    /// When set, a region with fewer peers gets one added on a store that
    /// has none of it (the networked cluster; the test kit places replicas
    /// itself and keeps this off).
    max_replicas: Option<usize>,
    /// Ids below this are reserved durably (with a `MetaStore`).
    id_limit: u64,
    meta: Option<MetaStore>,
}

impl Scheduler {
    /// A scheduler whose first allocated id is `first_id`.
    pub fn new(first_id: u64) -> Scheduler {
        Scheduler {
            next_id: first_id,
            ..Default::default()
        }
    }

    /// A scheduler keeping its metadata in `meta`, resuming from what it
    /// holds. Ids start at `first_id` at the earliest.
    pub fn open(meta: MetaStore, first_id: u64) -> crate::Result<Scheduler> {
        let loaded = meta.load()?;
        let mut s = Scheduler::new(first_id.max(loaded.id_limit));
        s.cluster_id = loaded.cluster_id.unwrap_or(0);
        s.id_limit = loaded.id_limit;
        for store in loaded.stores {
            let stats = StoreStats {
                store_id: store.id,
                ..Default::default()
            };
            s.stores.insert(store.id, (store, stats));
        }
        for region in loaded.regions {
            s.insert_region(RegionInfo {
                region,
                ..Default::default()
            });
        }
        s.meta = Some(meta);
        Ok(s)
    }

    /// Hands out a cluster-wide unique id (store, region or peer).
    pub fn alloc_id(&mut self) -> Result<u64, SchedulerError> {
        if let Some(meta) = &self.meta {
            if self.next_id >= self.id_limit {
                let limit = self.next_id + ID_BATCH;
                meta.save_id_limit(limit)?;
                self.id_limit = limit;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        Ok(id)
    }

    /// Keeps every region at `n` replicas by adding peers (never removing).
    pub fn set_max_replicas(&mut self, n: usize) {
        self.max_replicas = Some(n.max(1));
    }

    /// An AddPeer operator for a region short of replicas: a new peer on the
    /// store holding the fewest regions among those without one of it.
    fn check_replicas(&mut self, region_id: RegionId) {
        let Some(max) = self.max_replicas else { return };
        if self.operators.contains_key(&region_id) {
            return;
        }
        let Some(info) = self.regions.get(region_id) else {
            return;
        };
        if info.region.peers.len() >= max || !info.pending_peers.is_empty() {
            return;
        }
        let target = self
            .stores
            .values()
            .filter(|(s, _)| !s.address.is_empty())
            .filter(|(s, _)| !info.region.peers.iter().any(|p| p.store_id == s.id))
            .min_by_key(|(s, stats)| (stats.region_count, s.id))
            .map(|(s, _)| s.id);
        let Some(store_id) = target else { return };
        let Ok(id) = self.alloc_id() else { return };
        debug!(region_id, store_id, peer_id = id, "adding a replica");
        self.add_operator(
            region_id,
            Operator {
                kind: OperatorKind::AddPeer as i32,
                peer: Some(Peer { id, store_id }),
                split_key: vec![],
                replaced: None,
            },
        );
    }

    /// The cluster id, 0 until the cluster is bootstrapped.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Whether the cluster has its first region.
    pub fn is_bootstrapped(&self) -> bool {
        !self.regions.is_empty()
    }

    /// Bootstraps a cluster: its first store and first region. Refused if
    /// the cluster already is bootstrapped.
    pub fn bootstrap_cluster(
        &mut self,
        cluster_id: u64,
        store: Store,
        region: Region,
    ) -> Result<(), SchedulerError> {
        if self.is_bootstrapped() {
            return Err(SchedulerError::Invalid(
                "cluster is already bootstrapped".into(),
            ));
        }
        if let Some(meta) = &self.meta {
            meta.save_cluster_id(cluster_id)?;
        }
        self.cluster_id = cluster_id;
        self.put_store_checked(store)?;
        self.bootstrap(region);
        if let Some(meta) = &self.meta {
            meta.flush()?;
        }
        Ok(())
    }

    /// Records a store durably (a store id must never be forgotten).
    /// Refuses a store at the address of another registered store that still
    /// holds replicas: that is a node whose data was lost coming back as a
    /// stranger, and routing the old store's peers to it would be wrong.
    pub fn put_store_checked(&mut self, store: Store) -> Result<(), SchedulerError> {
        if !store.address.is_empty() {
            let holder = self
                .stores
                .values()
                .map(|(s, _)| s)
                .find(|s| s.id != store.id && s.address == store.address)
                .filter(|old| {
                    self.regions
                        .iter()
                        .any(|r| r.region.peers.iter().any(|p| p.store_id == old.id))
                });
            if let Some(old) = holder {
                return Err(SchedulerError::Invalid(format!(
                    "address {} belongs to store {}, which still holds replicas; store {} \
                     cannot register there until they are removed",
                    store.address, old.id, store.id
                )));
            }
        }
        if let Some(meta) = &self.meta {
            meta.save_store(&store)?;
        }
        self.put_store(store);
        Ok(())
    }

    /// Store `store_id` as registered (its address), if known.
    pub fn store(&self, store_id: StoreId) -> Option<Store> {
        self.stores.get(&store_id).map(|(s, _)| s.clone())
    }

    /// Registers or updates a store without checks or persistence (the test
    /// kit); `put_store_checked` is the service's way.
    pub fn put_store(&mut self, store: Store) {
        let id = store.id;
        let stats = StoreStats {
            store_id: id,
            ..Default::default()
        };
        self.stores.insert(id, (store, stats));
    }

    /// How many regions are known.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// How many stores are registered.
    pub fn store_count(&self) -> usize {
        self.stores.len()
    }

    /// Every store with its last heartbeat's figures.
    pub fn stores(&self) -> Vec<(Store, StoreStats)> {
        self.stores.values().cloned().collect()
    }

    /// Records a store's heartbeat (region count, sizes), registering the
    /// store if it was unknown.
    pub fn store_heartbeat(&mut self, stats: StoreStats) {
        let entry = self.stores.entry(stats.store_id).or_insert_with(|| {
            (
                Store {
                    id: stats.store_id,
                    address: String::new(),
                },
                StoreStats::default(),
            )
        });
        entry.1 = stats;
    }

    /// Records the first region of a new cluster.
    pub fn bootstrap(&mut self, region: Region) {
        self.insert_region(RegionInfo {
            region,
            ..Default::default()
        });
    }

    /// How many heartbeats showed conf_ver move by more than one change at
    /// once: each is a broken one-change-at-a-time rule (tests expect 0).
    pub fn conf_ver_violations(&self) -> u64 {
        self.conf_ver_violations
    }

    fn insert_region(&mut self, info: RegionInfo) {
        // Regions whose range the new one covers are older: they go from
        // the metadata before the new one is saved, so a crash in between
        // loses a region a heartbeat re-teaches, never keeps two views of
        // one range.
        let overlapped: Vec<RegionId> = self
            .regions
            .overlapping(&info.region.start_key, &info.region.end_key)
            .map(|r| r.region.id)
            .filter(|id| *id != info.region.id)
            .collect();
        if let Some(meta) = &self.meta {
            for id in overlapped {
                if let Err(e) = meta.delete_region(id) {
                    warn!(region_id = id, error = %e, "cannot delete region metadata");
                }
            }
            let changed = self
                .regions
                .get(info.region.id)
                .is_none_or(|old| old.region != info.region);
            if changed {
                // Heartbeats re-teach a lost region change; see MetaStore.
                if let Err(e) = meta.save_region(&info.region) {
                    warn!(region_id = info.region.id, error = %e, "cannot save region metadata");
                }
            }
        }
        self.regions.insert(info);
    }

    /// Learns a leader's view of its region. Stale views (older epoch than
    /// what is known for the region or for any region overlapping it) are
    /// refused. Returns the operator pending for the region, if any.
    pub fn region_heartbeat(
        &mut self,
        req: RegionHeartbeatRequest,
    ) -> Result<Option<RegionHeartbeatResponse>, SchedulerError> {
        let region = req
            .region
            .ok_or_else(|| SchedulerError::Invalid("heartbeat without region".into()))?;
        let region_id = region.id;
        self.observe_region(RegionInfo {
            region,
            leader: req.leader,
            pending_peers: req.pending_peers,
            approximate_size: req.approximate_size,
        })?;
        let pending = self.pending_operator(region_id);
        if pending.is_some() {
            return Ok(pending);
        }
        self.check_learners(region_id);
        self.check_replicas(region_id);
        Ok(self.pending_operator(region_id))
    }

    /// A RemovePeer for a learner no operator is about: one left by an
    /// add that was cancelled or timed out before its promotion, or one a
    /// split copied into the new half. It is taken out, as PD removes
    /// orphan peers: a cancelled change is undone rather than finished
    /// minutes later, and a learner that never votes only costs.
    fn check_learners(&mut self, region_id: RegionId) {
        if self.operators.contains_key(&region_id) {
            return;
        }
        let Some(info) = self.regions.get(region_id) else {
            return;
        };
        let region = &info.region;
        let Some(orphan) = region
            .peers
            .iter()
            .find(|p| roles::is_learner(region, p.id))
        else {
            return;
        };
        info!(region_id, peer = ?orphan, "removing a learner no operator is about");
        let op = Operator {
            kind: OperatorKind::RemovePeer as i32,
            peer: Some(*orphan),
            split_key: vec![],
            replaced: None,
        };
        self.add_operator(region_id, op);
    }

    /// Learns both halves of a split from the old region's leader at once,
    /// so no key is without a region in between. The new region's leader is
    /// not known yet: the peer on the reporting leader's store campaigns.
    pub fn report_split(&mut self, left: Region, right: Region) -> Result<(), SchedulerError> {
        if left.end_key != right.start_key || left.end_key.is_empty() {
            return Err(SchedulerError::Invalid(format!(
                "split report of regions {} and {} is not contiguous",
                left.id, right.id
            )));
        }
        let old = self.regions.get(left.id);
        let size = old.map_or(0, |r| r.approximate_size / 2);
        let leader = old.and_then(|r| r.leader);
        let right_leader =
            leader.and_then(|l| crate::region::find_peer(&right, l.store_id).copied());
        self.observe_region(RegionInfo {
            region: left,
            leader,
            approximate_size: size,
            ..Default::default()
        })?;
        self.observe_region(RegionInfo {
            region: right,
            leader: right_leader,
            approximate_size: size,
            ..Default::default()
        })
    }

    /// Records a region's latest view unless it is stale: older than what is
    /// known for the region, or than any region overlapping it. A view
    /// without a leader keeps the known leader if it is still a member.
    fn observe_region(&mut self, mut info: RegionInfo) -> Result<(), SchedulerError> {
        let region = &info.region;
        let new_epoch = epoch(region);
        if let Some(old) = self.regions.get(region.id) {
            let old_epoch = epoch(&old.region);
            if is_epoch_stale(&new_epoch, &old_epoch) {
                return Err(SchedulerError::StaleRegion {
                    region_id: region.id,
                });
            }
            if new_epoch.version == old_epoch.version && new_epoch.conf_ver > old_epoch.conf_ver + 1
            {
                self.conf_ver_violations += 1;
                warn!(
                    region_id = region.id,
                    from = old_epoch.conf_ver,
                    to = new_epoch.conf_ver,
                    "conf_ver moved by more than one change between heartbeats"
                );
            }
        }
        for other in self.regions.overlapping(&region.start_key, &region.end_key) {
            if other.region.id != region.id && epoch(&other.region).version > new_epoch.version {
                return Err(SchedulerError::StaleRegion {
                    region_id: region.id,
                });
            }
        }
        if info.leader.is_none() {
            let known = self.regions.get(region.id).and_then(|r| r.leader);
            info.leader = known.filter(|l| region.peers.contains(l));
        }
        self.insert_region(info);
        Ok(())
    }

    /// The region holding `key`, as last reported.
    pub fn get_region(&self, key: &[u8]) -> Option<RegionInfo> {
        self.regions.locate(key).cloned()
    }

    /// What is known of region `region_id`.
    pub fn get_region_by_id(&self, region_id: RegionId) -> Option<RegionInfo> {
        self.regions.get(region_id).cloned()
    }

    /// Every known region in key order.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.regions.in_key_order().cloned().collect()
    }

    /// Ids for splitting `region`: a new region id and one peer id per peer.
    pub fn ask_split(&mut self, region: &Region) -> Result<AskSplitResponse, SchedulerError> {
        let new_region_id = self.alloc_id()?;
        let new_peer_ids = region
            .peers
            .iter()
            .map(|_| self.alloc_id())
            .collect::<Result<_, _>>()?;
        Ok(AskSplitResponse {
            new_region_id,
            new_peer_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metapb::RegionEpoch;
    use std::time::Duration;

    fn region(id: u64, start: &[u8], end: &[u8], conf_ver: u64, version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch { conf_ver, version }),
            peers: vec![Peer { id: 1, store_id: 1 }],
            roles: vec![],
        }
    }

    fn hb(r: Region) -> RegionHeartbeatRequest {
        RegionHeartbeatRequest {
            region: Some(r),
            leader: Some(Peer { id: 1, store_id: 1 }),
            ..Default::default()
        }
    }

    #[test]
    fn a_stranger_cannot_take_the_address_of_a_store_with_replicas() {
        let mut s = Scheduler::new(10);
        let at = |id: u64| Store {
            id,
            address: "127.0.0.1:20160".into(),
        };
        s.put_store_checked(at(1)).unwrap();
        s.bootstrap(region(1, b"", b"", 1, 1));
        // Store 1 re-registering is fine; store 5 at its address is not.
        s.put_store_checked(at(1)).unwrap();
        let err = s.put_store_checked(at(5)).unwrap_err().to_string();
        assert!(err.contains("belongs to store 1"), "{err}");
        // Once store 1 holds no replica, the address is free.
        let mut r = region(1, b"", b"", 2, 1);
        r.peers = vec![Peer { id: 2, store_id: 2 }];
        s.region_heartbeat(hb(r)).unwrap();
        s.put_store_checked(at(5)).unwrap();
    }

    #[test]
    fn keeps_latest_region_per_range() {
        let mut s = Scheduler::new(10);
        s.bootstrap(region(1, b"", b"", 1, 1));
        assert_eq!(s.get_region(b"k").unwrap().region.id, 1);
        s.region_heartbeat(hb(region(1, b"", b"m", 1, 2))).unwrap();
        s.region_heartbeat(hb(region(2, b"m", b"", 1, 2))).unwrap();
        assert_eq!(s.get_region(b"a").unwrap().region.id, 1);
        assert_eq!(s.get_region(b"m").unwrap().region.id, 2);
        assert_eq!(s.get_region(b"zzz").unwrap().region.id, 2);
        // A stale view of region 1 covering everything is refused.
        assert!(s.region_heartbeat(hb(region(1, b"", b"", 1, 1))).is_err());
        assert_eq!(s.regions().len(), 2);
    }

    #[test]
    fn operators_are_resent_until_done() {
        let mut s = Scheduler::new(10);
        s.bootstrap(region(1, b"", b"", 1, 1));
        let target = Peer { id: 1, store_id: 1 };
        s.add_operator(
            1,
            Operator {
                kind: OperatorKind::RemovePeer as i32,
                peer: Some(target),
                split_key: vec![],
                replaced: None,
            },
        );
        assert!(s
            .region_heartbeat(hb(region(1, b"", b"", 1, 1)))
            .unwrap()
            .is_some());
        assert!(s
            .region_heartbeat(hb(region(1, b"", b"", 1, 1)))
            .unwrap()
            .is_some());
        let mut gone = region(1, b"", b"", 2, 1);
        gone.peers.clear();
        assert!(s.region_heartbeat(hb(gone)).unwrap().is_none());
        assert!(s.operator(1).is_none());
    }

    #[test]
    fn a_learner_no_operator_is_about_is_removed() {
        use crate::proto::metapb::{PeerRole, PeerRoleEntry};
        let mut s = Scheduler::new(10);
        s.bootstrap(region(1, b"", b"", 1, 1));
        let mut r = region(1, b"", b"", 2, 1);
        r.peers.push(Peer { id: 2, store_id: 2 });
        r.roles.push(PeerRoleEntry {
            peer_id: 2,
            role: PeerRole::Learner as i32,
        });
        // While an AddPeer is about it, it is left to be promoted.
        let add = Operator {
            kind: OperatorKind::AddPeer as i32,
            peer: Some(Peer { id: 2, store_id: 2 }),
            split_key: vec![],
            replaced: None,
        };
        s.add_operator(1, add.clone());
        let resp = s
            .region_heartbeat(hb(r.clone()))
            .unwrap()
            .expect("operator");
        assert_eq!(resp.operator, Some(add));
        // Cancelled, the learner goes.
        s.cancel_operator(1);
        let resp = s.region_heartbeat(hb(r)).unwrap().expect("operator");
        let op = resp.operator.expect("operator");
        assert_eq!(op.kind(), OperatorKind::RemovePeer);
        assert_eq!(op.peer.map(|p| p.id), Some(2));
    }

    #[test]
    fn unfinished_operators_time_out_and_can_be_cancelled() {
        let mut s = Scheduler::new(10);
        s.bootstrap(region(1, b"", b"", 1, 1));
        let remove = Operator {
            kind: OperatorKind::RemovePeer as i32,
            peer: Some(Peer { id: 1, store_id: 1 }),
            split_key: vec![],
            replaced: None,
        };
        s.add_operator(1, remove.clone());
        assert_eq!(s.operators().len(), 1);
        let age = |s: &mut Scheduler, by: Duration| {
            let p = s.operators.get_mut(&1).expect("pending");
            p.since = p.since.checked_sub(by).expect("the clock is past it");
        };
        age(&mut s, Duration::from_secs(59));
        assert!(s
            .region_heartbeat(hb(region(1, b"", b"", 1, 1)))
            .unwrap()
            .is_some());
        age(&mut s, Duration::from_secs(2));
        assert!(
            s.region_heartbeat(hb(region(1, b"", b"", 1, 1)))
                .unwrap()
                .is_none(),
            "a timed-out operator is not sent again"
        );
        assert!(s.operators().is_empty());

        s.add_operator(1, remove.clone());
        assert_eq!(s.cancel_operator(1), Some(remove));
        assert_eq!(s.cancel_operator(1), None);
        assert!(s
            .region_heartbeat(hb(region(1, b"", b"", 1, 1)))
            .unwrap()
            .is_none());
    }

    #[test]
    fn split_reports_record_both_halves() {
        let mut s = Scheduler::new(10);
        s.bootstrap(region(1, b"", b"", 1, 1));
        s.region_heartbeat(hb(region(1, b"", b"", 1, 1))).unwrap();
        let mut right = region(2, b"m", b"", 1, 2);
        right.peers = vec![Peer { id: 3, store_id: 1 }];
        s.report_split(region(1, b"", b"m", 1, 2), right).unwrap();
        assert_eq!(s.get_region(b"a").unwrap().region.id, 1);
        let r = s.get_region(b"x").unwrap();
        assert_eq!(r.region.id, 2);
        // The new half's leader hint is its peer on the old leader's store.
        assert_eq!(r.leader, Some(Peer { id: 3, store_id: 1 }));
        // A late heartbeat from before the split is stale now.
        assert!(s.region_heartbeat(hb(region(1, b"", b"", 1, 1))).is_err());
        assert!(s
            .report_split(region(1, b"", b"m", 1, 2), region(2, b"n", b"", 1, 2))
            .is_err());
    }

    #[test]
    fn regions_short_of_replicas_get_peers_added() {
        let mut s = Scheduler::new(10);
        s.set_max_replicas(2);
        for id in 1..=3 {
            s.put_store(Store {
                id,
                address: format!("127.0.0.1:{id}"),
            });
        }
        s.bootstrap(region(1, b"", b"", 1, 1));
        let op = s
            .region_heartbeat(hb(region(1, b"", b"", 1, 1)))
            .unwrap()
            .and_then(|r| r.operator)
            .expect("an AddPeer operator");
        assert_eq!(op.kind(), OperatorKind::AddPeer);
        let peer = op.peer.unwrap();
        assert_ne!(peer.store_id, 1);
        // Done once the peer is a member and caught up; then nothing more.
        let mut two = region(1, b"", b"", 2, 1);
        two.peers.push(peer);
        assert!(s.region_heartbeat(hb(two)).unwrap().is_none());
    }

    #[test]
    fn ids_are_unique() {
        let mut s = Scheduler::new(6);
        let r = region(1, b"", b"", 1, 1);
        let split = s.ask_split(&r).unwrap();
        assert_eq!(split.new_region_id, 6);
        assert_eq!(split.new_peer_ids, vec![7]);
        assert_eq!(s.alloc_id().unwrap(), 8);
    }

    #[test]
    fn metadata_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            id: 1,
            address: "127.0.0.1:1".into(),
        };
        let first = {
            let mut s = Scheduler::open(MetaStore::open(dir.path()).unwrap(), 2).unwrap();
            assert!(!s.is_bootstrapped());
            s.bootstrap_cluster(7, store.clone(), region(1, b"", b"", 1, 1))
                .unwrap();
            assert!(s
                .bootstrap_cluster(7, store.clone(), region(1, b"", b"", 1, 1))
                .is_err());
            s.report_split(region(1, b"", b"m", 1, 2), region(2, b"m", b"", 1, 2))
                .unwrap();
            let id = s.alloc_id().unwrap();
            s.meta.as_ref().unwrap().flush().unwrap();
            id
        };
        let mut s = Scheduler::open(MetaStore::open(dir.path()).unwrap(), 2).unwrap();
        assert_eq!(s.cluster_id(), 7);
        assert!(s.is_bootstrapped());
        assert_eq!(s.store(1), Some(store));
        assert_eq!(s.regions().len(), 2);
        assert_eq!(s.get_region(b"x").unwrap().region.id, 2);
        // Ids never repeat across restarts.
        assert!(s.alloc_id().unwrap() > first);
    }
}
