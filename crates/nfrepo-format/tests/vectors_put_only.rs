//! Test vectors for put-only sessions (`format-spec/vectors/put-only.json`,
//! format-spec/put-only.md): the index key, a session key, a session's
//! pack, snapshot and index delta, a credential file and its slot.
//!
//! Everything is deterministic: master key `00 01 .. 1f` (epoch 0),
//! repository id `20 21 .. 3f`, ephemeral secret `60 61 .. 7f`, every nonce
//! `40 41 .. 57`, credential token `80 81 .. 9f` and slot id `a0 a1 .. bf`.
//! The check rebuilds every byte by hand from the spec (X25519, BLAKE3 key
//! derivation, the AEAD) and decodes each object with the password holder's
//! keys. Regenerate (a format change) with
//!
//! ```text
//! NFREPO_REGENERATE_VECTORS=1 cargo test -p nfrepo-format --test vectors_put_only -- --ignored generate
//! ```

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;
use std::sync::Arc;

use nfrepo_format::{
    Aad, BlobId, BlobKind, Cipher, ConfigBody, CredentialSlot, Error, IndexDelta, IndexId, IndexedPack, KeyId, KeyRef,
    MasterKey, PackEntry, PackId, PackKind, PutOnlyCredential, ReferenceKeys, RepoId, RepoKeys, SealedKind, Sealer,
    SecretKey, Snapshot, SnapshotId, Summary, begin_session_with, read_pack_sealing, verify_pack,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Vectors {
    about: String,
    index_key: String,
    public_key: String,
    ephemeral_secret: String,
    ephemeral_public: String,
    session_key: String,
    pack_id: String,
    pack_bytes: String,
    snapshot_id: String,
    snapshot_bytes: String,
    index_id: String,
    index_bytes: String,
    credential_bytes: String,
    credential_slot_bytes: String,
}

const CREATED: i64 = 1_700_000_000;

fn master() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn keys() -> RepoKeys {
    MasterKey::from_bytes(master()).derive()
}

fn repo() -> RepoId {
    RepoId(std::array::from_fn(|i| 0x20 + i as u8))
}

fn nonce() -> [u8; 24] {
    std::array::from_fn(|i| 0x40 + i as u8)
}

fn ephemeral() -> [u8; 32] {
    std::array::from_fn(|i| 0x60 + i as u8)
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../format-spec/vectors/put-only.json")
}

/// The session key by hand: put-only.md, "Session key".
fn session_key_by_hand() -> ([u8; 32], [u8; 32], [u8; 32]) {
    let repo_secret =
        x25519_dalek::StaticSecret::from(blake3::derive_key("nfrepo 2026-12 repository x25519 secret", &master()));
    let public = x25519_dalek::PublicKey::from(&repo_secret).to_bytes();
    let e = x25519_dalek::StaticSecret::from(ephemeral());
    let e_public = x25519_dalek::PublicKey::from(&e).to_bytes();
    let shared = e.diffie_hellman(&x25519_dalek::PublicKey::from(public));
    let mut material = shared.as_bytes().to_vec();
    material.extend_from_slice(&e_public);
    material.extend_from_slice(&public);
    (
        public,
        e_public,
        blake3::derive_key("nfrepo 2026-12 put-only session key", &material),
    )
}

fn session() -> Sealer {
    let public = keys().reference_keys.key_pair(0).unwrap().public();
    begin_session_with(
        &public,
        0,
        Cipher::XChaCha20Poly1305,
        Arc::new(ReferenceKeys::default()),
        ephemeral(),
    )
    .unwrap()
}

fn snapshot() -> Snapshot {
    Snapshot {
        time_ns: 1_700_000_000_000_000_000,
        source: "web-1".into(),
        source_kind: "files".into(),
        hostname: "web-1".into(),
        username: "backup".into(),
        paths: vec!["/srv".into()],
        tags: Vec::new(),
        profile: "files".into(),
        parent: None,
        root: BlobId([0x11; 32]),
        summary: Summary::default(),
        command: None,
        skipped: Vec::new(),
        extra: Vec::new(),
        program_version: "vectors".into(),
    }
}

/// A data pack of the session holding the blob `hello` (stored, codec 00),
/// built by hand: header with scheme 01, epoch 0 and E, the sealed blob,
/// the sealed trailer, its length.
fn pack_by_hand(key: [u8; 32], e_public: [u8; 32]) -> (Vec<u8>, PackEntry) {
    let sealer = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(key));
    let mut bytes = b"NFRP\x01\x01\x01\x00".to_vec();
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&e_public);
    assert_eq!(bytes.len(), 44);
    let id = BlobId(*blake3::keyed_hash(keys().id_key.expose(), b"hello").as_bytes());
    let offset = bytes.len() as u32;
    sealer.seal_with_nonce_into(Aad::blob(SealedKind::DataBlob, &id), nonce(), b"\x00hello", &mut bytes);
    let entry = PackEntry {
        id,
        kind: BlobKind::Data,
        offset,
        sealed_len: bytes.len() as u32 - offset,
        raw_len: 5,
    };
    let trailer = postcard::to_allocvec(&vec![entry]).unwrap();
    let start = bytes.len();
    sealer.seal_with_nonce_into(
        Aad::object(SealedKind::PackTrailer, repo().0),
        nonce(),
        &trailer,
        &mut bytes,
    );
    let len = (bytes.len() - start) as u32;
    bytes.extend_from_slice(&len.to_le_bytes());
    (bytes, entry)
}

