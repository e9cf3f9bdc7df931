//! Checks the committed test vectors in `format-spec/vectors/`.
//!
//! Every check here reads bytes from the JSON files and compares them with what
//! this crate computes, decodes or encodes, so a change to any byte of the
//! format fails a test. Nothing here writes the files; see
//! `format-spec/vectors/README.md` for how (and when) to regenerate them.

#![allow(clippy::expect_used, reason = "test helpers: a failed expectation is a failed test")]

#[path = "vectors/fixtures.rs"]
mod fixtures;
#[path = "vectors/generate.rs"]
mod generate;
#[path = "vectors/schema.rs"]
mod schema;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use nfrepo_format::{
    Aad, BlobCodec, BlobId, Chunker, ChunkerProfile, Cipher, ConfigHeader, Error, IndexDelta, IndexId, IndexedPack,
    KdfParams, KeySlot, NodeKind, PackEntry, PackId, SealedKind, Sealer, SecretKey, Snapshot, SnapshotId, Tree,
    decode_config_body, decode_config_header, read_pack_entries, verify_pack,
};

use fixtures::repo;
use generate::aad_bytes;
use schema::names;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in vectors ({e}): {s:.40}"))
}

fn unhex32(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap_or_else(|_| panic!("not 32 bytes: {s}"))
}

fn blob_id(s: &str) -> BlobId {
    BlobId(unhex32(s))
}

fn entry(v: &schema::EntryVector) -> PackEntry {
    PackEntry {
        id: blob_id(&v.id),
        kind: names::parse_blob_kind(&v.kind),
        offset: v.offset,
        sealed_len: v.sealed_len,
        raw_len: v.raw_len,
    }
}

/// Seals `plaintext` with `nonce` and returns the bytes, to rebuild objects.
fn reseal(sealer: &Sealer, aad: Aad, nonce: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; 24] = nonce.try_into().expect("nonce is 24 bytes");
    let mut out = Vec::new();
    sealer.seal_with_nonce_into(aad, nonce, plaintext, &mut out);
    out
}

#[test]
fn derived_subkeys() {
    let v: schema::Keys = schema::load("keys.json");
    let keys = fixtures::keys();
    assert_eq!(v.master_key, hex::encode(fixtures::master_bytes()));
    assert_eq!(v.repo_id, repo().to_hex());
    assert_eq!(hex::encode(keys.id_key.expose()), v.id_key);
    assert_eq!(hex::encode(keys.sealing_key.expose()), v.sealing_key);
    assert_eq!(hex::encode(keys.audit_key.expose()), v.audit_key);
    assert_eq!(keys.chunker_seed, v.chunker_seed);
    assert_eq!(hex::encode(v.chunker_seed.to_le_bytes()), v.chunker_seed_le);
    // The contexts of format-spec/keys.md, applied with the reference BLAKE3.
    let master = fixtures::master_bytes();
    for (context, expected) in [
        ("nfrepo 2026-11 blob id key", &v.id_key),
        ("nfrepo 2026-11 sealing key", &v.sealing_key),
        ("nfrepo 2026-11 audit mac key", &v.audit_key),
    ] {
        assert_eq!(
            &hex::encode(blake3::derive_key(context, &master)),
            expected,
            "{context}"
        );
    }
    let seed = blake3::derive_key("nfrepo 2026-11 chunker seed", &master);
    assert_eq!(hex::encode(&seed[..8]), v.chunker_seed_le);
}

#[test]
fn blob_ids() {
    let v: schema::BlobIds = schema::load("blob-ids.json");
    let keys = fixtures::keys();
    let inputs = fixtures::blob_id_inputs();
    assert_eq!(v.vectors.len(), inputs.len());
    for (vector, (name, plain)) in v.vectors.iter().zip(inputs) {
        assert_eq!(vector.name, name);
        assert_eq!(unhex(&vector.plaintext), plain, "{name}");
        assert_eq!(keys.blob_id(&plain).to_hex(), vector.id, "{name}");
        assert_eq!(
            blake3::keyed_hash(keys.id_key.expose(), &plain).to_hex().as_str(),
            vector.id
        );
    }
}

