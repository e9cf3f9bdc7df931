//! End-to-end tests of the real `nfrepo` binary.
//!
//! Each test makes its own repository in a temporary directory (or under
//! its own prefix on the SeaweedFS that `scripts/test.sh` starts) and runs
//! the binary as an operator would, asserting on exit codes, error codes,
//! JSON output and restored bytes. Run them in release mode: a debug build
//! seals data hundreds of times slower.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod harness;
mod servers;

mod alerts;
mod artifact;
mod audit;
mod binlog;
mod bucket;
mod bucket_restore;
mod check;
mod cli;
mod concurrency;
mod crash;
mod crashloop;
mod dedup;
mod drill;
mod driver;
mod dump_consistency;
mod errors;
mod files;
mod find;
mod gc;
mod keys;
mod maintenance;
mod maintenance_races;
mod mount;
mod mysql;
mod object_lock;
mod panel;
mod pitr;
mod postgres;
mod put_only;
mod redis;
mod replicate;
mod reseal;
mod restore_into_db;
mod restore_safety;
mod rollback;
mod rollback_safety;
mod rotation;
mod s3;
mod secret_leaks;
mod secrets;
mod serve;
mod soak;
mod sources;
mod spoof;
mod store_policy;
mod streams;
mod unlock_cache;
mod verified_read;
