//! nfrepo-ops against real sockets: the webhook to a local HTTP listener,
//! email to a local SMTP sink, both started by the tests themselves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod integration {
    mod channels;
}
