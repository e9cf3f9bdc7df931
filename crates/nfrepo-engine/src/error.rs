//! The engine's error type, its one classification, and the stable error
//! codes operators script against.
//!
//! Every error is classified once, by [`Error::class`], into an
//! [`ErrorClass`]: whether it means damaged or missing repository data,
//! whether retrying may help, and which [`ErrorCode`] (DESIGN.md §1) it
//! carries in a given [`Operation`]. Restore's `--skip-damaged`, `check`'s
//! findings and the CLI's exit codes all read that one classification, so a
//! missing blob is `BACKUP_NOT_FOUND` whichever command meets it. A few
//! errors also have a finer code ([`Error::detail_code`]: wrong password,
//! missing repository…) so a script can tell them apart without parsing text.
//! Turning codes into process exit codes is the CLI's business alone.

use std::fmt;
use std::sync::Arc;

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

    /// The code [`ErrorCode::as_str`] prints as `text`, if it is one.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::BackupFailed,
            Self::BackupCorrupted,
            Self::BackupNotFound,
            Self::RestoreFailed,
            Self::RestoreConflict,
            Self::RollbackFailed,
            Self::PermissionDenied,
            Self::SnapshotInvalid,
        ]
        .into_iter()
        .find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an error is to be treated: the one classification every consumer
/// (restore's `--skip-damaged`, `check`, retries, the CLI's exit codes) reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Stored bytes are damaged or forged: authentication or hash failure,
    /// undecodable bytes, an object shorter than the index says.
    Corrupted,
    /// An object the repository refers to (a pack, an indexed blob) is gone.
    Missing,
    /// What was asked for (a repository, snapshot, path, key slot) does not exist.
    NotFound,
    /// An object opens but cannot be used: a newer format version.
    Invalid,
    /// Access was refused: by the storage, the local file system, or the key.
    Denied,
    /// A restore would overwrite something that differs.
    Conflict,
    /// A rollback failed.
    RollbackFailed,
    /// The storage could not be reached or failed in a way that may go away.
    Transient,
    /// Another command holds what this one needs (the maintenance lease):
    /// nothing was done, and the same command later will run.
    Busy,
    /// Anything else: the operation failed, the repository is not at fault.
    Failed,
}

impl ErrorClass {
    /// Whether the error means repository data is damaged or missing, so
    /// skipping what needs it is a choice the operator can make (and a
    /// finding of `check` rather than a reason to stop it).
    #[must_use]
    pub const fn is_damage(self) -> bool {
        matches!(self, Self::Corrupted | Self::Missing)
    }

