//! Where nfrepo's data comes from, and where it goes back to.
//!
//! Sources drive an engine [`nfrepo_engine::BackupSession`]: [`backup_files`]
//! walks file trees (keeping modes, ownership, times, symlinks, devices and
//! xattrs, and skipping files unchanged since the parent snapshot),
//! [`backup_reader`] stores standard input, and [`backup_command`] stores a
//! command's standard output and refuses to let a failed command become a
//! snapshot. Targets consume an engine [`nfrepo_engine::Reader`]:
//! [`restore`] writes a snapshot or part of it into a directory and
//! [`write_content`] streams one file out.
//!
//! This crate does **not** write repository objects (only the engine does)
//! and does not parse command lines.
//!
//! Source functions block: call them from `spawn_blocking` or a plain
//! thread, then commit the session with the returned root and details.
//!
//! ```no_run
//! # async fn demo(repo: nfrepo_engine::Repository) -> Result<(), Box<dyn std::error::Error>> {
//! use nfrepo_engine::BackupOptions;
//! let session = repo.begin_backup(BackupOptions::new("etc", "files", "files")).await?;
//! let (session, outcome) = tokio::task::spawn_blocking(move || {
//!     let outcome = nfrepo_sources::backup_files(&session, &["/etc".into()]);
//!     (session, outcome)
//! })
//! .await?;
//! let outcome = outcome?;
//! session.commit(outcome.root, outcome.details).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod error;
mod files;
mod meta;
mod restore;
mod stream;

pub use error::{Error, Result};
pub use files::{FilesOutcome, backup_files};
pub use restore::{DamagedRange, RestoreOptions, RestoreReport, restore, write_content, write_content_skipping_damage};
pub use stream::{StreamOutcome, backup_command, backup_reader, redact_argv};
