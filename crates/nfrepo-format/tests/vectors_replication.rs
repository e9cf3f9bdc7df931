//! Test vector for the replica state (`format-spec/vectors/replication.json`).
//!
//! The state is plain (not sealed), so its bytes are reproducible. The check
//! rebuilds them from the spec by hand (magic, version, postcard body,
//! BLAKE3 over everything before), compares with the committed bytes, and
//! decodes the committed bytes with this crate. Regenerate (a format change) with
//!
//! ```text
//! NFREPO_REGENERATE_VECTORS=1 cargo test -p nfrepo-format --test vectors_replication -- --ignored generate
//! ```

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;

use nfrepo_format::{Backlog, PassResult, ReplicaObject, ReplicaState, RepoId, SnapshotId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Vector {
    about: String,
    body: String,
    bytes: String,
}

fn state() -> ReplicaState {
    ReplicaState {
        repo: RepoId(std::array::from_fn(|i| 0x20 + i as u8)),
        source: "s3://primary/repo?endpoint=http://127.0.0.1:18333".into(),
        pass_started_ns: 1_800_000_000_000_000_000,
        pass_finished_ns: 1_800_000_004_500_000_000,
        result: PassResult::Partial,
        newest_snapshot: Some(SnapshotId([0x77; 32])),
        copied_objects: 12,
        copied_bytes: 48_000_000,
        behind: Backlog {
            snapshots: 1,
            objects: 3,
            bytes: 16_777_216,
            oldest_snapshot_ns: Some(1_799_999_990_000_000_000),
        },
        missing_since: vec![(
            ReplicaObject {
                kind: "data".into(),
                name: "ab".repeat(32),
            },
            1_799_000_000_000_000_000,
        )],
        damaged: vec![ReplicaObject {
            kind: "tree".into(),
            name: "cd".repeat(32),
        }],
        verify_cursor: Some(format!("index/{}", "ef".repeat(32))),
    }
}

/// The bytes as the spec describes them, built without the crate's encoder.
fn by_hand() -> (Vec<u8>, Vec<u8>) {
    let body = postcard::to_allocvec(&state()).unwrap();
    let mut bytes = b"NFRR\x01".to_vec();
    bytes.extend_from_slice(&body);
    let sum = blake3::hash(&bytes);
    bytes.extend_from_slice(sum.as_bytes());
    (body, bytes)
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../format-spec/vectors/replication.json")
}

#[test]
fn the_committed_vector_decodes_and_matches_the_spec() {
    let vector: Vector = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    let (body, bytes) = by_hand();
    assert_eq!(vector.body, hex::encode(&body));
    assert_eq!(vector.bytes, hex::encode(&bytes));
    assert_eq!(state().encode().unwrap(), bytes);
    assert_eq!(
        ReplicaState::decode(&hex::decode(&vector.bytes).unwrap()).unwrap(),
        state()
    );
}

#[test]
#[ignore = "writes the vector file; a format change"]
fn generate() {
    assert_eq!(std::env::var("NFREPO_REGENERATE_VECTORS").as_deref(), Ok("1"));
    let (body, bytes) = by_hand();
    let vector = Vector {
        about: "replica state (replication.md): plain, so reproducible; repository id 20 21 .. 3f".into(),
        body: hex::encode(body),
        bytes: hex::encode(bytes),
    };
    std::fs::write(path(), serde_json::to_string_pretty(&vector).unwrap() + "\n").unwrap();
}
