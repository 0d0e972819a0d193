//! Tessel: a strongly consistent, range-sharded key-value store. The key space
//! is cut into regions, each replicated by its own Raft group (raft-rs); every
//! replica is an actix actor; everything durable lives in sled.
//!
//! `src/` holds the pure parts (keys, storage, the `Peer` state machine, the
//! scheduler's logic) and the product shell; `actors/` holds the actors that
//! carry out what the pure parts decide.

pub mod client;
pub mod config;
pub mod error;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod proto;
pub mod region;
pub mod scheduler;
pub mod server;
pub mod storage;
pub mod store;
pub mod testkit;

#[path = "../actors/mod.rs"]
mod actors;

pub type RegionId = u64;
pub type PeerId = u64;
pub type StoreId = u64;

pub use config::Config;
pub use error::{Error, Result};
