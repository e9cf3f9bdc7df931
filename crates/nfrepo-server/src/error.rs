//! The crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Anonymous access was asked for on an address other hosts can reach.
    #[error("refusing --no-auth on {0}: without a token only a loopback address may be served")]
    NoAuthOffLoopback(SocketAddr),
    /// Plain http was asked for on an address other hosts can reach.
    #[error(
        "refusing plain http on {0}: give --tls-cert and --tls-key, or --allow-insecure-http to send repository objects unencrypted"
    )]
    InsecureHttp(SocketAddr),
    /// The bearer-token file is unusable.
    #[error("{0}")]
    Token(#[source] nfrepo_store::Error),
    /// The certificate or key file is unusable.
    #[error("tls: {path}: {message}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The served store has S3 Object Lock, which the REST protocol does not carry.
    #[error("{0} uses S3 object lock, which the REST protocol does not carry: back up to the bucket directly")]
    ObjectLock(String),
    /// The served store failed a check at start.
    #[error("{0}")]
    Store(#[source] nfrepo_store::Error),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped on an I/O error.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// Whether the error is a refusal of the operator's own settings
    /// (a policy or a credential), as opposed to a failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::NoAuthOffLoopback(_) | Error::InsecureHttp(_) | Error::Token(_) | Error::ObjectLock(_)
        )
    }
}
