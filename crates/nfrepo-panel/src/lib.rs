//! `nfrepo serve --listen`: the admin panel, a JSON API and `/metrics` over
//! a repository the server holds open.
//!
//! What it shows is computed by `nfrepo-ops` (facts gathered from the
//! repository, alert rules, alert state, channels, metrics): a background
//! loop calls the same functions `nfrepo alerts --notify` calls, every
//! `refresh`, and the pages and the API read the view it leaves. Restores
//! and downloads go through `nfrepo-sources`' restore and the engine's
//! verified file reader.
//!
//! It is **not** the append-only store server: that one
//! (`nfrepo-server`, `nfrepo serve --append-only`) never opens the
//! repository and holds no key, and stays so; this crate reuses its
//! listener ([`nfrepo_server::Listening`]: rustls, bounded handshakes) and
//! nothing else. The two are separate processes on purpose: the panel
//! holds the repository password and the append-only server must not.
//!
//! ## Authentication
//! - Login: name, password (argon2 PHC hash in `[serve] users`, made by
//!   `nfrepo serve hash-password`) and a TOTP code (RFC 6238, totp-rs),
//!   all three in one form so a failure never says which was wrong.
//! - A TOTP code is accepted only for a step later than the last one its
//!   user spent, and never for a step from before the server started: a
//!   code is never accepted twice, across restarts too.
//! - `lockout_failures` failures of one name within `lockout_for` lock it
//!   for `lockout_for` (wrong codes for a restore count too); the lockout
//!   is written to the repository's audit log as `PERMISSION_DENIED`, so
//!   the `auth_failures` rule sees it.
//! - Sessions: 256-bit random ids in an `HttpOnly`, `SameSite=Strict`
//!   cookie (`Secure` and `__Host-` under TLS), idle and absolute expiry,
//!   at most 1024 at once.
//! - CSRF: every form carries the session's token (the login form a token
//!   double-submitted in its own cookie); JSON `POST`s send it in
//!   `X-CSRF-Token` (from `GET /api/session`).
//! - Restores and downloads need a fresh TOTP code on top of the session,
//!   and are written to the repository's audit log (`serve restore`,
//!   `serve download`) and the [`ACCESS_LOG`] naming who approved them.
//! - `/metrics` and `GET /api/*` take a session, or the optional read-only
//!   bearer token (`api_token_file`) so Prometheus and the platform's own
//!   panel need no login; anonymous requests get 401.
//!
//! ## The pieces
//! [`ServeConfig`] is `[serve]`; the CLI reads it into [`PanelOptions`]
//! ([`User::load`] reads each user's secret file), and [`Panel::bind`] then
//! [`Panel::run`] serve until shutdown.
//!
//! ```
//! use nfrepo_panel::{User, hash_password, totp_code};
//!
//! let hash = hash_password(b"correct horse")?;
//! let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
//! let user = User::new("alice", hash, secret)?;
//! assert_eq!(user.name(), "alice");
//! assert_eq!(totp_code(secret, 59)?.len(), 6);
//! # Ok::<(), nfrepo_panel::Error>(())
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod api;
mod auth;
mod client;
mod config;
mod error;
mod html;
mod login;
mod pages;
mod panel;
mod recovery;
mod reply;
mod restore;
mod session;
mod sources;
mod state;

pub use auth::{User, hash_password, new_totp_secret, totp_code};
pub use client::{RemoteOutcome, RemoteRestore, ViaError, ViaRequest, restore_via};
pub use config::{DatabaseTargetConfig, ServeConfig, UserConfig};
pub use error::{Error, Result};
pub use panel::{Panel, PanelOptions, Refresher};
pub use reply::{ERROR_DETAIL_HEADER, ERROR_HEADER};
pub use session::CSRF_HEADER;

/// The `tracing` target of the access log: logins, acknowledgements,
/// approved restores and downloads, one `info` line each, never a secret.
pub const ACCESS_LOG: &str = "nfrepo_panel::access";
