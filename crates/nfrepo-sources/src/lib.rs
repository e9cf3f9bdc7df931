//! Where nfrepo's data comes from, and where it goes back to.
//!
//! Every kind of source implements [`Source`]: [`FilesSource`] walks file
//! trees (keeping modes, ownership, times, symlinks, devices and xattrs, and
//! skipping files unchanged since the parent snapshot), [`StreamSource`]
//! stores standard input, any reader or a command's standard
//! output and refuses to let a failed command become a snapshot,
//! [`DumpSource`] runs the [`DumpPlan`] that [`MysqlSource`],
//! [`PostgresSource`] or [`RedisSource`] make by asking their server, and
//! [`BucketSource`] reads S3 objects. One function, [`run_backup`], runs any
//! of them into a repository: it owns the blocking threads, aborts the
//! engine session on any failure (an error, a failed or killed command, a
//! panic) and commits otherwise.
//!
//! Targets consume an engine [`nfrepo_engine::Reader`]: [`restore`] writes a
//! snapshot or part of it into a directory and [`write_content`] streams one
//! file out; [`restore_databases`] runs a [`DatabaseRestorePlan`]: a dump loaded
//! into a staging database, verified, then switched in atomically;
//! [`restore_bucket`] writes objects back; [`rollback`] puts a file source's
//! live files back in place.
//!
//! This crate does **not** write repository objects (only the engine does)
//! and does not parse command lines. The lower-level functions
//! ([`backup_files`], [`backup_reader`], [`backup_command`], [`backup_dumps`],
//! [`backup_bucket`]) feed an engine [`nfrepo_engine::BackupWriter`] and
//! block; they are what the [`Source`] implementations call.
//!
//! ```no_run
//! # async fn demo(repo: nfrepo_engine::Repository) -> Result<(), nfrepo_sources::Error> {
//! use nfrepo_sources::{FilesSource, RunOptions, run_backup};
//! let source = Box::new(FilesSource::new(vec!["/etc".into()]));
//! let report = run_backup(&repo, source, &RunOptions::new("/etc"), &mut |_progress| {}).await?;
//! println!("snapshot {} ({} files)", report.id, report.snapshot.summary.files);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod binlog;
mod bucket;
mod child;
mod connection;
mod database;
mod drill;
mod driver;
mod dump;
mod error;
mod fault;
mod files;
mod meta;
mod mysql;
mod postgres;
mod random;
mod redis;
mod restore;
mod rollback;
mod secret;
mod source;
mod stream;
mod wal;
mod window;

pub use binlog::{
    ArchivedBinlog, BINLOG_FILE_FACT, BINLOG_GAP_FACT, BINLOG_KIND, BINLOG_NEWEST_EVENT_FACT, BINLOG_SOURCE_FACT,
    BinlogCatalog, BinlogName, BinlogOptions, BinlogReplay, BinlogRun, binlog_stream, choose_dump, dump_position,
    plan_replay,
};
pub use bucket::{
    BucketOutcome, BucketRestoreOptions, BucketRestoreReport, CONTENT_TYPE_XATTR, ETAG_XATTR, backup_bucket,
    restore_bucket,
};
pub use child::{ChildAuth, async_command, command};
pub use connection::Connection;
pub use database::{
    BEFORE_MARK, DatabaseRestoreItem, DatabaseRestoreOptions, DatabaseRestorePlan, DatabaseRestoreReport,
    DatabaseTarget, Leftover, MAINTENANCE_DATABASES, MAX_LOAD_JOBS, PlannedDatabase, RestoreStage, STAGING_MARK,
    database_restore_items, dump_names, expected_rows, plan_database_restore, restore_databases,
};
pub use drill::{DrillOptions, REDIS_KEYS_FACT, drill};
pub use driver::{BackupReport, PROGRESS_EVERY, RetryCounter, RunOptions, run_backup};
pub use dump::{DumpCommand, DumpOutcome, DumpOutput, DumpPlan, backup_dumps};
pub use error::{Error, Result};
pub use files::{FilesOptions, FilesOutcome, backup_files, backup_files_with};
pub use mysql::{MysqlSource, MysqlTarget};
pub use postgres::{
    BASEBACKUP_KIND, BaseBackupSource, GLOBALS_STREAM, PitrRestoreOptions, PitrRestoreReport, PostgresSource,
    PostgresTarget, RecoveryTarget, START_LSN, START_WAL, STOP_LSN, STOP_TIME, STOP_TIMELINE, SYSTEM_ID, TIMELINE,
    choose_base, recovery_settings, restore_postgres_data,
};
pub use redis::{RDB_STREAM, RedisSource};
pub use restore::{DamagedRange, RestoreOptions, RestoreReport, restore, write_content, write_content_skipping_damage};
pub use rollback::{
    RecoveredRollback, RecoveryOutcome, RollbackReport, RollbackScope, RolledBack, live_drift, recover_rollbacks,
    rollback,
};
pub use secret::{Secret, is_protected_var, protect_env_var, protect_value, redact_secrets};
pub use source::{BucketSource, DumpSource, FilesSource, Source, SourceOutcome, StreamSource};
pub use stream::{StreamOutcome, backup_command, backup_reader, redact_argv};
pub use wal::{
    AgentOptions, Archived, FILE_FACT, Lsn, PushOutcome, SOURCE_FACT, WAL_KIND, WalCatalog, WalName, default_socket,
    fetch_wal_via_agent, push_wal, serve_agent, wal_stream, write_wal, write_whole,
};
pub use window::{LogGap, LogKind, LogStatus, RecoveryWindow, check_wal_reaches, recovery_windows};
