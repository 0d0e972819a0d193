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
    /// A peer that has heard from no leader for this long asks the
    /// scheduler whether it is still a member of its region, and destroys
    /// itself if the scheduler's newer region leaves it out (a replica
    /// removed while cut off, which nothing else would ever tell). It asks
    /// again every this long while the silence lasts.
    pub max_leader_missing_duration: Duration,
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
            max_leader_missing_duration: Duration::from_secs(60),
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
            max_leader_missing_duration: Duration::from_secs(2),
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

/// A node's configuration file (TOML). Every key is optional: what is not
/// set keeps its production default; command-line flags override the file.
/// `tessel config` prints this file with every key, its default and what it
/// means.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The address the node listens on and registers with the scheduler
    /// (host:port); `tessel node` uses 127.0.0.1:20160 when neither this nor
    /// a flag sets it.
    pub addr: Option<std::net::SocketAddr>,
    /// The scheduler's address (host:port) the node talks to; `tessel node`
    /// uses 127.0.0.1:2379 when neither this nor a flag sets it.
    pub scheduler: Option<String>,
    /// The directory that holds the store's database (`store/`) and its
    /// snapshot files (`snap/`). Required, here or as a flag.
    pub data_dir: Option<std::path::PathBuf>,
    /// One raft tick in milliseconds (10..=10000); sets
    /// [`Config::raft_base_tick_interval`].
    pub raft_base_tick_ms: Option<u64>,
    /// Ticks between a leader's heartbeats; sets
    /// [`Config::raft_heartbeat_ticks`].
    pub raft_heartbeat_ticks: Option<usize>,
    /// Ticks without a leader before a follower starts an election; must
    /// exceed `raft_heartbeat_ticks`. Sets [`Config::raft_election_timeout_ticks`].
    pub raft_election_timeout_ticks: Option<usize>,
    /// Whether a leader that hears from no quorum steps down; sets
    /// [`Config::raft_check_quorum`].
    pub raft_check_quorum: Option<bool>,
    /// Whether candidates run a pre-vote first; sets [`Config::raft_pre_vote`].
    pub raft_pre_vote: Option<bool>,
    /// Upper bound in bytes on the entries in one append message (positive);
    /// sets [`Config::raft_max_size_per_msg`].
    pub raft_max_size_per_msg_bytes: Option<u64>,
    /// How many append messages may be in flight to one follower (positive);
    /// sets [`Config::raft_max_inflight_msgs`].
    pub raft_max_inflight_msgs: Option<usize>,
    /// Milliseconds between a leader's checks for log compaction; sets
    /// [`Config::raft_log_gc_tick_interval`].
    pub raft_log_gc_tick_ms: Option<u64>,
    /// Applied entries the log may hold before the leader compacts it
    /// (positive); sets [`Config::raft_log_gc_count_limit`].
    pub raft_log_gc_count_limit: Option<u64>,
    /// Milliseconds between a leader's split checks of its region; sets
    /// [`Config::split_region_check_tick_interval`].
    pub split_region_check_tick_ms: Option<u64>,
    /// Size in bytes above which a region is split; sets
    /// [`Config::region_max_size_bytes`].
    pub region_max_size_bytes: Option<u64>,
    /// Running size in bytes at which the split key is chosen; must be
    /// positive and below `region_max_size_bytes`. Sets
    /// [`Config::region_split_size_bytes`].
    pub region_split_size_bytes: Option<u64>,
    /// Milliseconds between a leader's region reports to the scheduler;
    /// sets [`Config::region_heartbeat_tick_interval`].
    pub region_heartbeat_tick_ms: Option<u64>,
    /// Milliseconds between the store's reports to the scheduler; sets
    /// [`Config::store_heartbeat_tick_interval`].
    pub store_heartbeat_tick_ms: Option<u64>,
    /// Size in bytes of the chunks snapshots are sent in (4 KiB..=8 MiB);
    /// sets [`Config::snapshot_chunk_size_bytes`].
    pub snapshot_chunk_size_bytes: Option<usize>,
    /// Size in bytes of sled's page cache for the store; sets
    /// [`Config::sled_cache_capacity_bytes`].
    pub sled_cache_capacity_bytes: Option<u64>,
    /// Milliseconds without a leader after which a peer asks the scheduler
    /// whether it was removed; sets [`Config::max_leader_missing_duration`].
    pub max_leader_missing_ms: Option<u64>,
}

