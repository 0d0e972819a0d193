//! The faults and the scheduler's work, chosen by the seed: crashes (of
//! one store, or a power cut of all), partitions, conf changes, leader transfers and splits, one every few
//! hundred simulated milliseconds while faults are on.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::Rng;
use tessel::proto::metapb;
use tessel::proto::schedulerpb::{AskSplitResponse, Operator, OperatorKind};
use tessel::region::roles;
use tessel::{RegionId, StoreId};

use super::world::{Event, World, MS, SEC};

/// One fault or operator, then the next one scheduled.
pub fn act(w: &mut World) {
    if !w.faults_on {
        return;
    }
    let mut choices = Vec::new();
    let f = w.faults.clone();
    if f.crashes && !w.is_crashing() {
        choices.extend([0, 0, 5]);
    }
    if f.partitions && !w.is_partitioned() {
        choices.push(1);
    }
    if f.conf_changes {
        choices.extend([2, 2]);
    }
    if f.transfers {
        choices.push(3);
    }
    if f.splits {
        choices.push(4);
    }
    if let Some(c) = choices.choose(&mut w.rng).copied() {
        match c {
            0 => {
                let s = w.rng.gen_range(1..=w.stores.len() as u64);
                w.crash(s);
            }
            1 => {
                let n = w.stores.len() as u64;
                let mut group = BTreeSet::new();
                while group.is_empty() || group.len() as u64 == n {
                    group = (1..=n).filter(|_| w.rng.gen_bool(0.5)).collect();
                }
                let heal = w.rng.gen_range(300 * MS..3 * SEC);
                w.partition(group, heal);
            }
            2 => change_peer(w),
            3 => transfer_leader(w),
            4 => split(w),
            _ => {
                // A power cut: every store loses what it had not flushed.
                for s in 1..=w.stores.len() as u64 {
                    w.crash(s);
                }
            }
        }
    }
    let next = w.rng.gen_range(100 * MS..800 * MS);
    w.schedule(next, Event::Nemesis);
}

/// Every (store, region) whose peer leads and can act for its region.
fn leaders(w: &World) -> Vec<(StoreId, RegionId)> {
    let mut out = Vec::new();
    for st in &w.stores {
        let Some(up) = &st.up else { continue };
        for (r, p) in &up.peers {
            if p.is_leader() && !p.is_leaving() {
                out.push((st.id, *r));
            }
        }
    }
    out
}

fn pick_leader(w: &mut World) -> Option<(StoreId, RegionId)> {
    let all = leaders(w);
    all.choose(&mut w.rng).copied()
}

/// Runs an operator on a leader as the scheduler's heartbeat answer would.
fn operate(w: &mut World, store: StoreId, region: RegionId, op: Operator) {
    let Some(peer) = w.peer_mut(store, region) else {
        return;
    };
    let Some(req) = peer.request_for_operator(&op) else {
        return;
    };
    let (cb, _) = futures::channel::oneshot::channel();
    w.feed(store, region, |p| p.on_propose(req, cb));
}

fn operator(kind: OperatorKind, peer: metapb::Peer, replaced: Option<metapb::Peer>) -> Operator {
    Operator {
        kind: kind as i32,
        peer: Some(peer),
        split_key: vec![],
        replaced,
    }
}

/// One step of a membership change, as a leader takes it from a re-sent
/// operator: a new peer joins as a learner; a learner is promoted, removed,
/// or swapped in for a voter in one joint change; a voter is demoted. Keeps
/// 1 to all stores' worth of replicas.
fn change_peer(w: &mut World) {
    let Some((store, region)) = pick_leader(w) else {
        return;
    };
    let r = w.peer_mut(store, region).expect("leader").region().clone();
    let n = w.stores.len();
    let free: Vec<StoreId> = (1..=n as u64)
        .filter(|s| r.peers.iter().all(|p| p.store_id != *s))
        .collect();
    let learner = r
        .peers
        .iter()
        .copied()
        .find(|p| roles::is_learner(&r, p.id));
    let voters: Vec<metapb::Peer> = roles::voters(&r).copied().collect();
    let add = !free.is_empty() && (r.peers.len() < 3 || w.rng.gen_bool(0.4));
    let op = if let Some(l) = learner {
        match w.rng.gen_range(0..3) {
            0 => operator(OperatorKind::AddPeer, l, None),
            1 => operator(OperatorKind::RemovePeer, l, None),
            _ => {
                let old = *voters.choose(&mut w.rng).expect("a region has a voter");
                operator(OperatorKind::ReplacePeer, l, Some(old))
            }
        }
    } else if add {
        let store_id = *free.choose(&mut w.rng).expect("non-empty");
        let id = w.alloc_id();
        operator(OperatorKind::AddPeer, metapb::Peer { id, store_id }, None)
    } else if r.peers.len() > 1 {
        let victim = *r.peers.choose(&mut w.rng).expect("non-empty");
        operator(OperatorKind::RemovePeer, victim, None)
    } else {
        return;
    };
    operate(w, store, region, op);
}

fn transfer_leader(w: &mut World) {
    let Some((store, region)) = pick_leader(w) else {
        return;
    };
    let r = w.peer_mut(store, region).expect("leader").region().clone();
    let Some(target) = r.peers.choose(&mut w.rng).copied() else {
        return;
    };
    let op = operator(OperatorKind::TransferLeader, target, None);
    operate(w, store, region, op);
}

/// Splits a region at one of the workload's keys inside it, with ids
/// allocated as the scheduler would.
fn split(w: &mut World) {
    let Some((store, region)) = pick_leader(w) else {
        return;
    };
    let r = w.peer_mut(store, region).expect("leader").region().clone();
    let inside: Vec<Vec<u8>> = w
        .keys
        .iter()
        .filter(|k| {
            k.as_slice() > r.start_key.as_slice()
                && (r.end_key.is_empty() || k.as_slice() < r.end_key.as_slice())
        })
        .cloned()
        .collect();
    let Some(key) = inside.choose(&mut w.rng).cloned() else {
        return;
    };
    let peer = w.peer_mut(store, region).expect("leader");
    let Ok(checked) = peer.check_split(None, &key) else {
        return;
    };
    let ids = AskSplitResponse {
        new_region_id: w.alloc_id(),
        new_peer_ids: checked.peers.iter().map(|_| w.alloc_id()).collect(),
    };
    let (cb, _) = futures::channel::oneshot::channel();
    w.feed(store, region, |p| p.propose_split(&checked, key, ids, cb));
}
