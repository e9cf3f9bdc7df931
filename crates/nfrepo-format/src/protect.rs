//! Protection markers: a snapshot that `forget` must keep.
//!
//! Objects are write-once, so protection is not a flag inside the snapshot
//! (that would change its id and break every reference to it). It is a small
//! sealed object `protect/<snapshot id>` next to it: `protect` creates it,
//! `unprotect` deletes it, and `forget` keeps every snapshot that has one.
//! The body names the snapshot again, so a marker copied or renamed to another
//! snapshot's name is detected.
//!
//! ```text
//! "NFRX" | version | sealed(postcard(ProtectMarker)), AAD (ProtectMarker, repository id)
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{PROTECT_MAGIC, open_named_object, seal_object};
use crate::seal::{SealedKind, Sealer};
use crate::{RepoId, Result, SnapshotId};

/// The body of a `protect/<snapshot id>` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectMarker {
    /// The snapshot protected; must equal the id in the object's name.
    pub snapshot: SnapshotId,
    /// When it was protected, nanoseconds since the Unix epoch.
    pub created_ns: i64,
    /// Who protected it (`user@host`).
    pub by: String,
    /// Why, as given by the operator (may be empty).
    pub note: String,
}

impl ProtectMarker {
    /// Seals the marker.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<Vec<u8>> {
        seal_object(
            "protect marker",
            PROTECT_MAGIC,
            SealedKind::ProtectMarker,
            self,
            sealer,
            repo,
        )
    }

    /// Opens the marker stored under the name of `snapshot`.
    ///
    /// # Errors
    /// Decoding or authentication errors; [`Error::Malformed`](crate::Error::Malformed) if it protects another snapshot.
    pub fn decode(snapshot: &SnapshotId, bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        open_named_object(
            "protect marker",
            PROTECT_MAGIC,
            SealedKind::ProtectMarker,
            (&snapshot.0, |m: &Self| &m.snapshot.0, "protects"),
            bytes,
            sealer,
            repo,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, Error, MasterKey};

    #[test]
    fn round_trip_and_renamed() {
        let sealer = MasterKey::from_bytes([1; 32])
            .derive()
            .sealer(Cipher::XChaCha20Poly1305);
        let repo = RepoId([2; 32]);
        let marker = ProtectMarker {
            snapshot: SnapshotId([5; 32]),
            created_ns: 1,
            by: "a@b".into(),
            note: "legal hold".into(),
        };
        let bytes = marker.encode(&sealer, &repo).unwrap();
        assert_eq!(
            ProtectMarker::decode(&SnapshotId([5; 32]), &bytes, &sealer, &repo).unwrap(),
            marker
        );
        assert!(matches!(
            ProtectMarker::decode(&SnapshotId([6; 32]), &bytes, &sealer, &repo),
            Err(Error::Malformed { .. })
        ));
    }
}
