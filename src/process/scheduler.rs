//! The scheduler as a process: its metadata store opened, the scheduler
//! logic resumed from it, the Scheduler gRPC service and the status page
//! served until shutdown. `tessel scheduler` and `LocalCluster` run it.

use crate::metrics;
use crate::scheduler::{LocalSchedulerClient, MetaStore, Scheduler};
use crate::server::scheduler_service::SchedulerService;

/// Serves the scheduler keeping its metadata under `data_dir` on `listener`
/// until `shutdown` resolves, keeping regions at `max_replicas` replicas.
/// Must run on a tokio runtime.
pub async fn serve_scheduler(
    listener: std::net::TcpListener,
    data_dir: &std::path::Path,
    max_replicas: usize,
    status: Option<std::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let meta = MetaStore::open(data_dir)?;
    // Ids 1.. are free in a new cluster; the first node's store id is 1.
    let mut scheduler = Scheduler::open(meta, 1)?;
    scheduler.set_max_replicas(max_replicas);
    let client = LocalSchedulerClient::new(scheduler);
    let (stop_status, status_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = status {
        let c = client.clone();
        let status = move || {
            let c = c.clone();
            async move {
                c.with(|s| {
                    serde_json::json!({
                        "cluster_id": s.cluster_id(),
                        "bootstrapped": s.is_bootstrapped(),
                        "stores": s.stores().iter().map(|(st, stats)| serde_json::json!({
                            "id": st.id,
                            "address": st.address,
                            "region_count": stats.region_count,
                        })).collect::<Vec<_>>(),
                        "regions": s.region_count(),
                    })
                })
            }
        };
        tokio::spawn(async move {
            let stopped = async {
                let _ = status_stopped.await;
            };
            if let Err(e) = metrics::serve_status(listener, status, stopped).await {
                tracing::warn!(error = %e, "status server stopped");
            }
        });
    }
    let _stop_status = stop_status;
    let service = SchedulerService::new(client);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
        .map_err(|e| crate::Error::Internal(format!("cannot serve: {e}")))?;
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| crate::Error::Internal(format!("scheduler server: {e}")))
}
