//! The membership scenarios of SCENARIOS.md: transfer leader, basic conf
//! change, remove leader.

use std::time::Duration;

use tessel::proto::metapb::{Peer, Region};
use tessel::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, ConfChangeType, RaftCmdRequest, RaftRequestHeader,
    TransferLeaderRequest,
};
use tessel::testkit::Cluster;
use tessel::Config;

fn p(id: u64, store_id: u64) -> Peer {
    Peer { id, store_id }
}

#[actix::test]
async fn transfer_leader() {
    crate::harness::init();
    let cluster = Cluster::new(5, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k", b"v").await;
    for id in 1..=5 {
        // Leadership may move between the lookup and the request (an
        // election on a loaded machine): ask again on NotLeader.
        let resp = loop {
            let leader = cluster.leader_of_region(1).await.expect("a leader");
            let region = cluster.get_region(b"").await;
            let req = RaftCmdRequest {
                header: Some(RaftRequestHeader {
                    region_id: 1,
                    peer: Some(leader),
                    region_epoch: region.region_epoch,
                    term: 0,
                }),
                requests: vec![],
                admin_request: Some(AdminRequest {
                    cmd_type: AdminCmdType::TransferLeader as i32,
                    transfer_leader: Some(TransferLeaderRequest {
                        peer: Some(p(id, id)),
                    }),
                    ..Default::default()
                }),
            };
            let resp = cluster
                .call_command(req, Duration::from_secs(1))
                .await
                .expect("the leader answers at once");
            match resp.header.as_ref().and_then(|h| h.error.as_ref()) {
                Some(e) if e.not_leader.is_some() => continue,
                Some(e) => panic!("transfer refused: {}", e.message),
                None => break resp,
            }
        };
        assert_eq!(
            resp.admin_response.map(|a| a.cmd_type()),
            Some(AdminCmdType::TransferLeader)
        );
        // The scheduler sees the new leader (raft-rs never reports completion).
        cluster.must_transfer_leader(1, p(id, id)).await;
        assert_eq!(cluster.leader_of_region(1).await, Some(p(id, id)));
    }
    cluster.shutdown().await;
}

#[actix::test]
async fn basic_conf_change() {
    crate::harness::init();
    let cluster = Cluster::new(5, Config::for_tests());
    cluster.start().await;
    cluster.must_transfer_leader(1, p(1, 1)).await;
    for id in 2..=5 {
        cluster.must_remove_peer(1, p(id, id)).await;
    }
    cluster.must_put(b"k1", b"v1").await;
    cluster.must_store_get_equal(1, b"k1", Some(b"v1")).await;
    assert_eq!(cluster.store_get(2, b"k1"), None);

    // Same id on a store that holds a tombstone of it.
    cluster.must_add_peer(1, p(2, 2)).await;
    cluster.must_put(b"k2", b"v2").await;
    assert_eq!(cluster.must_get(b"k2").await, b"v2");
    cluster.must_store_get_equal(2, b"k1", Some(b"v1")).await;
    cluster.must_store_get_equal(2, b"k2", Some(b"v2")).await;
    let conf_ver = cluster
        .get_region(b"k1")
        .await
        .region_epoch
        .unwrap()
        .conf_ver;
    assert!(conf_ver > 1);
    assert_eq!(cluster.store_get(5, b"k1"), None);

    cluster.must_add_peer(1, p(3, 3)).await;
    cluster.must_remove_peer(1, p(2, 2)).await;
    cluster.must_put(b"k3", b"v3").await;
    assert_eq!(cluster.must_get(b"k3").await, b"v3");
    for (k, v) in [(b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")] {
        cluster.must_store_get_equal(3, k, Some(v)).await;
    }
    // A destroyed peer deletes its data.
    cluster.must_store_get_equal(2, b"k1", None).await;
    cluster.must_store_get_equal(2, b"k2", None).await;

    cluster.must_add_peer(1, p(2, 2)).await;
    cluster.must_store_get_equal(2, b"k1", Some(b"v1")).await;
    cluster.must_store_get_equal(2, b"k2", Some(b"v2")).await;
    cluster.must_store_get_equal(2, b"k3", Some(b"v3")).await;

    // Peer id 4 was used on store 4 earlier; now it lives on store 2.
    cluster.must_remove_peer(1, p(2, 2)).await;
    cluster.must_add_peer(1, p(4, 2)).await;
    cluster.must_remove_peer(1, p(3, 3)).await;
    cluster.must_put(b"k4", b"v4").await;
    cluster.must_store_get_equal(2, b"k1", Some(b"v1")).await;
    cluster.must_store_get_equal(2, b"k4", Some(b"v4")).await;
    cluster.must_store_get_equal(3, b"k1", None).await;
    cluster.must_store_get_equal(3, b"k4", None).await;
    assert_eq!(cluster.scheduler().with(|s| s.conf_ver_violations()), 0);
    cluster.shutdown().await;
}

#[actix::test]
async fn remove_leader() {
    crate::harness::init();
    let cluster = Cluster::new(5, Config::for_tests());
    cluster.start().await;
    cluster.must_transfer_leader(1, p(1, 1)).await;
    cluster.must_remove_peer(1, p(1, 1)).await;
    cluster.must_put(b"k0", b"v0").await;
    cluster.must_store_get_equal(2, b"k0", Some(b"v0")).await;
    assert_eq!(cluster.store_get(1, b"k0"), None);

    cluster.must_add_peer(1, p(1, 1)).await;
    cluster.must_transfer_leader(1, p(1, 1)).await;
    cluster.must_put(b"k1", b"v1").await;
    cluster.must_store_get_equal(1, b"k0", Some(b"v0")).await;
    cluster.must_store_get_equal(1, b"k1", Some(b"v1")).await;

    for id in 2..=4 {
        cluster.must_remove_peer(1, p(id, id)).await;
    }
    // The leader of a two-peer region removes itself.
    cluster.must_remove_peer(1, p(1, 1)).await;
    cluster.must_put(b"k2", b"v2").await;
    assert_eq!(cluster.leader_of_region(1).await, Some(p(5, 5)));
    cluster.must_store_get_equal(5, b"k2", Some(b"v2")).await;
    assert_eq!(cluster.store_get(1, b"k2"), None);

    cluster.must_add_peer(1, p(1, 1)).await;
    cluster.must_put(b"k3", b"v3").await;
    cluster.must_store_get_equal(1, b"k3", Some(b"v3")).await;
    assert_eq!(cluster.store_get(3, b"k3"), None);
    cluster.shutdown().await;
}

/// Waits until the peer of `region_id` on `store_id` satisfies `pred`.
async fn wait_peer(
    cluster: &Cluster,
    store_id: u64,
    region_id: u64,
    what: &str,
    pred: impl Fn(&tessel::testkit::PeerStatus) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = cluster.peer_status(store_id, region_id).await {
            if pred(&st) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store {store_id}: {what} not reached within 15 s"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A voter of a two-voter region is never removed by a simple change
/// (tikv/tikv#10595): it is demoted to a learner first.
#[actix::test]
async fn one_of_two_voters_is_demoted_not_removed() {
    let (cluster, region, a, b) = two_voters().await;
    let answer = cluster
        .call_store(
            b.store_id,
            change_peer(&region, b, ConfChangeType::RemoveNode, a),
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    let err = answer.header.and_then(|h| h.error).expect("refused");
    assert!(err.message.contains("demote"), "{err:?}");
    // Through the scheduler the removal takes two steps, and the region
    // keeps a leader throughout.
    cluster.must_remove_peer(region.id, a).await;
    cluster.must_put(b"k", b"v2").await;
    assert_eq!(cluster.must_get(b"k").await, b"v2");
    cluster.shutdown().await;
}

/// A started two-store cluster holding "k", its region, and the region's
/// follower A and leader B.
async fn two_voters() -> (Cluster, Region, Peer, Peer) {
    crate::harness::init();
    let cluster = Cluster::new(2, Config::for_tests());
    cluster.start().await;
    cluster.must_put(b"k", b"v").await;
    let region = cluster.get_region(b"k").await;
    let b = cluster.leader_of_region(region.id).await.expect("a leader");
    let a = *region
        .peers
        .iter()
        .find(|p| p.id != b.id)
        .expect("two peers");
    (cluster, region, a, b)
}

fn change_peer(region: &Region, from: Peer, kind: ConfChangeType, target: Peer) -> RaftCmdRequest {
    use tessel::proto::raft_cmdpb::ChangePeerRequest;
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: Some(from),
            region_epoch: region.region_epoch,
            term: 0,
        }),
        requests: vec![],
        admin_request: Some(AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerRequest {
                change_type: kind as i32,
                peer: Some(target),
            }),
            ..Default::default()
        }),
    }
}