#[test]
fn chunk_cut_points() {
    let v: schema::Chunking = schema::load("chunking.json");
    let keys = fixtures::keys();
    assert_eq!(v.seed, keys.chunker_seed);
    assert_eq!(v.input_rule, fixtures::PSEUDO_RANDOM_RULE);
    assert_eq!(v.runs.len(), 4);
    for run in &v.runs {
        let profile = ChunkerProfile::named(&run.profile).expect("built-in profile");
        assert_eq!((profile.min, profile.avg, profile.max), (run.min, run.avg, run.max));
        let input = fixtures::pseudo_random(run.input_len);
        assert_eq!(blake3::hash(&input).to_hex().as_str(), run.input_blake3);
        let chunker = Chunker::new(profile, v.seed).expect("valid profile");
        let lengths: Vec<usize> = chunker
            .chunks(&input[..])
            .map(|c| c.expect("in memory").len())
            .collect();
        assert_eq!(lengths, run.lengths, "{} over {} bytes", run.profile, run.input_len);
        assert_eq!(lengths.iter().sum::<usize>(), run.input_len);
    }
}

#[test]
fn sealing_with_a_fixed_nonce() {
    let v: schema::Sealing = schema::load("sealing.json");
    let keys = fixtures::keys();
    assert_eq!(v.seals.len(), 2);
    for s in &v.seals {
        let cipher = names::parse_cipher(&s.cipher);
        assert_eq!(unhex32(&s.key), *keys.sealing_key.expose());
        let nonce = unhex(&s.nonce);
        let id = blob_id(&s.aad_id);
        assert_eq!(unhex(&s.aad), aad_bytes(s.aad_kind, &id.0));
        assert_eq!(s.aad_kind, SealedKind::DataBlob as u8);
        let aad = Aad::blob(SealedKind::DataBlob, &id);
        let sealer = keys.sealer(cipher);
        let plaintext = unhex(&s.plaintext);
        let sealed = unhex(&s.sealed);
        assert_eq!(
            hex::encode(reseal(&sealer, aad, &nonce, &plaintext)),
            s.sealed,
            "{}",
            s.cipher
        );
        assert_eq!(sealer.open("vector", aad, &sealed).expect("opens"), plaintext);
        assert_eq!(&sealed[..24], &nonce[..], "the nonce leads");
        assert_eq!(sealed.len(), plaintext.len() + nfrepo_format::SEAL_OVERHEAD);

        // The same bytes from the AEAD crates directly, with the AAD bytes of the JSON.
        let (body, tag) = sealed[24..].split_at(sealed.len() - 24 - 16);
        let mut buf = body.to_vec();
        let aad_raw = unhex(&s.aad);
        match cipher {
            Cipher::XChaCha20Poly1305 => {
                let aead = chacha20poly1305::XChaCha20Poly1305::new(keys.sealing_key.expose().into());
                let nonce: [u8; 24] = nonce.clone().try_into().expect("24");
                let tag: [u8; 16] = tag.try_into().expect("16");
                aead.decrypt_inout_detached(&nonce.into(), &aad_raw, buf.as_mut_slice().into(), &tag.into())
                    .expect("xchacha20poly1305 opens the vector");
                assert!(s.gcm_subkey.is_none());
            }
            Cipher::Aes256Gcm => {
                let mut h = blake3::Hasher::new_keyed(keys.sealing_key.expose());
                h.update(b"nfrepo aes-gcm subkey");
                h.update(&nonce[..12]);
                let subkey = *h.finalize().as_bytes();
                assert_eq!(Some(hex::encode(subkey)), s.gcm_subkey);
                let aead = aes_gcm::Aes256Gcm::new(&subkey.into());
                let gcm_nonce: [u8; 12] = nonce[12..].try_into().expect("12");
                let tag: [u8; 16] = tag.try_into().expect("16");
                aead.decrypt_inout_detached(&gcm_nonce.into(), &aad_raw, buf.as_mut_slice().into(), &tag.into())
                    .expect("aes-256-gcm opens the vector");
            }
            _ => unreachable!("format version 1 has two ciphers"),
        }
        assert_eq!(buf, plaintext);
    }
}

