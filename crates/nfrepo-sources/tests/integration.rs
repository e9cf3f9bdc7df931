//! Integration tests of `nfrepo-sources`: every [`nfrepo_sources::Source`]
//! run by the one driver into a repository on an in-memory store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod integration {
    mod bucket;
    mod database_restore;
    mod driver;
    mod dump;
    mod files;
    pub mod fixture;
    mod restore;
    mod stream;
}
