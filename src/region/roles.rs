//! Peer roles in region metadata: voters, learners and the two joint roles,
//! and the raft `ConfState` a region's membership stands for.
//!
//! A region lists every member in `peers` and the role of each one that is
//! not a plain voter in `roles`, so a `metapb::Peer` stays `{id, store_id}`.
//! The functions here are the only ones that change `roles`: applying a
//! membership change edits both lists together, and a peer that leaves the
//! region leaves both.

use raft::eraftpb::ConfState;

use crate::proto::metapb::{Peer, PeerRole, PeerRoleEntry, Region};
use crate::proto::raft_cmdpb::ConfChangeType;
use crate::PeerId;

/// The role of `peer_id` in `region`, or None if it is not a member.
pub fn role(region: &Region, peer_id: PeerId) -> Option<PeerRole> {
    if !region.peers.iter().any(|p| p.id == peer_id) {
        return None;
    }
    Some(
        region
            .roles
            .iter()
            .find(|r| r.peer_id == peer_id)
            .map_or(PeerRole::Voter, |r| r.role()),
    )
}

/// Sets the role of a member; a voter is recorded by having no entry.
fn set_role(region: &mut Region, peer_id: PeerId, role: PeerRole) {
    region.roles.retain(|r| r.peer_id != peer_id);
    if role != PeerRole::Voter {
        region.roles.push(PeerRoleEntry {
            peer_id,
            role: role as i32,
        });
    }
}

/// Whether `peer_id` votes in the configuration the region is moving to
/// (a plain or an incoming voter): a peer that may lead it.
pub fn is_voter(region: &Region, peer_id: PeerId) -> bool {
    matches!(
        role(region, peer_id),
        Some(PeerRole::Voter | PeerRole::IncomingVoter)
    )
}

/// Whether `peer_id` is a plain learner.
pub fn is_learner(region: &Region, peer_id: PeerId) -> bool {
    role(region, peer_id) == Some(PeerRole::Learner)
}

/// The members that vote in the configuration the region is moving to.
pub fn voters(region: &Region) -> impl Iterator<Item = &Peer> {
    region.peers.iter().filter(|p| is_voter(region, p.id))
}

/// Whether the region is between entering and leaving a joint configuration.
pub fn in_joint(region: &Region) -> bool {
    region
        .roles
        .iter()
        .any(|r| matches!(r.role(), PeerRole::IncomingVoter | PeerRole::DemotingVoter))
}

/// The raft configuration of the region's membership. A joint one is
/// always left automatically (the only kind this store proposes).
pub fn conf_state(region: &Region) -> ConfState {
    let mut cs = ConfState::default();
    let joint = in_joint(region);
    for p in &region.peers {
        match role(region, p.id).unwrap_or(PeerRole::Voter) {
            PeerRole::Voter => {
                cs.voters.push(p.id);
                if joint {
                    cs.voters_outgoing.push(p.id);
                }
            }
            PeerRole::IncomingVoter => cs.voters.push(p.id),
            PeerRole::DemotingVoter => {
                cs.voters_outgoing.push(p.id);
                cs.learners_next.push(p.id);
            }
            PeerRole::Learner => cs.learners.push(p.id),
        }
    }
    cs.auto_leave = joint;
    cs
}

/// Applies membership changes to `region` (not its epoch): one change as a
/// simple configuration change, or several (`joint`) entering a joint
/// configuration. Returns whether anything changed; a change that is
/// already in place (the scheduler re-sends operators) changes nothing.
/// Errors name a change that cannot apply to this membership.
pub fn apply_changes(
    region: &mut Region,
    changes: &[(ConfChangeType, Peer)],
    joint: bool,
) -> Result<bool, String> {
    let mut next = region.clone();
    let mut changed = false;
    for (change, target) in changes {
        let current = role(&next, target.id);
        let to = match (change, current) {
            (ConfChangeType::AddNode, Some(PeerRole::Voter))
            | (ConfChangeType::AddLearnerNode, Some(PeerRole::Learner))
            | (ConfChangeType::RemoveNode, None) => continue,
            (_, Some(r @ (PeerRole::IncomingVoter | PeerRole::DemotingVoter))) => {
                return Err(format!(
                    "peer {} is {r:?}: the region must leave its joint configuration first",
                    target.id
                ))
            }
            (ConfChangeType::RemoveNode, Some(_)) if joint => {
                return Err(format!(
                    "peer {}: a joint change demotes voters; a learner is removed on its own",
                    target.id
                ))
            }
            (ConfChangeType::RemoveNode, Some(_)) => None,
            (ConfChangeType::AddNode, _) if joint => Some(PeerRole::IncomingVoter),
            (ConfChangeType::AddNode, _) => Some(PeerRole::Voter),
            (ConfChangeType::AddLearnerNode, Some(PeerRole::Voter)) if joint => {
                Some(PeerRole::DemotingVoter)
            }
            (ConfChangeType::AddLearnerNode, _) => Some(PeerRole::Learner),
        };
        match to {
            None => {
                next.peers.retain(|p| p.id != target.id);
                next.roles.retain(|r| r.peer_id != target.id);
            }
            Some(role) => {
                if current.is_none() {
                    next.peers.push(*target);
                }
                set_role(&mut next, target.id, role);
            }
        }
        changed = true;
    }
    if changed && voters(&next).next().is_none() {
        return Err("the change would leave the region without a voter".into());
    }
    *region = next;
    Ok(changed)
}

