//! Writes `format-spec/vectors/*.json`. Run only to make a format change:
//!
//! ```text
//! NFREPO_REGENERATE_VECTORS=1 cargo test -p nfrepo-format --test vectors -- --ignored generate_vectors
//! ```
//!
//! Objects sealed with random nonces (key slot, packs, index, snapshots,
//! configs) come out different on every run, so regenerating always rewrites
//! them; the checks never call this.

use nfrepo_format::{
    BlobCodec, BlobKind, Chunker, ChunkerProfile, Cipher, ConfigHeader, IndexDelta, IndexedPack, KdfParams, KeySlot,
    PackBuilder, PackKind, RepoKeys, Sealer, encode_config,
};

use super::fixtures::{self, repo};
use super::schema::{self, names};

/// The AAD bytes of a sealed message, written out by hand from the spec.
pub fn aad_bytes(kind: u8, id: &[u8; 32]) -> Vec<u8> {
    let mut out = b"nfrepo\x00\x01".to_vec();
    out.push(kind);
    out.extend_from_slice(id);
    out
}

/// Opens the sealed part of an object that starts with a five-byte header.
fn body_of(sealer: &Sealer, kind: nfrepo_format::SealedKind, bytes: &[u8]) -> Vec<u8> {
    let aad = nfrepo_format::Aad::object(kind, repo().0);
    sealer.open("vector", aad, &bytes[5..]).expect("fresh object opens")
}

fn keys_json(keys: &RepoKeys) -> schema::Keys {
    let seed_full = blake3::derive_key("nfrepo 2026-11 chunker seed", &fixtures::master_bytes());
    schema::Keys {
        about: "Subkeys derived from the master key 00 01 .. 1f; see format-spec/keys.md".into(),
        master_key: hex::encode(fixtures::master_bytes()),
        repo_id: repo().to_hex(),
        id_key: hex::encode(keys.id_key.expose()),
        sealing_key: hex::encode(keys.sealing_key.expose()),
        audit_key: hex::encode(keys.audit_key.expose()),
        chunker_seed: keys.chunker_seed,
        chunker_seed_le: hex::encode(&seed_full[..8]),
    }
}

fn chunking_json(keys: &RepoKeys) -> schema::Chunking {
    let runs = [
        ("dump", ChunkerProfile::DUMP, 200_000),
        ("rows", ChunkerProfile::ROWS, 200_000),
        ("files", ChunkerProfile::FILES, 200_000),
        ("files", ChunkerProfile::FILES, 10_000_000),
    ]
    .into_iter()
    .map(|(name, profile, len)| {
        let input = fixtures::pseudo_random(len);
        let chunker = Chunker::new(profile, keys.chunker_seed).expect("built-in profile");
        schema::ChunkRun {
            profile: name.into(),
            min: profile.min,
            avg: profile.avg,
            max: profile.max,
            input_len: len,
            input_blake3: blake3::hash(&input).to_hex().to_string(),
            lengths: chunker
                .chunks(&input[..])
                .map(|c| c.expect("in memory").len())
                .collect(),
        }
    })
    .collect();
    schema::Chunking {
        about: "FastCDC v2020 (fastcdc =5.0.0, Normalization::Level1) cut points under the chunker seed of keys.json; \
                see format-spec/chunking.md"
            .into(),
        input_rule: fixtures::PSEUDO_RANDOM_RULE.into(),
        seed: keys.chunker_seed,
        runs,
    }
}