    /// Whether retrying the same operation later may succeed.
    #[must_use]
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::Busy)
    }

    /// The stable code of an error of this class during `during`.
    #[must_use]
    pub const fn code(self, during: Operation) -> ErrorCode {
        match self {
            Self::Corrupted => ErrorCode::BackupCorrupted,
            Self::Missing | Self::NotFound => ErrorCode::BackupNotFound,
            Self::Invalid => ErrorCode::SnapshotInvalid,
            Self::Denied => ErrorCode::PermissionDenied,
            Self::Conflict => ErrorCode::RestoreConflict,
            Self::RollbackFailed => ErrorCode::RollbackFailed,
            Self::Transient | Self::Failed | Self::Busy => match during {
                Operation::Restore => ErrorCode::RestoreFailed,
                Operation::Backup | Operation::Inspect | Operation::Maintenance => ErrorCode::BackupFailed,
            },
        }
    }

    /// The class of a storage error met while reading or writing a
    /// repository object. A missing object the repository refers to is
    /// [`Self::Missing`]; whoever knows the object was only asked for (a
    /// snapshot spec, the config) maps `NotFound` to its own error first.
    #[must_use]
    pub fn of_store(err: &nfrepo_store::Error) -> Self {
        use nfrepo_store::ErrorKind as K;
        match err.kind() {
            K::NotFound => Self::Missing,
            K::Corrupted => Self::Corrupted,
            // Missing, incomplete or unreadable credentials: the operator's to
            // give, like a password, so refused rather than failed.
            K::PermissionDenied | K::InsecureTransport | K::AppendOnly | K::Credentials => Self::Denied,
            K::InvalidUrl => Self::NotFound,
            _ if err.is_retryable() => Self::Transient,
            _ => Self::Failed,
        }
    }

    /// The class of a format error met opening stored bytes.
    #[must_use]
    pub fn of_format(err: &nfrepo_format::Error) -> Self {
        match err {
            e if e.is_corruption() => Self::Corrupted,
            nfrepo_format::Error::UnsupportedVersion { .. } => Self::Invalid,
            nfrepo_format::Error::WrongPassword | nfrepo_format::Error::MissingKey { .. } => Self::Denied,
            _ => Self::Failed,
        }
    }

    /// The class of a local I/O error.
    #[must_use]
    pub fn of_io(err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => Self::Denied,
            _ => Self::Failed,
        }
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
    /// A background worker died (panicked) or shared state was poisoned;
    /// nothing further will be committed. Failures with a cause carry it
    /// typed instead ([`Error::Shared`], [`Error::Unverified`]).
    #[error("backup pipeline failed: {0}")]
    Pipeline(String),
    /// The first failure of one worker of an operation, seen by every other
    /// worker that stops because of it. Classified as the failure itself.
    #[error(transparent)]
    Shared(Arc<Error>),
    /// A pack built by this process failed its verification before upload
    /// (a local compression or memory fault); nothing of it was uploaded.
    #[error("pack {pack} failed verification before upload: {detail}")]
    Unverified {
        /// The pack.
        pack: String,
        /// What failed.
        detail: String,
        /// The decoding error, if there was one.
        #[source]
        source: Option<nfrepo_format::Error>,
    },
    /// An invalid option or argument.
    #[error("{0}")]
    Invalid(String),
    /// Another maintenance command (gc, repair, key rotate) holds the
    /// repository's maintenance lease; nothing was done.
    #[error("another maintenance command is running: {0}")]
    LeaseHeld(String),
    /// The repository's config names a cipher other than the one a policy requires.
    #[error("the repository at {location} uses cipher {found}, but {required} is required; refusing to open it")]
    CipherNotAllowed {
        /// Which repository.
        location: String,
        /// The cipher its config names.
        found: &'static str,
        /// The cipher the policy requires.
        required: &'static str,
    },
    /// The key slot that opened the repository holds an older key epoch than
    /// another slot: a rotation did not rewrite it, or has not finished.
    #[error(
        "this password's key slot is at key epoch {epoch}, but the repository has rotated to epoch {newest}: \
         it can read but not write; finish the rotation with `nfrepo key rotate` using a password it kept \
         (if no slot is at epoch {newest}, the rotation died early or the key slots were rolled back)"
    )]
    StaleKeySlot {
        /// The epoch of the slot used.
        epoch: u32,
        /// The newest epoch a slot claims.
        newest: u32,
    },
    /// The repository was opened with a put-only credential, which can add
    /// backups and nothing else (format-spec/put-only.md).
    #[error("{operation} is refused with a put-only credential: it can add backups, and read or remove nothing")]
    PutOnly {
        /// The refused operation.
        operation: &'static str,
    },
    /// The put-only credential's slot is gone, is another credential's, or
    /// belongs to a key epoch the repository rotated away from.
    #[error("the put-only credential {slot} is revoked: its key slot is {detail}")]
    RevokedCredential {
        /// The credential's slot id (short).
        slot: String,
        /// Why.
        detail: String,
    },
    /// This command's maintenance lease passed to another command (or its
    /// renewals lapsed): it stopped before its next destructive step.
    #[error("the maintenance lease was lost: {0}; stopped before the next step that writes or deletes")]
    LeaseLost(String),
    /// Packs a backup deduplicated against vanished before its commit point
    /// (a maintenance race or damage, issue 17); nothing was committed, and
    /// the next run, which lists packs afresh, stores that data again.
    #[error(
        "{} pack(s) this backup deduplicated against are gone from the repository (first: {}); \
         nothing was committed: run `nfrepo check`, then run the backup again (it stores that data anew)",
        packs.len(),
        packs.first().map_or_else(String::new, ToString::to_string)
    )]
    DedupPackMissing {
        /// The packs that are gone, sorted.
        packs: Vec<nfrepo_format::PackId>,
    },
    /// `protect` wrote its marker, but a `forget` had deleted the snapshot
    /// meanwhile; the marker was removed again (issue 17).
    #[error("snapshot {snapshot} was forgotten while it was being protected; it is not protected")]
    ForgottenWhileProtecting {
        /// The snapshot id.
        snapshot: String,
    },
    /// A password given to keep through a key rotation opens no key slot.
    #[error("keep-password {position} opens no key slot of the repository at {location}")]
    UnknownKeepPassword {
        /// Which of the passwords given (1-based).
        position: usize,
        /// Which repository.
        location: String,
    },
    /// The key slot that opened holds a key epoch a reseal has retired:
    /// nothing in the repository opens under it any more.
    #[error(
        "this password's key slot is at key epoch {epoch}, which a reseal retired (the repository is at epoch \
         {newest}): it opens nothing in the repository"
    )]
    RetiredKeyEpoch {
        /// The epoch of the slot used.
        epoch: u32,
        /// The newest epoch a slot claims or a key history is stored for.
        newest: u32,
    },
}

