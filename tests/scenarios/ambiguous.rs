//! Each path on which a write's outcome is unknown to its client, forced
//! with message filters, then checked for exactly-once: the first attempt's
//! answer is never a definite failure for a write that applied, and a retry
//! in the same session applies nothing a second time, even after another
//! client's write (the a, b, a pattern a double apply would show).
//!
//! The paths are those of issue 9: a client timeout, a leader destroyed with
//! the write in flight, a proposal covered by a snapshot, and a leader
//! re-elected with older proposals outstanding.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::MessageType;
use tessel::proto::errorpb;
use tessel::proto::metapb::{Peer, Region};
use tessel::proto::raft_cmdpb::{RaftCmdResponse, Session};
use tessel::proto::raft_serverpb::RaftMessage;
use tessel::testkit::{Cluster, Filter, PeerStatus};
use tessel::{Config, RegionId, StoreId};

use super::sessions::{put_in_session, put_request};

/// How long any one awaited condition may take.
const WAIT: Duration = Duration::from_secs(15);

/// The region error of an answer, or of a call that got none.
fn region_error(answer: &tessel::Result<RaftCmdResponse>) -> Option<errorpb::Error> {
    match answer {
        Ok(r) => r.header.as_ref().and_then(|h| h.error.clone()),
        Err(e) => Some(errorpb::Error {
            message: e.to_string(),
            ..Default::default()
        }),
    }
}

/// Whether a first attempt's answer is one its client may act on for a
/// write that did apply: success, or an error that says "maybe".
fn ok_or_undetermined(answer: &tessel::Result<RaftCmdResponse>) -> bool {
    match region_error(answer) {
        None => true,
        Some(e) => e.undetermined.is_some(),
    }
}

