//! Store configuration: every knob of a store, with production defaults and
//! the scenario values used by the test kit.

use std::time::Duration;

/// Knobs of one store. Ticks are counted in `raft_base_tick_interval`s.
#[derive(Debug, Clone)]
pub struct Config {
    /// One raft-rs `tick()`; every other raft timing is a multiple of it.
    pub raft_base_tick_interval: Duration,
    /// A leader sends heartbeats every this many ticks.
    pub raft_heartbeat_ticks: usize,
    /// A follower that hears no leader for this many ticks (randomised up to
    /// twice as many, Raft thesis §3.4) starts an election.
    pub raft_election_timeout_ticks: usize,
    /// A leader that hears from no quorum for an election timeout steps down
    /// (Raft thesis §6.2), and followers ignore votes while they hear one.
    pub raft_check_quorum: bool,
    /// Candidates first ask whether they could win (thesis §9.6), so a
    /// rejoining peer cannot depose a healthy leader by inflating its term.
    /// With it (or check-quorum) a peer also answers a stale leader's
    /// messages with its higher term, without which a leader that missed a
    /// term change is never told and its followers stay deaf to it.
    pub raft_pre_vote: bool,
    /// Upper bound on the bytes of entries in one append message.
    pub raft_max_size_per_msg: u64,
    /// How many append messages may be in flight to one follower.
    pub raft_max_inflight_msgs: usize,
    /// How often a leader considers compacting its log.
    pub raft_log_gc_tick_interval: Duration,
    /// The leader proposes CompactLog once `applied - first_index` reaches this.
    pub raft_log_gc_count_limit: u64,
    /// How often a leader asks the split checker about its region.
    pub split_region_check_tick_interval: Duration,
    /// A region larger than this is split.
    pub region_max_size_bytes: u64,
    /// The split key is where the running size of the region passes this.
    pub region_split_size_bytes: u64,
    /// How often a leader reports its region to the scheduler.
    pub region_heartbeat_tick_interval: Duration,
    /// How often a store reports itself to the scheduler.
    pub store_heartbeat_tick_interval: Duration,
    /// Snapshot files travel between stores in chunks of this size.
    pub snapshot_chunk_size_bytes: usize,
    /// sled's page cache for the store; several stores may share a process.
    pub sled_cache_capacity_bytes: u64,
}

impl Default for Config {
    /// Values for a production node.
    fn default() -> Self {
        Config {
            raft_base_tick_interval: Duration::from_millis(100),
            raft_heartbeat_ticks: 2,
            raft_election_timeout_ticks: 10,
            raft_check_quorum: true,
            raft_pre_vote: true,
            raft_max_size_per_msg: 1024 * 1024,
            raft_max_inflight_msgs: 256,
            raft_log_gc_tick_interval: Duration::from_secs(3),
            raft_log_gc_count_limit: 10_000,
            split_region_check_tick_interval: Duration::from_secs(10),
            region_max_size_bytes: 144 * 1024 * 1024,
            region_split_size_bytes: 96 * 1024 * 1024,
            region_heartbeat_tick_interval: Duration::from_secs(1),
            store_heartbeat_tick_interval: Duration::from_secs(10),
            snapshot_chunk_size_bytes: 1024 * 1024,
            sled_cache_capacity_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Config {
    /// The shared settings of the acceptance scenarios (SCENARIOS.md): 50 ms
    /// ticks, heartbeat every 2 ticks, election after 10, GC check every 50 ms,
    /// split check every 100 ms, region heartbeat every 100 ms. Log GC and
    /// split are effectively off until a scenario lowers their limits.
    ///
    /// Check-quorum is off: the scenarios drop up to half of all messages,
    /// and under such loss a two-peer region with check-quorum loses its
    /// leader every few hundred milliseconds. Production keeps it on.
    pub fn for_tests() -> Self {
        Config {
            raft_check_quorum: false,
            raft_base_tick_interval: Duration::from_millis(50),
            raft_heartbeat_ticks: 2,
            raft_election_timeout_ticks: 10,
            raft_log_gc_tick_interval: Duration::from_millis(50),
            raft_log_gc_count_limit: 100_000,
            split_region_check_tick_interval: Duration::from_millis(100),
            region_heartbeat_tick_interval: Duration::from_millis(100),
            store_heartbeat_tick_interval: Duration::from_millis(500),
            snapshot_chunk_size_bytes: 64 * 1024,
            sled_cache_capacity_bytes: 16 * 1024 * 1024,
            ..Config::default()
        }
    }

    /// The leader asks the split checker only once this many bytes were
    /// written to its region since the last check (a sixteenth of the split
    /// size, as TiKV's default).
    pub fn region_split_check_diff(&self) -> u64 {
        (self.region_split_size_bytes / 16).max(1)
    }

    /// How many base ticks make up `interval` (at least one).
    pub fn ticks_of(&self, interval: Duration) -> u64 {
        let base = self.raft_base_tick_interval.as_millis().max(1);
        (interval.as_millis() / base).max(1) as u64
    }
}
