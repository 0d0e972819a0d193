//! Process assembly: what runs a store, a scheduler or a whole local
//! cluster as a process, wiring storage, actors, the scheduler client and
//! the gRPC services (`server/`) together.
//!
//! - [`node::Node`]: one store serving the Kv and Raft services.
//! - [`scheduler::serve_scheduler`]: the scheduler serving its service.
//! - [`local::LocalCluster`]: a scheduler and N nodes in this process, on
//!   loopback ports.

pub mod local;
pub mod node;
pub mod scheduler;