impl ConfigFile {
    /// Parses a file's text; unknown keys and wrong types are errors.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The production defaults with this file's values on top, checked.
    pub fn to_config(&self) -> Result<Config, String> {
        let mut c = Config::default();
        let ms = Duration::from_millis;
        macro_rules! set {
            ($field:ident, $value:expr) => {
                if let Some(v) = $value {
                    c.$field = v;
                }
            };
        }
        set!(raft_base_tick_interval, self.raft_base_tick_ms.map(ms));
        set!(raft_heartbeat_ticks, self.raft_heartbeat_ticks);
        set!(
            raft_election_timeout_ticks,
            self.raft_election_timeout_ticks
        );
        set!(raft_check_quorum, self.raft_check_quorum);
        set!(raft_pre_vote, self.raft_pre_vote);
        set!(raft_max_size_per_msg, self.raft_max_size_per_msg_bytes);
        set!(raft_max_inflight_msgs, self.raft_max_inflight_msgs);
        set!(raft_log_gc_tick_interval, self.raft_log_gc_tick_ms.map(ms));
        set!(raft_log_gc_count_limit, self.raft_log_gc_count_limit);
        set!(
            split_region_check_tick_interval,
            self.split_region_check_tick_ms.map(ms)
        );
        set!(region_max_size_bytes, self.region_max_size_bytes);
        set!(region_split_size_bytes, self.region_split_size_bytes);
        set!(
            region_heartbeat_tick_interval,
            self.region_heartbeat_tick_ms.map(ms)
        );
        set!(
            store_heartbeat_tick_interval,
            self.store_heartbeat_tick_ms.map(ms)
        );
        set!(snapshot_chunk_size_bytes, self.snapshot_chunk_size_bytes);
        set!(sled_cache_capacity_bytes, self.sled_cache_capacity_bytes);
        set!(
            max_leader_missing_duration,
            self.max_leader_missing_ms.map(ms)
        );
        c.validate()?;
        Ok(c)
    }
}

