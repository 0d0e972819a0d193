//! `tessel playground --shell`: an in-process cluster (the test kit's) with
//! a line-oriented shell on stdin, for trying the store by hand.

use std::path::PathBuf;

use anyhow::Context as _;
use tessel::testkit::Cluster;
use tessel::Config;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::ctl::region_summary;

const HELP: &str = "commands:
  put <key> <value>      write a key
  get <key>              read a key (linearizable)
  delete <key>           delete a key
  scan [<start> [<end>]] list keys in [start, end)
  regions                list regions: range, epoch, peers, leader
  stores                 list stores
  transfer-leader <region> <store>   move a region's leadership to its peer on a store
  add-peer <region> <store>          add a replica of a region on a store
  remove-peer <region> <store>       remove a region's replica from a store
  split <key>            split the region holding key so that key starts a region
  help                   this text
  quit                   stop the cluster and exit";

pub async fn playground(stores: u64, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::default();
    let cluster = match &data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Cluster::with_dir(stores, cfg, dir)
        }
        None => Cluster::new(stores, cfg),
    };
    cluster.start().await;
    cluster
        .leader_of_region(1)
        .await
        .context("no leader elected for the first region")?;
    println!("tessel playground: {stores} stores ready; type `help` for commands");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        use std::io::Write as _;
        print!("> ");
        let _ = std::io::stdout().flush();
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") || words.first() == Some(&"exit") {
            break;
        }
        match run_command(&cluster, &words).await {
            Ok(out) => println!("{out}"),
            Err(e) => println!("error: {e}"),
        }
    }
    cluster.shutdown().await;
    Ok(())
}

async fn run_command(cluster: &Cluster, words: &[&str]) -> anyhow::Result<String> {
    let usage = |u: &str| Err(anyhow::anyhow!("usage: {u}"));
    match words {
        [] => Ok(String::new()),
        ["help"] => Ok(HELP.to_string()),
        ["put", k, v] => {
            cluster
                .put_cf(tessel::keys::CF_DEFAULT, k.as_bytes(), v.as_bytes())
                .await?;
            Ok("OK".into())
        }
        ["put", ..] => usage("put <key> <value>"),
        ["get", k] => Ok(
            match cluster
                .get_cf(tessel::keys::CF_DEFAULT, k.as_bytes())
                .await?
            {
                Some(v) => String::from_utf8_lossy(&v).to_string(),
                None => "(not found)".into(),
            },
        ),
        ["get", ..] => usage("get <key>"),
        ["delete", k] => {
            cluster
                .delete_cf(tessel::keys::CF_DEFAULT, k.as_bytes())
                .await?;
            Ok("OK".into())
        }
        ["delete", ..] => usage("delete <key>"),
        ["scan", rest @ ..] if rest.len() <= 2 => {
            let start = rest.first().map_or(&b""[..], |s| s.as_bytes());
            let end = rest.get(1).map_or(&b""[..], |s| s.as_bytes());
            let pairs = cluster.scan(start, end).await;
            let mut out: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{} = {}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect();
            out.push(format!("({} keys)", pairs.len()));
            Ok(out.join("\n"))
        }
        ["scan", ..] => usage("scan [<start> [<end>]]"),
        ["regions"] => Ok(regions(cluster)),
        ["transfer-leader" | "add-peer" | "remove-peer", region, store] => {
            membership(cluster, words[0], region, store).await
        }
        ["transfer-leader" | "add-peer" | "remove-peer", ..] => {
            usage(&format!("{} <region> <store>", words[0]))
        }
        ["stores"] => Ok(stores(cluster)),
        ["split", key] => {
            let region = cluster.get_region(key.as_bytes()).await;
            cluster.try_split(region.id, key.as_bytes()).await?;
            Ok(regions(cluster))
        }
        ["split", ..] => usage("split <key>"),
        _ => Err(anyhow::anyhow!(
            "unknown command {:?}; try `help`",
            words.join(" ")
        )),
    }
}

/// Carries out a membership command through the scheduler, as an operator
/// would, and waits (5 s at most) for the scheduler to see it done.
async fn membership(
    cluster: &Cluster,
    cmd: &str,
    region: &str,
    store: &str,
) -> anyhow::Result<String> {
    let region_id: u64 = region.parse().context("<region> must be a region id")?;
    let store_id: u64 = store.parse().context("<store> must be a store id")?;
    anyhow::ensure!(
        cluster.store_ids().contains(&store_id),
        "no store {store_id} in this cluster"
    );
    let info = cluster
        .regions()
        .into_iter()
        .find(|r| r.region.id == region_id)
        .with_context(|| format!("no region {region_id}"))?;
    let existing = info
        .region
        .peers
        .iter()
        .find(|p| p.store_id == store_id)
        .copied();
    let start = std::time::Instant::now();
    let outcome = match (cmd, existing) {
        ("add-peer", Some(p)) => anyhow::bail!("store {store_id} already has peer {}", p.id),
        ("add-peer", None) => {
            let peer = cluster.alloc_peer(store_id);
            cluster.try_add_peer(region_id, peer).await.map(|_| peer)
        }
        (_, None) => anyhow::bail!("region {region_id} has no peer on store {store_id}"),
        ("remove-peer", Some(p)) => cluster.try_remove_peer(region_id, p).await.map(|_| p),
        (_, Some(p)) => cluster.try_transfer_leader(region_id, p).await.map(|_| p),
    };
    let peer = outcome?;
    Ok(format!(
        "{cmd} done: peer {} on store {} ({} ms)",
        peer.id,
        peer.store_id,
        start.elapsed().as_millis()
    ))
}

fn regions(cluster: &Cluster) -> String {
    cluster
        .regions()
        .iter()
        .map(|info| region_summary(&info.region, info.leader))
        .collect::<Vec<_>>()
        .join("\n")
}

fn stores(cluster: &Cluster) -> String {
    cluster
        .scheduler()
        .with(|s| s.stores())
        .into_iter()
        .map(|(store, stats)| {
            format!(
                "store {} regions {} used {} bytes",
                store.id, stats.region_count, stats.used_size
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
