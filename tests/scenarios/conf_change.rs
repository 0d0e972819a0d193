//! The generic scenario rows with conf change but no split; conf changes run
//! in every round.

use crate::harness::{run, Workload};

fn w(clients: usize) -> Workload {
    Workload {
        clients,
        conf_change: true,
        ..Default::default()
    }
}

#[actix::test]
async fn conf_change_recover() {
    run(Workload {
        crash: true,
        ..w(1)
    })
    .await;
}

#[actix::test]
async fn conf_change_recover_many_clients() {
    run(Workload {
        crash: true,
        ..w(20)
    })
    .await;
}

#[actix::test]
async fn conf_change_unreliable() {
    run(Workload {
        unreliable: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn conf_change_unreliable_recover() {
    run(Workload {
        unreliable: true,
        crash: true,
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn conf_change_snapshot_unreliable_recover() {
    run(Workload {
        unreliable: true,
        crash: true,
        log_gc_limit: Some(100),
        ..w(5)
    })
    .await;
}

#[actix::test]
async fn conf_change_snapshot_unreliable_recover_partitions() {
    run(Workload {
        unreliable: true,
        crash: true,
        partitions: true,
        log_gc_limit: Some(100),
        ..w(5)
    })
    .await;
}
