//! Exactly-once writes: a write sent again with the session and sequence of
//! one already applied is answered with the first response and changes
//! nothing, in its region, in either half after a split, and on a replica
//! that learnt the region from a snapshot. The resend stands for every
//! ambiguous path (a timeout, a dropped answer, a destroyed or re-elected
//! leader, a snapshot-covered proposal): each leaves a client that must
//! retry without knowing whether the first attempt applied.

use std::time::{Duration, Instant};

use tessel::proto::metapb::{Peer, Region};
use tessel::proto::raft_cmdpb::Session;
use tessel::proto::raft_cmdpb::{CmdType, PutRequest, RaftCmdRequest, RaftRequestHeader, Request};
use tessel::testkit::{Cluster, Filter};
use tessel::Config;

/// A put of `key=value` for `region`, addressed to its peer `to`.
pub(super) fn put_request(region: &Region, to: Peer, key: &[u8], value: &[u8]) -> RaftCmdRequest {
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: Some(to),
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: vec![Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest {
                cf: 0,
                key: key.to_vec(),
                value: value.to_vec(),
            }),
            ..Default::default()
        }],
        admin_request: None,
    }
}

/// Sends `put key=value` in `session` to the region's leader until a leader
/// answers (following NotLeader), and returns the answer's region error
/// message, if any.
pub(super) async fn put_in_session(
    cluster: &Cluster,
    key: &[u8],
    value: &[u8],
    session: Session,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let region = cluster.get_region(key).await;
        let leader = cluster
            .leader_of_region(region.id)
            .await
            .expect("the region has a leader");
        let req = put_request(&region, leader, key, value);
        let resp = cluster
            .call_store_in_session(leader.store_id, req, Some(session), Duration::from_secs(2))
            .await;
        let err = match resp {
            Ok(r) => r.header.and_then(|h| h.error),
            Err(e) => Some(tessel::proto::errorpb::Error {
                message: e.to_string(),
                ..Default::default()
            }),
        };
        match err {
            None => return None,
            Some(e)
                if (e.not_leader.is_some() || e.epoch_not_match.is_some())
                    && Instant::now() < deadline =>
            {
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            }
            Some(e) => return Some(e.message),
        }
    }
}

#[actix::test]
async fn a_resent_write_applies_once_across_split_and_snapshot() {
    crate::harness::init();
    let mut cfg = Config::for_tests();
    cfg.raft_log_gc_count_limit = 10;
    let cluster = Cluster::new(3, cfg);
    cluster.start().await;
    let session = cluster.take_session();

    // First attempt applies; another client writes after it.
    assert_eq!(put_in_session(&cluster, b"k", b"a", session).await, None);
    cluster.must_put(b"k", b"b").await;
    // The resend is answered as the first attempt was, and changes nothing.
    assert_eq!(put_in_session(&cluster, b"k", b"a", session).await, None);
    assert_eq!(
        cluster.must_get(b"k").await,
        b"b",
        "the resend applied again"
    );

    // After a split both halves know the session; "k" is in the right one.
    let region = cluster.get_region(b"k").await;
    cluster.must_split(region.id, b"j").await;
    assert_eq!(put_in_session(&cluster, b"k", b"a", session).await, None);
    assert_eq!(
        cluster.must_get(b"k").await,
        b"b",
        "applied again after the split"
    );

    // A store that misses enough log is caught up by a snapshot, then
    // leads: its sessions came with the snapshot.
    let right = cluster.get_region(b"k").await;
    let leader = cluster.leader_of_region(right.id).await.expect("a leader");
    let lagger = right
        .peers
        .iter()
        .copied()
        .find(|p| p.id != leader.id)
        .expect("three replicas");
    cluster.add_filter(Filter::Isolate(lagger.store_id));
    for i in 0..40 {
        let key = format!("l{i:03}");
        cluster.must_put(key.as_bytes(), b"x").await;
    }
    crate::harness::check_log_bounded(&cluster, 10).await;
    cluster.clear_filters();
    cluster
        .must_store_get_equal(lagger.store_id, b"l039", Some(b"x"))
        .await;
    cluster.must_transfer_leader(right.id, lagger).await;
    assert_eq!(put_in_session(&cluster, b"k", b"a", session).await, None);
    assert_eq!(
        cluster.must_get(b"k").await,
        b"b",
        "applied again from a snapshot"
    );
    let a = cluster
        .apply_state(lagger.store_id, right.id)
        .expect("the lagger holds the region");
    assert!(
        a.truncated_state.map_or(0, |t| t.index) > 5,
        "the lagger was caught up by a snapshot"
    );

    // The next sequence of the session is a new write and applies.
    let next = Session {
        sequence: session.sequence + 1,
        ..session
    };
    assert_eq!(put_in_session(&cluster, b"k", b"c", next).await, None);
    assert_eq!(cluster.must_get(b"k").await, b"c");
    // An older sequence than the session's last is refused, changing nothing.
    let refused = put_in_session(&cluster, b"k", b"a", session).await;
    assert!(
        refused.as_deref().is_some_and(|m| m.contains("stale")),
        "{refused:?}"
    );
    assert_eq!(cluster.must_get(b"k").await, b"c");
    cluster.shutdown().await;
}