#[test]
fn sealed_blobs_open() {
    let v: schema::Sealing = schema::load("sealing.json");
    let keys = fixtures::keys();
    assert_eq!(v.blobs.len(), 3);
    for b in &v.blobs {
        let cipher = names::parse_cipher(&b.cipher);
        let kind = names::parse_blob_kind(&b.kind);
        let id = blob_id(&b.id);
        let plaintext = unhex(&b.plaintext);
        let frame = unhex(&b.frame);
        let sealed = unhex(&b.sealed);
        assert_eq!(keys.blob_id(&plaintext), id, "{}", b.name);
        assert_eq!(frame.first(), Some(&b.codec));
        let sealer = keys.sealer(cipher);
        let aad = Aad::blob(kind.sealed_kind(), &id);
        assert_eq!(sealer.open("vector", aad, &sealed).expect("opens"), frame);
        assert_eq!(
            hex::encode(reseal(&sealer, aad, &fixtures::fixed_nonce(), &frame)),
            b.sealed
        );
        let mut codec = BlobCodec::new(keys.clone(), sealer, 3).expect("codec");
        assert_eq!(
            codec.open(kind, &id, b.raw_len, &sealed).expect("blob opens"),
            plaintext,
            "{}",
            b.name
        );
        if b.codec == 0 {
            assert_eq!(&frame[1..], &plaintext[..]);
        }
    }
}

#[test]
fn plaintext_encodings() {
    let v: schema::Plaintexts = schema::load("plaintexts.json");
    let keys = fixtures::keys();
    for (name, tree, encoded) in [
        ("tree", fixtures::tree(&keys), &v.tree),
        ("empty tree", fixtures::empty_tree(), &v.empty_tree),
    ] {
        let plain = tree.encode().expect("encodes");
        assert_eq!(hex::encode(&plain), encoded.plaintext, "{name}");
        assert_eq!(keys.blob_id(&plain).to_hex(), encoded.blob_id, "{name}");
        assert_eq!(
            Tree::decode(&unhex(&encoded.plaintext)).expect("decodes"),
            tree,
            "{name}"
        );
    }
    let list = fixtures::content_list(&keys);
    let plain = list.encode().expect("encodes");
    assert_eq!(hex::encode(&plain), v.content_list.plaintext);
    assert_eq!(keys.blob_id(&plain).to_hex(), v.content_list.blob_id);
    assert_eq!(nfrepo_format::ContentList::decode(&plain).expect("decodes"), list);

    let snapshot = fixtures::snapshot(blob_id(&v.tree.blob_id));
    assert_eq!(
        hex::encode(postcard::to_allocvec(&snapshot).expect("postcard")),
        v.snapshot_body
    );
    assert_eq!(
        postcard::from_bytes::<Snapshot>(&unhex(&v.snapshot_body)).expect("decodes"),
        snapshot
    );
    let body = fixtures::config_body();
    assert_eq!(
        hex::encode(postcard::to_allocvec(&body).expect("postcard")),
        v.config_body
    );
}

