//! Test vectors for the maintenance objects: GC plans, session markers,
//! leases, protect markers, good markers and drill records (`format-spec/vectors/maintenance.json`).
//!
//! Each vector is sealed with the fixed nonce `40 41 .. 57`, so the bytes
//! are reproducible. The check rebuilds every object from the spec by hand
//! (magic, version, AEAD over the postcard body with the documented
//! associated data), compares with the committed bytes, and decodes the
//! committed bytes with this crate. Regenerate (a format change) with
//!
//! ```text
//! NFREPO_REGENERATE_VECTORS=1 cargo test -p nfrepo-format --test vectors_maintenance -- --ignored generate
//! ```

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;

use nfrepo_format::{
    Aad, BlobId, Cipher, DrillCheck, DrillId, DrillPhase, DrillRecord, GcPlan, GoodMarker, Lease, MasterKey, PackId,
    PackKind, PlanReason, PlannedPack, ProcessStart, ProtectMarker, RepoId, SealedKind, Sealer, SessionMarker,
    SnapshotId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Vectors {
    about: String,
    objects: Vec<ObjectVector>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ObjectVector {
    object: String,
    cipher: String,
    magic: String,
    aad_kind: u8,
    body: String,
    bytes: String,
}

fn repo() -> RepoId {
    RepoId(std::array::from_fn(|i| 0x20 + i as u8))
}

fn sealer(cipher: Cipher) -> Sealer {
    MasterKey::from_bytes(std::array::from_fn(|i| i as u8))
        .derive()
        .sealer(cipher)
}

fn nonce() -> [u8; 24] {
    std::array::from_fn(|i| 0x40 + i as u8)
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../format-spec/vectors/maintenance.json")
}

fn gc_plan() -> GcPlan {
    GcPlan {
        created_ns: 1_764_000_000_000_000_000,
        packs: vec![
            PlannedPack {
                id: PackId([0x11; 32]),
                kind: PackKind::Data,
                size: 16_777_216,
                reason: PlanReason::Unreferenced,
            },
            PlannedPack {
                id: PackId([0x22; 32]),
                kind: PackKind::Tree,
                size: 300,
                reason: PlanReason::Unindexed,
            },
        ],
    }
}

fn session_marker() -> SessionMarker {
    SessionMarker {
        started_ns: 1_764_000_000_000_000_000,
        hostname: "db1".into(),
        pid: 4242,
        source: "mysql-main".into(),
        plans_listed: true,
        plans_seen: vec![[0x33; 32]],
        parent_root: Some(BlobId([0x44; 32])),
        process: Some(ProcessStart {
            boot_id: "4b1c0c2e-5f7a-4d8e-9a61-0123456789ab".into(),
            pid_namespace: 4_026_531_836,
            start_ticks: 123_456,
        }),
    }
}

/// A marker as builds before `process` wrote it: the same fields, without the last.
#[derive(Serialize)]
struct SessionMarkerV1 {
    started_ns: i64,
    hostname: String,
    pid: u32,
    source: String,
    plans_listed: bool,
    plans_seen: Vec<[u8; 32]>,
    parent_root: Option<BlobId>,
}

fn session_marker_v1() -> SessionMarkerV1 {
    let m = session_marker();
    SessionMarkerV1 {
        started_ns: m.started_ns,
        hostname: m.hostname,
        pid: m.pid,
        source: m.source,
        plans_listed: m.plans_listed,
        plans_seen: m.plans_seen,
        parent_root: m.parent_root,
    }
}

fn lease() -> Lease {
    Lease {
        generation: 3,
        holder: [0x55; 32],
        hostname: "gc-host".into(),
        pid: 7,
        acquired_ns: 1_764_000_000_000_000_000,
        ttl_secs: 120,
        process: Some(ProcessStart {
            boot_id: "4b1c0c2e-5f7a-4d8e-9a61-0123456789ab".into(),
            pid_namespace: 4_026_531_836,
            start_ticks: 654_321,
        }),
        operation: "repair index".into(),
    }
}

/// A lease as builds before `process` and `operation` wrote it.
#[derive(Serialize)]
struct LeaseV1 {
    generation: u64,
    holder: [u8; 32],
    hostname: String,
    pid: u32,
    acquired_ns: i64,
    ttl_secs: u64,
}

fn lease_v1() -> LeaseV1 {
    let l = lease();
    LeaseV1 {
        generation: l.generation,
        holder: l.holder,
        hostname: l.hostname,
        pid: l.pid,
        acquired_ns: l.acquired_ns,
        ttl_secs: 3600,
    }
}

fn protect_marker() -> ProtectMarker {
    ProtectMarker {
        snapshot: SnapshotId([0x66; 32]),
        created_ns: 1_764_000_000_000_000_000,
        by: "ops@bastion".into(),
        note: "legal hold".into(),
    }
}

fn good_marker() -> GoodMarker {
    GoodMarker {
        snapshot: SnapshotId([0x77; 32]),
        source: "web-release".into(),
        created_ns: 1_764_000_000_000_000_000,
        by: "deploy@ci".into(),
        note: "smoke tests passed".into(),
    }
}

fn drill_record() -> DrillRecord {
    DrillRecord {
        id: DrillId([0x88; 32]),
        source: "mysql-main".into(),
        source_kind: "mysql".into(),
        snapshot: Some(SnapshotId([0x77; 32])),
        snapshot_time_ns: 1_763_999_700_000_000_000,
        started_ns: 1_764_000_000_000_000_000,
        by: "dr@bastion".into(),
        passed: false,
        code: "RESTORE_FAILED".into(),
        failed_check: "query SELECT count(*) > 0 FROM orders".into(),
        message: "returned 0".into(),
        rto_ms: None,
        rpo_ms: Some(300_000),
        phases: vec![
            DrillPhase {
                name: "restore".into(),
                ms: 2_500,
            },
            DrillPhase {
                name: "checks".into(),
                ms: 40,
            },
        ],
        checks: vec![
            DrillCheck {
                name: "rows app.orders".into(),
                passed: true,
                detail: "3 rows".into(),
            },
            DrillCheck {
                name: "query SELECT count(*) > 0 FROM orders".into(),
                passed: false,
                detail: "returned 0".into(),
            },
        ],
    }
}

/// (object, magic, AAD kind code written out from the spec, postcard body)
fn fixtures() -> Vec<(&'static str, &'static [u8; 4], u8, Vec<u8>)> {
    vec![
        ("gc_plan", b"NFRG", 9, postcard::to_allocvec(&gc_plan()).unwrap()),
        (
            "session_marker",
            b"NFRB",
            10,
            postcard::to_allocvec(&session_marker()).unwrap(),
        ),
        (
            "session_marker_v1",
            b"NFRB",
            10,
            postcard::to_allocvec(&session_marker_v1()).unwrap(),
        ),
        ("lease", b"NFRQ", 11, postcard::to_allocvec(&lease()).unwrap()),
        ("lease_v1", b"NFRQ", 11, postcard::to_allocvec(&lease_v1()).unwrap()),
        (
            "protect_marker",
            b"NFRX",
            12,
            postcard::to_allocvec(&protect_marker()).unwrap(),
        ),
        (
            "good_marker",
            b"NFRM",
            13,
            postcard::to_allocvec(&good_marker()).unwrap(),
        ),
        (
            "drill_record",
            b"NFRD",
            14,
            postcard::to_allocvec(&drill_record()).unwrap(),
        ),
    ]
}

fn kind_of(code: u8) -> SealedKind {
    match code {
        9 => SealedKind::GcPlan,
        10 => SealedKind::SessionMarker,
        11 => SealedKind::Lease,
        12 => SealedKind::ProtectMarker,
        13 => SealedKind::GoodMarker,
        14 => SealedKind::DrillRecord,
        other => panic!("no sealed kind {other}"),
    }
}

fn build(cipher: Cipher, magic: &[u8; 4], aad_kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.push(1);
    sealer(cipher).seal_with_nonce_into(Aad::object(kind_of(aad_kind), repo().0), nonce(), body, &mut out);
    out
}

fn expected() -> Vec<ObjectVector> {
    let mut out = Vec::new();
    for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
        for (object, magic, aad_kind, body) in fixtures() {
            out.push(ObjectVector {
                object: object.into(),
                cipher: cipher.name().into(),
                magic: String::from_utf8(magic.to_vec()).unwrap(),
                aad_kind,
                body: hex::encode(&body),
                bytes: hex::encode(build(cipher, magic, aad_kind, &body)),
            });
        }
    }
    out
}

#[test]
fn maintenance_objects_match_the_vectors() {
    let text = std::fs::read_to_string(path()).expect("format-spec/vectors/maintenance.json");
    let vectors: Vectors = serde_json::from_str(&text).unwrap();
    let want = expected();
    assert_eq!(vectors.objects.len(), want.len());
    for (committed, built) in vectors.objects.iter().zip(&want) {
        assert_eq!(committed, built, "{} {}", committed.object, committed.cipher);
        let cipher = if committed.cipher == "aes256gcm" {
            Cipher::Aes256Gcm
        } else {
            Cipher::XChaCha20Poly1305
        };
        let sealer = sealer(cipher);
        let bytes = hex::decode(&committed.bytes).unwrap();
        match committed.object.as_str() {
            "gc_plan" => {
                let id = *blake3::hash(&bytes).as_bytes();
                assert_eq!(GcPlan::decode(&id, &bytes, &sealer, &repo()).unwrap(), gc_plan());
            }
            "session_marker" => {
                assert_eq!(
                    SessionMarker::decode(&bytes, &sealer, &repo()).unwrap(),
                    session_marker()
                );
            }
            "session_marker_v1" => {
                let old = SessionMarker::decode(&bytes, &sealer, &repo()).unwrap();
                assert!(old.process.is_none(), "an earlier build's marker has no process");
                assert_eq!(
                    old,
                    SessionMarker {
                        process: None,
                        ..session_marker()
                    }
                );
            }
            "lease" => assert_eq!(Lease::decode(&bytes, &sealer, &repo()).unwrap(), lease()),
            "lease_v1" => assert_eq!(
                Lease::decode(&bytes, &sealer, &repo()).unwrap(),
                Lease {
                    ttl_secs: 3600,
                    process: None,
                    operation: String::new(),
                    ..lease()
                }
            ),
            "protect_marker" => assert_eq!(
                ProtectMarker::decode(&SnapshotId([0x66; 32]), &bytes, &sealer, &repo()).unwrap(),
                protect_marker()
            ),
            "good_marker" => assert_eq!(
                GoodMarker::decode(&SnapshotId([0x77; 32]), &bytes, &sealer, &repo()).unwrap(),
                good_marker()
            ),
            "drill_record" => assert_eq!(
                DrillRecord::decode(&DrillId([0x88; 32]), &bytes, &sealer, &repo()).unwrap(),
                drill_record()
            ),
            other => panic!("unknown object {other}"),
        }
    }
}

#[test]
#[ignore = "writes format-spec/vectors/maintenance.json; a format change"]
fn generate() {
    assert!(
        std::env::var_os("NFREPO_REGENERATE_VECTORS").is_some(),
        "set NFREPO_REGENERATE_VECTORS=1 to regenerate"
    );
    let vectors = Vectors {
        about: "GC plans, session markers (current, and session_marker_v1 as builds before `process` wrote \
                them), leases (current, and lease_v1 as builds before `process` and `operation` wrote them), protect and good markers and drill records sealed with the fixed nonce 40 41 .. 57 under the \
                vectors' master key and repository id; see format-spec/gc.md, protect.md, good.md and drill.md"
            .into(),
        objects: expected(),
    };
    std::fs::write(path(), serde_json::to_string_pretty(&vectors).unwrap() + "\n").unwrap();
}
