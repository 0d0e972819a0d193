//! Which peers a store runs: at start, for a message of a region it has no
//! peer for, and for the new half of a split it applied.

use tracing::{debug, info, warn};

use super::StoreEnv;
use crate::error::Result;
use crate::peer::Inbound;
use crate::proto::metapb::{self, Region};
use crate::proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};
use crate::region::{find_peer, is_epoch_stale};
use crate::storage::state;
use crate::storage::PeerStorage;

/// The regions whose peers a store starts with: every Normal region that
/// lists this store. A region that no longer does applied its own removal
/// and crashed before its tombstone was written: its destroy is finished
/// here instead. A region a crash left Applying a snapshot has the ingest
/// finished first (`snap_apply.rs`); one whose ingest cannot finish (its
/// file is gone or corrupt) is not started, and the rest of the store is.
pub fn regions_to_start(env: &StoreEnv) -> Result<Vec<Region>> {
    let mut out = Vec::new();
    for state in state::region_states(&env.engines.kv)? {
        let state = if state.state == PeerState::Applying as i32 {
            let region_id = state.region.as_ref().map_or(0, |r| r.id);
            match crate::storage::snap_apply::resume(&env.engines, &env.snap_mgr, state) {
                Ok(region) => RegionLocalState {
                    state: PeerState::Normal as i32,
                    region: Some(region),
                    applying: None,
                },
                Err(e) => {
                    tracing::error!(region_id, error = %e, "cannot finish the snapshot ingest; region not started");
                    crate::metrics::PEER_FAILURES.inc();
                    continue;
                }
            }
        } else {
            state
        };
        let Some(region) = state.region else { continue };
        if state.state != PeerState::Normal as i32 {
            continue;
        }
        if find_peer(&region, env.store_id).is_none() {
            warn!(
                region_id = region.id,
                "region without a peer here; destroying it"
            );
            let mut storage = PeerStorage::new(
                env.engines.clone(),
                env.snap_mgr.clone(),
                env.store_id,
                region.clone(),
            )?;
            storage.destroy(region)?;
            continue;
        }
        out.push(region);
    }
    Ok(out)
}

/// What a store does with a message for a region it runs no peer of.
#[derive(Debug)]
pub enum Unrouted {
    /// Create this peer (uninitialized) and hand it the message.
    Create(metapb::Peer),
    /// The region was tombstoned here and the sender was removed from it
    /// without learning it: send it this tombstone notice.
    TellRemoved(RaftMessage),
    /// Stale or irrelevant: drop it.
    Drop,
}

/// Judges a message of a region this store has no peer for. It creates a
/// peer only if it is a leader's or candidate's first contact, the region
/// was not tombstoned here with an equal or newer epoch, and its range
/// overlaps no region this store holds. (A peer id may come back to a store
/// that destroyed it: the acceptance scenarios re-add removed peers under
/// their old ids, as TinyKV's tests do.) The peer starts
/// uninitialized and is caught up by a snapshot; it joins the range map only
/// then. Clears a raft log an earlier peer of the region left behind.
///
/// A message for a tombstoned region from a sender the tombstone's region
/// no longer places on any store of the sender is answered with a tombstone
/// notice: the sender was removed and is a zombie (TiKV's rule). A sender
/// whose store the tombstone still lists may be a legitimate survivor that
/// has not applied this peer's removal yet (a region of {survivor, removed}
/// whose removal the survivor holds uncommitted), so it is never told.
pub fn unrouted_message(env: &StoreEnv, inbound: &Inbound) -> Result<Unrouted> {
    let msg = &inbound.envelope;
    let Some(to) = msg.to_peer.filter(|p| p.store_id == env.store_id) else {
        return Ok(Unrouted::Drop);
    };
    if msg.is_tombstone || env.meta.lock().contains(msg.region_id) {
        return Ok(Unrouted::Drop);
    }
    match state::region_state(&env.engines.kv, msg.region_id)? {
        Some(state) if state.state == PeerState::Tombstone as i32 => {
            let tomb_region = state.region.unwrap_or_default();
            if let Some(notice) = removed_sender_notice(&tomb_region, msg) {
                debug!(
                    region_id = msg.region_id,
                    to = ?notice.to_peer,
                    "message from a removed peer of a tombstoned region; telling it"
                );
                return Ok(Unrouted::TellRemoved(notice));
            }
            let tomb = crate::region::epoch(&tomb_region);
            let stale = msg
                .region_epoch
                .is_none_or(|e| e.conf_ver <= tomb.conf_ver || is_epoch_stale(&e, &tomb));
            if stale {
                debug!(
                    region_id = msg.region_id,
                    "message for a tombstoned peer; dropped"
                );
                return Ok(Unrouted::Drop);
            }
        }
        // A region state without a running peer: a failed region, or one
        // being set up; not for a message to decide.
        Some(_) => return Ok(Unrouted::Drop),
        None => {}
    }
    if !is_initial_message(inbound) {
        return Ok(Unrouted::Drop);
    }
    let overlapped = env
        .meta
        .lock()
        .overlapping(&msg.start_key, &msg.end_key, msg.region_id);
    if !overlapped.is_empty() {
        // This store has not applied a split (or a removal) that the
        // sender's region comes from; once it has, the sender's next
        // message creates the peer.
        debug!(
            region_id = msg.region_id,
            ?overlapped,
            "new peer would overlap a region here; refused"
        );
        return Ok(Unrouted::Drop);
    }
    info!(
        region_id = msg.region_id,
        peer_id = to.id,
        "creating peer from a message"
    );
    PeerStorage::clear_stale_log(&env.engines, msg.region_id)?;
    Ok(Unrouted::Create(to))
}

