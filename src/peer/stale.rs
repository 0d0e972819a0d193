//! Stale-peer GC: a replica removed while it could not hear about it.
//!
//! A peer learns of its removal by applying it, or from a newer member's
//! tombstone notice (`admission.rs`, and the store's answer for a region it
//! tombstoned, `store/admission.rs`). A replica cut off while its region
//! moved away gets neither: its old fellow members are gone, it campaigns
//! forever to stores that drop its requests, and it keeps its range, so
//! the store refuses every overlapping snapshot or new peer (the right half
//! of a later split, say). An uninitialized peer created by a message whose
//! membership was then reverted waits for a snapshot that never comes.
//!
//! So a peer that has neither led nor heard from a leader for
//! `max_leader_missing_duration` asks the scheduler for its region (an
//! effect; the answer comes back through [`Peer::on_scheduler_region`]),
//! and again every such interval while the silence lasts. It destroys
//! itself only if the scheduler's region leaves its peer id out and is
//! newer than what the peer applied (a higher conf_ver; any region for an
//! uninitialized peer, which applied none). The scheduler's region comes
//! from a leader's applied state, so such a peer was removed in the
//! region's history: no quorum can need it. A region the scheduler does not
//! know, or one that still lists the peer, changes nothing.

use raft::eraftpb::MessageType;
use tracing::{info, warn};

use super::{Effects, Peer};
use crate::proto::metapb::Region;
use crate::region::{epoch, find_peer_by_id};
use crate::PeerId;

impl Peer {
    /// Counts a tick without a leader; asks the scheduler at every
    /// `max_leader_missing_duration` of them.
    pub(crate) fn tick_leader_missing(&mut self) {
        if self.is_leader() {
            self.leader_missing_ticks = 0;
            return;
        }
        self.leader_missing_ticks += 1;
        let limit = self.cfg.ticks_of(self.cfg.max_leader_missing_duration);
        if self.leader_missing_ticks.is_multiple_of(limit) {
            warn!(
                ticks = self.leader_missing_ticks,
                initialized = self.is_initialized(),
                "no leader heard for a long time; asking the scheduler whether this peer was removed"
            );
            self.effects.check_membership = true;
        }
    }

    /// A message that raft took as coming from the current leader resets
    /// the count.
    pub(crate) fn observe_leader(&mut self, from: PeerId, kind: MessageType) {
        let from_leader = matches!(
            kind,
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        );
        if from_leader && from != 0 && from == self.leader_id() {
            self.leader_missing_ticks = 0;
        }
    }

    /// The scheduler's answer to `check_membership`: the region as it last
    /// heard of it, or None if it knows no such region.
    pub fn on_scheduler_region(&mut self, region: Option<Region>) -> Effects {
        let Some(region) = region else {
            info!("the scheduler does not know this region; keeping the peer");
            return self.take_effects();
        };
        if self.is_leader() || find_peer_by_id(&region, self.meta.id).is_some() {
            return self.take_effects();
        }
        let (ours, theirs) = (epoch(self.region()), epoch(&region));
        if self.is_initialized() && theirs.conf_ver <= ours.conf_ver {
            info!(
                ours = ours.conf_ver,
                theirs = theirs.conf_ver,
                "the scheduler's region is not newer than this peer's; keeping it"
            );
            return self.take_effects();
        }
        info!(
            conf_ver = theirs.conf_ver,
            peers = ?region.peers,
            "the scheduler's newer region leaves this peer out: it was removed; destroying it"
        );
        crate::metrics::STALE_PEERS_DESTROYED.inc();
        self.pending_remove = true;
        self.take_effects()
    }
}
