//! Engine tests on the in-memory store, with fault injection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod integration {
    mod audit;
    mod backup;
    mod check;
    mod drill;
    mod faults;
    pub mod fixture;
    mod forget;
    mod gc;
    mod index_cache;
    mod maintenance;
    mod object_lock;
    mod objects;
    mod pack_listing;
    mod plan;
    mod put_only;
    mod races;
    mod replicate;
    mod repository;
    mod reseal;
    mod rotation;
    mod seek;
    mod snapshot_cache;
    mod tree_windows;
    mod unlock_cache;
    mod verified_read;
}