/// The tombstone notice for the sender of `msg`, if the tombstoned region
/// shows it removed: its epoch's conf_ver is older and the region keeps no
/// replica on its store.
fn removed_sender_notice(tomb_region: &Region, msg: &RaftMessage) -> Option<RaftMessage> {
    let (from, me) = (msg.from_peer?, msg.to_peer?);
    let theirs = msg.region_epoch?;
    let removed = theirs.conf_ver < crate::region::epoch(tomb_region).conf_ver
        && find_peer(tomb_region, from.store_id).is_none();
    removed.then(|| crate::peer::message::tombstone(tomb_region, me, from))
}

/// What a split applied by a peer here asks of its store.
pub enum SplitStart {
    /// Nothing to start (no new region, or its peer already runs here).
    Nothing,
    /// Start the new region's peer.
    Start(Region),
    /// An uninitialized peer of the new region (created by its leader's
    /// message before this store applied the split) is replaced: make its
    /// last vote durable first (the new peer builds on it), then start.
    FlushThenStart(Region),
}

/// Records both halves of a split in the range map and says which peer to
/// start. The uninitialized peer being replaced stops by itself once it
/// sees the split's state on disk (`Peer::superseded`).
pub fn on_split_applied(env: &StoreEnv, left: Region, right: Option<Region>) -> SplitStart {
    let mut meta = env.meta.lock();
    meta.set_region(left);
    let Some(right) = right else {
        return SplitStart::Nothing;
    };
    match meta.region(right.id) {
        Some(r) if !r.peers.is_empty() => {
            warn!(
                region_id = right.id,
                "split's new region already runs here; not replaced"
            );
            SplitStart::Nothing
        }
        Some(_) => {
            info!(
                region_id = right.id,
                "replacing the new region's uninitialized peer"
            );
            SplitStart::FlushThenStart(right)
        }
        None => SplitStart::Start(right),
    }
}

/// A leader's or candidate's first contact: the only messages that may create
/// a peer (a heartbeat to a new member carries commit 0, since nothing is
/// known to be replicated there).
fn is_initial_message(inbound: &Inbound) -> bool {
    use raft::eraftpb::MessageType;
    if inbound.envelope.is_tombstone {
        return false;
    }
    match inbound.msg.get_msg_type() {
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => true,
        MessageType::MsgHeartbeat => inbound.msg.commit == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::removed_sender_notice;
    use crate::proto::metapb::{Peer, Region, RegionEpoch};
    use crate::proto::raft_serverpb::RaftMessage;

    fn region(conf_ver: u64, peers: &[(u64, u64)]) -> Region {
        Region {
            id: 7,
            region_epoch: Some(RegionEpoch {
                conf_ver,
                version: 1,
            }),
            peers: peers
                .iter()
                .map(|&(id, store_id)| Peer { id, store_id })
                .collect(),
            ..Default::default()
        }
    }

    /// A message from `from` (id, store) at `conf_ver` to this store's
    /// destroyed peer 2 on store 2.
    fn from(id: u64, store_id: u64, conf_ver: u64) -> RaftMessage {
        RaftMessage {
            region_id: 7,
            from_peer: Some(Peer { id, store_id }),
            to_peer: Some(Peer { id: 2, store_id: 2 }),
            region_epoch: Some(RegionEpoch {
                conf_ver,
                version: 1,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_sender_the_tombstone_shows_removed_is_told() {
        // Peer 2 applied its removal from {1, 2} and left {1}.
        let tomb = region(3, &[(1, 1)]);
        // Peer 1 may not have applied the removal yet and still needs
        // peer 2's vote in its eyes: it is a survivor, never told.
        assert!(removed_sender_notice(&tomb, &from(1, 1, 2)).is_none());
        // Peer 9 on store 9 was removed before the tombstone's epoch.
        let notice = removed_sender_notice(&tomb, &from(9, 9, 2)).expect("a notice");
        assert!(notice.is_tombstone);
        assert_eq!(notice.to_peer, Some(Peer { id: 9, store_id: 9 }));
        assert_eq!(notice.region_epoch, tomb.region_epoch);
        // A sender as new as the tombstone, or newer, is not stale.
        assert!(removed_sender_notice(&tomb, &from(9, 9, 3)).is_none());
        assert!(removed_sender_notice(&tomb, &from(9, 9, 4)).is_none());
    }
}
