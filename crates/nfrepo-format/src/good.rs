//! Good markers: a snapshot of a deployment that passed its checks.
//!
//! `nfrepo mark-good SNAPSHOT` records that a deployment made from (or
//! backed up as) a snapshot passed its health checks, so that
//! `rollback SOURCE --to last-good` can go back to the newest such
//! snapshot. Snapshots are write-once (their id is the hash of their
//! bytes), so "good" cannot be a tag added after the commit; like a
//! protect marker it is a small sealed object `good/<snapshot id>` beside
//! the snapshot. The body names the snapshot and its source again, so a
//! marker copied or renamed to another snapshot's name is detected.
//!
//! ```text
//! "NFRM" | version | sealed(postcard(GoodMarker)), AAD (GoodMarker, repository id)
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{GOOD_MAGIC, open_named_object, seal_object};
use crate::seal::{SealedKind, Sealer};
use crate::{RepoId, Result, SnapshotId};

/// The body of a `good/<snapshot id>` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodMarker {
    /// The snapshot marked good; must equal the id in the object's name.
    pub snapshot: SnapshotId,
    /// The snapshot's source, so the newest good snapshot of a source is
    /// found without opening every snapshot.
    pub source: String,
    /// When it was marked, nanoseconds since the Unix epoch.
    pub created_ns: i64,
    /// Who marked it (`user@host`).
    pub by: String,
    /// What passed, as given by the operator (may be empty).
    pub note: String,
}

impl GoodMarker {
    /// Seals the marker.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<Vec<u8>> {
        seal_object("good marker", GOOD_MAGIC, SealedKind::GoodMarker, self, sealer, repo)
    }

    /// Opens the marker stored under the name of `snapshot`.
    ///
    /// # Errors
    /// Decoding or authentication errors; [`Error::Malformed`](crate::Error::Malformed) if it marks another snapshot.
    pub fn decode(snapshot: &SnapshotId, bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        open_named_object(
            "good marker",
            GOOD_MAGIC,
            SealedKind::GoodMarker,
            (&snapshot.0, |m: &Self| &m.snapshot.0, "marks"),
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

    fn sealer() -> Sealer {
        MasterKey::from_bytes([1; 32])
            .derive()
            .sealer(Cipher::XChaCha20Poly1305)
    }

    fn marker() -> GoodMarker {
        GoodMarker {
            snapshot: SnapshotId([5; 32]),
            source: "web-release".into(),
            created_ns: 1,
            by: "a@b".into(),
            note: "smoke tests passed".into(),
        }
    }

    #[test]
    fn round_trip_and_renamed() {
        let repo = RepoId([2; 32]);
        let bytes = marker().encode(&sealer(), &repo).unwrap();
        assert_eq!(
            GoodMarker::decode(&SnapshotId([5; 32]), &bytes, &sealer(), &repo).unwrap(),
            marker()
        );
        assert!(matches!(
            GoodMarker::decode(&SnapshotId([6; 32]), &bytes, &sealer(), &repo),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn a_flipped_byte_or_a_protect_marker_is_refused() {
        let repo = RepoId([2; 32]);
        let mut bytes = marker().encode(&sealer(), &repo).unwrap();
        if let Some(b) = bytes.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            GoodMarker::decode(&SnapshotId([5; 32]), &bytes, &sealer(), &repo),
            Err(Error::Authentication { .. })
        ));
        // A protect marker of the same snapshot is not a good marker.
        let protect = crate::ProtectMarker {
            snapshot: SnapshotId([5; 32]),
            created_ns: 1,
            by: String::new(),
            note: String::new(),
        }
        .encode(&sealer(), &repo)
        .unwrap();
        assert!(matches!(
            GoodMarker::decode(&SnapshotId([5; 32]), &protect, &sealer(), &repo),
            Err(Error::BadMagic { .. })
        ));
    }
}
