//! Store lifecycle in the simulator: opening a store's database for each
//! incarnation (from the last flush point's image after a crash), starting
//! its peers, flush points, crashes and restarts.

use std::collections::BTreeMap;

use rand::Rng;
use tessel::peer::{Effects, Peer};
use tessel::proto::metapb::{self, Region};
use tessel::storage::{Engines, SnapManager};
use tessel::store::StoreEnv;
use tessel::{RegionId, StoreId};

use super::{Event, Image, Running, World, MS, SEC};

impl World {
    /// Opens a fresh database for the store's next incarnation, filled
    /// from `image` if it restarts from one.
    pub(super) fn open_env(&mut self, id: StoreId, image: Option<Image>) -> StoreEnv {
        let cfg = self.cfg.clone();
        let st = self.store(id);
        st.incarnation += 1;
        let dir = st.root.join(format!("inc{}", st.incarnation));
        let engines = Engines::open(&dir, cfg.sled_cache_capacity_bytes).expect("open engines");
        if let Some((kv, raft)) = image {
            for (k, v) in kv {
                engines.kv.insert(k, v).expect("restore kv");
            }
            for (k, v) in raft {
                engines.raft.insert(k, v).expect("restore raft");
            }
        }
        let snap_mgr = SnapManager::new(st.root.join("snap")).expect("snapshot dir");
        StoreEnv {
            store_id: id,
            cfg,
            engines,
            snap_mgr,
            meta: Default::default(),
        }
    }

    pub(super) fn start_store(&mut self, id: StoreId, env: StoreEnv) {
        let regions = tessel::store::regions_to_start(&env).expect("regions to start");
        let mut running = Running {
            env,
            peers: BTreeMap::new(),
            persist: BTreeMap::new(),
            flush_scheduled: false,
        };
        for region in regions {
            let meta = *tessel::region::find_peer(&region, id).expect("listed");
            let peer = self.new_peer(&running.env, region.clone(), meta);
            running.peers.insert(region.id, peer);
            running.env.meta.lock().set_region(region);
        }
        self.store(id).up = Some(running);
    }

    pub(super) fn new_peer(&mut self, env: &StoreEnv, region: Region, meta: metapb::Peer) -> Peer {
        let e = self.cfg.raft_election_timeout_ticks;
        let ticks = self.rng.gen_range(e..2 * e);
        Peer::with_election_ticks(env, region, meta, ticks).expect("peer from disk")
    }

    /// A flush point: every write so far is durable.
    pub(super) fn flush_point(&mut self, store: StoreId) {
        let st = self.store(store);
        let up = st.up.as_ref().expect("up");
        let dump = |t: &sled::Tree| -> Vec<(Vec<u8>, Vec<u8>)> {
            t.iter()
                .map(|kv| {
                    let (k, v) = kv.expect("read tree");
                    (k.to_vec(), v.to_vec())
                })
                .collect()
        };
        st.image = (dump(&up.env.engines.kv), dump(&up.env.engines.raft));
    }

    pub(super) fn flush_done(&mut self, store: StoreId, incarnation: u64) {
        let st = self.store(store);
        if st.incarnation != incarnation || st.up.is_none() {
            return;
        }
        self.flush_point(store);
        let up = self.store(store).up.as_mut().expect("up");
        up.flush_scheduled = false;
        let done = std::mem::take(&mut up.persist);
        for (region, (peer_id, number)) in done {
            let same = self.peer_mut(store, region).map(|p| p.meta().id) == Some(peer_id);
            if same {
                self.feed(store, region, |p| p.on_persisted(number));
            }
        }
    }

    /// Crashes `store` now: everything after its last flush point is lost.
    pub fn crash(&mut self, store: StoreId) {
        let Some(up) = self.store(store).up.take() else {
            return;
        };
        self.stats.crashes += 1;
        self.stats.lost_readies += up.persist.len() as u64;
        // Dropping the peers drops their callbacks: clients see the
        // commands in flight as undetermined.
        drop(up);
        let d = self.rng.gen_range(200 * MS..2 * SEC);
        self.schedule(d, Event::Restart(store));
    }

    pub(super) fn restart(&mut self, store: StoreId) {
        if self.store(store).up.is_some() {
            return;
        }
        let image = self.store(store).image.clone();
        let env = self.open_env(store, Some(image));
        self.start_store(store, env);
        let regions: Vec<RegionId> = self
            .store(store)
            .up
            .as_ref()
            .expect("up")
            .peers
            .keys()
            .copied()
            .collect();
        for r in regions {
            self.feed(store, r, |_| Effects::default());
        }
    }
}
