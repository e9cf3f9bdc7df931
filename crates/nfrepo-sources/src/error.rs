//! The error type of `nfrepo-sources`.

use std::path::PathBuf;

use nfrepo_engine::{ErrorClass, ErrorCode, Operation};

/// What went wrong reading a source or writing a target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine failed (storage, corruption, missing objects…).
    #[error(transparent)]
    Engine(#[from] nfrepo_engine::Error),
    /// A source command could not run or did not succeed; nothing is committed.
    #[error("{0}")]
    CommandFailed(String),
    /// A restore would overwrite a file that differs.
    #[error("{0}: exists and differs from the snapshot (use --overwrite to replace it)")]
    Conflict(PathBuf),
    /// Restored content did not hash to the stored BLAKE3.
    #[error("{0}: restored content does not match the stored BLAKE3")]
    ContentMismatch(PathBuf),
    /// `cat` of something that is not a file.
    #[error("{0} is not a file")]
    NotAFile(String),
    /// A local file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// A path given to back up does not exist; nothing is committed.
    #[error("{path}: no such file or directory")]
    SourceNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A path given to back up exists but cannot be read as a whole (as
    /// opposed to an entry inside it, which makes the snapshot partial);
    /// nothing is committed.
    #[error("{path}: cannot be read: {source}")]
    SourceUnreadable {
        /// The path as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The thread running a source panicked; the backup was aborted.
    #[error("the backup worker panicked: {0}")]
    WorkerPanicked(String),
    /// A restore target (a database) already holds data.
    #[error("{0}: refusing to overwrite it (use --force to replace it)")]
    TargetNotEmpty(String),
    /// Live files no longer match the latest snapshot: a rollback would lose those edits.
    #[error("live files changed since the latest snapshot: {} (use --force to roll back anyway)", .0.join(", "))]
    LiveFilesChanged(Vec<String>),
    /// A rollback could not be completed; its changes were undone.
    #[error("rollback failed: {0}")]
    RollbackFailed(String),
    /// The client a restore pipes into (`mysql`, `psql`) failed.
    #[error("{0}")]
    RestoreCommandFailed(String),
    /// Objects of a bucket restore's target exist and differ from the snapshot.
    #[error("{}", objects_differ(keys, *total, *written))]
    ObjectsDiffer {
        /// The first keys that differ (a capped list, in key order).
        keys: Vec<String>,
        /// How many differ in all.
        total: usize,
        /// Objects written before the difference was found: 0 when the
        /// check that precedes every write found it.
        written: u64,
    },
    /// Restore filters that match nothing: a typo must not pass as a
    /// restore. Nothing was written.
    #[error("filter matched nothing: {}; nothing was written", .0.join(", "))]
    FilterMatchedNothing(Vec<String>),
    /// A restore would drop, rename or replace a database of the server
    /// itself (`postgres`, `template0/1`, `mysql`, `information_schema`…).
    #[error(
        "{0} is the server's own database: a restore never replaces it (restore its dump into another name: put that name in the URL)"
    )]
    ProtectedDatabase(String),
    /// Another nfrepo restore is loading into the same database.
    #[error("another restore is running: {0}")]
    RestoreInProgress(String),
    /// Sessions are connected to the database a restore would replace.
    #[error(
        "sessions are connected to the database: {} (stop them, or give --terminate-sessions)",
        .0.join(", ")
    )]
    SessionsBlocking(Vec<String>),
    /// The staged copy does not hold the rows counted at dump time.
    #[error("row counts differ from the dump's: {}", .0.join(", "))]
    RowCountMismatch(Vec<String>),
    /// A WAL file is already archived with other bytes: never overwritten.
    #[error(
        "{0} is already archived with different bytes: refusing to overwrite it (is another cluster archiving into this source?)"
    )]
    WalConflict(String),
    /// A WAL file is not in the repository.
    #[error("{0} is not archived")]
    WalNotFound(String),
    /// A binlog file is missing: purged on the server before it was
    /// copied, or absent from the archive a replay needs.
    #[error("binlog gap: {0}")]
    BinlogGap(String),
    /// A WAL segment is missing from the archive between a base backup's
    /// start and WAL archived later: recovery cannot replay past it.
    #[error("WAL gap: {0}")]
    WalGap(String),
    /// A binlog file on the server no longer begins with the bytes archived
    /// under its name (a server reset, or two servers copied into one source).
    #[error(
        "{0} on the server does not begin with the archived bytes of that name: refusing to archive it (was the server reset, or does another server copy into this source?)"
    )]
    BinlogConflict(String),
    /// No agent answers on the socket.
    #[error("no nfrepo agent answers at {path}: {reason} (start `nfrepo agent`)")]
    AgentUnavailable {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent failed or refused the request.
    #[error("the agent failed: {0}")]
    AgentFailed(String),
    /// A snapshot has no dump of the database asked for, or none at all
    /// (`BACKUP_NOT_FOUND`/`NO_SUCH_DATABASE`).
    #[error("{0}")]
    NoSuchDatabase(String),
    /// A snapshot of one kind of source restored into a target of another
    /// (`RESTORE_FAILED`/`WRONG_SOURCE_KIND`).
    #[error("{0}")]
    WrongSourceKind(String),
    /// A request that cannot be carried out as given: a choice left open, a
    /// target of an unknown kind (`RESTORE_FAILED`/`INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidArgument(String),
    /// A staged database restore failed; `live` says what state the live
    /// database is in (unchanged, unless it says otherwise).
    #[error("restore into database {database} failed {stage} ({live})")]
    DatabaseRestore {
        /// The live database.
        database: String,
        /// Where it failed.
        stage: crate::RestoreStage,
        /// The state of the live database and of the staging copy.
        live: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
}

fn objects_differ(keys: &[String], total: usize, written: u64) -> String {
    let more = total.saturating_sub(keys.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let written = match written {
        0 => "nothing was written".to_owned(),
        n => format!("{n} other objects were written before"),
    };
    format!(
        "{total} object(s) in the target exist and differ from the snapshot: {}{more}; {written} \
         (use --overwrite to replace them)",
        keys.join(", ")
    )
}

impl Error {
    /// The one classification of the error (see [`nfrepo_engine::ErrorClass`]).
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Engine(e) => e.class(),
            Self::Conflict(_)
            | Self::TargetNotEmpty(_)
            | Self::LiveFilesChanged(_)
            | Self::ObjectsDiffer { .. }
            | Self::RestoreInProgress(_)
            | Self::SessionsBlocking(_)
            | Self::WalConflict(_)
            | Self::BinlogConflict(_) => ErrorClass::Conflict,
            Self::DatabaseRestore { source, .. } => source.class(),
            Self::RollbackFailed(_) => ErrorClass::RollbackFailed,
            Self::ContentMismatch(_) => ErrorClass::Corrupted,
            Self::Io { source, .. } => ErrorClass::of_io(source),
            Self::NotAFile(_) | Self::WalNotFound(_) | Self::NoSuchDatabase(_) => ErrorClass::NotFound,
            Self::WrongSourceKind(_) | Self::InvalidArgument(_) => ErrorClass::Failed,
            Self::AgentUnavailable { .. } | Self::AgentFailed(_) | Self::BinlogGap(_) | Self::WalGap(_) => {
                ErrorClass::Failed
            }
            Self::CommandFailed(_)
            | Self::Invalid(_)
            | Self::RestoreCommandFailed(_)
            | Self::WorkerPanicked(_)
            | Self::FilterMatchedNothing(_)
            | Self::ProtectedDatabase(_)
            | Self::RowCountMismatch(_) => ErrorClass::Failed,
            Self::SourceNotFound { .. } => ErrorClass::NotFound,
            Self::SourceUnreadable { source, .. } => ErrorClass::of_io(source),
        }
    }

    /// The stable code of the error in the context of `during`.
    #[must_use]
    pub fn code(&self, during: Operation) -> ErrorCode {
        match self {
            // A source command is part of a backup and a restore client part
            // of a restore, whatever the command that ran them.
            Self::CommandFailed(_)
            | Self::SourceNotFound { .. }
            | Self::SourceUnreadable { .. }
            | Self::WorkerPanicked(_)
            | Self::WalConflict(_)
            | Self::BinlogConflict(_)
            | Self::AgentUnavailable { .. }
            | Self::AgentFailed(_) => ErrorCode::BackupFailed,
            Self::BinlogGap(_) | Self::WalGap(_) if during == Operation::Restore => ErrorCode::RestoreFailed,
            Self::BinlogGap(_) | Self::WalGap(_) => ErrorCode::BackupFailed,
            Self::WalNotFound(_) => ErrorCode::BackupNotFound,
            Self::RestoreCommandFailed(_)
            | Self::ProtectedDatabase(_)
            | Self::RowCountMismatch(_)
            | Self::WrongSourceKind(_)
            | Self::InvalidArgument(_) => ErrorCode::RestoreFailed,
            Self::DatabaseRestore { source, .. } => match source.as_ref() {
                Self::Engine(_) => source.code(during),
                _ if source.class() == ErrorClass::Conflict => ErrorCode::RestoreConflict,
                _ => ErrorCode::RestoreFailed,
            },
            _ => self.class().code(during),
        }
    }

    /// Whether the error means stored data is damaged or missing (see
    /// [`nfrepo_engine::Error::is_damage`]), so `--skip-damaged` may skip what needs it.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        self.class().is_damage()
    }

    /// A finer code, where one exists.
    #[must_use]
    pub fn detail_code(&self) -> Option<&'static str> {
        match self {
            Self::Engine(e) => e.detail_code(),
            Self::CommandFailed(_) => Some("SOURCE_COMMAND_FAILED"),
            Self::SourceNotFound { .. } => Some("SOURCE_NOT_FOUND"),
            Self::SourceUnreadable { .. } => Some("SOURCE_UNREADABLE"),
            Self::WorkerPanicked(_) => Some("WORKER_PANICKED"),
            Self::TargetNotEmpty(_) => Some("TARGET_NOT_EMPTY"),
            Self::LiveFilesChanged(_) => Some("LIVE_FILES_CHANGED"),
            Self::RestoreCommandFailed(_) => Some("TARGET_COMMAND_FAILED"),
            Self::ObjectsDiffer { .. } => Some("OBJECTS_DIFFER"),
            Self::FilterMatchedNothing(_) => Some("FILTER_MATCHED_NOTHING"),
            Self::ProtectedDatabase(_) => Some("PROTECTED_DATABASE"),
            Self::RestoreInProgress(_) => Some("RESTORE_IN_PROGRESS"),
            Self::SessionsBlocking(_) => Some("SESSIONS_BLOCKING"),
            Self::RowCountMismatch(_) => Some("ROW_COUNT_MISMATCH"),
            Self::WalConflict(_) => Some("WAL_CONFLICT"),
            Self::WalNotFound(_) => Some("WAL_NOT_FOUND"),
            Self::BinlogGap(_) => Some("BINLOG_GAP"),
            Self::WalGap(_) => Some("WAL_GAP"),
            Self::BinlogConflict(_) => Some("BINLOG_CONFLICT"),
            Self::AgentUnavailable { .. } => Some("AGENT_UNAVAILABLE"),
            Self::AgentFailed(_) => Some("AGENT_FAILED"),
            Self::NoSuchDatabase(_) => Some("NO_SUCH_DATABASE"),
            Self::WrongSourceKind(_) => Some("WRONG_SOURCE_KIND"),
            Self::InvalidArgument(_) => Some("INVALID_ARGUMENT"),
            Self::DatabaseRestore { source, stage, .. } => match source.as_ref() {
                Self::Engine(_) | Self::SessionsBlocking(_) | Self::RowCountMismatch(_) => source.detail_code(),
                _ => Some(stage.detail_code()),
            },
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
