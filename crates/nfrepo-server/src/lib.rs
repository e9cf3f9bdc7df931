//! nfrepo's append-only REST server: any [`nfrepo_store::Store`] served to
//! backup hosts over HTTP(S), as `nfrepo serve --append-only` runs it.
//!
//! A backup host that reaches its repository only through this server can
//! add backups but can neither delete nor overwrite what is stored, even
//! with the repository password: the server refuses every `DELETE` and
//! every replacing `PUT` ([`Mode::AppendOnly`]), except for the session
//! markers a running backup rewrites and removes, which hold no data
//! (`format-spec/server.md` says why that loses nothing). `forget`, `gc`
//! and the other maintenance commands run on the repository directly.
//!
//! It is **not** a repository server: it never opens the repository, holds
//! no key and no password, and sees only sealed objects and their names. It
//! is not the admin panel either: that is `nfrepo-panel`, a separate
//! process holding the repository open, which shares only this crate's
//! listener ([`Listening`]: rustls, bounded handshakes) and [`Token`].
//!
//! The pieces: [`Listening`] binds plain TCP or TLS and serves a router;
//! [`ServerOptions`] (address, [`Auth`], TLS files) and a store
//! go to [`Server::bind`], which checks the policy (no anonymous access and
//! no plain http off loopback), loads the certificate and binds;
//! [`Server::run`] serves until a shutdown future completes. Clients are
//! [`nfrepo_store::RestStore`], the `rest+https://` store. Every request is
//! one `info` line on the [`ACCESS_LOG`] target, without headers, so
//! without the token.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use nfrepo_server::{Auth, Server, ServerOptions};
//! use nfrepo_store::{ErrorKind, MemoryStore, ObjectKey, ObjectKind, PutMode, RestStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ServerOptions::new("127.0.0.1:0".parse()?, Auth::None);
//! let server = Server::bind(Arc::new(MemoryStore::new()), options).await?;
//! let endpoint = format!("http://{}", server.local_addr());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(server.run(async { let _ = stopped.await; }));
//!
//! let client = RestStore::new(&endpoint, None, None)?;
//! let key = ObjectKey::new(ObjectKind::Snapshot, "5e1f")?;
//! client.put(&key, Bytes::from_static(b"root"), PutMode::CreateNew).await?;
//! assert_eq!(client.delete(&key).await.unwrap_err().kind(), ErrorKind::AppendOnly);
//! assert_eq!(client.get(&key).await?, Bytes::from_static(b"root"));
//!
//! let _ = stop.send(());
//! running.await??;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod auth;
mod error;
mod listen;
mod policy;
mod routes;
mod serve;
mod tls;

pub use auth::{Auth, Token};
pub use error::{Error, Result};
pub use listen::{Listening, Peer, is_loopback};
pub use policy::Mode;
pub use routes::ACCESS_LOG;
pub use serve::{Server, ServerOptions, TlsFiles};