impl Config {
    /// Refuses settings a store cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        let tick = self.raft_base_tick_interval;
        if tick < Duration::from_millis(10) || tick > Duration::from_secs(10) {
            return Err(format!(
                "raft_base_tick_ms must be 10..10000, not {}",
                tick.as_millis()
            ));
        }
        if self.raft_heartbeat_ticks == 0 {
            return Err("raft_heartbeat_ticks must be at least 1".into());
        }
        if self.raft_election_timeout_ticks <= self.raft_heartbeat_ticks {
            return Err("raft_election_timeout_ticks must exceed raft_heartbeat_ticks".into());
        }
        if self.raft_max_inflight_msgs == 0 || self.raft_max_size_per_msg == 0 {
            return Err(
                "raft_max_inflight_msgs and raft_max_size_per_msg_bytes must be positive".into(),
            );
        }
        if self.region_split_size_bytes == 0
            || self.region_split_size_bytes >= self.region_max_size_bytes
        {
            return Err(
                "region_split_size_bytes must be positive and below region_max_size_bytes".into(),
            );
        }
        if self.raft_log_gc_count_limit == 0 {
            return Err("raft_log_gc_count_limit must be positive".into());
        }
        if self.snapshot_chunk_size_bytes < 4096 || self.snapshot_chunk_size_bytes > 8 * 1024 * 1024
        {
            return Err("snapshot_chunk_size_bytes must be 4 KiB..8 MiB".into());
        }
        let election = tick * self.raft_election_timeout_ticks as u32;
        if self.max_leader_missing_duration < 2 * election {
            return Err(format!(
                "max_leader_missing_ms must be at least two election timeouts ({} ms)",
                (2 * election).as_millis()
            ));
        }
        Ok(())
    }

    /// A configuration file with every key at its production default,
    /// each with what it means.
    pub fn documented_toml() -> String {
        let c = Config::default();
        format!(
            r#"# tessel node configuration. Every key is optional; flags override.

# Where the node listens and is reached (host:port).
# addr = "127.0.0.1:20160"
# The scheduler's address (host:port).
# scheduler = "127.0.0.1:2379"
# Where the store keeps its data.
# data_dir = "/var/lib/tessel/node"

# One raft tick; every raft timing below counts in ticks.
raft_base_tick_ms = {}
# A leader sends heartbeats every this many ticks.
raft_heartbeat_ticks = {}
# A follower that hears no leader for this many ticks (randomised up to
# twice as many) starts an election.
raft_election_timeout_ticks = {}
# A leader that hears from no quorum for an election timeout steps down.
raft_check_quorum = {}
# Candidates first ask whether they could win, so a rejoining node cannot
# depose a healthy leader.
raft_pre_vote = {}
# Upper bound on the entries' bytes in one append message.
raft_max_size_per_msg_bytes = {}
# Append messages in flight to one follower.
raft_max_inflight_msgs = {}
# How often a leader considers compacting its log.
raft_log_gc_tick_ms = {}
# The log is compacted once it holds this many applied entries.
raft_log_gc_count_limit = {}
# How often a leader has its region measured for a split.
split_region_check_tick_ms = {}
# A region larger than this is split...
region_max_size_bytes = {}
# ...where its running size passes this.
region_split_size_bytes = {}
# How often a leader reports its region to the scheduler.
region_heartbeat_tick_ms = {}
# How often the store reports itself to the scheduler.
store_heartbeat_tick_ms = {}
# Snapshots travel between nodes in chunks of this size.
snapshot_chunk_size_bytes = {}
# sled's page cache.
sled_cache_capacity_bytes = {}
# A peer that hears no leader for this long asks the scheduler whether it
# was removed from its region (and destroys itself if so).
max_leader_missing_ms = {}
"#,
            c.raft_base_tick_interval.as_millis(),
            c.raft_heartbeat_ticks,
            c.raft_election_timeout_ticks,
            c.raft_check_quorum,
            c.raft_pre_vote,
            c.raft_max_size_per_msg,
            c.raft_max_inflight_msgs,
            c.raft_log_gc_tick_interval.as_millis(),
            c.raft_log_gc_count_limit,
            c.split_region_check_tick_interval.as_millis(),
            c.region_max_size_bytes,
            c.region_split_size_bytes,
            c.region_heartbeat_tick_interval.as_millis(),
            c.store_heartbeat_tick_interval.as_millis(),
            c.snapshot_chunk_size_bytes,
            c.sled_cache_capacity_bytes,
            c.max_leader_missing_duration.as_millis(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_is_the_defaults() {
        let f = ConfigFile::parse(&Config::documented_toml()).unwrap();
        let c = f.to_config().unwrap();
        let d = Config::default();
        assert_eq!(c.raft_base_tick_interval, d.raft_base_tick_interval);
        assert_eq!(c.region_max_size_bytes, d.region_max_size_bytes);
        assert_eq!(c.sled_cache_capacity_bytes, d.sled_cache_capacity_bytes);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(ConfigFile::parse("raft_base_tick_ms = \"fast\"").is_err());
        assert!(ConfigFile::parse("no_such_knob = 1").is_err());
        let e = ConfigFile::parse("region_split_size_bytes = 999999999999")
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(e.contains("region_split_size_bytes"), "{e}");
        let f =
            ConfigFile::parse("raft_base_tick_ms = 200\nraft_election_timeout_ticks = 20").unwrap();
        assert_eq!(
            f.to_config().unwrap().raft_base_tick_interval,
            Duration::from_millis(200)
        );
    }
}
