//! Generated protocol types (see `proto/`). Never edited by hand.
#![allow(clippy::all, missing_docs)]

pub mod metapb {
    include!(concat!(env!("OUT_DIR"), "/metapb.rs"));
}
pub mod errorpb {
    include!(concat!(env!("OUT_DIR"), "/errorpb.rs"));
}
pub mod raft_serverpb {
    include!(concat!(env!("OUT_DIR"), "/raft_serverpb.rs"));
}
pub mod raft_cmdpb {
    include!(concat!(env!("OUT_DIR"), "/raft_cmdpb.rs"));
}
pub mod schedulerpb {
    include!(concat!(env!("OUT_DIR"), "/schedulerpb.rs"));
}
pub mod kvpb {
    include!(concat!(env!("OUT_DIR"), "/kvpb.rs"));
}
