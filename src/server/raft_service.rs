//! The Raft gRPC service, receiving side: batches of raft messages from
//! other stores are handed to this store's router; a snapshot arrives as a
//! chunked stream into a file of the snapshot manager and its message is
//! delivered only once the whole file is in place (the peer verifies it).

use std::io::Write;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::actors::router::Router;
use crate::peer::Inbound;
use crate::proto::raft_serverpb::raft_server::Raft;
use crate::proto::raft_serverpb::{BatchRaftMessage, Done, RaftMessage, SnapshotChunk};
use crate::storage::SnapManager;

/// Largest snapshot file a store accepts.
const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Clone)]
pub struct RaftService {
    router: Router,
    snap_mgr: SnapManager,
}

impl RaftService {
    pub fn new(router: Router, snap_mgr: SnapManager) -> RaftService {
        RaftService { router, snap_mgr }
    }

    pub fn into_server(self) -> crate::proto::raft_serverpb::raft_server::RaftServer<RaftService> {
        crate::proto::raft_serverpb::raft_server::RaftServer::new(self)
            .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
    }

    /// Only messages for a peer on this store are delivered; the envelope
    /// is opened here, once, and a message that does not decode is dropped.
    fn deliver(&self, msg: RaftMessage) {
        match Inbound::open(msg) {
            Ok(inbound) => self.deliver_opened(inbound),
            Err(e) => warn!(error = %e, "undecodable raft message dropped"),
        }
    }

    fn deliver_opened(&self, inbound: Inbound) {
        let msg = &inbound.envelope;
        let to_store = msg.to_peer.map_or(0, |p| p.store_id);
        if to_store != self.router.store_id() || msg.region_id == 0 {
            debug!(
                to_store,
                region_id = msg.region_id,
                "misaddressed raft message dropped"
            );
            return;
        }
        self.router.send_raft_message(inbound);
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn raft(
        &self,
        req: Request<Streaming<BatchRaftMessage>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        while let Some(batch) = stream.next().await {
            for msg in batch?.msgs {
                self.deliver(msg);
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let msg = first
            .message
            .ok_or_else(|| Status::invalid_argument("snapshot stream without its message"))?;
        let inbound = Inbound::open(msg)
            .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
        let data = inbound
            .snapshot_data()
            .map_err(|e| Status::invalid_argument(format!("bad snapshot data: {e}")))?;
        if data.file_size > MAX_SNAPSHOT_BYTES {
            return Err(Status::invalid_argument("snapshot too large"));
        }
        let path = self
            .snap_mgr
            .path(&data.file_name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Concurrent sends of one snapshot each write their own file.
        let tmp = path.with_extension(format!("recv{}", rand::random::<u64>()));
        let mut file = std::fs::File::create(&tmp)
            .map_err(|e| Status::internal(format!("cannot create snapshot file: {e}")))?;
        let mut received = first.data.len() as u64;
        let write = |file: &mut std::fs::File, bytes: &[u8]| {
            file.write_all(bytes)
                .map_err(|e| Status::internal(format!("cannot write snapshot file: {e}")))
        };
        let result: Result<(), Status> = async {
            write(&mut file, &first.data)?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                received += chunk.data.len() as u64;
                if received > data.file_size {
                    return Err(Status::invalid_argument("snapshot longer than announced"));
                }
                write(&mut file, &chunk.data)?;
            }
            if received != data.file_size {
                return Err(Status::invalid_argument(format!(
                    "snapshot of {received} bytes, {} announced",
                    data.file_size
                )));
            }
            file.sync_all()
                .map_err(|e| Status::internal(format!("cannot sync snapshot file: {e}")))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| Status::internal(format!("cannot place snapshot file: {e}")))?;
            crate::storage::durable::sync_dir(self.snap_mgr.dir())
                .map_err(|e| Status::internal(format!("cannot sync snapshot directory: {e}")))
        }
        .await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        crate::metrics::SNAPSHOTS
            .with_label_values(&["received", outcome])
            .inc();
        if let Err(e) = result {
            warn!(file = %data.file_name, error = %e, "snapshot not received");
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        debug!(file = %data.file_name, bytes = received, "snapshot received");
        self.deliver_opened(inbound);
        Ok(Response::new(Done {}))
    }
}
