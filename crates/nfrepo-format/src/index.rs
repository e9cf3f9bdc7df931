//! Index deltas: which pack holds each blob.
//!
//! Each backup session writes one delta listing the packs it uploaded and
//! their blobs (`index/<id>`). Compaction merges deltas into one, naming the
//! deltas it replaces in `supersedes`, so readers that see both the merged
//! delta and an old one can drop the old one without double counting.
//!
//! ```text
//! "NFRI" | version | sealed(postcard(IndexDelta)), AAD (Index, repository id)
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{INDEX_MAGIC, open_object, seal_object};
use crate::pack::{PackEntry, PackKind};
use crate::seal::{SealedKind, Sealer};
use crate::{IndexId, PackId, RepoId, Result};

/// One pack and the blobs in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    /// The pack.
    pub id: PackId,
    /// Its family.
    pub kind: PackKind,
    /// Its stored length in bytes.
    pub size: u64,
    /// Its blobs, as in its trailer.
    pub blobs: Vec<PackEntry>,
}

/// The body of an index object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDelta {
    /// Packs added.
    pub packs: Vec<IndexedPack>,
    /// Deltas this one replaces (set by compaction).
    pub supersedes: Vec<IndexId>,
}

impl IndexDelta {
    /// Seals the delta; its id is the BLAKE3 of the returned bytes.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<(IndexId, Vec<u8>)> {
        let bytes = seal_object("index", INDEX_MAGIC, SealedKind::Index, self, sealer, repo)?;
        Ok((IndexId(crate::content_hash(&bytes)), bytes))
    }

    /// Opens a stored delta, checking it is named by its hash.
    ///
    /// # Errors
    /// [`crate::Error::HashMismatch`] if `bytes` do not hash to `id`, or any decoding error.
    pub fn decode(id: &IndexId, bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        crate::check_content_id("index", &id.0, bytes)?;
        open_object("index", INDEX_MAGIC, SealedKind::Index, bytes, sealer, repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobId, BlobKind, Cipher, Error, MasterKey};

    #[test]
    fn round_trip_and_tamper() {
        let keys = MasterKey::from_bytes([1; 32]).derive();
        let sealer = keys.sealer(Cipher::Aes256Gcm);
        let repo = RepoId([2; 32]);
        let delta = IndexDelta {
            packs: vec![IndexedPack {
                id: PackId([3; 32]),
                kind: PackKind::Data,
                size: 100,
                blobs: vec![PackEntry {
                    id: BlobId([4; 32]),
                    kind: BlobKind::Data,
                    offset: 8,
                    sealed_len: 50,
                    raw_len: 10,
                }],
            }],
            supersedes: vec![IndexId([9; 32])],
        };
        let (id, mut bytes) = delta.encode(&sealer, &repo).unwrap();
        assert_eq!(IndexDelta::decode(&id, &bytes, &sealer, &repo).unwrap(), delta);
        bytes[20] ^= 1;
        assert!(matches!(
            IndexDelta::decode(&id, &bytes, &sealer, &repo),
            Err(Error::HashMismatch { .. })
        ));
        let renamed = IndexId(crate::content_hash(&bytes));
        assert!(matches!(
            IndexDelta::decode(&renamed, &bytes, &sealer, &repo),
            Err(Error::Authentication { .. })
        ));
    }
}
