//! The crate's error type.

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the panel could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `[serve]` asks for something that cannot work or is unsafe; the
    /// message names the setting.
    #[error("[serve]: {0}")]
    Config(String),
    /// A user's password hash or TOTP secret is unusable.
    #[error("[serve] user {name:?}: {message}")]
    User {
        /// The user.
        name: String,
        /// What is wrong, without the secret.
        message: String,
    },
    /// Hashing a password failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// Binding or serving failed (the listener is nfrepo-server's).
    #[error(transparent)]
    Server(#[from] nfrepo_server::Error),
    /// Reading the repository or keeping the alert state failed.
    #[error(transparent)]
    Ops(#[from] nfrepo_ops::Error),
}

impl Error {
    /// Whether the error is a refusal of the operator's own settings, as
    /// opposed to a failure.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Config(_) | Error::User { .. } => true,
            Error::Server(e) => e.is_refusal(),
            _ => false,
        }
    }
}
