//! The raft envelope. On the wire a `RaftMessage` (prost) carries the
//! routing (region, sender and receiver peers, epoch, range, the tombstone
//! flag) and, as rust-protobuf bytes, the raft-rs message itself. This
//! module is the only place that opens or seals one:
//!
//! - a received envelope is opened once, into an [`Inbound`], where it
//!   enters the store (the gRPC service or the test kit's network, before
//!   the router); the store's admission, the peer's admission and raft all
//!   read the decoded message from there;
//! - a peer seals its outgoing raft messages with [`seal`];
//! - a sender that must find the snapshot file named inside its own
//!   outgoing MsgSnapshot reads it with [`snapshot_data`].

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};

use crate::error::Result;
use crate::proto::metapb::{Peer, Region};
use crate::proto::raft_serverpb::{RaftMessage, SnapshotData};
use crate::RegionId;

/// A received envelope, opened: the routing fields and the raft message.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The envelope as received, its `message` bytes taken out (they are
    /// in `msg`).
    pub envelope: RaftMessage,
    /// The raft-rs message the envelope carried (empty for a tombstone
    /// notice, which carries none).
    pub msg: eraftpb::Message,
}

impl Inbound {
    /// Decodes the raft message inside `envelope`. Bytes that do not decode
    /// are the sender's fault or the network's: the caller drops the
    /// message (raft resends what matters).
    pub fn open(mut envelope: RaftMessage) -> Result<Inbound> {
        let mut msg = eraftpb::Message::default();
        let bytes = std::mem::take(&mut envelope.message);
        if !bytes.is_empty() {
            msg.merge_from_bytes(&bytes)?;
        }
        Ok(Inbound { envelope, msg })
    }

    /// The region the message is for.
    pub fn region_id(&self) -> RegionId {
        self.envelope.region_id
    }

    /// Whether it carries a snapshot.
    pub fn is_snapshot(&self) -> bool {
        !self.envelope.is_tombstone && self.msg.get_msg_type() == MessageType::MsgSnapshot
    }

    /// The snapshot's metadata (file, checksum, region), for a MsgSnapshot.
    pub fn snapshot_data(&self) -> Result<SnapshotData> {
        Ok(SnapshotData::decode(self.msg.get_snapshot().data.as_ref())?)
    }

    /// The envelope again in wire form (for a message passed on as is).
    pub fn seal(self) -> RaftMessage {
        let mut envelope = self.envelope;
        envelope.message = self.msg.write_to_bytes().unwrap_or_default();
        envelope
    }
}

/// Seals raft message `m` from peer `from` of `region` for peer `to`.
pub fn seal(region: &Region, from: Peer, to: Peer, m: &eraftpb::Message) -> Result<RaftMessage> {
    Ok(RaftMessage {
        msg_type: m.get_msg_type() as i32,
        message: m.write_to_bytes()?,
        ..routing(region, from, to)
    })
}

/// An empty envelope from `from` of `region` to `to`: the routing fields.
fn routing(region: &Region, from: Peer, to: Peer) -> RaftMessage {
    RaftMessage {
        region_id: region.id,
        from_peer: Some(from),
        to_peer: Some(to),
        region_epoch: region.region_epoch,
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        ..Default::default()
    }
}

/// The tombstone notice from `from` of `region` telling `to` that it was
/// removed (it carries no raft message).
pub fn tombstone(region: &Region, from: Peer, to: Peer) -> RaftMessage {
    RaftMessage {
        is_tombstone: true,
        ..routing(region, from, to)
    }
}

/// The snapshot metadata inside a sealed MsgSnapshot: its sender reads
/// which file to send.
pub fn snapshot_data(envelope: &RaftMessage) -> Result<SnapshotData> {
    let mut m = eraftpb::Message::default();
    m.merge_from_bytes(&envelope.message)?;
    Ok(SnapshotData::decode(m.get_snapshot().data.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        Region {
            id: 7,
            start_key: b"a".to_vec(),
            end_key: b"m".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_sealed_message_opens_to_the_same_message() {
        let mut m = eraftpb::Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.term = 3;
        m.commit = 9;
        let from = Peer { id: 1, store_id: 1 };
        let to = Peer { id: 2, store_id: 2 };
        let sealed = seal(&region(), from, to, &m).unwrap();
        assert_eq!(sealed.msg_type, MessageType::MsgAppend as i32);
        let inbound = Inbound::open(sealed.clone()).unwrap();
        assert_eq!(inbound.msg, m);
        assert!(inbound.envelope.message.is_empty());
        assert_eq!(inbound.region_id(), 7);
        assert!(!inbound.is_snapshot());
        assert_eq!(inbound.seal(), sealed);
    }

    #[test]
    fn garbage_is_an_error_and_a_tombstone_opens_empty() {
        let mut bad = tombstone(&region(), Peer::default(), Peer::default());
        let t = Inbound::open(bad.clone()).unwrap();
        assert!(t.envelope.is_tombstone && !t.is_snapshot());
        bad.is_tombstone = false;
        bad.message = vec![0xff, 0xff, 0xff];
        assert!(Inbound::open(bad).is_err());
    }
}