/// Of {A, B}, B proposes demoting A, and A (holding the entry) is elected
/// and commits it, while the messages that would tell B of the commit are
/// lost. Had A been removed, it would be gone and B, still needing A's vote,
/// would have no way to a leader. Demoted, A stays a learner that answers
/// B's vote requests and appends: once the network heals the region has a
/// leader, and A is then removed as a learner.
#[actix::test]
async fn a_leader_committing_its_own_demotion_leaves_the_region_a_leader() {
    use raft::eraftpb::MessageType;
    use std::sync::Arc;
    use tessel::proto::raft_serverpb::RaftMessage;
    use tessel::region::roles;
    use tessel::testkit::Filter;

    let (cluster, region, a, b) = two_voters().await;
    let before = cluster
        .peer_status(b.store_id, region.id)
        .await
        .expect("B runs");
    let demotion_index = before.last_index + 1;
    let store_of = |p: &Option<Peer>| p.map_or(0, |p| p.store_id);
    let is = |m: &RaftMessage, t: MessageType| m.msg_type == t as i32;

    // B proposes the demotion; A takes the entry, B never learns it did.
    cluster.add_filter(Filter::Custom(Arc::new(move |m: &RaftMessage| {
        !(is(m, MessageType::MsgAppendResponse) && store_of(&m.to_peer) == b.store_id)
    })));
    let demote = change_peer(&region, b, ConfChangeType::AddLearnerNode, a);
    let answer = cluster
        .call_store(b.store_id, demote, Duration::from_millis(300))
        .await;
    assert!(
        answer.is_err(),
        "the demotion cannot commit yet: {answer:?}"
    );
    wait_peer(
        &cluster,
        a.store_id,
        region.id,
        "A holds the demotion",
        |s| s.last_index >= demotion_index,
    )
    .await;

    // B goes quiet towards A, so A campaigns and wins with B's vote; A's
    // appends that would carry the commit of the demotion to B are lost.
    cluster.add_filter(Filter::Custom(Arc::new(move |m: &RaftMessage| {
        let b_to_a = store_of(&m.from_peer) == b.store_id && store_of(&m.to_peer) == a.store_id;
        if b_to_a {
            return !(is(m, MessageType::MsgHeartbeat) || is(m, MessageType::MsgAppend));
        }
        if store_of(&m.from_peer) == a.store_id
            && (is(m, MessageType::MsgAppend) || is(m, MessageType::MsgHeartbeat))
        {
            let mut msg = raft::eraftpb::Message::default();
            let _ = protobuf::Message::merge_from_bytes(&mut msg, &m.message);
            return msg.commit < demotion_index;
        }
        true
    })));
    wait_peer(
        &cluster,
        a.store_id,
        region.id,
        "A applied its demotion",
        |s| roles::is_learner(&s.region, a.id),
    )
    .await;
    cluster.clear_filters();
    cluster.must_put(b"k", b"v2").await;
    assert_eq!(cluster.must_get(b"k").await, b"v2");
    cluster.must_remove_peer(region.id, a).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while cluster.store_region_ids(a.store_id).contains(&region.id) {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed peer is not gone"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.must_put(b"k", b"v3").await;
    assert_eq!(cluster.must_get(b"k").await, b"v3");
    cluster.shutdown().await;
}
