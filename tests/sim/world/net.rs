//! The simulated network: every message the core sends is delayed, dropped,
//! duplicated or cut by a partition as the seed says, and a snapshot's file
//! is copied to the receiver before its message goes. A message for a
//! region the receiving store has no peer of goes through the store's
//! admission (`unrouted_message`), as in `StoreActor`.

use std::collections::BTreeSet;

use rand::Rng;
use tessel::peer::Inbound;
use tessel::proto::metapb::Region;
use tessel::proto::raft_serverpb::RaftMessage;
use tessel::store::Unrouted;
use tessel::StoreId;

use super::{Event, Time, World};

impl World {
    /// The network: drops, duplicates and delays by the seed; a snapshot's
    /// file is copied to the receiver before its message goes.
    pub(super) fn send(&mut self, from: StoreId, msg: RaftMessage) {
        let to = msg.to_peer.map_or(0, |p| p.store_id);
        if to == 0 || to as usize > self.stores.len() {
            return;
        }
        let is_snapshot = msg.msg_type == raft::eraftpb::MessageType::MsgSnapshot as i32;
        self.stats.messages += 1;
        self.stats.snapshots_sent += is_snapshot as u64;
        let cut = self
            .partition
            .as_ref()
            .is_some_and(|g| g.contains(&from) != g.contains(&to));
        let lost = self.faults_on && self.rng.gen_bool(self.faults.drop);
        let delay = self.rng.gen_range(100..self.faults.max_delay.max(200));
        let incarnation = self.store(from).incarnation;
        let report = |finished| Event::SnapshotReport {
            store: from,
            incarnation,
            region: msg.region_id,
            to_peer: msg.to_peer.map_or(0, |p| p.id),
            finished,
        };
        if cut || lost {
            self.stats.dropped += 1;
            if is_snapshot {
                self.schedule(delay, report(false));
            }
            return;
        }
        if is_snapshot {
            let copied = snapshot_file(&msg).and_then(|name| {
                let src = self.stores[from as usize - 1].root.join("snap").join(&name);
                let dst = self.stores[to as usize - 1].root.join("snap").join(&name);
                std::fs::copy(src, dst).ok()
            });
            self.schedule(delay, report(copied.is_some()));
            if copied.is_none() {
                return;
            }
        } else if self.faults_on && self.rng.gen_bool(self.faults.duplicate) {
            let d2 = self.rng.gen_range(100..self.faults.max_delay.max(200));
            self.schedule(
                d2,
                Event::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(delay, Event::Deliver { to, msg });
    }

    pub(super) fn deliver(&mut self, to: StoreId, msg: RaftMessage) {
        let Some(up) = self.store(to).up.as_ref() else {
            return;
        };
        let msg = match Inbound::open(msg) {
            Ok(m) => m,
            Err(e) => {
                self.violation(format!(
                    "store {to}: a peer sent an undecodable message: {e}"
                ));
                return;
            }
        };
        let region = msg.region_id();
        if !up.peers.contains_key(&region) {
            let env = up.env.clone();
            let meta = match tessel::store::unrouted_message(&env, &msg) {
                Ok(Unrouted::Create(meta)) => meta,
                Ok(Unrouted::TellRemoved(notice)) => {
                    self.stats.removal_notices += 1;
                    self.send(to, notice);
                    return;
                }
                Ok(Unrouted::Drop) => return,
                Err(e) => {
                    self.violation(format!("store {to}: unrouted_message: {e}"));
                    return;
                }
            };
            let empty = Region {
                id: region,
                ..Default::default()
            };
            let peer = self.new_peer(&env, empty.clone(), meta);
            self.stats.peers_created += 1;
            self.store(to)
                .up
                .as_mut()
                .expect("up")
                .peers
                .insert(region, peer);
            env.meta.lock().set_region(empty);
        }
        self.feed(to, region, |p| p.on_raft_message(msg));
    }

    /// Cuts the stores into two groups for a while.
    pub fn partition(&mut self, group: BTreeSet<StoreId>, heal_after: Time) {
        self.stats.partitions += 1;
        self.partition = Some(group);
        self.schedule(heal_after, Event::Heal);
    }

    pub fn is_partitioned(&self) -> bool {
        self.partition.is_some()
    }
}

/// The file name a MsgSnapshot carries.
fn snapshot_file(msg: &RaftMessage) -> Option<String> {
    tessel::peer::message::snapshot_data(msg)
        .ok()
        .map(|d| d.file_name)
}
