//! The panel over HTTP, compiled as one binary: a repository in memory, the
//! panel on loopback with a stepped clock, and a plain HTTP client (cookies
//! handled by hand, so each test sees exactly what a browser is sent).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers shared by tests panic on unexpected failures, like the tests themselves"
)]

mod integration {
    mod api;
    mod auth;
    mod browse;
    mod browser;
    mod database_restore;
    mod harness;
    mod load;
    mod recovery;
    mod restore;
}
