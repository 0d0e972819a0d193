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
struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tessel <args>` and waits (10 s at most) for its ready line,
/// "... serving at ADDR".
fn spawn(args: &[&str]) -> Proc {
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
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("serving at ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("tessel {args:?} never got ready"));
    Proc { child, addr }
}

struct Cluster {
    dir: PathBuf,
    scheduler: Option<Proc>,
    scheduler_addr: String,
    nodes: Vec<Option<Proc>>,
    node_addrs: Vec<String>,
}

impl Cluster {
    fn start(dir: &Path, nodes: usize) -> Cluster {
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

    fn start_node(&mut self, i: usize) {
        let ndir = self.dir.join(format!("node{i}"));
        // A restarted node keeps its address: the scheduler has it on file.
        let addr = self.node_addrs[i].clone();
        let p = spawn(&[
            "node",
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
    fn kill_node(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    fn kill_scheduler(&mut self) {
        self.scheduler = None;
    }

    fn restart_scheduler(&mut self) {
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

    fn client(&self) -> Client {
        Client::new(&self.scheduler_addr)
            .expect("a client")
            .with_timeout(Duration::from_secs(20))
    }
}

/// Waits until the region holding `key` has `n` peers.
async fn wait_replicas(client: &Client, key: &[u8], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((r, _)) = client.region_of(key).await {
            if r.peers.len() == n {
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
