//! The replica state: what the replicator knows about one replica, stored
//! on the replica itself as `replica/state`.
//!
//! After each pass `nfrepo replicate` writes this object on the target, so
//! that `nfrepo replicate status` can answer from the replica alone when the
//! source is unreachable, and so that deletions wait for their grace period:
//! the state records when each object the source no longer lists was first
//! seen missing there.
//!
//! It is **plain**, not sealed: the replicator works without the repository
//! key. Nothing in it is secret: object names (hashes of sealed bytes, key
//! slot ids, audit sequence numbers), counts, times, and the source's
//! location with credentials removed, all of which a listing of either
//! bucket shows anyway. A BLAKE3 checksum over the header and body detects
//! damage; it does not authenticate (whoever can write the replica can
//! rewrite it, and the worst they achieve is to delay or hasten deletions
//! that the source has already made).
//!
//! ```text
//! "NFRR" | version | postcard(ReplicaState) | BLAKE3(everything before) (32)
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{HEADER_LEN, from_postcard, read_header, to_postcard, write_header};
use crate::{Error, RepoId, Result, SnapshotId};

/// Magic of the replica state object.
pub const REPLICA_MAGIC: [u8; 4] = *b"NFRR";

/// Length of the trailing checksum.
const CHECKSUM_LEN: usize = 32;

/// How the last pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassResult {
    /// Everything the source listed was copied.
    Complete,
    /// Some objects were refused (their bytes do not match their names) or
    /// failed to copy; the replica is valid but behind.
    Partial,
    /// A `--verify` pass; nothing was copied.
    Verified,
}

/// An object of the replica, by its kind's prefix (`data`, `snapshots`…) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaObject {
    /// The kind's path prefix, e.g. `data`.
    pub kind: String,
    /// The object's name within its kind.
    pub name: String,
}

/// What was still to copy after a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Snapshots the source lists that the replica lacks.
    pub snapshots: u64,
    /// Objects of every kind the source lists that the replica lacks.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The storage time of the oldest snapshot not yet copied, nanoseconds
    /// since the Unix epoch; `None` when no snapshot is behind.
    pub oldest_snapshot_ns: Option<i64>,
}

/// The body of `replica/state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The repository id (the same on the source and the replica).
    pub repo: RepoId,
    /// The source's location, credentials removed.
    pub source: String,
    /// When the last pass began, nanoseconds since the Unix epoch.
    pub pass_started_ns: i64,
    /// When it ended.
    pub pass_finished_ns: i64,
    /// How it ended.
    pub result: PassResult,
    /// The newest snapshot (by storage time) the replica holds, if any.
    pub newest_snapshot: Option<SnapshotId>,
    /// Objects and bytes copied by the last pass.
    pub copied_objects: u64,
    /// Bytes copied by the last pass.
    pub copied_bytes: u64,
    /// What the source listed that the replica still lacked after the pass.
    pub behind: Backlog,
    /// Objects on the replica that the source no longer lists, with the time
    /// (ns since the epoch) they were first seen missing there; each is
    /// deleted once its grace period has passed.
    pub missing_since: Vec<(ReplicaObject, i64)>,
    /// Objects on the replica whose bytes did not match their names at the
    /// last verification; the next pass copies them again.
    pub damaged: Vec<ReplicaObject>,
    /// Where the last partial verification stopped (the last object it
    /// checked, as `kind/name`), so successive partial verifications cover the replica.
    pub verify_cursor: Option<String>,
}

impl ReplicaState {
    /// Encodes the object.
    ///
    /// # Errors
    /// Only if postcard cannot encode the body, which does not happen for this type.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = to_postcard("replica state", self)?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
        write_header(&mut out, REPLICA_MAGIC);
        out.extend_from_slice(&body);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        Ok(out)
    }

    /// Decodes the object.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::HashMismatch`]
    /// (damaged), [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "replica state";
        let rest = read_header(what, REPLICA_MAGIC, bytes)?;
        let split = bytes
            .len()
            .checked_sub(CHECKSUM_LEN)
            .filter(|&at| at >= HEADER_LEN)
            .ok_or_else(|| Error::malformed(what, "shorter than its checksum"))?;
        let (covered, sum) = bytes.split_at(split);
        let actual = blake3::hash(covered);
        if actual.as_bytes().as_slice() != sum {
            return Err(Error::HashMismatch {
                what,
                expected: hex::encode(sum),
                actual: actual.to_hex().to_string(),
            });
        }
        let body = rest
            .get(..rest.len().saturating_sub(CHECKSUM_LEN))
            .ok_or_else(|| Error::malformed(what, "shorter than its checksum"))?;
        from_postcard(what, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ReplicaState {
        ReplicaState {
            repo: RepoId([2; 32]),
            source: "s3://bucket/prefix".into(),
            pass_started_ns: 1,
            pass_finished_ns: 2,
            result: PassResult::Partial,
            newest_snapshot: Some(SnapshotId([3; 32])),
            copied_objects: 4,
            copied_bytes: 5,
            behind: Backlog {
                snapshots: 1,
                objects: 2,
                bytes: 3,
                oldest_snapshot_ns: Some(7),
            },
            missing_since: vec![(
                ReplicaObject {
                    kind: "data".into(),
                    name: "ab".into(),
                },
                9,
            )],
            damaged: vec![],
            verify_cursor: Some("data/ab".into()),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = state().encode().unwrap();
        assert_eq!(ReplicaState::decode(&bytes).unwrap(), state());
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = state().encode().unwrap();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            if let Some(b) = damaged.get_mut(i) {
                *b ^= 0x10;
            }
            let err = ReplicaState::decode(&damaged).unwrap_err();
            assert!(
                err.is_corruption() || matches!(err, Error::UnsupportedVersion { .. }),
                "byte {i}: {err}"
            );
        }
        assert!(matches!(
            ReplicaState::decode(bytes.get(..bytes.len() - 1).unwrap()),
            Err(Error::HashMismatch { .. })
        ));
        assert!(matches!(
            ReplicaState::decode(bytes.get(..6).unwrap()),
            Err(Error::Malformed { .. })
        ));
    }
}
