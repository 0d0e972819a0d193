mod basic;
mod generic;
mod hand;
mod membership;
