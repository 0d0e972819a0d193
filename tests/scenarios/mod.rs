//! The scenarios of SCENARIOS.md, one file per family, each over the
//! public test kit.

mod ambiguous;
mod basic;
mod conf_change;
mod generic;
mod hand;
mod linearizable;
mod membership;
mod network;
mod power_loss;
mod recovery;
mod sessions;
mod split;
