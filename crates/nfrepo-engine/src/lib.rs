//! nfrepo's repository engine.
//!
//! The engine is the only writer of repository objects. It opens and
//! creates repositories ([`Repository`]), runs the backup pipeline
//! ([`BackupWriter`], which sources feed) and its commit protocol
//! ([`BackupSession`], which alone commits or aborts), and reads snapshots, trees and file
//! content back with verification ([`Reader`]).
//!
//! It is **not** a source or a target: walking a file system, running a dump
//! command or writing restored files belongs to `nfrepo-sources`, which
//! feeds a [`BackupWriter`] and consumes a [`Reader`]. It prints nothing;
//! it reports through return values and `tracing`.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn nfrepo_store::Store>) -> nfrepo_engine::Result<()> {
//! use nfrepo_engine::{BackupOptions, CommitDetails, Repository};
//! use nfrepo_format::{Metadata, Node, NodeKind, Tree};
//!
//! let repo = Repository::open(store, b"password").await?;
//! let session = repo.begin_backup(BackupOptions::new("demo", "stdin", "dump")).await?;
//! let writer = session.writer();
//! let root = tokio::task::spawn_blocking(move || {
//!     let stored = writer.store_stream(&b"hello"[..], true)?;
//!     let node = Node {
//!         name: b"hello.txt".to_vec(),
//!         kind: stored.file_kind(),
//!         meta: Metadata::default(),
//!     };
//!     writer.store_tree(&Tree { nodes: vec![node] })
//! })
//! .await
//! .expect("join")?;
//! let (id, _snapshot) = session.commit(root, CommitDetails::default()).await?;
//! # let _ = id; Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod audit;
mod backup;
mod browse;
mod check;
mod codec;
mod drill;
mod error;
#[doc(hidden)]
pub mod failpoint;
mod find;
mod forget;
mod gc;
mod good;
mod host;
mod index;
pub mod layout;
mod lease;
mod object_lock;
mod objects;
mod put_only;
mod read;
mod repair;
mod replicate;
mod repository;
mod retention;
mod rotation;
mod runs;
mod session;
mod snapshot_cache;
mod unlock_cache;
mod verify;
mod walk;
mod work;

pub use audit::{
    Activity, ActivityStore, ActivitySummary, Appended, AuditEvent, AuditFilter, AuditLogEntry, AuditProblem,
    AuditProblemKind, AuditReport, AuditWriter, CHECKPOINT_INTERVAL_NS, PUBLIC_KEY_OBJECT, read_audit,
    redact_command_line,
};
pub use backup::{
    BackupOptions, BackupSession, BackupWriter, CommitDetails, PACK_LISTING_INTERVAL, Progress, StoredContent,
    StreamResume,
};
pub use browse::{Change, ChangeKind, WalkEntry, WalkPause};
pub use check::{Affected, CheckOptions, CheckReport, Finding, ReadDataSubset};
pub use drill::DrillHistory;
pub use error::{Error, ErrorClass, ErrorCode, Operation, Result};
pub use find::Found;
pub use forget::{
    BASEBACKUP_KIND, BASEBACKUP_START_WAL_FACT, BINLOG_FILE_FACT, BINLOG_GAP_FACT, BINLOG_KIND, BINLOG_STREAM_SUFFIX,
    DUMP_BINLOG_FILE_FACT, ForgetDecision, ForgetOptions, ForgetReport, SettledForgets, Unprotected, WAL_FILE_FACT,
    WAL_KIND, WAL_STREAM_SUFFIX, binlog_order,
};
pub use gc::{GcOptions, GcPlan, GcReport, PackCount, RESEALED_FROM, ResealOptions, ResealReport};
pub use good::GoodMarkers;
pub use host::{hostname, user_at_host, username};
pub use index::{BlobLocation, Index};
pub use layout::{Layout, LayoutEntry};
pub use lease::{DEFAULT_LEASE_TERM, ReplacedLease, Takeover};
pub use object_lock::LockReport;
pub use read::{
    BatchFile, ChunkAt, FileToRestore, PackRead, Placement, PlanLimits, PlannedChunk, Reader, RestoreBatch,
    RestorePlanner, SnapshotEntry, SpanPart, group_reads, locate_entry, select_snapshot,
};
pub use repair::{IndexRepair, RepairOptions, SnapshotRepair, SnapshotsRepair};
pub use replicate::{
    DEFAULT_DELETE_AFTER, DEFAULT_JOBS, MEMORY_BUDGET, ReplicaProblem, ReplicaStatus, ReplicateOptions,
    ReplicateReport, VerifySubset, replica_status, replicate,
};
pub use repository::{
    InitOptions, KDF_ITERATIONS, KDF_MEMORY_KIB, KeyInfo, PACK_SIZE_MIB, Repository, ZSTD_LEVELS, validate_kdf,
};
pub use retention::{BUILT_IN_CLASSES, Bucket, KeepReason, RetentionPolicy, Span};
pub use rotation::{RotateOptions, RotateReport, SlotRef};
pub use session::{HEARTBEAT_INTERVAL, SESSION_EXPIRY};
pub use unlock_cache::{MAX_UNLOCK_CACHE_TTL, UnlockCache};
pub use verify::VerifyReport;
pub use work::{Work, WorkCounts};
