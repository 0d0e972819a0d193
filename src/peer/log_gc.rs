//! Raft log GC on the leader: which prefix of the log may go.
//!
//! Compacting to the leader's own applied index (as this store once did)
//! cuts the log out from under every follower that is even one entry
//! behind: it then needs a whole snapshot, and a new replica under
//! sustained writes may never catch up (snapshot, the log compacted past it
//! meanwhile, another snapshot). So the leader keeps what its slowest
//! follower still needs, up to a bound:
//!
//! - `target = min(applied, max(slowest need, applied - keep))`, where a
//!   follower's need is what it has matched, or the index of the snapshot
//!   being sent to it; `keep` is half of `raft_log_gc_count_limit`, so a
//!   dead or far-behind follower holds back at most that many entries.
//! - a snapshot in flight is not made useless by the compaction: the log is
//!   kept from its index on, unless that is a whole count limit behind.
//! - a compaction is proposed only once it removes at least `keep` entries,
//!   so the log holds at most about `raft_log_gc_count_limit` entries
//!   beyond the followers' needs, as before.
//!
//! TiKV's raftstore does the same with its replicated index and its
//! `raft_log_gc_count_limit` force bound.

use raft::ProgressState;

use super::Peer;
use crate::proto::raft_cmdpb::{AdminCmdType, AdminRequest, CompactLogRequest};

/// Where a follower stands, as the leader's progress tracker shows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FollowerNeed {
    /// The highest index known replicated on it.
    pub matched: u64,
    /// The index of the snapshot being sent to it, if one is.
    pub snapshot: Option<u64>,
}

/// The index to compact the log to, or None if too little would go.
/// `first` is the log's first index, `limit` the configured count limit.
pub(crate) fn compact_target(
    applied: u64,
    first: u64,
    limit: u64,
    followers: &[FollowerNeed],
) -> Option<u64> {
    let keep = (limit / 2).max(1);
    let slowest = followers
        .iter()
        .map(|f| f.snapshot.map_or(f.matched, |s| s.max(f.matched)))
        .min()
        .unwrap_or(applied);
    let mut target = applied.min(slowest.max(applied.saturating_sub(keep)));
    for s in followers.iter().filter_map(|f| f.snapshot) {
        target = target.min(s.max(applied.saturating_sub(limit)));
    }
    (target >= first && target - first + 1 >= keep).then_some(target)
}

impl Peer {
    /// On the leader's GC tick: proposes CompactLog to the index
    /// [`compact_target`] allows. Returns whether one was proposed.
    pub(crate) fn maybe_propose_compact_log(&mut self) -> bool {
        let me = self.meta.id;
        let followers: Vec<FollowerNeed> = self
            .raft
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, pr)| FollowerNeed {
                matched: pr.matched,
                snapshot: (pr.state == ProgressState::Snapshot).then_some(pr.pending_snapshot),
            })
            .collect();
        let storage = self.storage();
        let Some(index) = compact_target(
            storage.applied_index(),
            storage.first_index(),
            self.cfg.raft_log_gc_count_limit,
            &followers,
        ) else {
            return false;
        };
        let Ok(term) = raft::Storage::term(storage, index) else {
            return false;
        };
        let admin = AdminRequest {
            cmd_type: AdminCmdType::CompactLog as i32,
            compact_log: Some(CompactLogRequest {
                compact_index: index,
                compact_term: term,
            }),
            ..Default::default()
        };
        let req = self.admin_command(self.region().region_epoch, admin);
        self.propose_normal(&req, None).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::{compact_target, FollowerNeed};

    fn at(matched: u64) -> FollowerNeed {
        FollowerNeed {
            matched,
            snapshot: None,
        }
    }

    #[test]
    fn caught_up_followers_let_the_log_go_to_applied() {
        assert_eq!(compact_target(100, 1, 100, &[at(100), at(100)]), Some(100));
        // A single-replica region has no follower to wait for.
        assert_eq!(compact_target(100, 1, 100, &[]), Some(100));
    }

    #[test]
    fn a_follower_a_few_entries_behind_keeps_its_entries() {
        // Compacting to 100 would send the follower at 97 a snapshot.
        assert_eq!(compact_target(100, 1, 100, &[at(100), at(97)]), Some(97));
    }

    #[test]
    fn a_far_behind_follower_holds_back_at_most_half_the_limit() {
        assert_eq!(compact_target(1000, 1, 100, &[at(1000), at(3)]), Some(950));
        assert_eq!(compact_target(1000, 1, 100, &[at(1000), at(0)]), Some(950));
    }

    #[test]
    fn too_little_to_remove_proposes_nothing() {
        assert_eq!(compact_target(100, 60, 100, &[at(100)]), None);
        assert_eq!(compact_target(100, 101, 100, &[at(100)]), None);
        assert_eq!(compact_target(100, 40, 100, &[at(30), at(100)]), None);
    }

    #[test]
    fn a_snapshot_in_flight_keeps_the_log_after_it() {
        let sending = FollowerNeed {
            matched: 0,
            snapshot: Some(900),
        };
        // The follower will need 901.. once the snapshot is in.
        assert_eq!(compact_target(960, 1, 100, &[at(960), sending]), Some(900));
        // Unless that is a whole limit behind: then it gets a new snapshot.
        assert_eq!(
            compact_target(1100, 1, 100, &[at(1100), sending]),
            Some(1000)
        );
    }
}
