//! What must hold once a run has calmed down: the history is linearizable,
//! the regions tile the key space, every region has a leader, replicas
//! at the same applied index hold the same data, and no log grows past
//! what log GC allows. (The invariants that must hold at every instant are
//! checked after each event, in `world.rs`.)

use std::collections::BTreeMap;

use tessel::keys;
use tessel::proto::metapb::Region;
use tessel::RegionId;

use super::world::World;
use crate::harness::linearizability::{self, Event};

/// Checks the end state; violations go into the world's list.
pub fn at_end(w: &mut World, history: &[Event]) {
    let verdict = linearizability::check(history, linearizability::DEFAULT_BUDGET);
    if !verdict.is_linearizable() {
        w.violation(format!("history: {verdict}"));
    }
    let latest = latest_regions(w);
    tiling(w, &latest);
    leaders_and_replicas(w, &latest);
    log_bounds(w);
}

/// Every region at its newest epoch as any initialized peer knows it.
fn latest_regions(w: &World) -> BTreeMap<RegionId, Region> {
    let mut latest: BTreeMap<RegionId, Region> = BTreeMap::new();
    for st in &w.stores {
        let Some(up) = &st.up else { continue };
        for p in up.peers.values().filter(|p| p.is_initialized()) {
            let r = p.region();
            let e = tessel::region::epoch(r);
            let newer = latest.get(&r.id).is_none_or(|old| {
                let o = tessel::region::epoch(old);
                (e.version, e.conf_ver) > (o.version, o.conf_ver)
            });
            if newer {
                latest.insert(r.id, r.clone());
            }
        }
    }
    latest
}

/// Sorted by start key, the regions must cover the key space exactly once.
fn tiling(w: &mut World, latest: &BTreeMap<RegionId, Region>) {
    let mut ranges: Vec<&Region> = latest.values().collect();
    ranges.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    let mut expect: Vec<u8> = Vec::new();
    let mut problems = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        if r.start_key != expect {
            problems.push(format!(
                "region {} starts at {:?}, expected {:?}",
                r.id,
                String::from_utf8_lossy(&r.start_key),
                String::from_utf8_lossy(&expect)
            ));
        }
        if r.end_key.is_empty() && i + 1 != ranges.len() {
            problems.push(format!(
                "region {} ends the key space but is not last",
                r.id
            ));
        }
        expect = r.end_key.clone();
    }
    if !expect.is_empty() {
        problems.push("no region reaches the end of the key space".into());
    }
    for p in problems {
        w.violation(format!("regions do not tile the key space: {p}"));
    }
}

/// Each region has one leader after the calm period, and every member at
/// the leader's applied index holds the leader's data.
fn leaders_and_replicas(w: &mut World, latest: &BTreeMap<RegionId, Region>) {
    let mut problems = Vec::new();
    for region in latest.values() {
        let members: Vec<_> = region
            .peers
            .iter()
            .filter_map(|m| {
                let up = w.stores[m.store_id as usize - 1].up.as_ref()?;
                let p = up.peers.get(&region.id)?;
                (p.meta().id == m.id).then_some((m.store_id, p, &up.env.engines))
            })
            .collect();
        let leaders: Vec<_> = members.iter().filter(|(_, p, _)| p.is_leader()).collect();
        let Some((lstore, leader, lengines)) = leaders.first() else {
            problems.push(format!(
                "region {} has no leader after the calm period (members {:?})",
                region.id, region.peers
            ));
            continue;
        };
        let want = data(lengines, region);
        let applied = leader.storage().applied_index();
        for (store, p, engines) in &members {
            if store == lstore || p.storage().applied_index() != applied {
                continue;
            }
            if data(engines, region) != want {
                problems.push(format!(
                    "region {}: store {store} holds other data than leader store {lstore} at applied index {applied}",
                    region.id
                ));
            }
        }
    }
    for p in problems {
        w.violation(p);
    }
}

/// The user data of a region's range in one store.
fn data(engines: &tessel::storage::Engines, r: &Region) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (lo, hi) = keys::data_range(keys::CF_DEFAULT, &r.start_key, &r.end_key);
    engines
        .kv
        .range(lo..hi)
        .map(|kv| {
            let (k, v) = kv.expect("read");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// Log GC keeps `applied - truncated` near its limit on every replica.
fn log_bounds(w: &mut World) {
    let bound = 4 * w.cfg.raft_log_gc_count_limit + 64;
    let mut problems = Vec::new();
    for st in &w.stores {
        let Some(up) = &st.up else { continue };
        for (r, p) in &up.peers {
            let s = p.storage();
            let kept = s.applied_index().saturating_sub(s.truncated_index());
            if p.is_initialized() && kept > bound {
                problems.push(format!(
                    "store {} region {r}: {kept} applied entries kept (bound {bound})",
                    st.id
                ));
            }
        }
    }
    for p in problems {
        w.violation(p);
    }
}
