//! Test vectors for key epochs (`format-spec/vectors/key-epochs.json`):
//! the keys of an epoch, a version-2 key slot, and a key history.
//!
//! The ring is the one of `keys.json`'s master key (`00 01 .. 1f`, epoch 0)
//! rotated once to epoch 1 with the secret `60 61 .. 7f`. The key history
//! is sealed with the fixed nonce `40 41 .. 57`, so its bytes are rebuilt
//! here from the spec by hand; the key slot has a random salt and nonce, so
//! it is opened by hand (argon2id, then XChaCha20-Poly1305) and its
//! plaintext compared. Regenerate (a format change) with
//!
//! ```text
//! NFREPO_REGENERATE_VECTORS=1 cargo test -p nfrepo-format --test vectors_keys -- --ignored generate
//! ```

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;

use nfrepo_format::{
    Aad, Cipher, EpochSecret, KdfParams, KeyHistory, KeyRing, KeySlot, MasterKey, RepoId, SealedKind, Sealer, SecretKey,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Vectors {
    about: String,
    /// Sealing and audit keys of epoch 1 (hex).
    epoch1_sealing_key: String,
    epoch1_audit_key: String,
    /// postcard `KeyRing` a version-2 slot of epoch 1 wraps (hex).
    slot_ring: String,
    /// The slot: password, stored bytes.
    slot_password: String,
    slot_bytes: String,
    /// postcard `KeyHistory` of epoch 1, and the stored `keys/epoch-…` object.
    history_name: String,
    history_body: String,
    history_bytes: String,
}

const CREATED: i64 = 1_700_000_000;
const LABEL: &str = "vectors@nfrepo";

fn repo() -> RepoId {
    RepoId(std::array::from_fn(|i| 0x20 + i as u8))
}

fn ring() -> KeyRing {
    let mut ring = KeyRing::from_master(&MasterKey::from_bytes(std::array::from_fn(|i| i as u8)));
    ring.epochs.push(EpochSecret {
        epoch: 1,
        secret: std::array::from_fn(|i| 0x60 + i as u8),
    });
    ring
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../format-spec/vectors/key-epochs.json")
}

fn history_bytes(body: &[u8]) -> Vec<u8> {
    // By hand, as keys.md says: NFRH, version 1, XChaCha20-Poly1305 under
    // derive_key("nfrepo 2026-11 sealing key", epoch-1 secret), AAD (0x20, repo id).
    let key = blake3::derive_key("nfrepo 2026-11 sealing key", &ring().epochs[1].secret);
    let mut out = b"NFRH\x01".to_vec();
    Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(key)).seal_with_nonce_into(
        Aad::object(SealedKind::KeyHistory, repo().0),
        std::array::from_fn(|i| 0x40 + i as u8),
        body,
        &mut out,
    );
    out
}

fn fixed_parts() -> Vectors {
    let ring = ring();
    let keys = ring.derive();
    let history_body = postcard::to_allocvec(&ring.history()).unwrap();
    Vectors {
        about:
            "key epochs (format-spec/keys.md): master 00..1f as epoch 0, epoch 1 secret 60..7f, repository id 20..3f"
                .into(),
        epoch1_sealing_key: hex::encode(keys.sealing_key.expose()),
        epoch1_audit_key: hex::encode(keys.audit_key.expose()),
        slot_ring: hex::encode(postcard::to_allocvec(&ring.current_only()).unwrap()),
        slot_password: "test".into(),
        slot_bytes: String::new(),
        history_name: KeyHistory::name(1),
        history_bytes: hex::encode(history_bytes(&history_body)),
        history_body: hex::encode(history_body),
    }
}

#[test]
fn key_epochs_match_the_vectors() {
    let text = std::fs::read_to_string(path()).expect("format-spec/vectors/key-epochs.json");
    let committed: Vectors = serde_json::from_str(&text).unwrap();
    let want = fixed_parts();
    assert_eq!(
        Vectors {
            slot_bytes: String::new(),
            ..serde_json::from_str(&text).unwrap()
        },
        want
    );
    // The subkeys of epoch 1 by hand.
    let secret = ring().epochs[1].secret;
    assert_eq!(
        committed.epoch1_sealing_key,
        hex::encode(blake3::derive_key("nfrepo 2026-11 sealing key", &secret))
    );
    assert_eq!(
        committed.epoch1_audit_key,
        hex::encode(blake3::derive_key("nfrepo 2026-11 audit mac key", &secret))
    );

    // The key slot: header, body, then opened by hand.
    let bytes = hex::decode(&committed.slot_bytes).unwrap();
    assert_eq!(&bytes[..5], b"NFRK\x02");
    let slot = KeySlot::decode(&bytes).unwrap();
    assert_eq!(slot.encode().unwrap(), bytes, "re-encoding gives the same bytes");
    assert_eq!(
        (slot.kdf, slot.created, slot.label.as_str(), slot.epoch),
        (KdfParams::insecure_for_tests(), CREATED, LABEL, Some(1))
    );
    assert_eq!(*bytes.last().unwrap(), 1, "the epoch is the last byte of the body");
    let params = argon2::Params::new(8, 1, 1, Some(32)).unwrap();
    let mut wrapping = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(committed.slot_password.as_bytes(), &slot.salt, &mut wrapping)
        .unwrap();
    let opened = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(wrapping))
        .open("key slot", Aad::object(SealedKind::KeySlot, repo().0), &slot.wrapped)
        .unwrap();
    assert_eq!(hex::encode(&opened), committed.slot_ring);
    let unwrapped = slot.unwrap_ring(committed.slot_password.as_bytes(), &repo()).unwrap();
    assert!(unwrapped == ring().current_only());

    // The key history: decodes under epoch 1's key and completes the ring.
    let history_bytes = hex::decode(&committed.history_bytes).unwrap();
    let history = KeyHistory::decode(
        &history_bytes,
        1,
        &ring().current_only().sealer(Cipher::XChaCha20Poly1305),
        &repo(),
    )
    .unwrap();
    assert!(unwrapped.with_history(&history).unwrap() == ring());
    assert_eq!(committed.history_name, "epoch-00000000000000000001");
}

#[test]
#[ignore = "writes format-spec/vectors/key-epochs.json; a format change"]
fn generate() {
    assert!(
        std::env::var_os("NFREPO_REGENERATE_VECTORS").is_some(),
        "set NFREPO_REGENERATE_VECTORS=1 to regenerate"
    );
    let slot = KeySlot::wrap_ring(
        &ring().current_only(),
        b"test",
        KdfParams::insecure_for_tests(),
        &repo(),
        CREATED,
        LABEL.into(),
    )
    .unwrap();
    let vectors = Vectors {
        slot_bytes: hex::encode(slot.encode().unwrap()),
        ..fixed_parts()
    };
    std::fs::write(path(), serde_json::to_string_pretty(&vectors).unwrap() + "\n").unwrap();
}
