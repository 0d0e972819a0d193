//! The actors: thin adapters that deliver inputs to the pure state machines
//! of `src/` and carry out their outputs (IO, network, timers).
//!
//! - [`peer_actor::PeerActor`]: one per region replica.
//! - [`store_actor::StoreActor`]: the supervisor owning the region map.
//! - [`writer_actor::WriterActor`]: the store-wide fsync batcher.
//! - [`split_checker::SplitCheckActor`]: measures regions and finds split keys.
//! - [`scheduler_client_actor::SchedulerClientActor`]: talks to the scheduler.
//! - [`router::Router`]: the cheap handle that finds a region's peer.
//! - [`transport`]: how raft messages reach other stores.
//! - [`msg`]: every message the actors exchange.

pub mod msg;
pub mod peer_actor;
pub mod router;
pub mod scheduler_client_actor;
pub mod split_checker;
pub mod store_actor;
pub mod transport;
pub mod writer_actor;
