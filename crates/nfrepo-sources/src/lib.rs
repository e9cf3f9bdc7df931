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
//! Database and Redis sources ([`MysqlSource`], [`PostgresSource`],
//! [`RedisSource`]) ask their server what to dump and return a
//! [`DumpPlan`]; [`backup_dumps`] runs it, streaming every dump into the
//! snapshot. [`restore_databases`] pipes a dump back into `mysql` or `psql`.
//! [`backup_bucket`] and [`restore_bucket`] read and write S3 objects, and
//! [`rollback`] puts a file source's live files back in place.
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

mod bucket;
mod connection;
mod database;
mod dump;
mod error;
mod files;
mod meta;
mod mysql;
mod postgres;
mod redis;
mod restore;
mod rollback;
mod secret;
mod stream;

pub use bucket::{
    BucketOutcome, BucketRestoreOptions, BucketRestoreReport, CONTENT_TYPE_XATTR, ETAG_XATTR, backup_bucket,
    restore_bucket,
};
pub use connection::Connection;
pub use database::{DatabaseRestoreReport, DatabaseTarget, restore_databases};
pub use dump::{DumpCommand, DumpOutcome, DumpPlan, HeadFacts, backup_dumps};
pub use error::{Error, Result};
pub use files::{FilesOptions, FilesOutcome, backup_files, backup_files_with};
pub use mysql::{MysqlSource, MysqlTarget};
pub use postgres::{GLOBALS_STREAM, PostgresSource, PostgresTarget};
pub use redis::{RDB_STREAM, RedisSource};
pub use restore::{DamagedRange, RestoreOptions, RestoreReport, restore, write_content, write_content_skipping_damage};
pub use rollback::{RollbackReport, RollbackScope, RolledBack, live_drift, rollback};
pub use secret::Secret;
pub use stream::{StreamOutcome, backup_command, backup_reader, redact_argv};
