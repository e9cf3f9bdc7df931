//! Drill records: the outcome of one disaster-recovery drill.
//!
//! `nfrepo drill SOURCE` restores a snapshot into a throwaway service (a
//! database server, `redis-server`, a directory), checks it, and measures
//! how long that took. The outcome is kept in the repository it was drilled
//! from, as a small sealed object `drill/<drill id>`, so that the history of
//! drills (and so the proof that backups restore) travels with the backups,
//! replicas included. The id is random, drawn when the drill starts; the
//! body repeats it, so a record copied or renamed to another name is
//! detected.
//!
//! ```text
//! "NFRD" | version | sealed(postcard(DrillRecord)), AAD (DrillRecord, repository id)
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{DRILL_MAGIC, open_named_object, seal_object};
use crate::seal::{SealedKind, Sealer};
use crate::{DrillId, RepoId, Result, SnapshotId};

/// The body of a `drill/<drill id>` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The record's id; must equal the id in the object's name.
    pub id: DrillId,
    /// The configured source drilled.
    pub source: String,
    /// The source's kind (`mysql`, `postgres`, `redis`, `bucket`, `files`…).
    pub source_kind: String,
    /// The snapshot restored; `None` when none could be selected.
    pub snapshot: Option<SnapshotId>,
    /// When that snapshot was taken, nanoseconds since the Unix epoch (0 without a snapshot).
    pub snapshot_time_ns: i64,
    /// When the drill started, nanoseconds since the Unix epoch.
    pub started_ns: i64,
    /// Who ran it (`user@host`).
    pub by: String,
    /// Whether every check passed.
    pub passed: bool,
    /// The error code of a failed drill (`RESTORE_FAILED`, `BACKUP_CORRUPTED`,
    /// `BACKUP_NOT_FOUND`); empty when it passed.
    pub code: String,
    /// The check that failed first; empty when it passed.
    pub failed_check: String,
    /// What went wrong, one line; empty when it passed.
    pub message: String,
    /// Milliseconds from the start to a verified, query-ready service;
    /// `None` when the drill failed before reaching it.
    pub rto_ms: Option<u64>,
    /// Age of the snapshot at the start of the drill, in milliseconds
    /// (`None` without a snapshot).
    pub rpo_ms: Option<u64>,
    /// The phases timed, in the order run.
    pub phases: Vec<DrillPhase>,
    /// The checks run, in the order run.
    pub checks: Vec<DrillCheck>,
}

/// One timed phase of a drill (`restore`, `server start`, `checks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillPhase {
    /// Its name.
    pub name: String,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// One check of a drill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillCheck {
    /// What was checked (`rows app.orders`, `query SELECT …`, `redis keys`).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found (`42 rows`, `returned 0`).
    pub detail: String,
}

impl DrillRecord {
    /// Seals the record.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<Vec<u8>> {
        seal_object("drill record", DRILL_MAGIC, SealedKind::DrillRecord, self, sealer, repo)
    }

    /// Opens the record stored under the name `id`.
    ///
    /// # Errors
    /// Decoding or authentication errors; [`Error::Malformed`](crate::Error::Malformed) if the body
    /// names another drill.
    pub fn decode(id: &DrillId, bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        open_named_object(
            "drill record",
            DRILL_MAGIC,
            SealedKind::DrillRecord,
            (&id.0, |r: &Self| &r.id.0, "records"),
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

    fn record() -> DrillRecord {
        DrillRecord {
            id: DrillId([9; 32]),
            source: "mysql-main".into(),
            source_kind: "mysql".into(),
            snapshot: Some(SnapshotId([5; 32])),
            snapshot_time_ns: 1,
            started_ns: 2,
            by: "a@b".into(),
            passed: false,
            code: "RESTORE_FAILED".into(),
            failed_check: "query SELECT 0".into(),
            message: "returned 0".into(),
            rto_ms: None,
            rpo_ms: Some(1),
            phases: vec![DrillPhase {
                name: "restore".into(),
                ms: 3,
            }],
            checks: vec![DrillCheck {
                name: "query SELECT 0".into(),
                passed: false,
                detail: "returned 0".into(),
            }],
        }
    }

    #[test]
    fn round_trip_and_renamed() {
        let repo = RepoId([2; 32]);
        let bytes = record().encode(&sealer(), &repo).unwrap();
        assert_eq!(
            DrillRecord::decode(&DrillId([9; 32]), &bytes, &sealer(), &repo).unwrap(),
            record()
        );
        assert!(matches!(
            DrillRecord::decode(&DrillId([8; 32]), &bytes, &sealer(), &repo),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn a_flipped_byte_or_another_repository_or_a_good_marker_is_refused() {
        let repo = RepoId([2; 32]);
        let mut bytes = record().encode(&sealer(), &repo).unwrap();
        assert!(matches!(
            DrillRecord::decode(&DrillId([9; 32]), &bytes, &sealer(), &RepoId([3; 32])),
            Err(Error::Authentication { .. })
        ));
        if let Some(b) = bytes.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            DrillRecord::decode(&DrillId([9; 32]), &bytes, &sealer(), &repo),
            Err(Error::Authentication { .. })
        ));
        let good = crate::GoodMarker {
            snapshot: SnapshotId([9; 32]),
            source: String::new(),
            created_ns: 1,
            by: String::new(),
            note: String::new(),
        }
        .encode(&sealer(), &repo)
        .unwrap();
        assert!(matches!(
            DrillRecord::decode(&DrillId([9; 32]), &good, &sealer(), &repo),
            Err(Error::BadMagic { .. })
        ));
    }
}
