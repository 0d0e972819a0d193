//! `tessel ctl`: an operator's tool for a networked cluster. Data commands
//! go through the routing [`Client`]; membership and split commands are
//! scheduled as operators (or asked of the region's leader) and waited for
//! until the scheduler shows them done. Output is human-readable, or JSON
//! with `--json`; any failure is an error with a clear message (the binary
//! exits non-zero).

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::Subcommand;
use serde_json::{json, Value};
use tokio::time::Instant;

use tessel::client::Client;
use tessel::proto::metapb::{Peer, PeerRole, Region};
use tessel::proto::schedulerpb::{GetRegionResponse, GetStoreResponse, Operator, OperatorKind};
use tessel::region::roles;

#[derive(Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// Write a key.
    Put { key: String, value: String },
    /// Read a key (linearizable).
    Get { key: String },
    /// Delete a key.
    Delete { key: String },
    /// List keys in [start, end); empty end: to the end.
    Scan {
        #[arg(default_value = "")]
        start: String,
        #[arg(default_value = "")]
        end: String,
        /// At most this many pairs (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List regions: range, epoch, peers, leader, size.
    Regions,
    /// Show the region holding a key.
    Region { key: String },
    /// List stores with their addresses and load.
    Stores,
    /// Move a region's leadership to its peer on a store.
    TransferLeader { region: u64, store: u64 },
    /// Add a replica of a region on a store.
    AddPeer { region: u64, store: u64 },
    /// Remove a region's replica from a store (a voter is demoted to a
    /// learner first).
    RemovePeer { region: u64, store: u64 },
    /// Move a region's replica from one store to another: a learner on the
    /// new store catches up, one joint change makes it a voter and the old
    /// replica a learner, then the old replica is removed.
    MovePeer { region: u64, from: u64, to: u64 },
    /// Split the region holding a key so that the key starts a region.
    Split { key: String },
    /// List the operators the scheduler has not yet seen done, with their
    /// age and timeout.
    Operators,
    /// Act on one region's operator.
    Operator {
        #[command(subcommand)]
        action: OperatorAction,
    },
}

/// What `ctl operator` does.
#[derive(Subcommand, Debug, Clone)]
pub enum OperatorAction {
    /// Drop the region's pending operator (a change its leader already
    /// proposed may still apply).
    Cancel { region: u64 },
}

fn operator_text(op: &Operator) -> String {
    let peer = op
        .peer
        .map_or("-".into(), |p| format!("{}@s{}", p.id, p.store_id));
    match op.kind() {
        OperatorKind::Split => format!("split at {}", show_key(&op.split_key)),
        OperatorKind::AddPeer => format!("add peer {peer}"),
        OperatorKind::RemovePeer => format!("remove peer {peer}"),
        OperatorKind::TransferLeader => format!("transfer leader to {peer}"),
        OperatorKind::ReplacePeer => format!(
            "replace peer {} with {peer}",
            op.replaced
                .map_or("-".into(), |p| format!("{}@s{}", p.id, p.store_id))
        ),
        OperatorKind::None => "none".into(),
    }
}

fn operator_json(op: &Operator) -> Value {
    json!({
        "kind": format!("{:?}", op.kind()),
        "peer": op.peer.map(|p| json!({"id": p.id, "store_id": p.store_id})),
        "replaced": op.replaced.map(|p| json!({"id": p.id, "store_id": p.store_id})),
        "split_key": String::from_utf8_lossy(&op.split_key),
    })
}

/// A key for people: quoted, `""` when empty.
pub fn show_key(k: &[u8]) -> String {
    if k.is_empty() {
        "\"\"".into()
    } else {
        format!("{:?}", String::from_utf8_lossy(k))
    }
}

fn region_json(r: &GetRegionResponse) -> Value {
    let region = r.region.clone().unwrap_or_default();
    let e = region.region_epoch.unwrap_or_default();
    json!({
        "id": region.id,
        "start_key": String::from_utf8_lossy(&region.start_key),
        "end_key": String::from_utf8_lossy(&region.end_key),
        "conf_ver": e.conf_ver,
        "version": e.version,
        "peers": region.peers.iter().map(|p| json!({
            "id": p.id,
            "store_id": p.store_id,
            "role": roles::role_name(roles::role(&region, p.id).unwrap_or_default()),
        })).collect::<Vec<_>>(),
        "leader": r.leader.map(|l| json!({"id": l.id, "store_id": l.store_id})),
        "approximate_size": r.approximate_size,
        "pending_peers": r.pending_peers.iter().map(|p| json!({"id": p.id, "store_id": p.store_id})).collect::<Vec<_>>(),
    })
}

