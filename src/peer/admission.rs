//! What a peer does with a raft message from another replica, decided in
//! one place: who may speak to it (the epochs of the two ends), whether a
//! snapshot may be taken here (its file, and the store's range map), and
//! when the peer itself is to go (removed, or replaced by its region's
//! split). TinyKV's `onRaftMsg` and raftstore-v2's `on_raft_message` have
//! the same shape.

use tracing::debug;

use super::message::{self, Inbound};
use super::{Effects, Peer};
use crate::error::{Error, RegionError, Result};
use crate::proto::metapb::Region;
use crate::proto::raft_serverpb::{PeerState, RaftMessage};
use crate::region::{epoch, find_peer_by_id};
use crate::storage::state;

/// What to do with a raft message, judged by the epochs of the two ends.
enum Verdict {
    /// Step it into raft.
    Step,
    /// The sender was removed and never learned it: tell it to destroy itself.
    ReplyTombstone(RaftMessage),
    /// A newer member of the region says this peer is no longer one of them.
    DestroySelf,
    /// Stale or irrelevant: drop it.
    Drop,
}

impl Peer {
    /// A message from another replica (or a tombstone notice about this
    /// one). Whatever it causes in raft comes out of the next
    /// `handle_ready`; a message refused here is dropped (raft resends).
    pub fn on_raft_message(&mut self, msg: Inbound) -> Effects {
        if self.superseded() {
            return Effects::stop();
        }
        match self.judge(&msg) {
            Verdict::Step => {
                if let Err(e) = self.step(msg) {
                    debug!(error = %e, "raft message not stepped");
                }
            }
            Verdict::ReplyTombstone(reply) => {
                debug!(to = ?reply.to_peer, "message from a removed peer; telling it");
                self.effects.messages.push(reply);
            }
            Verdict::DestroySelf => {
                tracing::info!("told by a newer member that this peer was removed");
                crate::metrics::STALE_PEERS_DESTROYED.inc();
                self.pending_remove = true;
            }
            Verdict::Drop => {}
        }
        self.take_effects()
    }

    fn step(&mut self, inbound: Inbound) -> Result<()> {
        let is_snapshot = inbound.is_snapshot();
        if is_snapshot {
            self.admit_snapshot(&inbound)?;
        }
        if let Some(from) = inbound.envelope.from_peer {
            self.peer_cache.insert(from.id, from);
        }
        let m = inbound.msg;
        self.observe_for_leave(&m);
        let (from, kind) = (m.from, m.get_msg_type());
        let stepped = self.raft.step(m).map_err(Error::from);
        self.observe_leader(from, kind);
        if is_snapshot && !self.has_pending_snapshot() {
            // Raft did not take it (stale): release the range.
            self.store_meta.lock().cancel_snapshot(self.region_id());
        }
        stepped
    }

    /// An uninitialized peer whose region was meanwhile created on this
    /// store by a split (its region state is on disk) has been replaced by
    /// the split's peer: it must stop without touching the region's state.
    pub fn superseded(&self) -> bool {
        if self.is_initialized() {
            return false;
        }
        let kv = &self.storage().engines.kv;
        let state = state::region_state(kv, self.region_id()).unwrap_or(None);
        let replaced = state.is_some_and(|s| s.state == PeerState::Normal as i32);
        if replaced {
            tracing::info!("uninitialized peer replaced by its region's split; stopping");
        }
        replaced
    }

    /// Recognises messages from removed peers and tombstone notices, so a
    /// peer that a removal never reached is garbage-collected.
    fn judge(&self, inbound: &Inbound) -> Verdict {
        let msg = &inbound.envelope;
        let ours = epoch(self.region());
        let theirs = msg.region_epoch.unwrap_or_default();
        if msg.to_peer.is_some_and(|to| to.id != self.meta.id) {
            // Meant for another peer of this region on this store. A newer
            // configuration placed a new peer here, so this one was removed
            // without learning it: make way (the next message creates the
            // new peer). Otherwise it is a stale message for an old peer.
            return if !msg.is_tombstone && theirs.conf_ver > ours.conf_ver {
                Verdict::DestroySelf
            } else {
                Verdict::Drop
            };
        }
        if msg.is_tombstone {
            // Only a sender that knows a newer membership may remove us.
            return if theirs.conf_ver > ours.conf_ver {
                Verdict::DestroySelf
            } else {
                Verdict::Drop
            };
        }
        let Some(from) = msg.from_peer else {
            return Verdict::Drop;
        };
        let sender_is_member = find_peer_by_id(self.region(), from.id).is_some();
        if self.is_initialized() && !sender_is_member && theirs.conf_ver < ours.conf_ver {
            return Verdict::ReplyTombstone(message::tombstone(self.region(), self.meta, from));
        }
        Verdict::Step
    }

    /// Refuses a snapshot this store cannot take: a missing or corrupt
    /// file, or a range that another region here still holds or has
    /// reserved (the store has not applied a split, or a removal, that the
    /// sender already has; the leader retries later). On success the range
    /// is reserved until the store records the applied snapshot.
    fn admit_snapshot(&self, msg: &Inbound) -> Result<()> {
        if self.ingesting.is_some() {
            // raft-rs would take a newer snapshot over one it has not seen
            // persisted; two ingests of one region must never overlap.
            return Err(Error::SnapshotRefused(
                "the previous snapshot is still being ingested".into(),
            ));
        }
        let snap_region = self.check_snapshot_file(msg)?;
        let region_id = self.region_id();
        if snap_region.id != region_id {
            return Err(Error::SnapshotRefused(format!(
                "snapshot of region {} sent to region {region_id}",
                snap_region.id
            )));
        }
        let mut meta = self.store_meta.lock();
        let overlapped = meta.overlapping(&snap_region.start_key, &snap_region.end_key, region_id);
        if !overlapped.is_empty() {
            return Err(Error::SnapshotRefused(format!(
                "snapshot range overlaps regions {overlapped:?} on this store"
            )));
        }
        meta.reserve_snapshot(snap_region);
        Ok(())
    }

    /// Refuses a MsgSnapshot whose file is missing, short or corrupt;
    /// returns the region the snapshot holds.
    fn check_snapshot_file(&self, msg: &Inbound) -> Result<Region> {
        let data = msg.snapshot_data()?;
        let path = self.storage().snap_manager().path(&data.file_name)?;
        crate::storage::snapshot::verify(&path, &data)?;
        data.region
            .ok_or_else(|| Error::SnapshotRefused("snapshot without a region".into()))
    }

    /// The end of this peer: deletes its log, states and data (leaving a
    /// tombstone with the last region) and answers what it had in flight.
    /// A peer replaced by its region's split only stops: the state on disk
    /// is the new peer's. On an error nothing is answered; the caller stops
    /// the peer as failed.
    pub fn destroy(&mut self) -> Result<Effects> {
        if self.superseded() {
            return Ok(Effects::stop());
        }
        let region = self.region().clone();
        self.raft.mut_store().destroy(region)?;
        // Commands in flight may be committed by the remaining peers.
        let mut effects = self.fail_all_proposals(|| {
            Error::Region(RegionError::Undetermined(
                "the peer was destroyed with the command in flight".into(),
            ))
        });
        effects.destroy = false;
        tracing::info!("peer destroyed");
        Ok(effects)
    }
}