#[test]
fn key_slot_opens() {
    let v: schema::Objects = schema::load("objects.json");
    let k = &v.key_slot;
    let bytes = unhex(&k.bytes);
    let slot = KeySlot::decode(&bytes).expect("key slot decodes");
    assert_eq!(&bytes[..5], b"NFRK\x01");
    assert_eq!(slot.kdf, KdfParams::insecure_for_tests());
    assert_eq!(
        (slot.kdf.memory_kib, slot.kdf.iterations, slot.kdf.parallelism),
        (k.kdf_memory_kib, k.kdf_iterations, k.kdf_parallelism)
    );
    assert_eq!(hex::encode(slot.salt), k.salt);
    assert_eq!(hex::encode(&slot.wrapped), k.wrapped);
    assert_eq!(slot.wrapped.len(), 32 + nfrepo_format::SEAL_OVERHEAD);
    assert_eq!((slot.created, slot.label.as_str()), (k.created, k.label.as_str()));
    assert_eq!(
        (k.created, k.label.as_str()),
        (fixtures::KEY_SLOT_CREATED, fixtures::KEY_SLOT_LABEL)
    );
    assert_eq!(
        slot.encode().expect("encodes"),
        bytes,
        "re-encoding gives the same bytes"
    );

    let master = slot
        .unwrap_key(k.password.as_bytes(), &repo())
        .expect("password opens the slot");
    let (got, want) = (master.derive(), fixtures::keys());
    assert_eq!(got.sealing_key.expose(), want.sealing_key.expose());
    assert_eq!(got.id_key.expose(), want.id_key.expose());
    assert!(matches!(
        slot.unwrap_key(b"nope", &repo()),
        Err(nfrepo_format::Error::WrongPassword)
    ));

    // By hand, as format-spec/keys.md says: argon2id, then XChaCha20-Poly1305 with AAD (KeySlot, repo id).
    let params = argon2::Params::new(k.kdf_memory_kib, k.kdf_iterations, k.kdf_parallelism, Some(32)).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut wrapping = [0u8; 32];
    argon
        .hash_password_into(k.password.as_bytes(), &slot.salt, &mut wrapping)
        .expect("argon2id");
    let sealer = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(wrapping));
    let opened = sealer
        .open("vector", Aad::object(SealedKind::KeySlot, repo().0), &slot.wrapped)
        .expect("opens");
    assert_eq!(opened, fixtures::master_bytes());
}

/// Rebuilds a pack from the spec: header, the blobs as stored, the trailer resealed with its nonce, its length.
fn rebuild_pack(p: &schema::PackVector, bytes: &[u8], sealer: &Sealer) -> Vec<u8> {
    let kind_code = match names::parse_pack_kind(&p.kind) {
        nfrepo_format::PackKind::Data => 1,
        _ => 2,
    };
    let mut out = b"NFRP\x01".to_vec();
    out.extend_from_slice(&[kind_code, 0, 0]);
    let keys = fixtures::keys();
    for e in p.entries.iter().map(entry) {
        let stored = &bytes[e.offset as usize..(e.offset + e.sealed_len) as usize];
        assert_eq!(out.len(), e.offset as usize, "blobs are back to back");
        let aad = Aad::blob(e.kind.sealed_kind(), &e.id);
        let frame = keys
            .sealer(Cipher::XChaCha20Poly1305)
            .open("vector", aad, stored)
            .expect("blob opens");
        out.extend(reseal(sealer, aad, &stored[..24], &frame));
    }
    let trailer_body = unhex(&p.trailer_body);
    let trailer_nonce = &bytes[out.len()..out.len() + 24];
    let trailer = reseal(
        sealer,
        Aad::object(SealedKind::PackTrailer, repo().0),
        trailer_nonce,
        &trailer_body,
    );
    out.extend_from_slice(&trailer);
    out.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
    out
}