fn region_line(r: &GetRegionResponse) -> String {
    let region = r.region.clone().unwrap_or_default();
    format!(
        "{} size {} B",
        region_summary(&region, r.leader),
        r.approximate_size
    )
}

/// One line for a region: range, epoch, peers and leader (`ctl` and the
/// playground shell print the same).
pub fn region_summary(region: &Region, leader: Option<Peer>) -> String {
    let e = region.region_epoch.unwrap_or_default();
    let peers: Vec<String> = region
        .peers
        .iter()
        .map(|p| match roles::role(region, p.id).unwrap_or_default() {
            PeerRole::Voter => format!("{}@s{}", p.id, p.store_id),
            r => format!("{}@s{}({})", p.id, p.store_id, roles::role_name(r)),
        })
        .collect();
    format!(
        "region {} [{}, {}) conf_ver {} version {} peers [{}] leader {}",
        region.id,
        show_key(&region.start_key),
        show_key(&region.end_key),
        e.conf_ver,
        e.version,
        peers.join(", "),
        leader.map_or("unknown".into(), |l| format!("{}@s{}", l.id, l.store_id)),
    )
}

fn store_json(s: &GetStoreResponse) -> Value {
    let store = s.store.clone().unwrap_or_default();
    let stats = s.stats.unwrap_or_default();
    json!({
        "id": store.id,
        "address": store.address,
        "region_count": stats.region_count,
        "used_size": stats.used_size,
    })
}

