//! Backup session markers: "a backup is running and may reference packs".
//!
//! A backup writes `sessions/<random id>` when it starts and deletes it when
//! it commits or aborts. While it runs it rewrites the marker (the
//! heartbeat); the store's modification time of the marker is the time of the
//! last beat. GC treats a marker whose last beat is older than the expiry as
//! left by a crashed backup. The marker also lists the GC plans the backup
//! saw before it loaded the index: the backup never deduplicates against a
//! pack in those plans, so GC may delete such packs while it runs
//! (`format-spec/gc.md`). It names the parent snapshot's root tree, which
//! the backup reuses, so GC keeps that tree's blobs even if the parent is
//! forgotten meanwhile.
//!
//! ```text
//! "NFRB" | version | sealed(postcard(SessionMarker)), AAD (SessionMarker, repository id)
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{SESSION_MAGIC, open_object, seal_object};
use crate::seal::{SealedKind, Sealer};
use crate::{BlobId, RepoId, Result};

/// The body of a `sessions/<id>` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMarker {
    /// When the backup started, nanoseconds since the Unix epoch (the backup host's clock).
    pub started_ns: i64,
    /// Host that runs the backup.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// The source being backed up.
    pub source: String,
    /// Whether `plans_seen` is final: `false` in the first marker, written before the
    /// backup listed the GC plans. GC treats such a session as having seen no plan.
    pub plans_listed: bool,
    /// Ids of the GC plans the backup read before loading the index, sorted.
    pub plans_seen: Vec<[u8; 32]>,
    /// The root tree of the parent snapshot whose unchanged files the backup
    /// reuses without looking them up; GC treats it as a root while the session lives.
    pub parent_root: Option<BlobId>,
}

impl SessionMarker {
    /// Seals the marker. Its name is random, not a hash: the heartbeat rewrites it in place.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<Vec<u8>> {
        seal_object(
            "session marker",
            SESSION_MAGIC,
            SealedKind::SessionMarker,
            self,
            sealer,
            repo,
        )
    }

    /// Opens a stored marker.
    ///
    /// # Errors
    /// Any decoding or authentication error.
    pub fn decode(bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        open_object(
            "session marker",
            SESSION_MAGIC,
            SealedKind::SessionMarker,
            bytes,
            sealer,
            repo,
        )
    }

    /// Whether the backup promised not to use the packs of plan `id`.
    #[must_use]
    pub fn has_seen(&self, id: &[u8; 32]) -> bool {
        self.plans_listed && self.plans_seen.binary_search(id).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, Error, MasterKey};

    #[test]
    fn round_trip_and_tamper() {
        let sealer = MasterKey::from_bytes([1; 32]).derive().sealer(Cipher::Aes256Gcm);
        let repo = RepoId([2; 32]);
        let marker = SessionMarker {
            started_ns: 5,
            hostname: "h".into(),
            pid: 7,
            source: "db".into(),
            plans_listed: true,
            plans_seen: vec![[1; 32], [4; 32]],
            parent_root: Some(BlobId([8; 32])),
        };
        let mut bytes = marker.encode(&sealer, &repo).unwrap();
        let back = SessionMarker::decode(&bytes, &sealer, &repo).unwrap();
        assert_eq!(back, marker);
        assert!(back.has_seen(&[4; 32]));
        assert!(!back.has_seen(&[3; 32]));
        let unlisted = SessionMarker {
            plans_listed: false,
            ..marker
        };
        assert!(!unlisted.has_seen(&[4; 32]));
        bytes[12] ^= 1;
        assert!(matches!(
            SessionMarker::decode(&bytes, &sealer, &repo),
            Err(Error::Authentication { .. })
        ));
    }
}
