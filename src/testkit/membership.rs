//! Membership helpers of the test kit: schedule an operator with the
//! in-process scheduler and wait until its view of the region shows it done.

use std::time::{Duration, Instant};

use super::Cluster;
use crate::error::{Error, Result};
use crate::proto::metapb::Peer;
use crate::proto::schedulerpb::{Operator, OperatorKind};
use crate::scheduler::RegionInfo;
use crate::RegionId;

/// How long a membership or leadership change may take to become visible.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    fn schedule(&self, region_id: RegionId, kind: OperatorKind, peer: Peer) {
        self.inner.scheduler.with(|s| {
            s.add_operator(
                region_id,
                Operator {
                    kind: kind as i32,
                    peer: Some(peer),
                    split_key: vec![],
                },
            )
        });
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

    /// Adds `peer` to the region; waits until the scheduler sees it a member.
    pub async fn try_add_peer(&self, region_id: RegionId, peer: Peer) -> Result<()> {
        self.schedule(region_id, OperatorKind::AddPeer, peer);
        self.wait_region(region_id, format!("add peer {peer:?}"), |info| {
            info.region.peers.contains(&peer)
        })
        .await
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
