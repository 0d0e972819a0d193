//! `Router`: the cheap, cloneable handle that finds a region's peer actor on
//! this store. The region map behind it is written only by the `StoreActor`
//! (its owner) and read by everyone else.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use parking_lot::RwLock;

use super::msg::{PeerUnreachable, Propose, SnapshotReport, StepRaft};
use super::peer_actor::PeerActor;
use super::store_actor::StoreActor;
use crate::error::RegionError;
use crate::peer::{error_response, Callback, Inbound};
use crate::proto::raft_cmdpb::{RaftCmdRequest, Session};
use crate::proto::raft_serverpb::RaftMessage;
use crate::{RegionId, StoreId};

#[derive(Clone)]
pub struct Router {
    store_id: StoreId,
    peers: Arc<RwLock<HashMap<RegionId, Addr<PeerActor>>>>,
    store: Addr<StoreActor>,
}

impl Router {
    pub fn new(store_id: StoreId, store: Addr<StoreActor>) -> Router {
        Router {
            store_id,
            peers: Arc::default(),
            store,
        }
    }

    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    pub fn store(&self) -> &Addr<StoreActor> {
        &self.store
    }

    pub fn peer(&self, region_id: RegionId) -> Option<Addr<PeerActor>> {
        self.peers.read().get(&region_id).cloned()
    }

    /// Delivers a raft message to its peer, or to the store when there is none
    /// (the store may create the peer).
    pub fn send_raft_message(&self, msg: Inbound) {
        match self.peer(msg.region_id()) {
            Some(addr) if addr.connected() => addr.do_send(StepRaft(msg)),
            _ => self.store.do_send(StepRaft(msg)),
        }
    }

    /// Tells the peer that sent snapshot `msg` how sending it ended.
    pub fn report_snapshot(&self, msg: &RaftMessage, finished: bool) {
        if let (Some(addr), Some(to)) = (self.peer(msg.region_id), msg.to_peer.as_ref()) {
            addr.do_send(SnapshotReport {
                to_peer: to.id,
                finished,
            });
        }
    }

    /// Tells the peer that sent `msg` that its destination is unreachable.
    pub fn report_unreachable(&self, msg: &RaftMessage) {
        if let (Some(addr), Some(to)) = (self.peer(msg.region_id), msg.to_peer.as_ref()) {
            addr.do_send(PeerUnreachable { to_peer: to.id });
        }
    }

    /// Hands a command to its region's peer; answers RegionNotFound if this
    /// store has none.
    pub fn send_command(&self, request: RaftCmdRequest, cb: Callback) {
        self.send_command_in_session(request, None, cb)
    }

    /// [`Router::send_command`] for a write of a client session: applied at
    /// most once however often it is sent.
    pub fn send_command_in_session(
        &self,
        request: RaftCmdRequest,
        session: Option<Session>,
        cb: Callback,
    ) {
        let region_id = request.header.as_ref().map_or(0, |h| h.region_id);
        match self.peer(region_id) {
            Some(addr) => {
                // The peer's mailbox is bounded: a full one is backpressure
                // the client can act on, a closed one a peer that is gone.
                match addr.try_send(Propose {
                    request,
                    session,
                    cb,
                }) {
                    Ok(()) => {}
                    Err(SendError::Full(p)) => {
                        let busy = RegionError::ServerIsBusy(format!(
                            "region {region_id} has too many commands queued"
                        ));
                        let _ = p.cb.send(error_response(busy));
                    }
                    Err(SendError::Closed(p)) => {
                        let _ =
                            p.cb.send(error_response(RegionError::RegionNotFound(region_id)));
                    }
                }
            }
            None => {
                let _ = cb.send(error_response(RegionError::RegionNotFound(region_id)));
            }
        }
    }

    /// Only the store actor registers and unregisters peers.
    pub(crate) fn register(&self, region_id: RegionId, addr: Addr<PeerActor>) {
        self.peers.write().insert(region_id, addr);
    }

    pub(crate) fn unregister(&self, region_id: RegionId) {
        self.peers.write().remove(&region_id);
    }

    pub fn region_ids(&self) -> Vec<RegionId> {
        self.peers.read().keys().copied().collect()
    }
}