#[test]
fn packs_decode() {
    let v: schema::Objects = schema::load("objects.json");
    let keys = fixtures::keys();
    assert_eq!(v.packs.len(), 2);
    for p in &v.packs {
        let sealer = keys.sealer(names::parse_cipher(&p.cipher));
        let bytes = unhex(&p.bytes);
        let id = PackId(unhex32(&p.id));
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            p.id,
            "pack id is BLAKE3 of the bytes"
        );
        let entries: Vec<PackEntry> = p.entries.iter().map(entry).collect();
        let (kind, got) = read_pack_entries(&bytes, &sealer, &repo()).expect("trailer decodes");
        assert_eq!(names::pack_kind(kind), p.kind);
        assert_eq!(nfrepo_format::decode_pack_header(&bytes).expect("header"), kind);
        assert_eq!(got, entries, "{}", p.name);
        assert_eq!(
            hex::encode(postcard::to_allocvec(&entries).expect("postcard")),
            p.trailer_body
        );
        assert_eq!(
            rebuild_pack(p, &bytes, &sealer),
            bytes,
            "{} rebuilt from the spec",
            p.name
        );

        let mut codec = BlobCodec::new(keys.clone(), sealer, 3).expect("codec");
        let (_, _, faults) = verify_pack(&id, &bytes, &mut codec, &repo()).expect("pack verifies");
        assert!(faults.is_empty(), "{faults:?}");
        assert_eq!(entries.len(), p.plaintexts.len());
        for (e, plain) in entries.iter().zip(&p.plaintexts) {
            let sealed = &bytes[e.offset as usize..(e.offset + e.sealed_len) as usize];
            assert_eq!(
                codec.open(e.kind, &e.id, e.raw_len, sealed).expect("opens"),
                unhex(plain)
            );
        }
    }
    let data_blobs: Vec<Vec<u8>> = fixtures::data_pack_blobs().into_iter().map(|(_, b)| b).collect();
    let tree_blobs: Vec<Vec<u8>> = fixtures::tree_pack_blobs(&keys).into_iter().map(|(_, b)| b).collect();
    for (p, blobs) in v.packs.iter().zip([data_blobs, tree_blobs]) {
        assert_eq!(
            p.plaintexts,
            blobs.iter().map(hex::encode).collect::<Vec<_>>(),
            "{}",
            p.name
        );
    }
}

fn expected_index(v: &schema::Objects) -> IndexDelta {
    IndexDelta {
        packs: v
            .packs
            .iter()
            .map(|p| IndexedPack {
                id: PackId(unhex32(&p.id)),
                kind: names::parse_pack_kind(&p.kind),
                size: unhex(&p.bytes).len() as u64,
                blobs: p.entries.iter().map(entry).collect(),
                sealing: None,
            })
            .collect(),
        supersedes: vec![fixtures::superseded_index()],
    }
}

/// Checks `magic | version | sealed(body)`: id, opened body, and the bytes rebuilt with the stored nonce.
fn check_sealed_object(o: &schema::SealedObject, magic: &[u8; 4], kind: SealedKind, body: &[u8]) {
    let bytes = unhex(&o.bytes);
    let sealer = fixtures::keys().sealer(names::parse_cipher(&o.cipher));
    assert_eq!(
        blake3::hash(&bytes).to_hex().as_str(),
        o.id,
        "{}: id is BLAKE3 of the bytes",
        o.name
    );
    assert_eq!(&bytes[..4], magic);
    assert_eq!(bytes[4], nfrepo_format::FORMAT_VERSION);
    let aad = Aad::object(kind, repo().0);
    assert_eq!(
        hex::encode(sealer.open("vector", aad, &bytes[5..]).expect("opens")),
        o.body,
        "{}",
        o.name
    );
    assert_eq!(hex::encode(body), o.body, "{}: body is postcard of the value", o.name);
    let mut rebuilt = bytes[..5].to_vec();
    rebuilt.extend(reseal(&sealer, aad, &bytes[5..29], body));
    assert_eq!(rebuilt, bytes, "{} rebuilt from the spec", o.name);
}

#[test]
fn index_delta_decodes() {
    let v: schema::Objects = schema::load("objects.json");
    let o = &v.index;
    let bytes = unhex(&o.bytes);
    let sealer = fixtures::keys().sealer(names::parse_cipher(&o.cipher));
    let delta = IndexDelta::decode(&IndexId(unhex32(&o.id)), &bytes, &sealer, &repo()).expect("index decodes");
    let expected = expected_index(&v);
    assert_eq!(delta, expected);
    check_sealed_object(
        o,
        b"NFRI",
        SealedKind::Index,
        &postcard::to_allocvec(&expected).expect("postcard"),
    );
}

