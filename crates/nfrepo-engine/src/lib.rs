//! nfrepo's repository engine.
//!
//! The engine is the only writer of repository objects. It opens and
//! creates repositories ([`Repository`]), runs the backup pipeline and its
//! commit protocol ([`BackupSession`]), and reads snapshots, trees and file
//! content back with verification ([`Reader`]).
//!
//! It is **not** a source or a target: walking a file system, running a dump
//! command or writing restored files belongs to `nfrepo-sources`, which
//! drives a [`BackupSession`] and consumes a [`Reader`]. It prints nothing;
//! it reports through return values and `tracing`.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn nfrepo_store::Store>) -> nfrepo_engine::Result<()> {
//! use nfrepo_engine::{BackupOptions, CommitDetails, Repository};
//! use nfrepo_format::{Metadata, Node, NodeKind, Tree};
//!
//! let repo = Repository::open(store, b"password").await?;
//! let session = repo.begin_backup(BackupOptions::new("demo", "stdin", "dump")).await?;
//! let (session, root) = tokio::task::spawn_blocking(move || {
//!     let stored = session.store_stream(&b"hello"[..], true)?;
//!     let node = Node {
//!         name: b"hello.txt".to_vec(),
//!         kind: NodeKind::File { size: stored.size, content: stored.content, blake3: stored.blake3, sha256: stored.sha256 },
//!         meta: Metadata::default(),
//!     };
//!     let root = session.store_tree(&Tree { nodes: vec![node] })?;
//!     Ok::<_, nfrepo_engine::Error>((session, root))
//! })
//! .await
//! .expect("join")?;
//! let (id, _snapshot) = session.commit(root, CommitDetails::default()).await?;
//! # let _ = id; Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod backup;
mod browse;
mod check;
mod codec;
mod error;
mod forget;
mod gc;
mod good;
mod host;
mod index;
mod lease;
mod read;
mod repair;
mod repository;
mod retention;
mod session;
mod verify;

pub use backup::{BackupOptions, BackupSession, CommitDetails, Progress, StoredContent};
pub use browse::{Change, ChangeKind, WalkEntry};
pub use check::{Affected, CheckOptions, CheckReport, Finding, ReadDataSubset};
pub use error::{Error, ErrorCode, Operation, Result};
pub use forget::{ForgetDecision, ForgetOptions, ForgetReport};
pub use gc::{GcOptions, GcReport, PackCount};
pub use good::GoodMarkers;
pub use host::{hostname, user_at_host, username};
pub use index::{BlobLocation, Index};
pub use read::{Reader, SnapshotEntry, select_snapshot};
pub use repair::{IndexRepair, SnapshotRepair};
pub use repository::{InitOptions, KeyInfo, Repository};
pub use retention::{BUILT_IN_CLASSES, Bucket, KeepReason, RetentionPolicy, Span};
pub use session::{HEARTBEAT_INTERVAL, SESSION_EXPIRY};
pub use verify::VerifyReport;
