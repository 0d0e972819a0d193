//! Process-wide Prometheus metrics (served on a node's or the scheduler's
//! status port at `/metrics`). Nodes sharing a process (the playground)
//! share these series.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, register_histogram, register_int_counter, register_int_counter_vec,
    register_int_gauge, Encoder, Histogram, IntCounter, IntCounterVec, IntGauge, TextEncoder,
};

fn latency_buckets() -> Vec<f64> {
    // 50 us .. ~3 s.
    exponential_buckets(0.000_05, 2.0, 17).expect("valid buckets")
}

/// Gauge of region peers running on this process's stores (a count,
/// raised when a peer actor starts and lowered when it stops).
pub static REGIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tessel_regions",
        "Region peers running on this process's stores"
    )
    .expect("metric registers once")
});
/// Gauge of region peers on this process that currently lead their
/// region (a count).
pub static LEADERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tessel_leaders", "Region peers that lead their region")
        .expect("metric registers once")
});
/// Counts commands a leader handed to raft as proposals.
pub static PROPOSALS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tessel_proposals_total",
        "Commands proposed to raft by leaders"
    )
    .expect("metric registers once")
});
/// Counts reads served through ReadIndex, once the applied index has
/// caught up with the confirmed read index.
pub static READS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tessel_read_index_reads_total", "Reads served by ReadIndex")
        .expect("metric registers once")
});
/// Histogram, in log entries, of how far the slowest follower's matched
/// index is behind the leader's last index; observed each time a leader
/// builds its region heartbeat.
pub static LOG_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tessel_raft_log_lag_entries",
        "On leaders, at each region heartbeat: entries the slowest follower is behind",
        exponential_buckets(1.0, 4.0, 10).expect("valid buckets")
    )
    .expect("metric registers once")
});
/// Histogram, in seconds, of one turn of a peer actor's Ready loop
/// (persist without fsync, send, apply).
pub static READY_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tessel_ready_apply_duration_seconds",
        "One turn of a peer's Ready loop: persist (no fsync), send, apply",
        latency_buckets()
    )
    .expect("metric registers once")
});
/// Histogram, in seconds, of one store writer flush (fsync), which may
/// cover the writes of many Readies.
pub static FSYNC_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tessel_fsync_duration_seconds",
        "One store writer flush (fsync) covering many Readies",
        latency_buckets()
    )
    .expect("metric registers once")
});
/// Counts snapshot files sent and received, labelled by `direction`
/// (`sent`, `received`) and `outcome` (`ok`, `failed`).
pub static SNAPSHOTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tessel_snapshots_total",
        "Snapshot files sent and received, by outcome",
        &["direction", "outcome"]
    )
    .expect("metric registers once")
});
/// Counts region peers stopped by an error of their own; the store then
/// restarts them from disk.
pub static PEER_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tessel_peer_failures_total",
        "Region peers stopped by an error of their own (and restarted from disk)"
    )
    .expect("metric registers once")
});
/// Gauge of regions whose peer on this process failed more often than
/// the store's restart limit and is left stopped (a count; never lowered).
pub static FAILED_REGIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tessel_failed_regions",
        "Regions whose peer here failed too often and is not restarted"
    )
    .expect("metric registers once")
});
/// Counts Split admin commands applied by peers (every replica counts
/// its own).
pub static SPLITS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tessel_splits_applied_total", "Splits applied by peers")
        .expect("metric registers once")
});
/// Counts peers that destroyed themselves after the scheduler's region
/// showed them removed (stale-peer GC), or after a tombstone notice.
pub static STALE_PEERS_DESTROYED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tessel_stale_peers_destroyed_total",
        "Peers destroyed because they were found removed from their region"
    )
    .expect("metric registers once")
});

/// Counts membership changes applied by peers (every replica counts its
/// own).
pub static CONF_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tessel_conf_changes_applied_total",
        "Membership changes applied by peers"
    )
    .expect("metric registers once")
});
/// Counts committed membership changes raft refused to apply (a bug: the
/// region checks the same rules first); each is logged and skipped.
pub static FAILED_CONF_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tessel_conf_changes_refused_total",
        "Committed membership changes raft refused and the peer skipped"
    )
    .expect("metric registers once")
});

/// Counts client requests to the Kv service, labelled by `call` (`get`,
/// `put`, `scan`, `batch_put`, ...) and `outcome` (`ok`, `region_error`,
/// `failed`).
pub static KV_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tessel_kv_requests_total",
        "Client requests by call and outcome",
        &["call", "outcome"]
    )
    .expect("metric registers once")
});
/// Histogram, in seconds, of client requests to the Kv service, from
/// arrival to answer.
pub static KV_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tessel_kv_request_duration_seconds",
        "Client requests, from arrival to answer",
        latency_buckets()
    )
    .expect("metric registers once")
});
/// Gauge of regions the scheduler knows, updated on every region
/// heartbeat it handles.
pub static SCHEDULER_REGIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tessel_scheduler_regions", "Regions the scheduler knows")
        .expect("metric registers once")
});
/// Gauge of stores the scheduler knows, updated on every region
/// heartbeat it handles.
pub static SCHEDULER_STORES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tessel_scheduler_stores", "Stores the scheduler knows")
        .expect("metric registers once")
});
/// Counts region heartbeats the scheduler received, refused ones
/// included.
pub static SCHEDULER_HEARTBEATS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tessel_scheduler_region_heartbeats_total",
        "Region heartbeats received"
    )
    .expect("metric registers once")
});

/// Counts operators the scheduler dropped unfinished after their timeout.
pub static OPERATORS_TIMED_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tessel_scheduler_operators_timed_out_total",
        "Operators dropped unfinished after their timeout"
    )
    .expect("metric registers once")
});

/// Registers every series, so a scrape shows them all from the start (a
/// series appears only once touched otherwise).
pub fn register_all() {
    for g in [&REGIONS, &LEADERS, &SCHEDULER_REGIONS, &SCHEDULER_STORES] {
        LazyLock::force(g);
    }
    for c in [
        &PROPOSALS,
        &READS,
        &SPLITS,
        &CONF_CHANGES,
        &FAILED_CONF_CHANGES,
        &STALE_PEERS_DESTROYED,
        &SCHEDULER_HEARTBEATS,
        &OPERATORS_TIMED_OUT,
    ] {
        LazyLock::force(c);
    }
    for h in [&LOG_LAG, &READY_DURATION, &FSYNC_DURATION, &KV_DURATION] {
        LazyLock::force(h);
    }
    // Labelled series exist only once their labels are used; start the
    // usual ones at zero so rates work from the first scrape.
    for direction in ["sent", "received"] {
        for outcome in ["ok", "failed"] {
            SNAPSHOTS.with_label_values(&[direction, outcome]);
        }
    }
    for call in [
        "get",
        "put",
        "delete",
        "scan",
        "batch_get",
        "batch_put",
        "batch_delete",
    ] {
        for outcome in ["ok", "region_error", "failed"] {
            KV_REQUESTS.with_label_values(&[call, outcome]);
        }
    }
}

/// Every metric in Prometheus's text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Serves `/metrics` and `/status` (the JSON `status` returns) on
/// `listener` until `shutdown`. Must run on a tokio runtime.
pub async fn serve_status<F, Fut>(
    listener: std::net::TcpListener,
    status: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = serde_json::Value> + Send + 'static,
{
    use axum::routing::get;
    register_all();
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = axum::Router::new()
        .route("/metrics", get(|| async { render() }))
        .route(
            "/status",
            get(move || {
                let status = status.clone();
                async move { axum::Json(status().await) }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
