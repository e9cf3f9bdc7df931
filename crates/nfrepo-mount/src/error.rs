//! The mount's one error type.

use nfrepo_engine::{ErrorCode, Operation};

/// Why a mount could not start or ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel's FUSE device is missing: the module is not loaded or
    /// the device is not passed into this container.
    #[error(
        "{device} is missing: install FUSE (`apt-get install fuse3`, then `modprobe fuse`; in a container, pass --device /dev/fuse)"
    )]
    NoFuse {
        /// The device looked for.
        device: String,
    },
    /// The mount point is not an empty directory we can use.
    #[error("mount point {path}: {detail}")]
    MountPoint {
        /// The mount point.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The kernel or fusermount refused the mount, or the session failed.
    #[error("mounting at {path}: {source}")]
    Mount {
        /// The mount point.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the repository failed.
    #[error(transparent)]
    Engine(#[from] nfrepo_engine::Error),
}

impl Error {
    /// The stable code for this error (reading data out is a restore-side operation).
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Engine(e) => e.code(Operation::Inspect),
            Self::NoFuse { .. } | Self::MountPoint { .. } | Self::Mount { .. } => ErrorCode::RestoreFailed,
        }
    }

    /// A finer code under [`Self::code`], where one exists.
    #[must_use]
    pub fn detail_code(&self) -> Option<&'static str> {
        match self {
            Self::Engine(e) => e.detail_code(),
            Self::NoFuse { .. } => Some("FUSE_UNAVAILABLE"),
            Self::MountPoint { .. } => Some("INVALID_MOUNT_POINT"),
            Self::Mount { .. } => Some("MOUNT_FAILED"),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