fn sealing_json(keys: &RepoKeys) -> schema::Sealing {
    let nonce = fixtures::fixed_nonce();
    let plaintext = b"hello, nfrepo".to_vec();
    let aad_id = keys.blob_id(b"hello");
    let seals = [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm]
        .into_iter()
        .map(|cipher| {
            let sealer = keys.sealer(cipher);
            let mut sealed = Vec::new();
            let aad = nfrepo_format::Aad::blob(nfrepo_format::SealedKind::DataBlob, &aad_id);
            sealer.seal_with_nonce_into(aad, nonce, &plaintext, &mut sealed);
            let gcm_subkey = (cipher == Cipher::Aes256Gcm).then(|| {
                let mut h = blake3::Hasher::new_keyed(keys.sealing_key.expose());
                h.update(b"nfrepo aes-gcm subkey");
                h.update(&nonce[..12]);
                h.finalize().to_hex().to_string()
            });
            schema::SealVector {
                cipher: cipher.name().into(),
                key: hex::encode(keys.sealing_key.expose()),
                nonce: hex::encode(nonce),
                aad_kind: 1,
                aad_id: aad_id.to_hex(),
                aad: hex::encode(aad_bytes(1, &aad_id.0)),
                plaintext: hex::encode(&plaintext),
                sealed: hex::encode(sealed),
                gcm_subkey,
            }
        })
        .collect();
    let pattern = fixtures::pattern_1000();
    let zstd_payload = zstd::bulk::compress(&pattern, 3).expect("zstd compresses");
    assert!(zstd_payload.len() < pattern.len());
    // (name, cipher, plaintext, codec byte, payload)
    let blob_cases = [
        (
            "hello-stored",
            Cipher::XChaCha20Poly1305,
            b"hello".to_vec(),
            0,
            b"hello".to_vec(),
        ),
        (
            "pattern-zstd",
            Cipher::XChaCha20Poly1305,
            pattern.clone(),
            1,
            zstd_payload,
        ),
        (
            "hello-stored-aes",
            Cipher::Aes256Gcm,
            b"hello".to_vec(),
            0,
            b"hello".to_vec(),
        ),
    ];
    let blobs = blob_cases
        .into_iter()
        .map(|(name, cipher, plain, codec, payload)| {
            let id = keys.blob_id(&plain);
            let mut frame = vec![codec];
            frame.extend_from_slice(&payload);
            let mut sealed = Vec::new();
            let aad = nfrepo_format::Aad::blob(nfrepo_format::SealedKind::DataBlob, &id);
            keys.sealer(cipher)
                .seal_with_nonce_into(aad, nonce, &frame, &mut sealed);
            schema::BlobVector {
                name: name.into(),
                cipher: cipher.name().into(),
                kind: "data".into(),
                id: id.to_hex(),
                raw_len: plain.len() as u32,
                codec,
                frame: hex::encode(&frame),
                sealed: hex::encode(sealed),
                plaintext: hex::encode(&plain),
            }
        })
        .collect();
    schema::Sealing {
        about: "Messages sealed with the fixed nonce 40 41 .. 57 under the sealing key of keys.json; \
                see format-spec/sealing.md and blob.md"
            .into(),
        seals,
        blobs,
    }
}

fn plaintexts_json(keys: &RepoKeys) -> schema::Plaintexts {
    let encoded = |plaintext: Vec<u8>| schema::Encoded {
        blob_id: keys.blob_id(&plaintext).to_hex(),
        plaintext: hex::encode(plaintext),
    };
    let tree = fixtures::tree(keys);
    let root = keys.blob_id(&tree.encode().expect("tree encodes"));
    schema::Plaintexts {
        about: "Blob plaintexts (header + postcard) and postcard bodies; see tree.md, content-list.md, snapshot.md, \
                config.md"
            .into(),
        tree: encoded(tree.encode().expect("tree encodes")),
        empty_tree: encoded(fixtures::empty_tree().encode().expect("tree encodes")),
        content_list: encoded(fixtures::content_list(keys).encode().expect("list encodes")),
        snapshot_body: hex::encode(postcard::to_allocvec(&fixtures::snapshot(root)).expect("postcard")),
        config_body: hex::encode(postcard::to_allocvec(&fixtures::config_body()).expect("postcard")),
    }
}

fn pack_json(
    name: &str,
    kind: PackKind,
    blobs: Vec<(BlobKind, Vec<u8>)>,
    codec: &mut BlobCodec,
) -> (schema::PackVector, IndexedPack) {
    let mut builder = PackBuilder::new(kind, 4096);
    for (blob_kind, plain) in &blobs {
        builder
            .add(&codec.seal(*blob_kind, plain).expect("blob seals"))
            .expect("pack fits");
    }
    let pack = builder.finish(codec.sealer(), &repo()).expect("pack finishes");
    let tlen = u32::from_le_bytes(pack.bytes[pack.bytes.len() - 4..].try_into().expect("four bytes")) as usize;
    let trailer = &pack.bytes[pack.bytes.len() - 4 - tlen..pack.bytes.len() - 4];
    let aad = nfrepo_format::Aad::object(nfrepo_format::SealedKind::PackTrailer, repo().0);
    let trailer_body = codec.sealer().open("vector", aad, trailer).expect("trailer opens");
    let vector = schema::PackVector {
        name: name.into(),
        cipher: codec.sealer().cipher().name().into(),
        id: pack.id.to_hex(),
        kind: names::pack_kind(kind).into(),
        bytes: hex::encode(&pack.bytes),
        trailer_body: hex::encode(trailer_body),
        entries: pack
            .entries
            .iter()
            .map(|e| schema::EntryVector {
                id: e.id.to_hex(),
                kind: names::blob_kind(e.kind).into(),
                offset: e.offset,
                sealed_len: e.sealed_len,
                raw_len: e.raw_len,
            })
            .collect(),
        plaintexts: blobs.iter().map(|(_, p)| hex::encode(p)).collect(),
    };
    let indexed = IndexedPack {
        id: pack.id,
        kind,
        size: pack.bytes.len() as u64,
        blobs: pack.entries,
        sealing: None,
    };
    (vector, indexed)
}

