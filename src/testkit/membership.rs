//! Membership helpers of the test kit: schedule an operator with the
//! in-process scheduler and wait until its view of the region shows it done.

use std::time::{Duration, Instant};

use super::Cluster;
use crate::actors::msg::SplitRegion;
use crate::error::{Error, RegionError, Result};
use crate::proto::metapb::Peer;
use crate::proto::schedulerpb::{Operator, OperatorKind};
use crate::region::roles;
use crate::scheduler::RegionInfo;
use crate::RegionId;

/// How long a membership or leadership change may take to become visible.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    fn schedule(&self, region_id: RegionId, kind: OperatorKind, peer: Peer) {
        self.schedule_op(
            region_id,
            Operator {
                kind: kind as i32,
                peer: Some(peer),
                split_key: vec![],
                replaced: None,
            },
        );
    }

    fn schedule_op(&self, region_id: RegionId, op: Operator) {
        self.inner.scheduler.with(|s| s.add_operator(region_id, op));
    }

    async fn wait_region(
        &self,
        region_id: RegionId,
        what: String,
        done: impl Fn(&RegionInfo) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            let info = self.inner.scheduler.with(|s| s.get_region_by_id(region_id));
            if info.as_ref().is_some_and(&done) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "region {region_id}: {what} not visible within {CHANGE_TIMEOUT:?}; \
                     scheduler has {info:?}"
                )));
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Adds `peer` to the region; waits until the scheduler sees it a
    /// voter. It joins as a learner and is promoted once caught up.
    pub async fn try_add_peer(&self, region_id: RegionId, peer: Peer) -> Result<()> {
        self.schedule(region_id, OperatorKind::AddPeer, peer);
        self.wait_region(region_id, format!("add peer {peer:?}"), |info| {
            info.region.peers.contains(&peer) && roles::is_voter(&info.region, peer.id)
        })
        .await
    }

    /// Replaces the region's replica `old` by `new` (a learner that
    /// catches up, then one joint change); waits until the scheduler sees
    /// `new` a voter and `old` gone.
    pub async fn try_replace_peer(&self, region_id: RegionId, old: Peer, new: Peer) -> Result<()> {
        self.schedule_op(
            region_id,
            Operator {
                kind: OperatorKind::ReplacePeer as i32,
                peer: Some(new),
                split_key: vec![],
                replaced: Some(old),
            },
        );
        self.wait_region(region_id, format!("replace {old:?} by {new:?}"), |info| {
            roles::is_voter(&info.region, new.id) && roles::role(&info.region, old.id).is_none()
        })
        .await
    }

    /// Like [`Cluster::try_replace_peer`]; panics after 5 s.
    pub async fn must_replace_peer(&self, region_id: RegionId, old: Peer, new: Peer) {
        if let Err(e) = self.try_replace_peer(region_id, old, new).await {
            panic!("{e}");
        }
    }

    /// Removes `peer` from the region; waits until the scheduler sees it gone.
    pub async fn try_remove_peer(&self, region_id: RegionId, peer: Peer) -> Result<()> {
        self.schedule(region_id, OperatorKind::RemovePeer, peer);
        self.wait_region(region_id, format!("remove peer {peer:?}"), |info| {
            !info.region.peers.iter().any(|p| p.id == peer.id)
        })
        .await
    }

    /// Moves the region's leadership to `peer`; waits until the scheduler
    /// sees it lead.
    pub async fn try_transfer_leader(&self, region_id: RegionId, peer: Peer) -> Result<()> {
        self.schedule(region_id, OperatorKind::TransferLeader, peer);
        self.wait_region(region_id, format!("leader {peer:?}"), |info| {
            info.leader.is_some_and(|l| l.id == peer.id)
        })
        .await?;
        self.inner.leaders.lock().insert(region_id, peer);
        Ok(())
    }

    /// Like [`Cluster::try_add_peer`]; panics after 5 s.
    pub async fn must_add_peer(&self, region_id: RegionId, peer: Peer) {
        if let Err(e) = self.try_add_peer(region_id, peer).await {
            panic!("{e}");
        }
    }

    /// Like [`Cluster::try_remove_peer`]; panics after 5 s.
    pub async fn must_remove_peer(&self, region_id: RegionId, peer: Peer) {
        if let Err(e) = self.try_remove_peer(region_id, peer).await {
            panic!("{e}");
        }
    }

    /// Like [`Cluster::try_transfer_leader`]; panics after 5 s.
    pub async fn must_transfer_leader(&self, region_id: RegionId, peer: Peer) {
        if let Err(e) = self.try_transfer_leader(region_id, peer).await {
            panic!("{e}");
        }
    }
}

impl Cluster {
    /// Splits region `region_id` at `split_key` through the same path as an
    /// automatic split (leader checks, AskSplit, Split command); waits until
    /// the split is applied and the scheduler knows a region starting at
    /// `split_key`. Succeeds at once if one already does.
    pub async fn try_split(&self, region_id: RegionId, split_key: &[u8]) -> Result<()> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let split_seen = || {
            self.inner.scheduler.with(|s| {
                s.get_region(split_key)
                    .is_some_and(|r| r.region.start_key == split_key)
            })
        };
        let mut last_err = String::from("no leader");
        while Instant::now() < deadline {
            if split_seen() {
                return Ok(());
            }
            let Some(leader) = self.leader_of_region(region_id).await else {
                continue;
            };
            let Some(addr) = self.router(leader.store_id).and_then(|r| r.peer(region_id)) else {
                continue;
            };
            let (tx, rx) = futures::channel::oneshot::channel();
            addr.do_send(SplitRegion {
                region_epoch: None,
                split_key: split_key.to_vec(),
                cb: Some(tx),
            });
            let resp = match actix_rt::time::timeout(Duration::from_secs(2), rx).await {
                Ok(Ok(resp)) => resp,
                _ => {
                    last_err = "no answer to the split".into();
                    continue;
                }
            };
            match resp.header.and_then(|h| h.error) {
                None => {
                    return self
                        .wait_region(region_id, format!("split at {split_key:?}"), |_| {
                            split_seen()
                        })
                        .await;
                }
                Some(e) if e.key_not_in_region.is_some() => {
                    if split_seen() {
                        return Ok(());
                    }
                    return Err(Error::Region(RegionError::InvalidRequest(e.message)));
                }
                Some(e) => {
                    last_err = e.message;
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(Error::Timeout(format!(
            "split of region {region_id} at {:?} not done within {CHANGE_TIMEOUT:?}: {last_err}",
            String::from_utf8_lossy(split_key)
        )))
    }

    /// Like [`Cluster::try_split`]; panics after 5 s.
    pub async fn must_split(&self, region_id: RegionId, split_key: &[u8]) {
        if let Err(e) = self.try_split(region_id, split_key).await {
            panic!("{e}");
        }
    }
}