fn credential() -> (PutOnlyCredential, CredentialSlot) {
    PutOnlyCredential::issue_with(
        repo(),
        &keys(),
        Cipher::XChaCha20Poly1305,
        &ConfigBody {
            created: CREATED,
            zstd_level: 3,
            ..ConfigBody::default()
        },
        "web-1",
        CREATED,
        KeyId(std::array::from_fn(|i| 0xa0 + i as u8)),
        std::array::from_fn(|i| 0x80 + i as u8),
    )
    .unwrap()
}

fn computed() -> Vectors {
    let (public, e_public, key) = session_key_by_hand();
    let (pack, entry) = pack_by_hand(key, e_public);

    // Snapshot: NFRS, version 2, scheme 01, epoch, E, sealed under the session key.
    let mut snapshot_bytes = b"NFRS\x02\x01".to_vec();
    snapshot_bytes.extend_from_slice(&0u32.to_le_bytes());
    snapshot_bytes.extend_from_slice(&e_public);
    Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(key)).seal_with_nonce_into(
        Aad::object(SealedKind::Snapshot, repo().0),
        nonce(),
        &postcard::to_allocvec(&snapshot()).unwrap(),
        &mut snapshot_bytes,
    );

    // Index delta v2: NFRI, version 2, scheme 02, epoch, sealed under the
    // index key; body: packs (id, kind, size, blobs, Some(session)), supersedes.
    let index_key = blake3::derive_key("nfrepo 2026-12 index key", &master());
    let mut body = vec![1u8];
    body.extend_from_slice(blake3::hash(&pack).as_bytes());
    body.push(0); // PackKind::Data, postcard variant 0
    body.extend_from_slice(&postcard::to_allocvec(&(pack.len() as u64)).unwrap());
    body.extend_from_slice(&postcard::to_allocvec(&vec![entry]).unwrap());
    body.push(1); // Some
    body.push(0); // epoch 0 (varint)
    body.extend_from_slice(&e_public);
    body.push(0); // supersedes: empty
    let mut index_bytes = b"NFRI\x02\x02".to_vec();
    index_bytes.extend_from_slice(&0u32.to_le_bytes());
    Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(index_key)).seal_with_nonce_into(
        Aad::object(SealedKind::Index, repo().0),
        nonce(),
        &body,
        &mut index_bytes,
    );

    let (credential, slot) = credential();
    Vectors {
        about: "put-only sessions (format-spec/put-only.md): master 00..1f (epoch 0), repository id 20..3f, \
                ephemeral secret 60..7f, nonces 40..57, token 80..9f, slot id a0..bf"
            .into(),
        index_key: hex::encode(index_key),
        public_key: hex::encode(public),
        ephemeral_secret: hex::encode(ephemeral()),
        ephemeral_public: hex::encode(e_public),
        session_key: hex::encode(key),
        pack_id: hex::encode(blake3::hash(&pack).as_bytes()),
        pack_bytes: hex::encode(&pack),
        snapshot_id: hex::encode(blake3::hash(&snapshot_bytes).as_bytes()),
        snapshot_bytes: hex::encode(&snapshot_bytes),
        index_id: hex::encode(blake3::hash(&index_bytes).as_bytes()),
        index_bytes: hex::encode(&index_bytes),
        credential_bytes: hex::encode(credential.encode().unwrap()),
        credential_slot_bytes: hex::encode(slot.encode().unwrap()),
    }
}

