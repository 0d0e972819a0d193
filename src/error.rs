//! Errors of the library. Region errors are data a client acts on; they are
//! turned into `errorpb::Error` inside responses by [`Error::into_region_error`].

use crate::proto::{errorpb, metapb};
use crate::RegionId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("peer is not leader of region {region_id}")]
    NotLeader {
        region_id: RegionId,
        leader: Option<metapb::Peer>,
    },
    #[error("region {0} not found on this store")]
    RegionNotFound(RegionId),
    #[error("key {key:?} is not in region {region_id}")]
    KeyNotInRegion {
        key: Vec<u8>,
        region_id: RegionId,
        start_key: Vec<u8>,
        end_key: Vec<u8>,
    },
    #[error("epoch not match: {message}")]
    EpochNotMatch {
        message: String,
        current_regions: Vec<metapb::Region>,
    },
    /// Definite: the command's entry was replaced by another leader's.
    #[error("stale command: its entry was overwritten by another leader")]
    StaleCommand,
    /// Definite: the command was not proposed; retrying is safe.
    #[error("server is busy: {0}")]
    ServerIsBusy(String),
    /// Indefinite: the command may have taken effect, or may still (see
    /// `errorpb.Undetermined`).
    #[error("outcome unknown: {0}")]
    Undetermined(String),
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("raft message codec: {0}")]
    RaftCodec(#[from] protobuf::ProtobufError),
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
        dir: std::path::PathBuf,
        store_id: u64,
        cluster_id: u64,
    },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error as it travels inside a response header.
    pub fn into_region_error(self) -> errorpb::Error {
        let mut e = errorpb::Error {
            message: self.to_string(),
            ..Default::default()
        };
        match self {
            Error::NotLeader { region_id, leader } => {
                e.not_leader = Some(errorpb::NotLeader { region_id, leader })
            }
            Error::RegionNotFound(region_id) => {
                e.region_not_found = Some(errorpb::RegionNotFound { region_id })
            }
            Error::KeyNotInRegion {
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
            Error::EpochNotMatch {
                current_regions, ..
            } => e.epoch_not_match = Some(errorpb::EpochNotMatch { current_regions }),
            Error::StaleCommand => e.stale_command = Some(errorpb::StaleCommand {}),
            Error::ServerIsBusy(reason) => {
                e.server_is_busy = Some(errorpb::ServerIsBusy { reason })
            }
            Error::Undetermined(reason) => e.undetermined = Some(errorpb::Undetermined { reason }),
            _ => {}
        }
        e
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
}
