//! Typed 32-byte identifiers.
//!
//! Every object in a repository is named by a 32-byte BLAKE3 output. The kinds
//! are kept apart by type so that a pack id can never be passed where a blob
//! id is expected. Which hash produced an id differs per kind and is part of
//! the format:
//!
//! | type | hash |
//! |---|---|
//! | [`BlobId`] | keyed BLAKE3 of the plaintext under the repository's id key |
//! | [`PackId`], [`IndexId`], [`SnapshotId`] | plain BLAKE3 of the stored bytes, so anyone can verify them without keys |
//! | [`KeyId`], [`RepoId`] | random |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = 32;

            /// The raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex, the form used in object names.
            #[must_use]
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first `n` hex digits, for display.
            #[must_use]
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(8);
                s
            }

            /// A fresh random id.
            ///
            /// # Errors
            /// Fails only when the operating system's random source fails.
            pub fn random() -> Result<Self> {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|_| Error::Random)?;
                Ok(Self(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| Error::Malformed {
                    what: $what,
                    detail: format!("{s:?} is not 64 hex digits"),
                })?;
                Ok(Self(bytes))
            }
        }
    };
}

define_id!(
    /// Names a blob (a chunk of file data, a tree node or a content list).
    BlobId,
    "blob id"
);
define_id!(
    /// Names a pack: the BLAKE3 of the pack's stored bytes.
    PackId,
    "pack id"
);
define_id!(
    /// Names an index delta: the BLAKE3 of its stored bytes.
    IndexId,
    "index id"
);
define_id!(
    /// Names a snapshot: the BLAKE3 of its stored bytes.
    SnapshotId,
    "snapshot id"
);
define_id!(
    /// Names a key slot.
    KeyId,
    "key id"
);
define_id!(
    /// Names a drill record: random, drawn when the drill starts.
    DrillId,
    "drill id"
);
define_id!(
    /// Names an audit log writer (one hash chain): derived from the
    /// repository, host, user and cache directory (audit.md).
    WriterId,
    "writer id"
);
define_id!(
    /// Identifies a repository; bound into key slots and the local cache.
    RepoId,
    "repository id"
);

/// Plain (unkeyed) BLAKE3 of stored bytes, as used for pack, index and snapshot ids.
#[must_use]
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = BlobId([7u8; 32]);
        let parsed: BlobId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(id.short(), "07070707");
    }

    #[test]
    fn rejects_bad_hex() {
        for bad in ["zz", "00", &"g".repeat(64)] {
            assert!(
                matches!(bad.parse::<PackId>(), Err(Error::Malformed { what: "pack id", .. })),
                "{bad}"
            );
        }
    }
}