fn unhex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn put_only_objects_match_the_vectors() {
    let text = std::fs::read_to_string(path()).expect("format-spec/vectors/put-only.json");
    let v: Vectors = serde_json::from_str(&text).unwrap();
    assert_eq!(v, computed(), "the committed vectors are what the spec gives");

    // The crate agrees with the hand-made values.
    let keys = keys();
    let reader = keys.sealer(Cipher::XChaCha20Poly1305);
    assert_eq!(
        hex::encode(keys.reference_keys.index_key(0).unwrap().expose()),
        v.index_key
    );
    assert_eq!(
        hex::encode(keys.reference_keys.key_pair(0).unwrap().public().0),
        v.public_key
    );
    let session = session();
    let KeyRef::Session(reference) = session.reference() else {
        panic!("a session sealer names its session")
    };
    assert_eq!(hex::encode(reference.ephemeral), v.ephemeral_public);
    let derived = keys
        .reference_keys
        .key_pair(0)
        .unwrap()
        .session_key(&reference)
        .unwrap();
    assert_eq!(hex::encode(derived.expose()), v.session_key);

    // The pack opens with the password holder's keys, from the pack alone.
    let pack = hex::decode(&v.pack_bytes).unwrap();
    let (kind, sealing, entries) = read_pack_sealing(&pack, &reader, &repo()).unwrap();
    assert_eq!((kind, sealing), (PackKind::Data, Some(reference)));
    let mut codec = nfrepo_format::BlobCodec::new(keys.clone(), reader.clone(), 3).unwrap();
    let (_, _, faults) = verify_pack(&PackId(unhex32(&v.pack_id)), &pack, &mut codec, &repo()).unwrap();
    assert!(faults.is_empty());

    // The snapshot and the index delta decode.
    let snapshot = Snapshot::decode(
        &SnapshotId(unhex32(&v.snapshot_id)),
        &hex::decode(&v.snapshot_bytes).unwrap(),
        &reader,
        &repo(),
    )
    .unwrap();
    assert_eq!(snapshot, self::snapshot());
    let index_bytes = hex::decode(&v.index_bytes).unwrap();
    let delta = IndexDelta::decode(&IndexId(unhex32(&v.index_id)), &index_bytes, &reader, &repo()).unwrap();
    assert_eq!(
        delta,
        IndexDelta {
            packs: vec![IndexedPack {
                id: PackId(unhex32(&v.pack_id)),
                kind: PackKind::Data,
                size: pack.len() as u64,
                blobs: entries,
                sealing: Some(reference),
            }],
            supersedes: Vec::new(),
        }
    );
    // Re-encoding the delta with the crate gives version 2 under the index key.
    assert_eq!(&delta.encode(&reader, &repo()).unwrap().1[..10], &index_bytes[..10]);

    // The credential: decodes, re-encodes byte for byte, matches its slot,
    // reads the index delta, and opens neither the pack nor the snapshot.
    let credential = PutOnlyCredential::decode(&hex::decode(&v.credential_bytes).unwrap()).unwrap();
    assert_eq!(hex::encode(credential.encode().unwrap()), v.credential_bytes);
    let slot = CredentialSlot::decode(&hex::decode(&v.credential_slot_bytes).unwrap()).unwrap();
    credential.check_slot(&slot).unwrap();
    let host = credential.index_sealer();
    assert_eq!(
        IndexDelta::decode(&IndexId(unhex32(&v.index_id)), &index_bytes, &host, &repo()).unwrap(),
        delta
    );
    assert!(matches!(
        read_pack_sealing(&pack, &host, &repo()),
        Err(Error::MissingKey { .. })
    ));
}

#[test]
#[ignore = "writes format-spec/vectors/put-only.json; a format change"]
fn generate() {
    assert!(
        std::env::var_os("NFREPO_REGENERATE_VECTORS").is_some(),
        "set NFREPO_REGENERATE_VECTORS=1 to regenerate"
    );
    std::fs::write(path(), serde_json::to_string_pretty(&computed()).unwrap() + "\n").unwrap();
}
