//! Test vectors for the repository key pair, sealing to its public key, the
//! public key object and audit entries (`format-spec/vectors/audit.json`).
//!
//! Made with the vectors' master key `00 .. 1f`, repository id `20 .. 3f`,
//! ephemeral secret `60 61 .. 7f` and nonce `40 41 .. 57`, so the bytes are
//! reproducible. The check rebuilds every value from the spec by hand
//! (X25519 with `x25519_dalek::x25519`, BLAKE3 `derive_key` and keyed hashes,
//! the AEAD through [`Sealer`]), compares with the committed bytes, and
//! decodes the committed bytes with this crate. Regenerate (a format change) with
//!
//! ```text
//! NFREPO_REGENERATE_VECTORS=1 cargo test -p nfrepo-format --test vectors_audit -- --ignored generate
//! ```

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;

use nfrepo_format::{
    Aad, AuditAccess, AuditRecord, AuditSealing, ChainHead, Cipher, KeyId, MasterKey, ObjectCount, ParsedAuditEntry,
    RepoId, RepoKeyPair, SealedKind, Sealer, SecretKey, SnapshotId, WriterId, audit_entry_name,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Vectors {
    about: String,
    x25519_secret: String,
    public_key: String,
    public_key_object: String,
    seals: Vec<SealVector>,
    entries: Vec<EntryVector>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SealVector {
    cipher: String,
    plaintext: String,
    aad_context: String,
    ephemeral_public: String,
    shared_secret: String,
    message_key: String,
    sealed: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct EntryVector {
    name: String,
    cipher: String,
    mac: bool,
    seq: u64,
    prev: String,
    header: String,
    aad_context: String,
    body: String,
    bytes: String,
    hash: String,
}

fn master() -> MasterKey {
    MasterKey::from_bytes(std::array::from_fn(|i| i as u8))
}

fn repo() -> RepoId {
    RepoId(std::array::from_fn(|i| 0x20 + i as u8))
}

fn ephemeral() -> [u8; 32] {
    std::array::from_fn(|i| 0x60 + i as u8)
}

fn nonce() -> [u8; 24] {
    std::array::from_fn(|i| 0x40 + i as u8)
}

fn writer() -> WriterId {
    WriterId([0x77; 32])
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../format-spec/vectors/audit.json")
}

fn cipher_name(cipher: Cipher) -> String {
    cipher.name().to_owned()
}

/// Entry `n` of the chain: of a key holder (0: MAC, key slot), of a wrong
/// password (1), of a put-only host (2: no MAC, the credential), and of a
/// key holder's command that recorded its duration (3, issue 13).
fn entry_record(n: usize) -> AuditRecord {
    let mut record = record(n == 0 || n == 3, n == 2);
    if n == 3 {
        record.operation = "restore".into();
        record.duration_ms = Some(90_061);
    }
    record
}

/// An entry of a key holder (`with_key`: MAC, key slot), of a put-only
/// host (`credential`: no MAC, the credential), or of a wrong password.
fn record(with_key: bool, credential: bool) -> AuditRecord {
    let wrote = with_key || credential;
    AuditRecord {
        time_ns: 1_764_000_000_000_000_000,
        host: "db1".into(),
        user: "root".into(),
        pid: 4242,
        access: if with_key {
            AuditAccess::KeySlot(KeyId([0x33; 32]))
        } else if credential {
            AuditAccess::Credential {
                slot: KeyId([0x55; 32]),
                label: "web-1".into(),
            }
        } else {
            AuditAccess::None
        },
        operation: if wrote { "snapshot" } else { "snapshots" }.into(),
        command: vec![
            "nfrepo".into(),
            "snapshot".into(),
            "--source".into(),
            "mysql-main".into(),
        ],
        sources: vec!["mysql-main".into()],
        code: if wrote { "" } else { "PERMISSION_DENIED" }.into(),
        detail: if wrote { "" } else { "WRONG_PASSWORD" }.into(),
        message: String::new(),
        exit_code: if wrote { 0 } else { 16 },
        objects: vec![ObjectCount {
            kind: "snapshots".into(),
            created: u64::from(wrote),
            deleted: 0,
        }],
        snapshots_created: if wrote { vec![SnapshotId([0x44; 32])] } else { vec![] },
        snapshots_deleted: vec![],
        heads: if with_key {
            vec![ChainHead {
                writer: WriterId([0x99; 32]),
                seq: 7,
                hash: [0x88; 32],
            }]
        } else {
            vec![]
        },
        duration_ms: None,
    }
}

/// Builds the vectors from the spec, by hand where the spec says how.
fn build() -> Vectors {
    let pair = RepoKeyPair::derive(&master());
    let secret = blake3::derive_key(
        "nfrepo 2026-12 repository x25519 secret",
        &std::array::from_fn::<u8, 32, _>(|i| i as u8),
    );
    let public = x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    assert_eq!(public, pair.public().0, "public key = X25519(secret, 9)");
    let audit_key = master().derive().audit_key;
    let object = pair.public().encode_object(&repo(), &audit_key);
    let mut mac = blake3::Hasher::new_keyed(audit_key.expose());
    mac.update(b"nfrepo public key object");
    mac.update(&object[..69]);
    assert_eq!(&object[69..], mac.finalize().as_bytes(), "public key object MAC");

    let mut seals = Vec::new();
    for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
        let context = [0x11; 32];
        let aad = Aad::object(SealedKind::AuditEntry, context);
        let sealed = pair
            .public()
            .seal_with(cipher, aad, ephemeral(), nonce(), b"sealed to the repository")
            .unwrap();
        let ephemeral_public = x25519_dalek::x25519(ephemeral(), x25519_dalek::X25519_BASEPOINT_BYTES);
        let shared = x25519_dalek::x25519(ephemeral(), public);
        let mut material = shared.to_vec();
        material.extend_from_slice(&ephemeral_public);
        material.extend_from_slice(&public);
        let message_key = blake3::derive_key("nfrepo 2026-12 public seal key", &material);
        let mut by_hand = ephemeral_public.to_vec();
        Sealer::new(cipher, SecretKey::from_bytes(message_key)).seal_with_nonce_into(
            aad,
            nonce(),
            b"sealed to the repository",
            &mut by_hand,
        );
        assert_eq!(sealed, by_hand, "seal to the public key, by hand");
        assert_eq!(
            pair.open("vector", cipher, aad, &sealed).unwrap(),
            b"sealed to the repository"
        );
        seals.push(SealVector {
            cipher: cipher_name(cipher),
            plaintext: hex::encode(b"sealed to the repository"),
            aad_context: hex::encode(context),
            ephemeral_public: hex::encode(ephemeral_public),
            shared_secret: hex::encode(shared),
            message_key: hex::encode(message_key),
            sealed: hex::encode(sealed),
        });
    }

    let mut entries = Vec::new();
    let mut prev = [0u8; 32];
    for (n, cipher) in [
        Cipher::XChaCha20Poly1305,
        Cipher::Aes256Gcm,
        Cipher::XChaCha20Poly1305,
        Cipher::Aes256Gcm,
    ]
    .into_iter()
    .enumerate()
    {
        let seq = n as u64;
        let with_key = n == 0 || n == 3;
        let record = entry_record(n);
        let sealing = AuditSealing {
            repo: &repo(),
            cipher,
            public: &pair.public(),
            audit_key: with_key.then_some(&audit_key),
        };
        let bytes = record
            .seal_with(writer(), seq, prev, sealing, ephemeral(), nonce())
            .unwrap();
        // The header by hand.
        let mut header = b"NFRA\x01".to_vec();
        header.push(u8::from(with_key));
        header.extend_from_slice(&writer().0);
        header.extend_from_slice(&seq.to_le_bytes());
        header.extend_from_slice(&prev);
        assert_eq!(&bytes[..78], &header[..], "entry header");
        let mut context = blake3::Hasher::new();
        context.update(&repo().0);
        context.update(&header);
        let context = *context.finalize().as_bytes();
        let body = record.encode_body().unwrap();
        let mut by_hand = header.clone();
        by_hand.extend(
            pair.public()
                .seal_with(
                    cipher,
                    Aad::object(SealedKind::AuditEntry, context),
                    ephemeral(),
                    nonce(),
                    &body,
                )
                .unwrap(),
        );
        if with_key {
            let mut mac = blake3::Hasher::new_keyed(audit_key.expose());
            mac.update(b"nfrepo audit entry mac");
            mac.update(&repo().0);
            mac.update(&by_hand);
            by_hand.extend_from_slice(mac.finalize().as_bytes());
        }
        assert_eq!(bytes, by_hand, "entry {seq} by hand");
        let hash = *blake3::hash(&bytes).as_bytes();
        entries.push(EntryVector {
            name: audit_entry_name(&writer(), seq),
            cipher: cipher_name(cipher),
            mac: with_key,
            seq,
            prev: hex::encode(prev),
            header: hex::encode(&header),
            aad_context: hex::encode(context),
            body: hex::encode(&body),
            bytes: hex::encode(&bytes),
            hash: hex::encode(hash),
        });
        prev = hash;
    }
    Vectors {
        about:
            "the repository key pair, a message sealed to its public key (ephemeral secret 60 .. 7f, nonce 40 .. 57), \
                the public key object, and a chain of four audit entries (with MAC; without, of a wrong password; \
                without, of a put-only credential; with MAC and a duration) of writer 77 .. 77; \
                see format-spec/keys.md, sealing.md and audit.md"
                .into(),
        x25519_secret: hex::encode(secret),
        public_key: hex::encode(public),
        public_key_object: hex::encode(object),
        seals,
        entries,
    }
}

#[test]
fn audit_vectors_match_the_spec_and_decode() {
    let committed: Vectors = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    assert_eq!(
        committed,
        build(),
        "format-spec/vectors/audit.json differs from what the spec gives"
    );
    let pair = RepoKeyPair::derive(&master());
    let audit_key = master().derive().audit_key;
    for (n, entry) in committed.entries.iter().enumerate() {
        let bytes = hex::decode(&entry.bytes).unwrap();
        let parsed = ParsedAuditEntry::parse(&bytes).unwrap();
        assert_eq!(parsed.header.name(), entry.name);
        let cipher = if entry.cipher == "aes256gcm" {
            Cipher::Aes256Gcm
        } else {
            Cipher::XChaCha20Poly1305
        };
        assert_eq!(
            parsed.open(&repo(), cipher, &pair, &audit_key).unwrap(),
            entry_record(n)
        );
        assert_eq!(hex::encode(parsed.hash()), entry.hash);
    }
    assert_eq!(committed.entries[1].prev, committed.entries[0].hash, "the chain");
    assert_eq!(committed.entries[2].prev, committed.entries[1].hash, "the chain");
    assert_eq!(committed.entries[3].prev, committed.entries[2].hash, "the chain");
    // The duration is the body's tail: entry 3's body is entry 0's fields
    // (operation aside) followed by one varint.
    assert!(
        committed.entries[3].body.ends_with("cdbf05"),
        "{}",
        committed.entries[3].body
    );
}

#[test]
#[ignore = "rewrites format-spec/vectors/audit.json; only for a deliberate format change"]
fn generate() {
    assert!(
        std::env::var_os("NFREPO_REGENERATE_VECTORS").is_some(),
        "set NFREPO_REGENERATE_VECTORS=1 to rewrite the vectors"
    );
    let text = serde_json::to_string_pretty(&build()).unwrap();
    std::fs::write(path(), text + "\n").unwrap();
}