fn objects_json(keys: &RepoKeys) -> schema::Objects {
    let slot = KeySlot::wrap(
        &fixtures::master(),
        fixtures::PASSWORD.as_bytes(),
        KdfParams::insecure_for_tests(),
        &repo(),
        fixtures::KEY_SLOT_CREATED,
        fixtures::KEY_SLOT_LABEL.into(),
    )
    .expect("slot wraps");
    let key_slot = schema::KeySlotVector {
        password: fixtures::PASSWORD.into(),
        bytes: hex::encode(slot.encode().expect("slot encodes")),
        kdf_memory_kib: slot.kdf.memory_kib,
        kdf_iterations: slot.kdf.iterations,
        kdf_parallelism: slot.kdf.parallelism,
        salt: hex::encode(slot.salt),
        wrapped: hex::encode(&slot.wrapped),
        created: slot.created,
        label: slot.label.clone(),
    };

    let sealer = keys.sealer(Cipher::XChaCha20Poly1305);
    let mut codec = BlobCodec::new(keys.clone(), sealer.clone(), 3).expect("codec");
    let (data_vec, data_indexed) = pack_json("data", PackKind::Data, fixtures::data_pack_blobs(), &mut codec);
    let (tree_vec, tree_indexed) = pack_json("tree", PackKind::Tree, fixtures::tree_pack_blobs(keys), &mut codec);

    let delta = IndexDelta {
        packs: vec![data_indexed, tree_indexed],
        supersedes: vec![fixtures::superseded_index()],
    };
    let (index_id, index_bytes) = delta.encode(&sealer, &repo()).expect("index encodes");
    let index = schema::SealedObject {
        name: "index".into(),
        cipher: sealer.cipher().name().into(),
        id: index_id.to_hex(),
        body: hex::encode(body_of(&sealer, nfrepo_format::SealedKind::Index, &index_bytes)),
        bytes: hex::encode(&index_bytes),
    };

    let root = keys.blob_id(&fixtures::tree(keys).encode().expect("tree encodes"));
    let mut snapshots = Vec::new();
    let mut configs = Vec::new();
    for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
        let sealer = keys.sealer(cipher);
        let (id, bytes) = fixtures::snapshot(root)
            .encode(&sealer, &repo())
            .expect("snapshot encodes");
        snapshots.push(schema::SealedObject {
            name: format!("snapshot-{}", cipher.name()),
            cipher: cipher.name().into(),
            id: id.to_hex(),
            body: hex::encode(body_of(&sealer, nfrepo_format::SealedKind::Snapshot, &bytes)),
            bytes: hex::encode(&bytes),
        });
        let header = ConfigHeader { repo: repo(), cipher };
        let bytes = encode_config(&header, &fixtures::config_body(), &sealer).expect("config encodes");
        let aad = nfrepo_format::Aad::object(nfrepo_format::SealedKind::Config, repo().0);
        let body = sealer.open("vector", aad, &bytes[5 + 32 + 1..]).expect("config opens");
        configs.push(schema::ConfigVector {
            name: format!("config-{}", cipher.name()),
            cipher: cipher.name().into(),
            cipher_code: cipher.code(),
            bytes: hex::encode(&bytes),
            body: hex::encode(body),
        });
    }

    schema::Objects {
        about: "Stored objects made once with random nonces and salt, for repository id 20 21 .. 3f and the keys of \
                keys.json; decoding them is the test"
            .into(),
        key_slot,
        packs: vec![data_vec, tree_vec],
        index,
        snapshots,
        configs,
    }
}

#[test]
#[ignore = "rewrites format-spec/vectors: a format change"]
fn generate_vectors() {
    if std::env::var_os("NFREPO_REGENERATE_VECTORS").is_none() {
        eprintln!("set NFREPO_REGENERATE_VECTORS=1 to rewrite format-spec/vectors (a format change)");
        return;
    }
    let keys = fixtures::keys();
    std::fs::create_dir_all(schema::dir()).expect("vector dir");
    schema::store("keys.json", &keys_json(&keys));
    schema::store(
        "blob-ids.json",
        &schema::BlobIds {
            about: "Blob ids: keyed BLAKE3 under the id key of keys.json; see format-spec/keys.md".into(),
            vectors: fixtures::blob_id_inputs()
                .into_iter()
                .map(|(name, plain)| schema::BlobIdVector {
                    name: name.into(),
                    id: keys.blob_id(&plain).to_hex(),
                    plaintext: hex::encode(plain),
                })
                .collect(),
        },
    );
    schema::store("chunking.json", &chunking_json(&keys));
    schema::store("sealing.json", &sealing_json(&keys));
    schema::store("plaintexts.json", &plaintexts_json(&keys));
    schema::store("objects.json", &objects_json(&keys));
}
