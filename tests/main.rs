//! The system tests: one binary holding the workload harness and the
//! scenarios of SCENARIOS.md, run against the public `testkit` API.

mod harness;
mod scenarios;
mod sim;
mod tidy;
