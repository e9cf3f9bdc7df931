//! The one error type of `nfrepo-format`.
//!
//! Decoders see hostile bytes, so every failure is a value, never a panic. The
//! variants separate what an operator must tell apart: a wrong password is not
//! corruption, and a failed authentication tag is not a truncated file.

/// Everything that can go wrong turning bytes into types or back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the magic of the object they should hold.
    #[error("{what}: bad magic, this is not an nfrepo object of that kind")]
    BadMagic {
        /// Which object was being decoded.
        what: &'static str,
    },
    /// The object was written by a newer (or unknown) format version.
    #[error("{what}: unsupported format version {version}")]
    UnsupportedVersion {
        /// Which object was being decoded.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// The bytes are structurally invalid (truncated, bad length, bad encoding).
    #[error("{what}: malformed: {detail}")]
    Malformed {
        /// Which object was being decoded.
        what: &'static str,
        /// What exactly was wrong.
        detail: String,
    },
    /// An AEAD tag did not verify: the bytes were altered, swapped or sealed under another key.
    #[error("{what}: authentication failed (corrupted, tampered with, or sealed under another key)")]
    Authentication {
        /// Which object was being opened.
        what: &'static str,
    },
    /// A recomputed hash differs from the one the object is named by or claims.
    #[error("{what}: hash mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// Which object was being checked.
        what: &'static str,
        /// The hash the object should have.
        expected: String,
        /// The hash it has.
        actual: String,
    },
    /// No key slot opened with the password or key file given.
    #[error("wrong password: no key slot opens with it")]
    WrongPassword,
    /// The key-derivation function rejected its parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// zstd failed to compress or decompress.
    #[error("{what}: compression error: {detail}")]
    Compression {
        /// Which object was being (de)compressed.
        what: &'static str,
        /// zstd's message.
        detail: String,
    },
    /// The object was sealed under a key this holder does not have: a
    /// put-only host asked to open what a session sealed, or an object of a
    /// key epoch that was dropped. Not corruption.
    #[error("{what}: no key to open it: {detail}")]
    MissingKey {
        /// Which object was being opened.
        what: &'static str,
        /// Which key it needs.
        detail: String,
    },
    /// The operating system's random source failed.
    #[error("the operating system's random number source failed")]
    Random,
    /// A value is too large for the format (for instance a blob over 4 GiB).
    #[error("{what}: too large for the format: {detail}")]
    TooLarge {
        /// Which object was being encoded.
        what: &'static str,
        /// The limit exceeded.
        detail: String,
    },
}

impl Error {
    /// Whether the error means the stored bytes are damaged or forged
    /// (as opposed to a wrong key, a newer format, or a local failure).
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::BadMagic { .. }
                | Self::Malformed { .. }
                | Self::Authentication { .. }
                | Self::HashMismatch { .. }
                | Self::Compression { .. }
        )
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
