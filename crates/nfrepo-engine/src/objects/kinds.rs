//! The metadata object kinds: how each is named and opened.

use nfrepo_format::{
    DrillId, DrillRecord, GcPlan, GoodMarker, IndexDelta, IndexId, KeyId, Lease, ProtectMarker, SessionMarker,
    Snapshot, SnapshotId,
};
use nfrepo_store::ObjectKind;

use super::RepoObject;
use crate::Repository;

/// The id of a GC plan: the BLAKE3 of its stored bytes.
pub(crate) type PlanId = [u8; 32];

/// A lease object's name: its purpose and generation (`gc-00000000000000000007`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaseName {
    /// What the lease is for, e.g. `gc`.
    pub(crate) purpose: String,
    /// Its place in the chain.
    pub(crate) generation: u64,
}

/// Lowercase hex of 32 bytes, the only spelling object names use.
fn parse_hex32(name: &str) -> Option<[u8; 32]> {
    // Names are written in lowercase only: another spelling is not ours.
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0; 32];
    hex::decode_to_slice(name, &mut out).ok()?;
    Some(out)
}

fn hex32(id: &[u8; 32]) -> String {
    hex::encode(id)
}

/// A kind named by a 32-byte id in hex, opened by its decoder with that id
/// (the decoder checks the bytes belong to the id and the repository).
macro_rules! named_by_id {
    ($object:ty, $id:ty, $wrap:expr, $unwrap:expr, $kind:expr, $noun:literal) => {
        impl RepoObject for $object {
            type Id = $id;
            const KIND: ObjectKind = $kind;
            const NOUN: &'static str = $noun;

            fn parse_name(name: &str) -> Option<$id> {
                parse_hex32(name).map($wrap)
            }

            fn name(id: &$id) -> String {
                hex32(&$unwrap(id))
            }

            fn open(repo: &Repository, id: &$id, bytes: &[u8]) -> nfrepo_format::Result<Self> {
                Self::decode(id, bytes, repo.sealer(), &repo.id())
            }
        }
    };
}

named_by_id!(
    Snapshot,
    SnapshotId,
    SnapshotId,
    |id: &SnapshotId| id.0,
    ObjectKind::Snapshot,
    "snapshot"
);
named_by_id!(
    IndexDelta,
    IndexId,
    IndexId,
    |id: &IndexId| id.0,
    ObjectKind::Index,
    "index delta"
);
named_by_id!(
    GcPlan,
    PlanId,
    std::convert::identity,
    |id: &PlanId| *id,
    ObjectKind::Gc,
    "gc plan"
);
named_by_id!(
    ProtectMarker,
    SnapshotId,
    SnapshotId,
    |id: &SnapshotId| id.0,
    ObjectKind::Protect,
    "protect marker"
);
named_by_id!(
    GoodMarker,
    SnapshotId,
    SnapshotId,
    |id: &SnapshotId| id.0,
    ObjectKind::Good,
    "good marker"
);

named_by_id!(
    DrillRecord,
    DrillId,
    DrillId,
    |id: &DrillId| id.0,
    ObjectKind::Drill,
    "drill record"
);

impl RepoObject for SessionMarker {
    /// A random id drawn when the session starts.
    type Id = KeyId;
    const KIND: ObjectKind = ObjectKind::Session;
    const NOUN: &'static str = "session marker";

    fn parse_name(name: &str) -> Option<KeyId> {
        parse_hex32(name).map(KeyId)
    }

    fn name(id: &KeyId) -> String {
        id.to_hex()
    }

    fn open(repo: &Repository, _: &KeyId, bytes: &[u8]) -> nfrepo_format::Result<Self> {
        Self::decode(bytes, repo.sealer(), &repo.id())
    }
}

impl RepoObject for Lease {
    type Id = LeaseName;
    const KIND: ObjectKind = ObjectKind::Lease;
    const NOUN: &'static str = "lease";

    fn parse_name(name: &str) -> Option<LeaseName> {
        let (purpose, generation) = name.rsplit_once('-')?;
        if purpose.is_empty() || generation.len() != 20 || !generation.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(LeaseName {
            purpose: purpose.to_owned(),
            generation: generation.parse().ok()?,
        })
    }

    fn name(id: &LeaseName) -> String {
        Self::object_name(&id.purpose, id.generation)
    }

    fn open(repo: &Repository, _: &LeaseName, bytes: &[u8]) -> nfrepo_format::Result<Self> {
        Self::decode(bytes, repo.sealer(), &repo.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = SnapshotId([0xab; 32]);
        assert_eq!(Snapshot::parse_name(&Snapshot::name(&id)), Some(id));
        let plan: PlanId = std::array::from_fn(|i| i as u8);
        assert_eq!(GcPlan::parse_name(&GcPlan::name(&plan)), Some(plan));
        let lease = LeaseName {
            purpose: "gc".into(),
            generation: 7,
        };
        assert_eq!(Lease::name(&lease), "gc-00000000000000000007");
        assert_eq!(Lease::parse_name(&Lease::name(&lease)), Some(lease));
    }

    #[test]
    fn foreign_names_are_refused() {
        assert_eq!(Snapshot::parse_name("ABCD"), None);
        assert_eq!(
            Snapshot::parse_name(&"A".repeat(64)),
            None,
            "uppercase is not our spelling"
        );
        assert_eq!(IndexDelta::parse_name(&"0".repeat(63)), None);
        assert_eq!(Lease::parse_name("gc-7"), None);
        assert_eq!(Lease::parse_name("-00000000000000000007"), None);
    }
}
