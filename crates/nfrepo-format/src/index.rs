//! Index deltas: which pack holds each blob.
//!
//! Each backup session writes one delta listing the packs it uploaded and
//! their blobs (`index/<id>`). Compaction merges deltas into one, naming the
//! deltas it replaces in `supersedes`, so readers that see both the merged
//! delta and an old one can drop the old one without double counting.
//!
//! ```text
//! version 1: "NFRI" | 01 | sealed(postcard(IndexDelta)), AAD (Index, repository id)
//! version 2: "NFRI" | 02 | key reference | sealed(postcard(IndexDelta v2)), same AAD
//! ```
//!
//! Version 2 (index.md, put-only.md) names, per pack, the put-only session
//! whose key sealed it, so that one blob still opens from its index entry
//! alone; it is written by put-only sessions (under the index key of their
//! epoch, which a put-only host holds to deduplicate) and by key holders
//! whenever a delta lists a pack of a put-only session. A delta of packs
//! sealed under the repository's keys alone stays version 1.

use serde::{Deserialize, Serialize};

use crate::envelope::{INDEX_MAGIC, from_postcard, open_bytes, seal_bytes, to_postcard};
use crate::pack::{PackEntry, PackKind};
use crate::put_only::{KeyRef, SessionRef};
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
    /// The put-only session whose key sealed it; `None` for the
    /// repository's keys. Encoded only by version-2 deltas.
    #[serde(skip)]
    pub sealing: Option<SessionRef>,
}

/// A pack as a version-2 delta encodes it: the version-1 fields, then the
/// session.
#[derive(Serialize)]
struct PackV2Ref<'a> {
    id: &'a PackId,
    kind: PackKind,
    size: u64,
    blobs: &'a [PackEntry],
    sealing: Option<SessionRef>,
}

#[derive(Deserialize)]
struct PackV2 {
    id: PackId,
    kind: PackKind,
    size: u64,
    blobs: Vec<PackEntry>,
    sealing: Option<SessionRef>,
}

#[derive(Serialize)]
struct DeltaV2Ref<'a> {
    packs: Vec<PackV2Ref<'a>>,
    supersedes: &'a [IndexId],
}

#[derive(Deserialize)]
struct DeltaV2 {
    packs: Vec<PackV2>,
    supersedes: Vec<IndexId>,
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
    /// Whether a pack of a put-only session is listed (the delta is then
    /// written as version 2).
    #[must_use]
    pub fn has_sessions(&self) -> bool {
        self.packs.iter().any(|p| p.sealing.is_some())
    }

    /// Seals the delta; its id is the BLAKE3 of the returned bytes.
    ///
    /// Version 1 under the repository's keys when `sealer` is the
    /// repository's and no pack is of a put-only session; otherwise version
    /// 2, under the key `sealer` names, or, for a repository sealer, under
    /// the index key of its current epoch (so put-only hosts of that epoch
    /// keep deduplicating against what the delta lists).
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn;
    /// [`crate::Error::MissingKey`] if the index key is needed and `sealer`
    /// cannot derive it.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<(IndexId, Vec<u8>)> {
        let v2 = sealer.reference() != KeyRef::Repository || self.has_sessions();
        let bytes = if v2 {
            let sealer = match sealer.reference() {
                KeyRef::Repository => sealer.resolve(&KeyRef::Index { epoch: sealer.epoch() })?,
                _ => sealer.clone(),
            };
            let body = DeltaV2Ref {
                packs: self
                    .packs
                    .iter()
                    .map(|p| PackV2Ref {
                        id: &p.id,
                        kind: p.kind,
                        size: p.size,
                        blobs: &p.blobs,
                        sealing: p.sealing,
                    })
                    .collect(),
                supersedes: &self.supersedes,
            };
            seal_bytes(
                INDEX_MAGIC,
                SealedKind::Index,
                &to_postcard("index", &body)?,
                &sealer,
                repo,
            )?
        } else {
            seal_bytes(
                INDEX_MAGIC,
                SealedKind::Index,
                &to_postcard("index", self)?,
                sealer,
                repo,
            )?
        };
        Ok((IndexId(crate::content_hash(&bytes)), bytes))
    }

    /// Opens a stored delta of either version, checking it is named by its
    /// hash. A version-2 delta opens with the key its header names, resolved
    /// by `sealer` (an index key, or a session's).
    ///
    /// # Errors
    /// [`crate::Error::HashMismatch`] if `bytes` do not hash to `id`;
    /// [`crate::Error::MissingKey`] if `sealer` cannot resolve its key; any
    /// decoding error.
    pub fn decode(id: &IndexId, bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        crate::check_content_id("index", &id.0, bytes)?;
        let (reference, body) = open_bytes("index", INDEX_MAGIC, SealedKind::Index, bytes, sealer, repo)?;
        if reference == KeyRef::Repository {
            return from_postcard("index", &body);
        }
        let delta: DeltaV2 = from_postcard("index", &body)?;
        Ok(Self {
            packs: delta
                .packs
                .into_iter()
                .map(|p| IndexedPack {
                    id: p.id,
                    kind: p.kind,
                    size: p.size,
                    blobs: p.blobs,
                    sealing: p.sealing,
                })
                .collect(),
            supersedes: delta.supersedes,
        })
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
                sealing: None,
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
