//! The stored form of a region's client sessions (see `peer/session.rs` for
//! what they mean): reading, deleting and writing a region's whole table,
//! for snapshots, splits and destroy.

use prost::Message as _;

use crate::error::Result;
use crate::keys;
use crate::proto::raft_serverpb::ClientSession;
use crate::RegionId;

/// Every session of a region, from the tree.
pub fn load_sessions(kv: &sled::Tree, region_id: RegionId) -> Result<Vec<ClientSession>> {
    let (lo, hi) = keys::session_range(region_id);
    let mut out = Vec::new();
    for item in kv.range(lo..hi) {
        let (_, v) = item?;
        out.push(ClientSession::decode(v.as_ref())?);
    }
    Ok(out)
}

/// Deletes every session of a region into `wb`.
pub fn delete_sessions(kv: &sled::Tree, region_id: RegionId, wb: &mut sled::Batch) -> Result<()> {
    let (lo, hi) = keys::session_range(region_id);
    for item in kv.range(lo..hi) {
        let (k, _) = item?;
        wb.remove(k);
    }
    Ok(())
}

/// Writes `sessions` as the sessions of `region_id` into `wb`.
pub fn put_sessions(region_id: RegionId, sessions: &[ClientSession], wb: &mut sled::Batch) {
    for s in sessions {
        wb.insert(keys::session_key(region_id, s.client_id), s.encode_to_vec());
    }
}