/// Leaves a joint configuration: incoming voters become voters and
/// demoting voters learners. Returns whether the region was joint.
pub fn leave_joint(region: &mut Region) -> bool {
    let joint = in_joint(region);
    for r in &mut region.roles {
        match r.role() {
            PeerRole::IncomingVoter => r.set_role(PeerRole::Voter),
            PeerRole::DemotingVoter => r.set_role(PeerRole::Learner),
            _ => {}
        }
    }
    region.roles.retain(|r| r.role() != PeerRole::Voter);
    joint
}

/// A short name of the role for people (`ctl regions`).
pub fn role_name(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Voter => "voter",
        PeerRole::Learner => "learner",
        PeerRole::IncomingVoter => "incoming-voter",
        PeerRole::DemotingVoter => "demoting-voter",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u64) -> Peer {
        Peer { id, store_id: id }
    }

    fn region(ids: &[u64]) -> Region {
        Region {
            id: 1,
            peers: ids.iter().map(|&i| p(i)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_learner_joins_and_is_promoted() {
        let mut r = region(&[1, 2]);
        assert!(apply_changes(&mut r, &[(ConfChangeType::AddLearnerNode, p(3))], false).unwrap());
        assert_eq!(role(&r, 3), Some(PeerRole::Learner));
        let cs = conf_state(&r);
        assert_eq!((cs.voters, cs.learners), (vec![1, 2], vec![3]));
        // Re-sent: nothing changes.
        assert!(!apply_changes(&mut r, &[(ConfChangeType::AddLearnerNode, p(3))], false).unwrap());
        assert!(apply_changes(&mut r, &[(ConfChangeType::AddNode, p(3))], false).unwrap());
        assert_eq!(role(&r, 3), Some(PeerRole::Voter));
        assert!(r.roles.is_empty());
    }

    #[test]
    fn a_replacement_goes_through_a_joint_configuration() {
        let mut r = region(&[1, 2, 3]);
        apply_changes(&mut r, &[(ConfChangeType::AddLearnerNode, p(4))], false).unwrap();
        let swap = [
            (ConfChangeType::AddNode, p(4)),
            (ConfChangeType::AddLearnerNode, p(1)),
        ];
        assert!(apply_changes(&mut r, &swap, true).unwrap());
        assert!(in_joint(&r));
        let cs = conf_state(&r);
        assert_eq!(cs.voters, vec![2, 3, 4]);
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
        assert_eq!(cs.learners_next, vec![1]);
        assert!(cs.learners.is_empty() && cs.auto_leave);
        // Nothing else changes until the region leaves the joint state.
        assert!(apply_changes(&mut r, &[(ConfChangeType::RemoveNode, p(1))], false).is_err());
        assert!(leave_joint(&mut r));
        assert!(!in_joint(&r));
        let cs = conf_state(&r);
        assert_eq!((cs.voters, cs.learners), (vec![2, 3, 4], vec![1]));
        assert!(cs.voters_outgoing.is_empty() && !cs.auto_leave);
        assert!(apply_changes(&mut r, &[(ConfChangeType::RemoveNode, p(1))], false).unwrap());
        assert_eq!(
            r.peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(r.roles.is_empty());
    }

    #[test]
    fn the_last_voter_is_never_taken_away() {
        let mut r = region(&[1]);
        assert!(apply_changes(&mut r, &[(ConfChangeType::AddLearnerNode, p(1))], false).is_err());
        assert!(apply_changes(&mut r, &[(ConfChangeType::RemoveNode, p(1))], false).is_err());
        assert_eq!(role(&r, 1), Some(PeerRole::Voter));
    }

    #[test]
    fn a_joint_change_does_not_remove() {
        let mut r = region(&[1, 2]);
        let e = apply_changes(&mut r, &[(ConfChangeType::RemoveNode, p(2))], true);
        assert!(e.is_err());
        assert_eq!(r, region(&[1, 2]));
    }
}
