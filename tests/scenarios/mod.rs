mod basic;
mod conf_change;
mod generic;
mod hand;
mod membership;
mod network;
mod split;
