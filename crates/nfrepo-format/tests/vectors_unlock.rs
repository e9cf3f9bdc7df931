//! Test vectors for the cached unlock (`format-spec/vectors/unlock.json`,
//! format-spec/unlock.md).
//!
//! Everything is fixed (salt `60 .. 7f`, nonce `40 .. 57`), so the stored
//! bytes are rebuilt here from the spec by hand (BLAKE3 for the host,
//! argon2id with the host as its secret input, XChaCha20-Poly1305 under the
//! `UnlockCache` associated data) and compared with the committed file,
//! which the library must then decode and open. Regenerate (a format
//! change) with
//!
//! ```text
//! NFREPO_REGENERATE_VECTORS=1 cargo test -p nfrepo-format --test vectors_unlock -- --ignored generate
//! ```

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;

use nfrepo_format::{Aad, Cipher, KdfParams, KeyId, RepoId, SealedKind, Sealer, SecretKey, UnlockCacheFile};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Vectors {
    about: String,
    machine_id: String,
    password: String,
    /// `derive_key("nfrepo 2026-12 unlock cache host", machine id)`.
    host: String,
    /// argon2id(password, salt 60..7f, m 8, t 1, p 1, secret = host).
    cache_key: String,
    /// postcard `CachedUnlock`.
    body: String,
    /// The stored file.
    bytes: String,
}

const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";
const PASSWORD: &str = "test";
const SALT: [u8; 32] = seq(0x60);
const NONCE: [u8; 24] = {
    let mut out = [0u8; 24];
    let mut i = 0;
    while i < 24 {
        out[i] = 0x40 + i as u8;
        i += 1;
    }
    out
};

const fn seq(start: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = start + i as u8;
        i += 1;
    }
    out
}

fn repo() -> RepoId {
    RepoId(seq(0x20))
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../format-spec/vectors/unlock.json")
}

/// The postcard body by hand: slot id 80..9f, the slot's argon2id
/// parameters (65536, 3, 1: the default of repositories made before
/// December 2026), slot salt a0..bf, wrapping key c0..df,
/// created 1 700 000 000, expires an hour later.
fn body() -> Vec<u8> {
    let mut out = seq(0x80).to_vec();
    out.extend([0x80, 0x80, 0x04, 0x03, 0x01]); // 65536, 3, 1 as varints
    out.extend(seq(0xa0));
    out.extend(seq(0xc0));
    out.extend([0x80, 0xc4, 0x9f, 0xd5, 0x0c]); // zigzag(1_700_000_000)
    out.extend([0xa0, 0xfc, 0x9f, 0xd5, 0x0c]); // zigzag(1_700_003_600)
    out
}

fn by_hand() -> Vectors {
    let host = blake3::derive_key("nfrepo 2026-12 unlock cache host", MACHINE_ID.as_bytes());
    let params = argon2::Params::new(8, 1, 1, Some(32)).unwrap();
    let mut cache_key = [0u8; 32];
    argon2::Argon2::new_with_secret(&host, argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .unwrap()
        .hash_password_into(PASSWORD.as_bytes(), &SALT, &mut cache_key)
        .unwrap();
    let mut sealed = Vec::new();
    Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(cache_key)).seal_with_nonce_into(
        Aad::object(SealedKind::UnlockCache, repo().0),
        NONCE,
        &body(),
        &mut sealed,
    );
    // NFRU, version 1, then the postcard UnlockCacheFile: kdf (8, 1, 1),
    // salt, sealed (varint length, then the bytes).
    let mut bytes = b"NFRU\x01\x08\x01\x01".to_vec();
    bytes.extend(SALT);
    // 151 bytes (111 of body, 40 of nonce and tag): a two-byte varint.
    assert_eq!(sealed.len(), 151);
    bytes.extend([0x97, 0x01]);
    bytes.extend(&sealed);
    Vectors {
        about: "a cached unlock (format-spec/unlock.md): repository id 20..3f, salt 60..7f, nonce 40..57".into(),
        machine_id: MACHINE_ID.into(),
        password: PASSWORD.into(),
        host: hex::encode(host),
        cache_key: hex::encode(cache_key),
        body: hex::encode(body()),
        bytes: hex::encode(bytes),
    }
}

#[test]
fn the_cached_unlock_matches_the_vectors() {
    let text = std::fs::read_to_string(path()).expect("format-spec/vectors/unlock.json");
    let committed: Vectors = serde_json::from_str(&text).unwrap();
    assert_eq!(committed, by_hand());

    let bytes = hex::decode(&committed.bytes).unwrap();
    let file = UnlockCacheFile::decode(&bytes).unwrap();
    assert_eq!(file.encode().unwrap(), bytes, "re-encoding gives the same bytes");
    assert_eq!((file.kdf, file.salt), (KdfParams::insecure_for_tests(), SALT));
    let host: [u8; 32] = hex::decode(&committed.host).unwrap().try_into().unwrap();
    let entry = file.open(PASSWORD.as_bytes(), &host, &repo()).unwrap();
    assert_eq!(entry.slot, KeyId(seq(0x80)));
    let slot_kdf = KdfParams {
        memory_kib: 65536,
        iterations: 3,
        parallelism: 1,
    };
    assert_eq!(entry.slot_kdf, slot_kdf);
    assert_eq!(entry.slot_salt, seq(0xa0));
    assert_eq!(entry.wrapping_key.expose(), &seq(0xc0));
    assert_eq!((entry.created, entry.expires), (1_700_000_000, 1_700_003_600));
}

#[test]
#[ignore = "writes format-spec/vectors/unlock.json; a format change"]
fn generate() {
    assert!(
        std::env::var_os("NFREPO_REGENERATE_VECTORS").is_some(),
        "set NFREPO_REGENERATE_VECTORS=1 to regenerate"
    );
    std::fs::write(path(), serde_json::to_string_pretty(&by_hand()).unwrap() + "\n").unwrap();
}
