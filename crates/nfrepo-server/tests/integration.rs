//! Integration tests for nfrepo-server, compiled as one binary: the store
//! conformance suite of nfrepo-store run against the REST client over an
//! in-process server, and the append-only policy end to end.

#![allow(
    clippy::unwrap_used,
    reason = "helpers shared by tests panic on unexpected failures, like the tests themselves"
)]

mod integration {
    // The one conformance suite every store passes, shared with nfrepo-store's tests.
    #[path = "../../../nfrepo-store/tests/integration/conformance.rs"]
    #[allow(dead_code, reason = "the suite's helpers not every backend here runs")]
    mod conformance;
    mod harness;
    mod policy;
    mod rest_conformance;
    mod tls;
}
