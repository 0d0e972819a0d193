//! Errors of the library, in two kinds.
//!
//! - [`RegionError`]: what a client acts on. Each travels inside a response
//!   header as an `errorpb::Error` ([`RegionError::into_pb`]) and tells the
//!   client what to do next: re-route, retry, give up, or report that the
//!   outcome is unknown. [`is_definite`] says which ones promise the command
//!   did not take effect.
//! - The rest of [`Error`]: the infrastructure failing (storage, network,
//!   corrupt data, a task that died). A caller tells these apart by variant,
//!   never by parsing a message: there is no catch-all string variant.

use crate::proto::{errorpb, metapb};
use crate::RegionId;

/// A region's answer a client must act on (see the module docs).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    /// Definite: this peer is not the leader; `leader` is the best hint.
    #[error("peer is not leader of region {region_id}")]
    NotLeader {
        /// The region asked about.
        region_id: RegionId,
        /// The leader this peer knows of, if any.
        leader: Option<metapb::Peer>,
    },
    /// Definite: this store has no peer of the region.
    #[error("region {0} not found on this store")]
    RegionNotFound(RegionId),
    /// Definite: the key is outside the region's range (it split or merged).
    #[error("key {key:?} is not in region {region_id}")]
    KeyNotInRegion {
        /// The key asked for.
        key: Vec<u8>,
        /// The region asked.
        region_id: RegionId,
        /// The region's range as this peer knows it.
        start_key: Vec<u8>,
        /// End of that range (empty: unbounded).
        end_key: Vec<u8>,
    },
    /// Definite: the request's epoch is stale; `current_regions` re-route it.
    #[error("epoch not match: {message}")]
    EpochNotMatch {
        /// What did not match.
        message: String,
        /// The regions now covering the request's range, as far as known.
        current_regions: Vec<metapb::Region>,
    },
    /// Definite: the command's entry was replaced by another leader's.
    #[error("stale command: its entry was overwritten by another leader")]
    StaleCommand,
    /// Definite: the command was not proposed (a full mailbox, a conf change
    /// or leader transfer in progress); retrying after a pause is safe.
    #[error("server is busy: {0}")]
    ServerIsBusy(String),
    /// Indefinite: the command may have taken effect, or may still (see
    /// `errorpb.Undetermined`).
    #[error("outcome unknown: {0}")]
    Undetermined(String),
    /// Definite: the request is malformed or asks for what the region
    /// refuses (a split key outside it, a transfer to a non-member, a conf
    /// change raft does not allow). The same request fails the same way:
    /// retrying it is pointless.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Every error of the library (see the module docs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The region's answer: the client acts on it.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// sled failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// raft-rs refused or failed.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A protobuf message (prost) did not decode.
    #[error("decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A raft-rs message (rust-protobuf) did not encode or decode.
    #[error("raft message codec: {0}")]
    RaftCodec(#[from] protobuf::ProtobufError),
    /// A file operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The directory held a store once (its identity file says which) but
    /// its database opened without it: the data was lost or replaced.
    #[error(
        "{dir}: this directory held store {store_id} of cluster {cluster_id}, but its database \
         opened empty or without that store; its data was lost. Refusing to start as a new store \
         at the old one's address: start with --new-store to set the old data aside and join as a \
         new store (remove the old store's replicas with `tessel ctl remove-peer`)"
    )]
    DataLost {
        /// The store's data directory.
        dir: std::path::PathBuf,
        /// The store the identity file names.
        store_id: u64,
        /// Its cluster.
        cluster_id: u64,
    },
    /// Stored or received data breaks an invariant (a log behind its apply
    /// state, an identity file that does not parse, a snapshot file that
    /// does not match its metadata). Nothing was changed because of it.
    #[error("corrupt data: {0}")]
    Corruption(String),
    /// A snapshot was refused at admission (the wrong region, or a range
    /// this store already holds in another region). The sender retries.
    #[error("snapshot refused: {0}")]
    SnapshotRefused(String),
    /// A node, store or the scheduler cannot be reached now; trying again
    /// later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The other side answered in a way the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A setting or an address given to the library is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The scheduler refused a request (a stale region, an invalid store).
    #[error("scheduler: {0}")]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    /// Waited past a deadline for something that did not happen.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A part of this process failed (a task panicked, an actor stopped
    /// before answering).
    #[error("internal: {0}")]
    Internal(String),
}

/// The library's result.
pub type Result<T> = std::result::Result<T, Error>;

impl RegionError {
    /// The error as it travels inside a response header.
    pub fn into_pb(self) -> errorpb::Error {
        let mut e = errorpb::Error {
            message: self.to_string(),
            ..Default::default()
        };
        match self {
            RegionError::NotLeader { region_id, leader } => {
                e.not_leader = Some(errorpb::NotLeader { region_id, leader })
            }
            RegionError::RegionNotFound(region_id) => {
                e.region_not_found = Some(errorpb::RegionNotFound { region_id })
            }
            RegionError::KeyNotInRegion {
                key,
                region_id,
                start_key,
                end_key,
            } => {
                e.key_not_in_region = Some(errorpb::KeyNotInRegion {
                    key,
                    region_id,
                    start_key,
                    end_key,
                })
            }
            RegionError::EpochNotMatch {
                current_regions, ..
            } => e.epoch_not_match = Some(errorpb::EpochNotMatch { current_regions }),
            RegionError::StaleCommand => e.stale_command = Some(errorpb::StaleCommand {}),
            RegionError::ServerIsBusy(reason) => {
                e.server_is_busy = Some(errorpb::ServerIsBusy { reason })
            }
            RegionError::Undetermined(reason) => {
                e.undetermined = Some(errorpb::Undetermined { reason })
            }
            RegionError::InvalidRequest(reason) => {
                e.invalid_request = Some(errorpb::InvalidRequest { reason })
            }
        }
        e
    }
}

impl Error {
    /// The error as it travels inside a response header. A region error
    /// keeps its kind; an infrastructure error reaches the client as
    /// Undetermined, because the command it answers may have been applied
    /// before the failure (a failed apply batch, a lost answer).
    pub fn into_region_error(self) -> errorpb::Error {
        match self {
            Error::Region(e) => e.into_pb(),
            other => RegionError::Undetermined(other.to_string()).into_pb(),
        }
    }

    /// This error stopped a command before it was proposed, so the command
    /// did not take effect: a region error keeps its kind, and a failure of
    /// the infrastructure (raft dropping the proposal, the scheduler out of
    /// reach when a split asks for ids) becomes `ServerIsBusy`, definite and
    /// safe to retry after a pause.
    pub fn before_proposal(self) -> RegionError {
        match self {
            Error::Region(e) => e,
            other => RegionError::ServerIsBusy(other.to_string()),
        }
    }
}

/// Whether a region error says the command was definitely not applied
/// (refused before it was proposed, or its entry was replaced), so a client
/// may retry it without a session. Any other error, `Undetermined` above
/// all, leaves the outcome unknown.
pub fn is_definite(e: &errorpb::Error) -> bool {
    e.not_leader.is_some()
        || e.epoch_not_match.is_some()
        || e.key_not_in_region.is_some()
        || e.region_not_found.is_some()
        || e.stale_command.is_some()
        || e.server_is_busy.is_some()
        || e.invalid_request.is_some()
}