#[test]
fn snapshots_decode() {
    let v: schema::Objects = schema::load("objects.json");
    let p: schema::Plaintexts = schema::load("plaintexts.json");
    let expected = fixtures::snapshot(blob_id(&p.tree.blob_id));
    assert_eq!(v.snapshots.len(), 2);
    for o in &v.snapshots {
        let bytes = unhex(&o.bytes);
        let sealer = fixtures::keys().sealer(names::parse_cipher(&o.cipher));
        let snapshot = Snapshot::decode(&SnapshotId(unhex32(&o.id)), &bytes, &sealer, &repo()).expect("decodes");
        assert_eq!(snapshot, expected, "{}", o.name);
        assert_eq!(o.body, p.snapshot_body);
        check_sealed_object(o, b"NFRS", SealedKind::Snapshot, &unhex(&p.snapshot_body));
    }
}

#[test]
fn configs_decode() {
    let v: schema::Objects = schema::load("objects.json");
    let p: schema::Plaintexts = schema::load("plaintexts.json");
    assert_eq!(v.configs.len(), 2);
    for c in &v.configs {
        let bytes = unhex(&c.bytes);
        let cipher = names::parse_cipher(&c.cipher);
        assert_eq!(cipher.code(), c.cipher_code);
        let (header, sealed) = decode_config_header(&bytes).expect("header decodes");
        assert_eq!(header, ConfigHeader { repo: repo(), cipher });
        let sealer = fixtures::keys().sealer(cipher);
        assert_eq!(
            decode_config_body(&header, sealed, &sealer).expect("body decodes"),
            fixtures::config_body()
        );
        assert_eq!(c.body, p.config_body);
        let mut rebuilt = b"NFRC\x01".to_vec();
        rebuilt.extend_from_slice(&repo().0);
        rebuilt.push(c.cipher_code);
        let aad = Aad::object(SealedKind::Config, repo().0);
        rebuilt.extend(reseal(&sealer, aad, &sealed[..24], &unhex(&c.body)));
        assert_eq!(rebuilt, bytes, "{} rebuilt from the spec", c.name);
    }
}

/// Every byte of a stored object is covered by its id or its tag: flipping any
/// one of them makes the checked decode fail.
#[test]
fn every_byte_is_covered() {
    let v: schema::Objects = schema::load("objects.json");
    let keys = fixtures::keys();
    let sealer = keys.sealer(Cipher::XChaCha20Poly1305);
    let index = unhex(&v.index.bytes);
    let index_id = IndexId(unhex32(&v.index.id));
    let snapshot = unhex(&v.snapshots[0].bytes);
    let snapshot_id = SnapshotId(unhex32(&v.snapshots[0].id));
    let config = unhex(&v.configs[0].bytes);
    let mut codec = BlobCodec::new(keys.clone(), sealer.clone(), 3).expect("codec");
    let packs: Vec<(PackId, Vec<u8>)> = v
        .packs
        .iter()
        .map(|p| (PackId(unhex32(&p.id)), unhex(&p.bytes)))
        .collect();
    for i in 0..index.len() {
        let mut b = index.clone();
        b[i] ^= 0x01;
        assert!(
            matches!(
                IndexDelta::decode(&index_id, &b, &sealer, &repo()),
                Err(Error::HashMismatch { .. })
            ),
            "index byte {i}"
        );
        let renamed = IndexId(*blake3::hash(&b).as_bytes());
        let err = IndexDelta::decode(&renamed, &b, &sealer, &repo()).expect_err("renamed index");
        assert!(is_damage(&err), "index byte {i}, renamed: {err}");
    }
    for i in 0..snapshot.len() {
        let mut b = snapshot.clone();
        b[i] ^= 0x01;
        assert!(
            matches!(
                Snapshot::decode(&snapshot_id, &b, &sealer, &repo()),
                Err(Error::HashMismatch { .. })
            ),
            "snapshot byte {i}"
        );
        let renamed = SnapshotId(*blake3::hash(&b).as_bytes());
        let err = Snapshot::decode(&renamed, &b, &sealer, &repo()).expect_err("renamed snapshot");
        assert!(is_damage(&err), "snapshot byte {i}, renamed: {err}");
    }
    for i in 0..config.len() {
        let mut b = config.clone();
        b[i] ^= 0x01;
        let opened = decode_config_header(&b).and_then(|(h, s)| decode_config_body(&h, s, &sealer));
        let err = opened.expect_err("flipped config");
        assert!(is_damage(&err), "config byte {i}: {err}");
    }
    for (id, bytes) in &packs {
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                matches!(
                    verify_pack(id, &b, &mut codec, &repo()),
                    Err(Error::HashMismatch { what: "pack", .. })
                ),
                "pack byte {i}"
            );
            // Renamed to its new hash, a flip in a blob is still caught, by that blob's tag.
            let renamed = PackId(*blake3::hash(&b).as_bytes());
            let caught = match verify_pack(&renamed, &b, &mut codec, &repo()) {
                Err(_) => true,
                Ok((_, _, faults)) => !faults.is_empty(),
            };
            assert!(caught, "pack byte {i}, renamed");
        }
    }
}

