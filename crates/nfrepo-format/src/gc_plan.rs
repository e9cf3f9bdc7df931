//! GC plans: the packs one garbage-collection run found unreferenced.
//!
//! A plan is phase 1 of the two-phase collector. It deletes nothing; it
//! announces "these packs may be deleted once the grace period has passed"
//! so that backups starting later stop deduplicating against them, and a
//! later run can delete them safely (the protocol is in
//! `format-spec/gc.md`).
//!
//! ```text
//! "NFRG" | version | sealed(postcard(GcPlan)), AAD (GcPlan, repository id)
//! ```
//!
//! Named by the plain BLAKE3 of those bytes, like snapshots and index deltas.

use serde::{Deserialize, Serialize};

use crate::envelope::{GC_PLAN_MAGIC, open_object, seal_object};
use crate::pack::PackKind;
use crate::seal::{SealedKind, Sealer};
use crate::{PackId, RepoId, Result};

/// Why a pack was planned for deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PlanReason {
    /// No snapshot references any blob of the pack.
    Unreferenced,
    /// No index delta lists the pack (left by a backup that never committed).
    Unindexed,
    /// Its live blobs were copied into new packs by a repack.
    Repacked,
    /// It was sealed under an older key epoch and its blobs were sealed again
    /// under the current one into new packs by a reseal (keys.md, "Reseal").
    Resealed,
}

/// One pack marked for deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPack {
    /// The pack.
    pub id: PackId,
    /// Its family (which directory it is in).
    pub kind: PackKind,
    /// Its stored size in bytes.
    pub size: u64,
    /// Why it was marked.
    pub reason: PlanReason,
}

/// The body of a `gc/<id>` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPlan {
    /// When the plan was made, nanoseconds since the Unix epoch, by the clock of the host that ran GC.
    /// Informational: grace periods use the store's modification time of the plan object.
    pub created_ns: i64,
    /// The packs marked, sorted by id.
    pub packs: Vec<PlannedPack>,
}

impl GcPlan {
    /// Seals the plan; its name is the BLAKE3 of the returned bytes.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<([u8; 32], Vec<u8>)> {
        let bytes = seal_object("gc plan", GC_PLAN_MAGIC, SealedKind::GcPlan, self, sealer, repo)?;
        Ok((crate::content_hash(&bytes), bytes))
    }

    /// Opens a stored plan, checking that it is named by its hash.
    ///
    /// # Errors
    /// [`crate::Error::HashMismatch`] if renamed or altered, or any decoding error.
    pub fn decode(id: &[u8; 32], bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        crate::check_content_id("gc plan", id, bytes)?;
        open_object("gc plan", GC_PLAN_MAGIC, SealedKind::GcPlan, bytes, sealer, repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, Error, MasterKey};

    #[test]
    fn round_trip_and_tamper() {
        let sealer = MasterKey::from_bytes([1; 32])
            .derive()
            .sealer(Cipher::XChaCha20Poly1305);
        let repo = RepoId([2; 32]);
        let plan = GcPlan {
            created_ns: 1_700_000_000_000_000_000,
            packs: vec![PlannedPack {
                id: PackId([3; 32]),
                kind: PackKind::Data,
                size: 4096,
                reason: PlanReason::Unindexed,
            }],
        };
        let resealed = GcPlan {
            created_ns: 1,
            packs: vec![PlannedPack {
                id: PackId([4; 32]),
                kind: PackKind::Tree,
                size: 1,
                reason: PlanReason::Resealed,
            }],
        };
        let (rid, rbytes) = resealed.encode(&sealer, &repo).unwrap();
        assert_eq!(GcPlan::decode(&rid, &rbytes, &sealer, &repo).unwrap(), resealed);
        // `Resealed` is variant 3 of `PlanReason` (gc.md).
        assert_eq!(postcard::to_allocvec(&PlanReason::Resealed).unwrap(), vec![3]);
        let (id, mut bytes) = plan.encode(&sealer, &repo).unwrap();
        assert_eq!(GcPlan::decode(&id, &bytes, &sealer, &repo).unwrap(), plan);
        assert!(matches!(
            GcPlan::decode(&id, &bytes, &sealer, &RepoId([9; 32])),
            Err(Error::Authentication { .. })
        ));
        bytes[30] ^= 1;
        assert!(matches!(
            GcPlan::decode(&id, &bytes, &sealer, &repo),
            Err(Error::HashMismatch { .. })
        ));
    }
}
