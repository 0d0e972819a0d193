//! Operators: what the scheduler asks a region's leader to do, re-sent
//! with every heartbeat until the region shows it done, and dropped when it
//! times out or is cancelled (`ctl operators`, `ctl operator cancel`).

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::Scheduler;
use crate::proto::metapb::PeerRole;
use crate::proto::schedulerpb::{Operator, OperatorKind, RegionHeartbeatResponse};
use crate::region::{key_in_region, roles};
use crate::RegionId;

/// An operator waiting to be carried out, and since when.
#[derive(Clone, Debug)]
pub struct PendingOperator {
    /// What the region's leader is asked to do.
    pub op: Operator,
    /// When it was scheduled.
    pub since: Instant,
}

/// How long an operator may stay unfinished before the scheduler drops it
/// (PD's rule): a leader transfer is quick or it failed; a new replica may
/// wait for a large snapshot; the rest need a few round trips and a
/// leader that hears the scheduler.
pub fn operator_timeout(kind: OperatorKind) -> Duration {
    match kind {
        OperatorKind::TransferLeader => Duration::from_secs(10),
        OperatorKind::AddPeer | OperatorKind::ReplacePeer => Duration::from_secs(600),
        OperatorKind::RemovePeer | OperatorKind::Split | OperatorKind::None => {
            Duration::from_secs(60)
        }
    }
}

impl Scheduler {
    /// Schedules an operator for a region, replacing any earlier one.
    pub fn add_operator(&mut self, region_id: RegionId, op: Operator) {
        debug!(region_id, ?op, "operator added");
        self.operators.insert(
            region_id,
            PendingOperator {
                op,
                since: Instant::now(),
            },
        );
    }

    /// The operator pending for the region, if any.
    pub fn operator(&self, region_id: RegionId) -> Option<&Operator> {
        self.operators.get(&region_id).map(|p| &p.op)
    }

    /// Every operator not yet done, timed out or cancelled, by region.
    pub fn operators(&mut self) -> Vec<(RegionId, PendingOperator)> {
        let expired: Vec<RegionId> = self
            .operators
            .iter()
            .filter(|(_, p)| p.since.elapsed() > operator_timeout(p.op.kind()))
            .map(|(r, _)| *r)
            .collect();
        for region_id in expired {
            self.expire_operator(region_id);
        }
        let mut all: Vec<_> = self
            .operators
            .iter()
            .map(|(r, p)| (*r, p.clone()))
            .collect();
        all.sort_by_key(|(r, _)| *r);
        all
    }

    fn expire_operator(&mut self, region_id: RegionId) {
        if let Some(p) = self.operators.remove(&region_id) {
            let age = p.since.elapsed();
            warn!(region_id, op = ?p.op, ?age, "operator timed out unfinished; dropped");
            crate::metrics::OPERATORS_TIMED_OUT.inc();
        }
    }

    /// Drops the region's pending operator; returns it, or None if there
    /// was none. A leader that already proposed its change may still apply
    /// it: only what is not yet proposed is stopped.
    pub fn cancel_operator(&mut self, region_id: RegionId) -> Option<Operator> {
        let p = self.operators.remove(&region_id)?;
        info!(region_id, op = ?p.op, "operator cancelled");
        Some(p.op)
    }

    /// The operator still to do for the region, dropping it once done.
    pub(super) fn pending_operator(
        &mut self,
        region_id: RegionId,
    ) -> Option<RegionHeartbeatResponse> {
        let info = self.regions.get(region_id)?;
        let pending = self.operators.get(&region_id)?;
        let op = pending.op.clone();
        if pending.since.elapsed() > operator_timeout(op.kind()) {
            self.expire_operator(region_id);
            return None;
        }
        let target = op.peer.unwrap_or_default();
        let region = &info.region;
        let member = |id| roles::role(region, id).is_some();
        // A new replica is in place once it votes and has its log.
        let voting = roles::role(region, target.id) == Some(PeerRole::Voter)
            && !info.pending_peers.iter().any(|p| p.id == target.id);
        // Obsolete when another replica of the region already sits on the
        // target store (one sent before a scheduler restart was carried out
        // meanwhile): a second one there is never placed.
        let crowded = || {
            let crowded = !member(target.id)
                && region
                    .peers
                    .iter()
                    .any(|p| p.store_id == target.store_id && p.id != target.id);
            if crowded {
                warn!(
                    region_id,
                    ?target,
                    "operator dropped: the store already holds a replica"
                );
            }
            crowded
        };
        let done = match op.kind() {
            OperatorKind::AddPeer => crowded() || voting,
            OperatorKind::ReplacePeer => {
                let gone = op.replaced.is_none_or(|old| !member(old.id));
                crowded() || (voting && gone)
            }
            OperatorKind::RemovePeer => !member(target.id),
            OperatorKind::TransferLeader => info.leader.as_ref().is_some_and(|l| l.id == target.id),
            // Done once the region starts at the key; dropped as obsolete
            // once the key left the region (another split moved it out):
            // this region can no longer carry it out, and the key's current
            // region is the one to ask.
            OperatorKind::Split => {
                info.region.start_key == op.split_key || !key_in_region(&op.split_key, &info.region)
            }
            OperatorKind::None => true,
        };
        if done {
            self.operators.remove(&region_id);
            return None;
        }
        Some(RegionHeartbeatResponse {
            region_id,
            region_epoch: info.region.region_epoch,
            target_peer: info.leader,
            operator: Some(op),
        })
    }
}