/// Waits until the peer of `region_id` on `store_id` satisfies `pred`.
async fn wait_status(
    cluster: &Cluster,
    store_id: StoreId,
    region_id: RegionId,
    what: &str,
    pred: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = cluster.peer_status(store_id, region_id).await;
        if let Some(st) = st.filter(|s| pred(s)) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "store {store_id}: {what} not reached within {WAIT:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one write in `session` to `to` in the background; the handle
/// yields its answer (or the call's own error) within `timeout`.
fn send_in_background(
    cluster: &Cluster,
    region: &Region,
    to: Peer,
    key: &[u8],
    value: &[u8],
    session: Session,
    timeout: Duration,
) -> actix_rt::task::JoinHandle<tessel::Result<RaftCmdResponse>> {
    let cluster = cluster.clone();
    let req = put_request(region, to, key, value);
    actix_rt::spawn(async move {
        cluster
            .call_store_in_session(to.store_id, req, Some(session), timeout)
            .await
    })
}

fn store_of(p: &Option<Peer>) -> StoreId {
    p.map_or(0, |p| p.store_id)
}

fn is(msg: &RaftMessage, t: MessageType) -> bool {
    msg.msg_type == t as i32
}

/// The last check of every path: another client writes `b` after the
/// first attempt; the retry of the first write in its session is answered
/// success and leaves `b` in place.
async fn retry_applies_nothing(cluster: &Cluster, key: &[u8], first: &[u8], session: Session) {
    cluster.must_put(key, b"b").await;
    assert_eq!(put_in_session(cluster, key, first, session).await, None);
    assert_eq!(
        cluster.must_get(key).await,
        b"b",
        "the retried write applied a second time"
    );
}

/// Drops the append responses to `leader`'s store: followers take its
/// entries, it never learns they did, so nothing it proposes commits.
fn deaf_leader(leader: StoreId) -> Filter {
    Filter::Custom(Arc::new(move |m: &RaftMessage| {
        !(is(m, MessageType::MsgAppendResponse) && store_of(&m.to_peer) == leader)
    }))
}

/// Makes `leader` deaf, sends it `put k=a` in `session` in the background
/// and waits until every follower appended the entry. Returns the leader's
/// status from before the write and the pending call.
async fn write_to_deaf_leader(
    cluster: &Cluster,
    region: &Region,
    leader: Peer,
    session: Session,
    timeout: Duration,
) -> (
    PeerStatus,
    actix_rt::task::JoinHandle<tessel::Result<RaftCmdResponse>>,
) {
    cluster.add_filter(deaf_leader(leader.store_id));
    let before = wait_status(cluster, leader.store_id, region.id, "status", |_| true).await;
    let first = send_in_background(cluster, region, leader, b"k", b"a", session, timeout);
    for p in region.peers.iter().filter(|p| p.id != leader.id) {
        wait_status(cluster, p.store_id, region.id, "the write appended", |s| {
            s.last_index > before.last_index
        })
        .await;
    }
    (before, first)
}

#[actix::test]
async fn a_write_whose_answer_timed_out_is_retried_once() {
    crate::harness::init();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k", b"init").await;
    let region = cluster.get_region(b"k").await;
    let leader = cluster.leader_of_region(region.id).await.expect("a leader");
    let session = cluster.take_session();

    cluster.add_filter(deaf_leader(leader.store_id));
    let first = cluster
        .call_store_in_session(
            leader.store_id,
            put_request(&region, leader, b"k", b"a"),
            Some(session),
            Duration::from_millis(500),
        )
        .await;
    assert!(
        matches!(first, Err(tessel::Error::Timeout(_))),
        "the uncommittable write was answered: {first:?}"
    );
    // The write was in the followers' logs all along and commits now.
    cluster.clear_filters();
    for store in cluster.store_ids() {
        cluster.must_store_get_equal(store, b"k", Some(b"a")).await;
    }
    retry_applies_nothing(&cluster, b"k", b"a", session).await;
    cluster.shutdown().await;
}

#[actix::test]
async fn a_write_in_flight_on_a_destroyed_leader_is_retried_once() {
    crate::harness::init();
    let cluster = Cluster::new(3, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k", b"init").await;
    let region = cluster.get_region(b"k").await;
    let leader = cluster.leader_of_region(region.id).await.expect("a leader");
    let session = cluster.take_session();

    // The followers take the write; the leader cannot commit it.
    let (_, first) = write_to_deaf_leader(&cluster, &region, leader, session, WAIT * 2).await;
    // Cut the leader off: the others elect a leader, which commits the
    // write, and remove the old leader while it still waits for it.
    cluster.add_filter(Filter::Isolate(leader.store_id));
    for p in region.peers.iter().filter(|p| p.id != leader.id) {
        cluster
            .must_store_get_equal(p.store_id, b"k", Some(b"a"))
            .await;
    }
    cluster.must_remove_peer(region.id, leader).await;
    // Healed, the old leader hears that it was removed and is destroyed
    // with the write in flight.
    cluster.clear_filters();
    let first = first.await.expect("the call ran");
    assert!(
        region_error(&first).is_some_and(|e| e.undetermined.is_some()),
        "a destroyed leader's pending write must be answered Undetermined: {first:?}"
    );
    // The store drops the destroyed peer from its map right after.
    let deadline = Instant::now() + WAIT;
    while cluster
        .store_region_ids(leader.store_id)
        .contains(&region.id)
    {
        assert!(Instant::now() < deadline, "the removed leader is not gone");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    retry_applies_nothing(&cluster, b"k", b"a", session).await;
    cluster.shutdown().await;
}

#[actix::test]
async fn a_write_covered_by_a_snapshot_is_retried_once() {
    crate::harness::init();
    let mut cfg = Config::for_tests();
    cfg.raft_log_gc_count_limit = 10;
    let cluster = Cluster::new(3, cfg);
    cluster.start().await;
    cluster.must_put(b"k", b"init").await;
    let region = cluster.get_region(b"k").await;
    let leader = cluster.leader_of_region(region.id).await.expect("a leader");
    let session = cluster.take_session();

    let (before, first) = write_to_deaf_leader(&cluster, &region, leader, session, WAIT * 3).await;
    // The others elect a leader, commit the write and compact their logs
    // past it while the old leader is cut off.
    cluster.add_filter(Filter::Isolate(leader.store_id));
    for i in 0..40 {
        cluster.must_put(format!("l{i:03}").as_bytes(), b"x").await;
    }
    crate::harness::check_log_bounded(&cluster, 10).await;
    // Healed, the old leader is caught up by a snapshot that covers the
    // entry its proposal waits for, without showing it the entry.
    cluster.clear_filters();
    cluster
        .must_store_get_equal(leader.store_id, b"l039", Some(b"x"))
        .await;
    let first = first.await.expect("the call ran");
    assert!(
        ok_or_undetermined(&first),
        "a snapshot-covered write that applied was answered as failed: {first:?}"
    );
    let a = cluster
        .apply_state(leader.store_id, region.id)
        .expect("the old leader holds the region");
    assert!(
        a.truncated_state.map_or(0, |t| t.index) > before.last_index + 1,
        "the old leader was caught up by a snapshot"
    );
    retry_applies_nothing(&cluster, b"k", b"a", session).await;
    cluster.shutdown().await;
}

/// The roles of the re-election scenario, by store.
#[derive(Clone, Copy)]
struct Roles {
    /// The first leader, re-elected later.
    l: StoreId,
    /// The only follower that takes the first leader's writes.
    x: StoreId,
    /// The leader in between.
    m: StoreId,
    y: StoreId,
    z: StoreId,
}

/// What each phase of the re-election scenario lets through.
fn reelection_allows(r: Roles, phase: u8, m: &RaftMessage) -> bool {
    let (from, to) = (store_of(&m.from_peer), store_of(&m.to_peer));
    let append = is(m, MessageType::MsgAppend);
    let vote = is(m, MessageType::MsgRequestVote) || is(m, MessageType::MsgRequestPreVote);
    // The first leader never learns what its followers hold, so it never
    // commits anything itself.
    if is(m, MessageType::MsgAppendResponse) && to == r.l {
        return false;
    }
    let mid = [r.m, r.y, r.z];
    match phase {
        // L's writes reach X only.
        1 => !(append && from == r.l && mid.contains(&to)),
        // {L, X} and {M, Y, Z} apart; only M campaigns; M's entries stay
        // with M.
        2 => {
            let across = mid.contains(&from) != mid.contains(&to);
            !across && !(vote && (from == r.y || from == r.z)) && !(append && from == r.m)
        }
        // M's entries reach L (which truncates its own) and no one else; X
        // stays cut off.
        3 => {
            if from == r.x || to == r.x {
                return false;
            }
            let m_to_l = from == r.m && to == r.l;
            let across = mid.contains(&from) != mid.contains(&to);
            if append && from == r.m {
                return to == r.l;
            }
            !across || m_to_l || (from == r.l && to == r.m)
        }
        // L hears nothing from M, so it campaigns and wins with M, Y and Z;
        // its entries reach M only. X stays cut off.
        4 => {
            if from == r.x || to == r.x {
                return false;
            }
            if from == r.m && to == r.l {
                return false;
            }
            if vote && from != r.l {
                return false;
            }
            // M, leader until it hears of L's term, keeps its entries too.
            !(append && (from == r.m || (from == r.l && to != r.m)))
        }
        // L and M cut off: X, Y and Z elect X, whose log holds L's writes.
        5 => ![r.l, r.m].contains(&from) && ![r.l, r.m].contains(&to),
        _ => true,
    }
}

#[actix::test]
async fn writes_of_a_re_elected_leader_are_answered_as_they_applied() {
    crate::harness::init();
    let cluster = Cluster::new(5, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k0", b"init").await;
    let region = cluster.get_region(b"k0").await;
    let leader = cluster.leader_of_region(region.id).await.expect("a leader");
    let others: Vec<Peer> = region
        .peers
        .iter()
        .copied()
        .filter(|p| p.id != leader.id)
        .collect();
    let r = Roles {
        l: leader.store_id,
        x: others[0].store_id,
        m: others[1].store_id,
        y: others[2].store_id,
        z: others[3].store_id,
    };
    let peer_on = |s: StoreId| *region.peers.iter().find(|p| p.store_id == s).unwrap();
    for p in &region.peers {
        cluster
            .must_store_get_equal(p.store_id, b"k0", Some(b"init"))
            .await;
    }
    let phase = Arc::new(AtomicU8::new(1));
    let filter_phase = phase.clone();
    cluster.add_filter(Filter::Custom(Arc::new(move |m: &RaftMessage| {
        reelection_allows(r, filter_phase.load(Ordering::SeqCst), m)
    })));

    // Phase 1: three writes in L's term reach X only.
    let base = wait_status(&cluster, r.l, region.id, "status", |_| true).await;
    let writes: Vec<(Vec<u8>, Vec<u8>, Session)> = (1..=3)
        .map(|i| {
            let key = format!("k{i}").into_bytes();
            let value = format!("a{i}").into_bytes();
            (key, value, cluster.take_session())
        })
        .collect();
    let mut firsts = Vec::new();
    for (key, value, session) in &writes {
        firsts.push(send_in_background(
            &cluster,
            &region,
            leader,
            key,
            value,
            *session,
            WAIT * 4,
        ));
        // One at a time, so they hold consecutive indexes in order.
        let want = base.last_index + firsts.len() as u64;
        wait_status(&cluster, r.l, region.id, "the write proposed", |s| {
            s.last_index >= want
        })
        .await;
    }
    let top = base.last_index + 3;
    wait_status(&cluster, r.x, region.id, "L's writes at X", |s| {
        s.last_index == top
    })
    .await;

    // Phase 2: M is elected by Y and Z and keeps its first entry to itself.
    phase.store(2, Ordering::SeqCst);
    let m_status = wait_status(&cluster, r.m, region.id, "M leads", |s| {
        s.is_leader && s.term > base.term
    })
    .await;

    // Phase 3: M's entry replaces L's writes in L's log.
    phase.store(3, Ordering::SeqCst);
    wait_status(&cluster, r.l, region.id, "L follows M", |s| {
        s.last_term == m_status.term && s.last_index == base.last_index + 1
    })
    .await;

    // Phase 4: L is elected again and proposes a write of its new term at
    // the index of its third old write.
    phase.store(4, Ordering::SeqCst);
    let l_status = wait_status(&cluster, r.l, region.id, "L leads again", |s| {
        s.is_leader && s.term > m_status.term
    })
    .await;
    let c_session = cluster.take_session();
    let c = send_in_background(
        &cluster,
        &region,
        peer_on(r.l),
        b"c",
        b"c",
        c_session,
        WAIT * 4,
    );
    wait_status(&cluster, r.l, region.id, "c proposed", |s| {
        s.last_index == top
    })
    .await;

    // Phase 5: X, holding L's old writes, is elected by Y and Z and
    // commits them.
    phase.store(5, Ordering::SeqCst);
    wait_status(&cluster, r.x, region.id, "X leads", |s| {
        s.is_leader && s.term > l_status.term
    })
    .await;
    for (key, value, _) in &writes {
        cluster.must_store_get_equal(r.y, key, Some(value)).await;
    }

    // Healed: L applies its old writes from X. Each was answered as it
    // applied; the write of L's new term lost its index.
    cluster.clear_filters();
    for (i, first) in firsts.into_iter().enumerate() {
        let first = first.await.expect("the call ran");
        assert!(
            ok_or_undetermined(&first),
            "write {} applied but was answered as failed: {first:?}",
            i + 1
        );
    }
    let c = c.await.expect("the call ran");
    assert!(
        region_error(&c).is_some_and(|e| e.stale_command.is_some()),
        "the overwritten write must be answered StaleCommand: {c:?}"
    );
    for store in cluster.store_ids() {
        for (key, value, _) in &writes {
            cluster.must_store_get_equal(store, key, Some(value)).await;
        }
        cluster.must_store_get_equal(store, b"c", None).await;
    }
    let (key, value, session) = &writes[2];
    retry_applies_nothing(&cluster, key, value, *session).await;
    cluster.shutdown().await;
}
