//! The shape of the JSON files in `format-spec/vectors/`. Every byte string is
//! lowercase hex; every id is 64 hex digits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the vector files live.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../format-spec/vectors")
}

/// `keys.json`: the subkeys derived from the master key 00..1f.
#[derive(Debug, Serialize, Deserialize)]
pub struct Keys {
    pub about: String,
    pub master_key: String,
    pub repo_id: String,
    pub id_key: String,
    pub sealing_key: String,
    pub audit_key: String,
    /// The seed as FastCDC gets it.
    pub chunker_seed: u64,
    /// The same seed as eight little-endian bytes (the first eight of its `derive_key` output).
    pub chunker_seed_le: String,
}

/// `blob-ids.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BlobIds {
    pub about: String,
    pub vectors: Vec<BlobIdVector>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BlobIdVector {
    pub name: String,
    pub plaintext: String,
    pub id: String,
}

/// `chunking.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Chunking {
    pub about: String,
    pub input_rule: String,
    pub seed: u64,
    pub runs: Vec<ChunkRun>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkRun {
    pub profile: String,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    pub input_len: usize,
    /// Plain BLAKE3 of the input, to check the generator.
    pub input_blake3: String,
    /// The chunk lengths in order; they add up to `input_len`.
    pub lengths: Vec<usize>,
}

/// `sealing.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sealing {
    pub about: String,
    pub seals: Vec<SealVector>,
    pub blobs: Vec<BlobVector>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SealVector {
    pub cipher: String,
    pub key: String,
    pub nonce: String,
    /// The `SealedKind` byte.
    pub aad_kind: u8,
    pub aad_id: String,
    /// The 41 associated-data bytes: domain (8) || kind (1) || id (32).
    pub aad: String,
    pub plaintext: String,
    pub sealed: String,
    /// AES-256-GCM only: the per-message key.
    pub gcm_subkey: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BlobVector {
    pub name: String,
    pub cipher: String,
    pub kind: String,
    pub id: String,
    pub raw_len: u32,
    pub codec: u8,
    /// codec byte || payload: what is sealed.
    pub frame: String,
    pub sealed: String,
    pub plaintext: String,
}

/// `plaintexts.json`: blob plaintexts and postcard bodies.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plaintexts {
    pub about: String,
    pub tree: Encoded,
    pub empty_tree: Encoded,
    pub content_list: Encoded,
    pub snapshot_body: String,
    pub config_body: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Encoded {
    pub plaintext: String,
    pub blob_id: String,
}

/// `objects.json`: whole stored objects made once by the generator.
#[derive(Debug, Serialize, Deserialize)]
pub struct Objects {
    pub about: String,
    pub key_slot: KeySlotVector,
    pub packs: Vec<PackVector>,
    pub index: SealedObject,
    pub snapshots: Vec<SealedObject>,
    pub configs: Vec<ConfigVector>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeySlotVector {
    pub password: String,
    pub bytes: String,
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    pub kdf_parallelism: u32,
    pub salt: String,
    pub wrapped: String,
    pub created: i64,
    pub label: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PackVector {
    pub name: String,
    pub cipher: String,
    /// Plain BLAKE3 of `bytes`.
    pub id: String,
    pub kind: String,
    pub bytes: String,
    /// The opened trailer: postcard of the entries.
    pub trailer_body: String,
    pub entries: Vec<EntryVector>,
    /// The plaintext of each entry's blob, in entry order.
    pub plaintexts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryVector {
    pub id: String,
    pub kind: String,
    pub offset: u32,
    pub sealed_len: u32,
    pub raw_len: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SealedObject {
    pub name: String,
    pub cipher: String,
    /// Plain BLAKE3 of `bytes`.
    pub id: String,
    pub bytes: String,
    /// The opened body: postcard of the value.
    pub body: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigVector {
    pub name: String,
    pub cipher: String,
    pub cipher_code: u8,
    pub bytes: String,
    pub body: String,
}

/// Reads and parses one vector file.
pub fn load<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Writes one vector file (generator only).
pub fn store<T: Serialize>(name: &str, value: &T) {
    let path = dir().join(name);
    let mut text = serde_json::to_string_pretty(value).expect("vectors serialize");
    text.push('\n');
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Names of kinds and ciphers as they appear in the JSON.
pub mod names {
    use nfrepo_format::{BlobKind, Cipher, PackKind};

    pub fn blob_kind(kind: BlobKind) -> &'static str {
        match kind {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
            BlobKind::ContentList => "content_list",
            _ => unreachable!("no other blob kind exists in format version 1"),
        }
    }

    pub fn parse_blob_kind(name: &str) -> BlobKind {
        match name {
            "data" => BlobKind::Data,
            "tree" => BlobKind::Tree,
            "content_list" => BlobKind::ContentList,
            other => panic!("unknown blob kind {other:?}"),
        }
    }

    pub fn pack_kind(kind: PackKind) -> &'static str {
        match kind {
            PackKind::Data => "data",
            PackKind::Tree => "tree",
            _ => unreachable!("no other pack kind exists in format version 1"),
        }
    }

    pub fn parse_pack_kind(name: &str) -> PackKind {
        match name {
            "data" => PackKind::Data,
            "tree" => PackKind::Tree,
            other => panic!("unknown pack kind {other:?}"),
        }
    }

    pub fn parse_cipher(name: &str) -> Cipher {
        match name {
            "xchacha20poly1305" => Cipher::XChaCha20Poly1305,
            "aes256gcm" => Cipher::Aes256Gcm,
            other => panic!("unknown cipher {other:?}"),
        }
    }
}