/// Walks the vector repository as a restore would: snapshot → tree → content → chunks.
#[test]
fn the_vectors_form_a_repository() {
    let v: schema::Objects = schema::load("objects.json");
    let keys = fixtures::keys();
    let sealer = keys.sealer(Cipher::XChaCha20Poly1305);
    let mut codec = BlobCodec::new(keys.clone(), sealer.clone(), 3).expect("codec");
    let index = IndexDelta::decode(&IndexId(unhex32(&v.index.id)), &unhex(&v.index.bytes), &sealer, &repo())
        .expect("index decodes");
    let packs: std::collections::HashMap<PackId, Vec<u8>> = v
        .packs
        .iter()
        .map(|p| (PackId(unhex32(&p.id)), unhex(&p.bytes)))
        .collect();
    let mut read_blob = |id: &BlobId| -> Vec<u8> {
        let (pack, e) = index
            .packs
            .iter()
            .find_map(|p| p.blobs.iter().find(|e| e.id == *id).map(|e| (p.id, *e)))
            .expect("blob is indexed");
        let bytes = &packs[&pack];
        let sealed = &bytes[e.offset as usize..(e.offset + e.sealed_len) as usize];
        codec.open(e.kind, &e.id, e.raw_len, sealed).expect("blob opens")
    };
    let snap = &v.snapshots[0];
    let snapshot = Snapshot::decode(&SnapshotId(unhex32(&snap.id)), &unhex(&snap.bytes), &sealer, &repo())
        .expect("snapshot decodes");
    let root = Tree::decode(&read_blob(&snapshot.root)).expect("root tree decodes");
    let names: Vec<String> = root.nodes.iter().map(|n| n.name_lossy().into_owned()).collect();
    assert_eq!(names, ["big.dump", "bin", "hello.txt", "link"]);
    for node in &root.nodes {
        match &node.kind {
            NodeKind::File {
                size, content, blake3, ..
            } => {
                let chunks = match content {
                    nfrepo_format::Content::Inline(entries) => entries.clone(),
                    nfrepo_format::Content::List { root, depth: 1 } => {
                        nfrepo_format::ContentList::decode(&read_blob(root))
                            .expect("list decodes")
                            .entries
                    }
                    other => panic!("unexpected content {other:?}"),
                };
                let data: Vec<u8> = chunks.iter().flat_map(|c| read_blob(&c.id)).collect();
                assert_eq!(data.len() as u64, *size);
                assert_eq!(blake3::hash(&data).as_bytes(), blake3);
            }
            NodeKind::Dir { tree } => assert!(Tree::decode(&read_blob(tree)).expect("subtree").nodes.is_empty()),
            NodeKind::Symlink { target } => assert_eq!(target, b"hello.txt"),
            other => panic!("unexpected node {other:?}"),
        }
    }
}

/// A flipped byte shows as damage (or, in the version byte, as a version
/// this build does not read), never as some unrelated failure.
fn is_damage(err: &Error) -> bool {
    err.is_corruption() || matches!(err, Error::UnsupportedVersion { .. })
}