/// Runs one ctl command against the cluster whose scheduler is at
/// `scheduler`; returns what to print.
/// Membership and split commands wait up to `wait` for the change to show.
pub async fn run(
    scheduler: &str,
    json_out: bool,
    wait: Duration,
    cmd: CtlCommand,
) -> anyhow::Result<String> {
    let client = Client::new(scheduler)?;
    let out = |human: String, v: Value| if json_out { v.to_string() } else { human };
    Ok(match cmd {
        CtlCommand::Put { key, value } => {
            client.put(key.as_bytes(), value.as_bytes()).await?;
            out("OK".into(), json!({"ok": true}))
        }
        CtlCommand::Get { key } => {
            let v = client.get(key.as_bytes()).await?;
            let text = v.as_ref().map(|v| String::from_utf8_lossy(v).to_string());
            out(
                text.clone().unwrap_or_else(|| "(not found)".into()),
                json!({"key": key, "found": v.is_some(), "value": text}),
            )
        }
        CtlCommand::Delete { key } => {
            client.delete(key.as_bytes()).await?;
            out("OK".into(), json!({"ok": true}))
        }
        CtlCommand::Scan { start, end, limit } => {
            let pairs = client.scan(start.as_bytes(), end.as_bytes(), limit).await?;
            let human = pairs
                .iter()
                .map(|(k, v)| format!("{} = {}", show_key(k), String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
                .join("\n");
            let v = pairs
                .iter()
                .map(|(k, v)| json!({"key": String::from_utf8_lossy(k), "value": String::from_utf8_lossy(v)}))
                .collect::<Vec<_>>();
            out(human, Value::Array(v))
        }
        CtlCommand::Regions => {
            let regions = client.scheduler().scan_regions(b"", b"").await?;
            out(
                regions
                    .iter()
                    .map(region_line)
                    .collect::<Vec<_>>()
                    .join("\n"),
                Value::Array(regions.iter().map(region_json).collect()),
            )
        }
        CtlCommand::Region { key } => {
            let r = client.scheduler().get_region(key.as_bytes()).await?;
            if r.region.is_none() {
                bail!("no region holds {key:?} yet");
            }
            out(region_line(&r), region_json(&r))
        }
        CtlCommand::Stores => {
            let stores = client.scheduler().get_all_stores().await?;
            let human = stores
                .iter()
                .map(|s| {
                    let v = store_json(s);
                    format!(
                        "store {} at {} regions {} used {} B",
                        v["id"],
                        v["address"].as_str().unwrap_or(""),
                        v["region_count"],
                        v["used_size"]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out(human, Value::Array(stores.iter().map(store_json).collect()))
        }
        CtlCommand::TransferLeader { region, store } => {
            let r = membership(&client, region, store, OperatorKind::TransferLeader, wait).await?;
            out(region_line(&r), region_json(&r))
        }
        CtlCommand::AddPeer { region, store } => {
            let r = membership(&client, region, store, OperatorKind::AddPeer, wait).await?;
            out(region_line(&r), region_json(&r))
        }
        CtlCommand::RemovePeer { region, store } => {
            let r = membership(&client, region, store, OperatorKind::RemovePeer, wait).await?;
            out(region_line(&r), region_json(&r))
        }
        CtlCommand::MovePeer { region, from, to } => {
            let r = move_peer(&client, region, from, to, wait).await?;
            out(region_line(&r), region_json(&r))
        }
        CtlCommand::Split { key } => {
            client.split(key.as_bytes()).await?;
            let r = wait_region(
                || async { client.scheduler().get_region(key.as_bytes()).await },
                |r| {
                    r.region
                        .as_ref()
                        .is_some_and(|g| g.start_key == key.as_bytes())
                },
                wait,
            )
            .await
            .with_context(|| format!("split at {key:?} not visible"))?;
            out(region_line(&r), region_json(&r))
        }
        CtlCommand::Operators => {
            let ops = client.scheduler().list_operators().await?;
            let human = if ops.is_empty() {
                "no pending operators".to_string()
            } else {
                ops.iter()
                    .map(|p| {
                        format!(
                            "region {}: {} (for {:.1} s, dropped after {} s)",
                            p.region_id,
                            operator_text(&p.operator.clone().unwrap_or_default()),
                            p.age_ms as f64 / 1000.0,
                            p.timeout_ms / 1000
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let v = ops
                .iter()
                .map(|p| {
                    json!({
                        "region_id": p.region_id,
                        "operator": operator_json(&p.operator.clone().unwrap_or_default()),
                        "age_ms": p.age_ms,
                        "timeout_ms": p.timeout_ms,
                    })
                })
                .collect();
            out(human, Value::Array(v))
        }
        CtlCommand::Operator {
            action: OperatorAction::Cancel { region },
        } => match client.scheduler().cancel_operator(region).await? {
            Some(op) => out(
                format!("cancelled: {}", operator_text(&op)),
                json!({"region_id": region, "cancelled": operator_json(&op)}),
            ),
            None => bail!("region {region} has no pending operator"),
        },
    })
}

/// Whether the region shows `peer` as a replica in place: a voter whose
/// log the leader no longer reports behind (a learner or a member still
/// waiting for its snapshot is not there yet).
fn voting(r: &GetRegionResponse, peer: &Peer) -> bool {
    r.region
        .as_ref()
        .is_some_and(|g| roles::role(g, peer.id) == Some(PeerRole::Voter))
        && !r.pending_peers.iter().any(|p| p.id == peer.id)
}

fn is_member(r: &GetRegionResponse, peer: &Peer) -> bool {
    r.region
        .as_ref()
        .is_some_and(|g| g.peers.iter().any(|p| p.id == peer.id))
}

/// The region's meta, and that the store exists.
async fn region_and_store(
    client: &Client,
    region_id: u64,
    store_id: u64,
) -> anyhow::Result<Region> {
    let info = client.scheduler().get_region_by_id(region_id).await?;
    let region: Region = info
        .region
        .ok_or_else(|| anyhow!("region {region_id} is not known"))?;
    client
        .scheduler()
        .get_store(store_id)
        .await
        .with_context(|| format!("store {store_id}"))?;
    Ok(region)
}

fn peer_on(region: &Region, store_id: u64) -> Option<Peer> {
    region
        .peers
        .iter()
        .find(|p| p.store_id == store_id)
        .copied()
}

async fn new_peer(client: &Client, store_id: u64) -> anyhow::Result<Peer> {
    Ok(Peer {
        id: tessel::scheduler::SchedulerClient::alloc_id(client.scheduler()).await?,
        store_id,
    })
}

/// Schedules a membership operator and waits until the scheduler shows it.
async fn membership(
    client: &Client,
    region_id: u64,
    store_id: u64,
    kind: OperatorKind,
    wait: Duration,
) -> anyhow::Result<GetRegionResponse> {
    let region = region_and_store(client, region_id, store_id).await?;
    let peer: Peer = match (kind, peer_on(&region, store_id)) {
        (OperatorKind::AddPeer, Some(p)) => bail!("store {store_id} already has peer {}", p.id),
        (OperatorKind::AddPeer, None) => new_peer(client, store_id).await?,
        (_, None) => bail!("region {region_id} has no peer on store {store_id}"),
        (_, Some(p)) => p,
    };
    let op = Operator {
        kind: kind as i32,
        peer: Some(peer),
        split_key: vec![],
        replaced: None,
    };
    let what = match kind {
        OperatorKind::AddPeer => format!("adding peer {} on store {store_id}", peer.id),
        OperatorKind::RemovePeer => format!("removing peer {} from store {store_id}", peer.id),
        _ => format!("moving the leadership to store {store_id}"),
    };
    let done = move |r: &GetRegionResponse| match kind {
        OperatorKind::AddPeer => voting(r, &peer),
        OperatorKind::RemovePeer => !is_member(r, &peer),
        _ => r.leader.is_some_and(|l| l.id == peer.id),
    };
    carry_out(client, region_id, op, done, what, wait).await
}

/// Schedules a ReplacePeer moving the region's replica on `from` to `to`.
async fn move_peer(
    client: &Client,
    region_id: u64,
    from: u64,
    to: u64,
    wait: Duration,
) -> anyhow::Result<GetRegionResponse> {
    let region = region_and_store(client, region_id, to).await?;
    let Some(old) = peer_on(&region, from) else {
        bail!("region {region_id} has no peer on store {from}");
    };
    if let Some(p) = peer_on(&region, to) {
        bail!("store {to} already has peer {}", p.id);
    }
    let peer = new_peer(client, to).await?;
    let op = Operator {
        kind: OperatorKind::ReplacePeer as i32,
        peer: Some(peer),
        split_key: vec![],
        replaced: Some(old),
    };
    let what = format!(
        "moving peer {} on store {from} to peer {} on store {to}",
        old.id, peer.id
    );
    let done = move |r: &GetRegionResponse| voting(r, &peer) && !is_member(r, &old);
    carry_out(client, region_id, op, done, what, wait).await
}

/// Schedules `op` and waits until `done` holds for the scheduler's view of
/// the region; gives up after `wait`, cancelling the operator first.
async fn carry_out(
    client: &Client,
    region_id: u64,
    op: Operator,
    done: impl Fn(&GetRegionResponse) -> bool,
    what: String,
    wait: Duration,
) -> anyhow::Result<GetRegionResponse> {
    client.scheduler().schedule_operator(region_id, op).await?;
    let waited = wait_region(
        || async { client.scheduler().get_region_by_id(region_id).await },
        done,
        wait,
    )
    .await;
    if waited.is_ok() {
        return waited;
    }
    // Giving up must not leave the change to happen minutes later: the
    // operator is cancelled before saying so.
    let cancelled = client.scheduler().cancel_operator(region_id).await;
    let after = match cancelled {
        Ok(Some(_)) => "the operator is cancelled; if the region's leader had already proposed \
                        the change it may still apply (check with `ctl regions`)"
            .to_string(),
        Ok(None) => "the scheduler had already dropped the operator".to_string(),
        Err(e) => format!("cancelling the operator failed too: {e}"),
    };
    bail!(
        "region {region_id}: {what} did not finish within {} s; {after}",
        wait.as_secs()
    )
}

/// Polls `fetch` until `done` holds, for at most `wait`.
async fn wait_region<F, Fut>(
    fetch: F,
    done: impl Fn(&GetRegionResponse) -> bool,
    wait: Duration,
) -> anyhow::Result<GetRegionResponse>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = tessel::Result<GetRegionResponse>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(r) = fetch().await {
            if done(&r) {
                return Ok(r);
            }
        }
        if Instant::now() > deadline {
            bail!("timed out after {} s", wait.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
