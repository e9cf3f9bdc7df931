//! Integration tests for nfrepo-store, compiled as one binary.
//!
//! The S3 tests need a real S3 server: run `scripts/test.sh`, which starts
//! SeaweedFS, or set the `NFREPO_TEST_S3_*` variables (see `integration/s3.rs`).

#![allow(
    clippy::unwrap_used,
    reason = "helpers shared by tests panic on unexpected failures, like the tests themselves"
)]

mod integration {
    mod conformance;
    mod errors;
    mod fs;
    mod memory;
    mod s3;
    mod s3_lock;
}
