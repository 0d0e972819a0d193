//! Which peers a store runs: at start, for a message of a region it has no
//! peer for, and for the new half of a split it applied.

use tracing::{debug, info, warn};

use super::StoreEnv;
use crate::error::Result;
use crate::peer::Inbound;
use crate::proto::metapb::{self, Region};
use crate::proto::raft_serverpb::PeerState;
use crate::region::{find_peer, is_epoch_stale};
use crate::storage::state;
use crate::storage::PeerStorage;

/// The regions whose peers a store starts with: every Normal region that
/// lists this store. A region that no longer does applied its own removal
/// and crashed before its tombstone was written: its destroy is finished
/// here instead.
pub fn regions_to_start(env: &StoreEnv) -> Result<Vec<Region>> {
    let mut out = Vec::new();
    for state in state::region_states(&env.engines.kv)? {
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

/// The peer a message of a region this store has no peer for creates, if
/// any: only a leader's or candidate's first contact, only if the region
/// was not tombstoned here with a newer epoch, and only if its range
/// overlaps no region this store holds. The peer starts uninitialized and
/// is caught up by a snapshot; it joins the range map only then. Clears a
/// raft log an earlier peer of the region left behind.
pub fn peer_to_create(env: &StoreEnv, inbound: &Inbound) -> Result<Option<metapb::Peer>> {
    let msg = &inbound.envelope;
    let Some(to) = msg.to_peer.filter(|p| p.store_id == env.store_id) else {
        return Ok(None);
    };
    if msg.is_tombstone || env.meta.lock().contains(msg.region_id) {
        return Ok(None);
    }
    if !is_initial_message(inbound) {
        return Ok(None);
    }
    let state = state::region_state(&env.engines.kv, msg.region_id)?;
    if let Some(state) = state {
        let local = state.region.unwrap_or_default();
        let stale = state.state != PeerState::Tombstone as i32
            || msg.region_epoch.is_none_or(|e| {
                let tomb = crate::region::epoch(&local);
                e.conf_ver <= tomb.conf_ver || is_epoch_stale(&e, &tomb)
            });
        if stale {
            debug!(
                region_id = msg.region_id,
                "message for a tombstoned peer; dropped"
            );
            return Ok(None);
        }
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
        return Ok(None);
    }
    info!(
        region_id = msg.region_id,
        peer_id = to.id,
        "creating peer from a message"
    );
    PeerStorage::clear_stale_log(&env.engines, msg.region_id)?;
    Ok(Some(to))
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
