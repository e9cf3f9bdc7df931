//! The engine's error type and the stable error codes operators script against.
//!
//! Every [`Error`] maps to one [`ErrorCode`] from DESIGN.md §1, and a few of
//! them to a finer code (wrong password, missing repository…) so a script
//! can tell those apart without parsing text.

use std::fmt;

/// The stable, documented codes. Each has its own process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A backup could not be made.
    BackupFailed,
    /// Stored data failed authentication or hashing.
    BackupCorrupted,
    /// A repository, snapshot, path or object does not exist.
    BackupNotFound,
    /// A restore could not be completed.
    RestoreFailed,
    /// A restore would overwrite something that differs.
    RestoreConflict,
    /// A rollback failed.
    RollbackFailed,
    /// Access was refused (by the storage, the file system or the key).
    PermissionDenied,
    /// A snapshot is inconsistent with the repository.
    SnapshotInvalid,
}

impl ErrorCode {
    /// The code as printed, e.g. `BACKUP_FAILED`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BackupFailed => "BACKUP_FAILED",
            Self::BackupCorrupted => "BACKUP_CORRUPTED",
            Self::BackupNotFound => "BACKUP_NOT_FOUND",
            Self::RestoreFailed => "RESTORE_FAILED",
            Self::RestoreConflict => "RESTORE_CONFLICT",
            Self::RollbackFailed => "ROLLBACK_FAILED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::SnapshotInvalid => "SNAPSHOT_INVALID",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, classified for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository at the location (nothing there at all).
    #[error("no repository at {location}")]
    RepositoryNotFound {
        /// Where we looked.
        location: String,
    },
    /// Something is there, but it is not an nfrepo repository.
    #[error("{location} is not an nfrepo repository: {detail}")]
    NotARepository {
        /// Where we looked.
        location: String,
        /// Why not.
        detail: String,
    },
    /// `init` found a repository already there.
    #[error("a repository already exists at {location}; refusing to initialise over it")]
    RepositoryExists {
        /// Where.
        location: String,
    },
    /// No key slot opens with the password given.
    #[error("wrong password for the repository at {location}")]
    WrongPassword {
        /// Which repository.
        location: String,
    },
    /// The storage backend could not be reached.
    #[error("storage unreachable: {0}")]
    Unreachable(#[source] nfrepo_store::Error),
    /// The storage refused access.
    #[error("storage refused access: {0}")]
    StoragePermission(#[source] nfrepo_store::Error),
    /// Any other storage failure.
    #[error("storage error: {0}")]
    Store(#[source] nfrepo_store::Error),
    /// A stored object is damaged or forged.
    #[error("corrupted {object}: {source}")]
    Corrupted {
        /// The object (path, or pack and blob).
        object: String,
        /// What check failed.
        #[source]
        source: nfrepo_format::Error,
    },
    /// A referenced object is missing.
    #[error("missing {object}: {detail}")]
    Missing {
        /// The object.
        object: String,
        /// Context.
        detail: String,
    },
    /// A snapshot does not resolve.
    #[error("snapshot not found: {0}")]
    SnapshotNotFound(String),
    /// A snapshot spec matches more than one snapshot.
    #[error("snapshot prefix {0:?} is ambiguous")]
    AmbiguousSnapshot(String),
    /// A path does not exist inside a snapshot.
    #[error("no such path in snapshot {snapshot}: {path}")]
    PathNotFound {
        /// The snapshot.
        snapshot: String,
        /// The path.
        path: String,
    },
    /// A format-level failure that is not corruption (unsupported version, bad parameter).
    #[error("{0}")]
    Format(#[source] nfrepo_format::Error),
    /// Reading a source failed as a whole.
    #[error("reading {what} failed: {source}")]
    Source {
        /// What was being read.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A source finished in a way that must not be committed (e.g. a dump command failed).
    #[error("{0}")]
    SourceFailed(String),
    /// A background worker failed or died; nothing further will be committed.
    #[error("backup pipeline failed: {0}")]
    Pipeline(String),
    /// An invalid option or argument.
    #[error("{0}")]
    Invalid(String),
    /// Another GC holds the repository's GC lease.
    #[error("another gc is running: {0}")]
    LeaseHeld(String),
}

impl Error {
    /// The stable code for this error, given the operation that failed.
    #[must_use]
    pub fn code(&self, during: Operation) -> ErrorCode {
        match self {
            Self::Corrupted { .. } => ErrorCode::BackupCorrupted,
            Self::Format(e) if e.is_corruption() => ErrorCode::BackupCorrupted,
            Self::Format(_) => ErrorCode::SnapshotInvalid,
            Self::RepositoryNotFound { .. }
            | Self::NotARepository { .. }
            | Self::SnapshotNotFound(_)
            | Self::AmbiguousSnapshot(_)
            | Self::PathNotFound { .. }
            | Self::Missing { .. } => ErrorCode::BackupNotFound,
            Self::WrongPassword { .. } | Self::StoragePermission(_) => ErrorCode::PermissionDenied,
            // A pack the index names is gone, or shorter than the index says.
            Self::Store(e) if e.kind() == nfrepo_store::ErrorKind::NotFound => ErrorCode::BackupNotFound,
            Self::Store(e) if e.kind() == nfrepo_store::ErrorKind::Corrupted => ErrorCode::BackupCorrupted,
            _ => match during {
                Operation::Restore => ErrorCode::RestoreFailed,
                Operation::Backup | Operation::Inspect => ErrorCode::BackupFailed,
            },
        }
    }

    /// A finer code under [`Self::code`], where one exists.
    #[must_use]
    pub const fn detail_code(&self) -> Option<&'static str> {
        match self {
            Self::WrongPassword { .. } => Some("WRONG_PASSWORD"),
            Self::RepositoryNotFound { .. } => Some("REPOSITORY_NOT_FOUND"),
            Self::NotARepository { .. } => Some("NOT_A_REPOSITORY"),
            Self::RepositoryExists { .. } => Some("REPOSITORY_EXISTS"),
            Self::Unreachable(_) => Some("STORAGE_UNREACHABLE"),
            Self::SourceFailed(_) => Some("SOURCE_FAILED"),
            Self::AmbiguousSnapshot(_) => Some("AMBIGUOUS_SNAPSHOT"),
            Self::LeaseHeld(_) => Some("GC_LEASE_HELD"),
            _ => None,
        }
    }

    /// Whether the error means a stored object is damaged, forged or
    /// missing (so skipping what needs it is a choice the operator can
    /// make), as opposed to the storage or the local machine failing.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        match self {
            Self::Store(e) => matches!(
                e.kind(),
                nfrepo_store::ErrorKind::NotFound | nfrepo_store::ErrorKind::Corrupted
            ),
            Self::Corrupted { .. } | Self::Missing { .. } => true,
            Self::Format(e) => e.is_corruption(),
            _ => false,
        }
    }

    pub(crate) fn store(err: nfrepo_store::Error) -> Self {
        match err.kind() {
            nfrepo_store::ErrorKind::Unreachable => Self::Unreachable(err),
            nfrepo_store::ErrorKind::PermissionDenied => Self::StoragePermission(err),
            _ => Self::Store(err),
        }
    }

    /// Wraps a decoding error for `object`: corruption becomes [`Error::Corrupted`].
    pub(crate) fn decode(object: impl Into<String>, err: nfrepo_format::Error) -> Self {
        if err.is_corruption() {
            Self::Corrupted {
                object: object.into(),
                source: err,
            }
        } else {
            Self::Format(err)
        }
    }
}

/// The kind of operation, which decides the generic error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Making a snapshot, or managing the repository.
    Backup,
    /// Restoring or reading data out.
    Restore,
    /// Listing and browsing.
    Inspect,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
