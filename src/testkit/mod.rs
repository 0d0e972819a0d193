//! The public test kit: an in-process cluster of stores with a simulated
//! network (filters: partitions, random drops, isolation) and an in-process
//! scheduler, plus client helpers that route by region and retry.
//!
//! Every method but construction takes `&self`, and `Cluster` is a cheap
//! clone: one cluster is shared by many concurrent client tasks, fault
//! injectors and conf changers. Each store runs on arbiters (threads) of its
//! own, so a stopped or isolated store never blocks the others.
//!
//! ```no_run
//! # use tessel::testkit::Cluster;
//! # use tessel::Config;
//! #[actix::test]
//! async fn put_and_get() {
//!     let cluster = Cluster::new(3, Config::for_tests());
//!     cluster.start().await;
//!     cluster.must_put(b"k", b"v").await;
//!     assert_eq!(cluster.must_get(b"k").await, b"v".to_vec());
//!     cluster.shutdown().await;
//! }
//! ```

mod client;
mod cluster;
mod membership;
mod network;

pub use crate::actors::msg::PeerStatus;
pub use client::OnceOutcome;
pub use cluster::Cluster;
pub use network::Filter;
