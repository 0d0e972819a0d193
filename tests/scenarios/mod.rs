mod basic;
mod generic;
mod hand;
