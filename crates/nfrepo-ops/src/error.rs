//! The crate's error type.

use std::path::PathBuf;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why facts could not be gathered, state kept, or a notice sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the repository failed.
    #[error(transparent)]
    Engine(#[from] nfrepo_engine::Error),
    /// Listing the repository's storage failed.
    #[error(transparent)]
    Store(#[from] nfrepo_store::Error),
    /// The alert state file cannot be read or written.
    #[error("alert state {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A setting is unusable (a secret that cannot be read, a bad address).
    #[error("alerts configuration: {0}")]
    Config(String),
    /// A channel did not take a notice.
    #[error("{channel}: {message}")]
    Channel {
        /// `webhook` or `email`.
        channel: &'static str,
        /// What went wrong, one line, without secrets.
        message: String,
    },
    /// The metrics file cannot be written.
    #[error("metrics file {path}: {source}")]
    Metrics {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
