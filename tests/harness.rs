//! Shared helpers of the scenarios.
#![allow(dead_code)]

pub fn init() {
    tessel::logging::init_for_tests();
}
