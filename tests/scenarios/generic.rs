//! The generic scenario table of SCENARIOS.md without conf change or split.

use crate::harness::{run, Workload};

fn w(clients: usize) -> Workload {
    Workload {
        clients,
        ..Default::default()
    }
}

#[actix::test]
async fn basic() {
    run(w(1)).await;
}

#[actix::test]
async fn concurrent() {
    run(w(5)).await;
}

#[actix::test]
async fn unreliable() {
    run(Workload {
        unreliable: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn partitions_one_client() {
    run(Workload {
        partitions: true,
        ..w(1)
    })
    .await;
}

#[actix::test]
async fn partitions_many_clients() {
    run(Workload {
        partitions: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn persist_one_client() {
    run(Workload {
        crash: true,
        ..w(1)
    })
    .await;
}

#[actix::test]
async fn persist_concurrent() {
    run(Workload {
        crash: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn persist_concurrent_unreliable() {
    run(Workload {
        crash: true,
        unreliable: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn persist_partitions() {
    run(Workload {
        crash: true,
        partitions: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn persist_partitions_unreliable() {
    run(Workload {
        crash: true,
        partitions: true,
        unreliable: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn snapshot_recover() {
    run(Workload {
        crash: true,
        log_gc_limit: Some(100),
        ..w(1)
    })
    .await;
}

#[actix::test]
async fn snapshot_recover_many_clients() {
    run(Workload {
        crash: true,
        log_gc_limit: Some(100),
        ..w(20)
    })
    .await;
}

#[actix::test]
async fn snapshot_unreliable() {
    run(Workload {
        unreliable: true,
        log_gc_limit: Some(100),
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn snapshot_unreliable_recover() {
    run(Workload {
        unreliable: true,
        crash: true,
        log_gc_limit: Some(100),
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn snapshot_unreliable_recover_partitions() {
    run(Workload {
        unreliable: true,
        crash: true,
        partitions: true,
        log_gc_limit: Some(100),
        ..w(5)
    })
    .await;
}
