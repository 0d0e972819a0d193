//! The networked service as operators run it: a scheduler process and node
//! processes on loopback ports, driven through the routing client. Every
//! wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessel::client::Client;

/// A child process of the `tessel` binary, killed (SIGKILL) on drop.
pub(super) struct Proc {
    child: Child,
    addr: String,
    /// Where /metrics and /status are served, if asked for.
    status: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tessel <args>` and waits (10 s at most) for its ready line,
/// "... serving at ADDR".
pub(super) fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessel"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the tessel binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut status = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("status at ").nth(1) {
                status = Some(addr.trim().to_string());
            }
            if let Some(addr) = line.split("serving at ").nth(1) {
                let _ = tx.send((addr.trim().to_string(), status.clone()));
            }
        }
    });
    let (addr, status) = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("tessel {args:?} never got ready"));
    Proc {
        child,
        addr,
        status,
    }
}

pub(super) struct Cluster {
    dir: PathBuf,
    scheduler: Option<Proc>,
    scheduler_addr: String,
    nodes: Vec<Option<Proc>>,
    node_addrs: Vec<String>,
}

impl Cluster {
    pub(super) fn start(dir: &Path, nodes: usize) -> Cluster {
        let sdir = dir.join("scheduler");
        let scheduler = spawn(&[
            "scheduler",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            sdir.to_str().unwrap(),
        ]);
        let scheduler_addr = scheduler.addr.clone();
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            scheduler: Some(scheduler),
            scheduler_addr,
            nodes: Vec::new(),
            node_addrs: Vec::new(),
        };
        for i in 0..nodes {
            c.nodes.push(None);
            c.node_addrs.push("127.0.0.1:0".into());
            c.start_node(i);
        }
        c
    }

    pub(super) fn start_node(&mut self, i: usize) {
        let ndir = self.dir.join(format!("node{i}"));
        // A restarted node keeps its address: the scheduler has it on file.
        let addr = self.node_addrs[i].clone();
        let p = spawn(&[
            "node",
            "--status-addr",
            "127.0.0.1:0",
            "--addr",
            &addr,
            "--scheduler",
            &self.scheduler_addr,
            "--data-dir",
            ndir.to_str().unwrap(),
        ]);
        self.node_addrs[i] = p.addr.clone();
        self.nodes[i] = Some(p);
    }

    /// SIGKILL, as a crash.
    pub(super) fn kill_node(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    pub(super) fn kill_scheduler(&mut self) {
        self.scheduler = None;
    }

    pub(super) fn restart_scheduler(&mut self) {
        let sdir = self.dir.join("scheduler");
        let addr = self.scheduler_addr.clone();
        self.scheduler = Some(spawn(&[
            "scheduler",
            "--addr",
            &addr,
            "--data-dir",
            sdir.to_str().unwrap(),
        ]));
    }

    pub(super) fn client(&self) -> Client {
        Client::new(&self.scheduler_addr)
            .expect("a client")
            .with_timeout(Duration::from_secs(20))
    }
}

/// Waits until the region holding `key` has `n` peers.
pub(super) async fn wait_replicas(client: &Client, key: &[u8], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((r, _)) = client.region_of(key).await {
            // Replicas that vote: a learner still catching up is no replica
            // yet (killing a voter then would leave no quorum).
            if r.peers.len() == n && tessel::region::roles::voters(&r).count() == n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "region never reached {n} replicas"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

#[actix::test]
async fn processes_serve_split_and_survive_kill_9() {
    crate::harness::init();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let client = cluster.client();

    client.put(b"hello", b"world").await.unwrap();
    assert_eq!(
        client.get(b"hello").await.unwrap().as_deref(),
        Some(&b"world"[..])
    );
    wait_replicas(&client, b"hello", 3).await;

    // Pre-split the key space and scan across the regions.
    for i in 0..200 {
        client
            .put(&key(i), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    for split in [50, 100, 150] {
        client.split(&key(split)).await.unwrap();
    }
    let pairs = client.scan(&key(0), &key(200), 0).await.unwrap();
    assert_eq!(pairs.len(), 200);
    assert!(pairs
        .iter()
        .enumerate()
        .all(|(i, (k, _))| *k == key(i as u64)));
    let regions = client.scheduler().scan_regions(b"", b"").await.unwrap();
    assert!(regions.len() >= 4, "{} regions", regions.len());
    // Batches are split by region.
    let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..200).map(|i| (key(i), b"b".to_vec())).collect();
    client.batch_put(&batch).await.unwrap();
    let keys: Vec<Vec<u8>> = (0..200).map(key).collect();
    assert_eq!(client.batch_get(&keys).await.unwrap().len(), 200);

    // kill -9 one node during writes: the cluster keeps serving.
    for r in &regions {
        let start = r.region.as_ref().unwrap().start_key.clone();
        wait_replicas(&client, &start, 3).await;
    }
    cluster.kill_node(1);
    for i in 200..300 {
        client.put(&key(i), b"after-kill").await.unwrap();
    }
    cluster.start_node(1);
    for i in 300..350 {
        client.put(&key(i), b"after-restart").await.unwrap();
    }
    // The restarted node catches up: each of its peers reaches the applied
    // index the other replicas report.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied = |i: usize| -> std::collections::HashMap<u64, u64> {
            let Some(p) = cluster.nodes[i].as_ref() else {
                return Default::default();
            };
            let body = http_get(p.status.as_deref().unwrap(), "/status");
            let json = body.split("\r\n\r\n").nth(1).unwrap_or("");
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            v["regions"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            (
                                r["region_id"].as_u64().unwrap(),
                                r["applied_index"].as_u64().unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let restarted = applied(1);
        let others = [applied(0), applied(2)];
        let caught_up = !restarted.is_empty()
            && others
                .iter()
                .flat_map(|o| o.iter())
                .all(|(region, index)| restarted.get(region).is_some_and(|mine| mine >= index));
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node never caught up: {restarted:?} vs {others:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 everything, restart: every acknowledged write is there.
    for i in 0..3 {
        cluster.kill_node(i);
    }
    cluster.kill_scheduler();
    cluster.restart_scheduler();
    for i in 0..3 {
        cluster.start_node(i);
    }
    let client = cluster.client();
    let pairs = client.scan(&key(0), &key(350), 0).await.unwrap();
    assert_eq!(pairs.len(), 350);
    assert_eq!(
        client.get(&key(250)).await.unwrap().as_deref(),
        Some(&b"after-kill"[..])
    );
    assert_eq!(
        client.get(&key(349)).await.unwrap().as_deref(),
        Some(&b"after-restart"[..])
    );
}

/// Runs `tessel ctl --scheduler <addr> [--json] <args>`; returns (success,
/// stdout, stderr).
fn ctl(scheduler: &str, json: bool, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessel"));
    cmd.args(["ctl", "--scheduler", scheduler]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("tessel ctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn must_ctl(scheduler: &str, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = ctl(scheduler, true, args);
    assert!(ok, "ctl {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?} printed {out:?}: {e}"))
}

#[actix::test]
async fn ctl_moves_a_replica_and_bad_input_is_refused() {
    use tessel::proto::kvpb::{kv_client::KvClient, Context, GetRequest};
    crate::harness::init();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let client = cluster.client();
    let s = cluster.scheduler_addr.clone();
    assert_eq!(must_ctl(&s, &["put", "a", "1"])["ok"], true);
    assert_eq!(must_ctl(&s, &["get", "a"])["value"], "1");
    wait_replicas(&client, b"a", 3).await;

    // A fourth node; move one replica of a's region onto it.
    cluster.nodes.push(None);
    cluster.node_addrs.push("127.0.0.1:0".into());
    cluster.start_node(3);
    let region = must_ctl(&s, &["region", "a"]);
    let region_id = region["id"].as_u64().unwrap().to_string();
    let stores = must_ctl(&s, &["stores"]);
    let new_store = stores
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["address"] == cluster.node_addrs[3].as_str())
        .expect("the fourth node registered")["id"]
        .as_u64()
        .unwrap()
        .to_string();
    let leaving = region["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["store_id"].as_u64().unwrap())
        .find(|st| Some(*st) != region["leader"]["store_id"].as_u64())
        .unwrap()
        .to_string();
    must_ctl(&s, &["add-peer", &region_id, &new_store]);
    must_ctl(&s, &["transfer-leader", &region_id, &new_store]);
    let after = must_ctl(&s, &["remove-peer", &region_id, &leaving]);
    assert_eq!(after["leader"]["store_id"].to_string(), new_store);
    assert_eq!(after["peers"].as_array().unwrap().len(), 3);
    assert_eq!(client.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
    // On to a store without a replica (the scheduler may have re-added one
    // on the store just left), as one joint change; the leader itself
    // moves, so it hands its leadership over first.
    let now = must_ctl(&s, &["region", "a"]);
    let holds = |st: &serde_json::Value| {
        now["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["store_id"] == st["id"])
    };
    let free = stores
        .as_array()
        .unwrap()
        .iter()
        .find(|st| !holds(st))
        .expect("a store without a replica")["id"]
        .to_string();
    let moved = must_ctl(&s, &["move-peer", &region_id, &new_store, &free]);
    let peers = moved["peers"].as_array().unwrap();
    let on = |st: &str| {
        let st: u64 = st.parse().expect("a store id");
        peers
            .iter()
            .find(move |p| p["store_id"].as_u64() == Some(st))
    };
    assert!(on(&new_store).is_none(), "{moved}");
    assert_eq!(on(&free).expect("moved")["role"], "voter", "{moved}");
    assert_ne!(moved["leader"]["store_id"].to_string(), new_store);
    // The store just left holds no replica of the region now.
    let leaving = new_store;
    assert_eq!(client.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
    // A split through ctl, then the regions list shows both halves.
    must_ctl(&s, &["split", "m"]);
    assert_eq!(must_ctl(&s, &["regions"]).as_array().unwrap().len(), 2);

    // Errors exit non-zero with a message.
    let (ok, _, err) = ctl(&s, false, &["transfer-leader", "999", "1"]);
    assert!(!ok && err.contains("999"), "{err}");

    // An oversized value is refused with a clear error, nothing written.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let e = client.put(b"big", &big).await.unwrap_err().to_string();
    assert!(e.contains("invalid") && e.contains("limit"), "{e}");
    assert_eq!(client.get(b"big").await.unwrap(), None);

    // Garbage on the gRPC port does not take the node down.
    for addr in &cluster.node_addrs {
        use std::io::Write;
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let _ = sock.write_all(b"\x00\x01garbage that is not HTTP/2\r\n\r\n\xff\xfe");
    }
    // A request with a stale epoch is answered EpochNotMatch.
    let (r, _) = client.region_of(b"a").await.unwrap();
    let leader_addr = {
        let l = client.region_of(b"a").await.unwrap().1.unwrap();
        client
            .scheduler()
            .get_store(l.store_id)
            .await
            .unwrap()
            .store
            .unwrap()
            .address
    };
    let mut kv = KvClient::connect(format!("http://{leader_addr}"))
        .await
        .unwrap();
    let mut stale = r.region_epoch.unwrap();
    stale.version -= 1;
    let resp = kv
        .get(GetRequest {
            context: Some(Context {
                region_id: r.id,
                region_epoch: Some(stale),
                peer: None,
            }),
            key: b"a".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let err = resp.region_error.expect("a region error");
    assert!(
        err.epoch_not_match.is_some() || err.not_leader.is_some(),
        "{err:?}"
    );
    for p in cluster.nodes.iter_mut().flatten() {
        assert!(p.child.try_wait().unwrap().is_none(), "a node died");
    }

    // Every node serves Prometheus metrics and a JSON status; together the
    // statuses list both regions' three replicas.
    let mut replicas = 0;
    for p in cluster.nodes.iter().flatten() {
        let status = p.status.as_deref().expect("a status address");
        let metrics = http_get(status, "/metrics");
        for name in [
            "tessel_regions",
            "tessel_leaders",
            "tessel_proposals_total",
            "tessel_fsync_duration_seconds",
            "tessel_kv_requests_total",
        ] {
            assert!(
                metrics.contains(name),
                "{name} missing from {status}/metrics"
            );
        }
        let body = http_get(status, "/status");
        let json = body.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(v["store_id"].as_u64().unwrap() > 0);
        replicas += v["regions"].as_array().unwrap().len();
    }
    assert!(replicas >= 6, "{replicas} replicas listed");
    assert_eq!(client.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));

    // Operators: a change that cannot finish (leadership for a replica on
    // a dead node) gives up after --timeout, says so, and leaves no
    // operator behind to carry it out later.
    let (ok, _, err) = ctl(&s, false, &["operator", "cancel", "999"]);
    assert!(!ok && err.contains("no pending operator"), "{err}");
    let leaving_addr = stores
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["id"].as_u64() == leaving.parse().ok())
        .expect("the leaving store is listed")["address"]
        .as_str()
        .unwrap()
        .to_string();
    let i = cluster
        .node_addrs
        .iter()
        .position(|a| *a == leaving_addr)
        .expect("a node at the leaving store's address");
    must_ctl(&s, &["add-peer", &region_id, &leaving]);
    cluster.kill_node(i);
    let (ok, _, err) = ctl(
        &s,
        false,
        &["transfer-leader", &region_id, &leaving, "--timeout", "2"],
    );
    assert!(
        !ok && err.contains("did not finish within 2 s") && err.contains("cancelled"),
        "{err}"
    );
    // A replica on a dead node becomes a member but never catches up:
    // add-peer does not report it done.
    let right_id = must_ctl(&s, &["region", "z"])["id"]
        .as_u64()
        .unwrap()
        .to_string();
    let (ok, out, err) = ctl(
        &s,
        false,
        &["add-peer", &right_id, &leaving, "--timeout", "2"],
    );
    assert!(
        !ok && err.contains("did not finish within 2 s"),
        "add-peer to a dead node: {out} {err}"
    );
    let pending = must_ctl(&s, &["operators"]);
    assert!(
        !pending
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["region_id"].as_u64() == region_id.parse().ok()),
        "{pending}"
    );
    assert_eq!(client.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
}

/// A plain HTTP/1.1 GET; returns the whole response.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = sock.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "GET {path}: {out}");
    out
}