impl Error {
    /// The one classification of this error (see [`ErrorClass`]).
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Corrupted { .. } => ErrorClass::Corrupted,
            Self::Missing { .. } => ErrorClass::Missing,
            Self::RepositoryNotFound { .. }
            | Self::NotARepository { .. }
            | Self::SnapshotNotFound(_)
            | Self::ForgottenWhileProtecting { .. }
            | Self::AmbiguousSnapshot(_)
            | Self::PathNotFound { .. } => ErrorClass::NotFound,
            Self::WrongPassword { .. }
            | Self::StoragePermission(_)
            | Self::CipherNotAllowed { .. }
            | Self::StaleKeySlot { .. }
            | Self::UnknownKeepPassword { .. }
            | Self::PutOnly { .. }
            | Self::RevokedCredential { .. }
            | Self::RetiredKeyEpoch { .. } => ErrorClass::Denied,
            Self::Unreachable(_) => ErrorClass::Transient,
            Self::Store(e) => ErrorClass::of_store(e),
            Self::Format(e) => ErrorClass::of_format(e),
            Self::Source { source, .. } => ErrorClass::of_io(source),
            Self::Shared(e) => e.class(),
            Self::RepositoryExists { .. }
            | Self::SourceFailed(_)
            | Self::Pipeline(_)
            | Self::Unverified { .. }
            | Self::Invalid(_)
            | Self::LeaseLost(_)
            | Self::DedupPackMissing { .. } => ErrorClass::Failed,
            Self::LeaseHeld(_) => ErrorClass::Busy,
        }
    }

    /// The stable code for this error, given the operation that failed.
    #[must_use]
    pub fn code(&self, during: Operation) -> ErrorCode {
        self.class().code(during)
    }

    /// A finer code under [`Self::code`], where one exists.
    #[must_use]
    pub fn detail_code(&self) -> Option<&'static str> {
        match self {
            Self::WrongPassword { .. } => Some("WRONG_PASSWORD"),
            Self::RepositoryNotFound { .. } => Some("REPOSITORY_NOT_FOUND"),
            Self::NotARepository { .. } => Some("NOT_A_REPOSITORY"),
            Self::RepositoryExists { .. } => Some("REPOSITORY_EXISTS"),
            Self::Unreachable(_) => Some("STORAGE_UNREACHABLE"),
            Self::SourceFailed(_) => Some("SOURCE_FAILED"),
            Self::AmbiguousSnapshot(_) => Some("AMBIGUOUS_SNAPSHOT"),
            Self::LeaseHeld(_) => Some("GC_LEASE_HELD"),
            Self::Store(e) if e.kind() == nfrepo_store::ErrorKind::InvalidUrl => Some("INVALID_REPOSITORY_URL"),
            Self::StaleKeySlot { .. } => Some("STALE_KEY_SLOT"),
            Self::UnknownKeepPassword { .. } => Some("UNKNOWN_KEEP_PASSWORD"),
            Self::Shared(e) => e.detail_code(),
            Self::Store(e) if e.kind() == nfrepo_store::ErrorKind::InsecureTransport => Some("INSECURE_HTTP"),
            Self::CipherNotAllowed { .. } => Some("CIPHER_NOT_ALLOWED"),
            Self::LeaseLost(_) => Some("MAINTENANCE_LEASE_LOST"),
            Self::DedupPackMissing { .. } => Some("DEDUP_PACK_MISSING"),
            Self::ForgottenWhileProtecting { .. } => Some("SNAPSHOT_FORGOTTEN"),
            Self::RetiredKeyEpoch { .. } => Some("RETIRED_KEY_EPOCH"),
            Self::PutOnly { .. } => Some("PUT_ONLY"),
            Self::RevokedCredential { .. } => Some("REVOKED_CREDENTIAL"),
            Self::Format(nfrepo_format::Error::MissingKey { .. }) => Some("PUT_ONLY"),
            Self::StoragePermission(e) if e.kind() == nfrepo_store::ErrorKind::AppendOnly => Some("APPEND_ONLY"),
            _ => None,
        }
    }

    /// [`Self::detail_code`], or for a maintenance command (gc, repair,
    /// key rotate) whose failure has no finer code and is not about
    /// damaged data, `MAINTENANCE_FAILED`: so a script tells a failed gc
    /// from a failed backup though both carry `BACKUP_FAILED`.
    #[must_use]
    pub fn detail_code_during(&self, during: Operation) -> Option<&'static str> {
        self.detail_code().or_else(|| {
            (during == Operation::Maintenance && matches!(self.class(), ErrorClass::Transient | ErrorClass::Failed))
                .then_some("MAINTENANCE_FAILED")
        })
    }

    /// Whether the error means a stored object is damaged, forged or
    /// missing (so skipping what needs it is a choice the operator can
    /// make), as opposed to the storage or the local machine failing.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        self.class().is_damage()
    }

    /// Whether retrying the same operation later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }

    /// This error, ready to be handed to every worker of an operation;
    /// an error already shared is not wrapped again.
    #[must_use]
    pub(crate) fn into_shared(self) -> Arc<Self> {
        match self {
            Self::Shared(e) => e,
            e => Arc::new(e),
        }
    }

    /// The error behind `shared`: itself if no other worker holds it.
    #[must_use]
    pub(crate) fn from_shared(shared: Arc<Self>) -> Self {
        Arc::try_unwrap(shared).unwrap_or_else(Self::Shared)
    }

    pub(crate) fn store(err: nfrepo_store::Error) -> Self {
        match err.kind() {
            nfrepo_store::ErrorKind::Unreachable => Self::Unreachable(err),
            nfrepo_store::ErrorKind::PermissionDenied | nfrepo_store::ErrorKind::AppendOnly => {
                Self::StoragePermission(err)
            }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Making a snapshot, or managing the repository.
    Backup,
    /// Restoring or reading data out.
    Restore,
    /// Listing and browsing.
    Inspect,
    /// Bulk maintenance under the maintenance lease: gc, repair, key rotation.
    Maintenance,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use nfrepo_store::ErrorKind as K;

    fn store(kind: K) -> nfrepo_store::Error {
        nfrepo_store::Error::new(kind, "x")
    }

    fn corrupted() -> Error {
        Error::decode(
            "snapshots/ab",
            nfrepo_format::Error::Authentication { what: "snapshot" },
        )
    }

    /// What an error line or a server's header prints parses back.
    #[test]
    fn codes_parse_back_from_their_text() {
        for text in [
            "BACKUP_FAILED",
            "BACKUP_CORRUPTED",
            "BACKUP_NOT_FOUND",
            "RESTORE_FAILED",
            "RESTORE_CONFLICT",
            "ROLLBACK_FAILED",
            "PERMISSION_DENIED",
            "SNAPSHOT_INVALID",
        ] {
            assert_eq!(ErrorCode::parse(text).map(ErrorCode::as_str), Some(text));
        }
        assert_eq!(ErrorCode::parse("USAGE"), None);
        assert_eq!(ErrorCode::parse("backup_failed"), None);
    }

    /// An append-only server's refusal is PERMISSION_DENIED/APPEND_ONLY,
    /// apart from a refused token (plain PERMISSION_DENIED).
    #[test]
    fn append_only_refusals_have_their_own_detail_code() {
        let refused = Error::store(store(K::AppendOnly));
        assert_eq!(refused.code(Operation::Backup), ErrorCode::PermissionDenied);
        assert_eq!(refused.detail_code(), Some("APPEND_ONLY"));
        assert_eq!(Error::store(store(K::PermissionDenied)).detail_code(), None);
    }

    /// Every error kind, its class, and its code during a backup, a restore
    /// and an inspection.
    #[test]
    fn each_error_maps_to_one_code_in_every_operation() {
        use ErrorCode::{
            BackupCorrupted as Corr, BackupFailed as BFail, BackupNotFound as NotF, PermissionDenied as Deny,
            RestoreFailed as RFail, SnapshotInvalid as Inval,
        };
        let missing = || Error::Missing {
            object: "blob ab".into(),
            detail: "in no index".into(),
        };
        let cases: Vec<(Error, ErrorClass, [ErrorCode; 3])> = vec![
            (corrupted(), ErrorClass::Corrupted, [Corr, Corr, Corr]),
            (missing(), ErrorClass::Missing, [NotF, NotF, NotF]),
            (
                Error::store(store(K::NotFound)),
                ErrorClass::Missing,
                [NotF, NotF, NotF],
            ),
            (
                Error::store(store(K::Corrupted)),
                ErrorClass::Corrupted,
                [Corr, Corr, Corr],
            ),
            (
                Error::store(store(K::PermissionDenied)),
                ErrorClass::Denied,
                [Deny, Deny, Deny],
            ),
            (
                Error::store(store(K::AppendOnly)),
                ErrorClass::Denied,
                [Deny, Deny, Deny],
            ),
            (
                Error::store(store(K::Unreachable)),
                ErrorClass::Transient,
                [BFail, RFail, BFail],
            ),
            (
                Error::store(store(K::Transient)),
                ErrorClass::Transient,
                [BFail, RFail, BFail],
            ),
            (
                Error::store(store(K::InvalidUrl)),
                ErrorClass::NotFound,
                [NotF, NotF, NotF],
            ),
            (Error::store(store(K::Other)), ErrorClass::Failed, [BFail, RFail, BFail]),
            (
                Error::store(store(K::Credentials)),
                ErrorClass::Denied,
                [Deny, Deny, Deny],
            ),
            (
                Error::Format(nfrepo_format::Error::UnsupportedVersion {
                    what: "snapshot",
                    version: 9,
                }),
                ErrorClass::Invalid,
                [Inval, Inval, Inval],
            ),
            (
                Error::Format(nfrepo_format::Error::Random),
                ErrorClass::Failed,
                [BFail, RFail, BFail],
            ),
            (
                Error::WrongPassword { location: "x".into() },
                ErrorClass::Denied,
                [Deny, Deny, Deny],
            ),
            (
                Error::RepositoryNotFound { location: "x".into() },
                ErrorClass::NotFound,
                [NotF, NotF, NotF],
            ),
            (
                Error::SnapshotNotFound("x".into()),
                ErrorClass::NotFound,
                [NotF, NotF, NotF],
            ),
            (
                Error::PathNotFound {
                    snapshot: "x".into(),
                    path: "y".into(),
                },
                ErrorClass::NotFound,
                [NotF, NotF, NotF],
            ),
            (
                Error::Source {
                    what: "x".into(),
                    source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                },
                ErrorClass::Denied,
                [Deny, Deny, Deny],
            ),
            (
                Error::Pipeline("a worker panicked".into()),
                ErrorClass::Failed,
                [BFail, RFail, BFail],
            ),
            (Error::LeaseHeld("x".into()), ErrorClass::Busy, [BFail, RFail, BFail]),
            (Error::LeaseLost("x".into()), ErrorClass::Failed, [BFail, RFail, BFail]),
            // A failure shared between workers keeps its class.
            (
                Error::Shared(Error::store(store(K::PermissionDenied)).into_shared()),
                ErrorClass::Denied,
                [Deny, Deny, Deny],
            ),
            (
                Error::Shared(missing().into_shared()),
                ErrorClass::Missing,
                [NotF, NotF, NotF],
            ),
        ];
        for (error, class, codes) in cases {
            assert_eq!(error.class(), class, "{error:?}");
            let got = [Operation::Backup, Operation::Restore, Operation::Inspect].map(|op| error.code(op));
            assert_eq!(got, codes, "{error:?}");
            assert_eq!(error.is_damage(), class.is_damage(), "{error:?}");
        }
    }

    /// Issue 17, item 5: maintenance failures keep the generic codes but carry
    /// their own details; a held lease is "busy", the only class besides a
    /// transient storage failure worth retrying as is.
    #[test]
    fn r17_maintenance_failures_have_their_own_details() {
        let m = Operation::Maintenance;
        let held = Error::LeaseHeld("x".into());
        assert_eq!(held.code(m), ErrorCode::BackupFailed);
        assert_eq!(held.detail_code_during(m), Some("GC_LEASE_HELD"));
        assert!(held.is_retryable());
        let lost = Error::LeaseLost("x".into());
        assert_eq!(lost.detail_code_during(m), Some("MAINTENANCE_LEASE_LOST"));
        assert!(!lost.is_retryable());
        let other = Error::store(store(K::Other));
        assert_eq!(other.code(m), ErrorCode::BackupFailed);
        assert_eq!(other.detail_code_during(m), Some("MAINTENANCE_FAILED"));
        assert_eq!(
            other.detail_code_during(Operation::Backup),
            None,
            "a backup's failure is not maintenance"
        );
        let unreachable = Error::store(store(K::Unreachable));
        assert_eq!(unreachable.detail_code_during(m), Some("STORAGE_UNREACHABLE"));
        // Damage found by maintenance is damage, not a maintenance failure.
        assert_eq!(corrupted().code(m), ErrorCode::BackupCorrupted);
        assert_eq!(corrupted().detail_code_during(m), None);
    }

    #[test]
    fn only_damage_is_damage_and_only_transient_failures_retry() {
        assert!(corrupted().is_damage());
        assert!(Error::store(store(K::NotFound)).is_damage());
        assert!(!Error::store(store(K::PermissionDenied)).is_damage());
        assert!(
            !Error::SnapshotNotFound("x".into()).is_damage(),
            "asking for nothing is not damage"
        );
        assert!(Error::store(store(K::Unreachable)).is_retryable());
        assert!(!Error::store(store(K::Other)).is_retryable());
        assert!(!corrupted().is_retryable());
    }

    #[test]
    fn a_shared_error_is_unwrapped_when_it_is_the_last_reference() {
        let shared = Error::store(store(K::PermissionDenied)).into_shared();
        assert!(matches!(Error::from_shared(shared), Error::StoragePermission(_)));
        let shared = corrupted().into_shared();
        let other = shared.clone();
        assert!(matches!(Error::from_shared(shared), Error::Shared(_)));
        assert!(Arc::ptr_eq(&Error::Shared(other.clone()).into_shared(), &other));
    }
}
