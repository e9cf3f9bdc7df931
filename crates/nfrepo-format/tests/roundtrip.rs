//! Property tests: every encoder and decoder of `nfrepo-format` round trips, and no decoder panics on garbage.
//!
//! Each object gets a proptest strategy for arbitrary valid values; the
//! properties check `decode(encode(x)) == x`, that encoders refuse what
//! decoders would refuse, and that every decoder turns arbitrary (or
//! valid-then-mutated) bytes into an error rather than a panic. The fuzz
//! targets in `fuzz/` go deeper; these run on every `cargo test`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "property tests: a failed unwrap or an index out of range is a failed case"
)]

use std::collections::{HashMap, HashSet};

use nfrepo_format::{
    Aad, BlobCodec, BlobId, BlobKind, ChunkerProfile, Cipher, CommandRecord, ConfigBody, ConfigHeader, Content,
    ContentList, ContentListBuilder, Error, FORMAT_VERSION, INLINE_MAX_ENTRIES, IndexDelta, IndexId, IndexedPack,
    KdfParams, KeySlot, LIST_MAX_ENTRIES, ListEntry, MAX_DEPTH, MasterKey, Metadata, Node, NodeKind, PACK_HEADER_LEN,
    PackBuilder, PackEntry, PackId, PackKind, RepoId, RepoKeys, SealedKind, Sealer, SecretKey, SessionRef, Snapshot,
    SnapshotId, Summary, Tree, Xattr, content_hash, decode_config_body, decode_config_header, decode_pack_header,
    decode_trailer, encode_config, read_pack_entries, trailer_len, verify_pack,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;

const TREE_MAGIC: &[u8; 4] = b"NFRT";
const CONTENT_LIST_MAGIC: &[u8; 4] = b"NFRL";
const KEY_SLOT_MAGIC: &[u8; 4] = b"NFRK";
const INDEX_MAGIC: &[u8; 4] = b"NFRI";
const SNAPSHOT_MAGIC: &[u8; 4] = b"NFRS";
const CONFIG_MAGIC: &[u8; 4] = b"NFRC";
const PACK_MAGIC: &[u8; 4] = b"NFRP";

const CIPHERS: [Cipher; 2] = [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm];

fn keys() -> RepoKeys {
    MasterKey::from_bytes([7; 32]).derive()
}

fn repo() -> RepoId {
    RepoId([0x5a; 32])
}

fn codec(cipher: Cipher) -> BlobCodec {
    let keys = keys();
    let sealer = keys.sealer(cipher);
    BlobCodec::new(keys, sealer, 3).unwrap()
}

/// `magic | version`, the header every stored object starts with.
fn header(magic: &[u8; 4]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.push(FORMAT_VERSION);
    out
}

/// `magic | version | sealed(body)`, the shape of index deltas and snapshots.
fn sealed_object(magic: &[u8; 4], kind: SealedKind, body: &[u8], sealer: &Sealer) -> Vec<u8> {
    let mut out = header(magic);
    sealer.seal_into(Aad::object(kind, repo().0), body, &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn blob_id() -> impl Strategy<Value = BlobId> {
    any::<[u8; 32]>().prop_map(BlobId)
}

fn cipher() -> impl Strategy<Value = Cipher> {
    prop_oneof![Just(Cipher::XChaCha20Poly1305), Just(Cipher::Aes256Gcm)]
}

fn blob_kind() -> impl Strategy<Value = BlobKind> {
    prop_oneof![Just(BlobKind::Data), Just(BlobKind::Tree), Just(BlobKind::ContentList)]
}

fn pack_kind() -> impl Strategy<Value = PackKind> {
    prop_oneof![Just(PackKind::Data), Just(PackKind::Tree)]
}

fn list_entry() -> impl Strategy<Value = ListEntry> {
    (blob_id(), any::<u64>()).prop_map(|(id, len)| ListEntry { id, len })
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        vec(list_entry(), 0..=INLINE_MAX_ENTRIES).prop_map(Content::Inline),
        (blob_id(), 1..=MAX_DEPTH).prop_map(|(root, depth)| Content::List { root, depth }),
    ]
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        (any::<u64>(), content(), any::<[u8; 32]>(), any::<Option<[u8; 32]>>()).prop_map(
            |(size, content, blake3, sha256)| NodeKind::File {
                size,
                content,
                blake3,
                sha256,
            }
        ),
        blob_id().prop_map(|tree| NodeKind::Dir { tree }),
        bytes(64).prop_map(|target| NodeKind::Symlink { target }),
        Just(NodeKind::Fifo),
        any::<u64>().prop_map(|rdev| NodeKind::CharDevice { rdev }),
        any::<u64>().prop_map(|rdev| NodeKind::BlockDevice { rdev }),
        Just(NodeKind::Socket),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<Option<String>>(), any::<Option<String>>()),
        (any::<i64>(), any::<i64>(), any::<u64>(), any::<u64>()),
        vec(
            (bytes(16), bytes(64)).prop_map(|(name, value)| Xattr { name, value }),
            0..4,
        ),
    )
        .prop_map(
            |((mode, uid, gid), (user, group), (mtime_ns, ctime_ns, inode, device), xattrs)| Metadata {
                mode,
                uid,
                gid,
                user,
                group,
                mtime_ns,
                ctime_ns,
                inode,
                device,
                xattrs,
            },
        )
}

/// A valid entry name: non-empty, no `/` or NUL, not `.` or `..`; often
/// not UTF-8, often sharing prefixes with its neighbours.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(
            any::<u8>().prop_map(|b| if b == b'/' || b == 0 { b'_' } else { b }),
            1..16
        ),
        "[a.b-]{1,4}".prop_map(String::into_bytes),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

/// A name `Tree::encode` and `Tree::decode` must refuse.
fn bad_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        (name(), prop_oneof![Just(b'/'), Just(0u8)], name(), any::<bool>()).prop_map(|(a, bad, b, tail)| {
            let mut n = a;
            n.push(bad);
            if tail {
                n.extend(b);
            }
            n
        }),
    ]
}

fn node(name: Vec<u8>, kind: NodeKind, meta: Metadata) -> Node {
    Node { name, kind, meta }
}

fn tree_sized(size: std::ops::Range<usize>) -> impl Strategy<Value = Tree> {
    btree_map(name(), (node_kind(), metadata()), size).prop_map(|nodes| Tree {
        nodes: nodes
            .into_iter()
            .map(|(name, (kind, meta))| node(name, kind, meta))
            .collect(),
    })
}

fn tree() -> impl Strategy<Value = Tree> {
    tree_sized(0..8)
}

fn content_list() -> impl Strategy<Value = ContentList> {
    (1..=MAX_DEPTH, vec(list_entry(), 0..300)).prop_map(|(level, entries)| ContentList { level, entries })
}

fn pack_entry() -> impl Strategy<Value = PackEntry> {
    (blob_id(), blob_kind(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(id, kind, offset, sealed_len, raw_len)| PackEntry {
            id,
            kind,
            offset,
            sealed_len,
            raw_len,
        },
    )
}

fn index_delta() -> impl Strategy<Value = IndexDelta> {
    let session = proptest::option::of(
        (any::<u32>(), any::<[u8; 32]>()).prop_map(|(epoch, ephemeral)| SessionRef { epoch, ephemeral }),
    );
    let pack = (
        any::<[u8; 32]>(),
        pack_kind(),
        any::<u64>(),
        vec(pack_entry(), 0..8),
        session,
    )
        .prop_map(|(id, kind, size, blobs, sealing)| IndexedPack {
            id: PackId(id),
            kind,
            size,
            blobs,
            sealing,
        });
    (vec(pack, 0..4), vec(any::<[u8; 32]>().prop_map(IndexId), 0..4))
        .prop_map(|(packs, supersedes)| IndexDelta { packs, supersedes })
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((any::<String>(), any::<String>()), 0..4)
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    let command =
        (vec(any::<String>(), 0..4), any::<i32>()).prop_map(|(argv, exit_code)| CommandRecord { argv, exit_code });
    (
        (
            any::<i64>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
        ),
        (
            vec(any::<String>(), 0..4),
            pairs(),
            any::<String>(),
            option::of(any::<[u8; 32]>()),
            blob_id(),
        ),
        (
            any::<[u64; 12]>(),
            option::of(command),
            vec(any::<String>(), 0..3),
            pairs(),
            any::<String>(),
        ),
    )
        .prop_map(
            |(
                (time_ns, source, source_kind, hostname, username),
                (paths, tags, profile, parent, root),
                (counters, command, skipped, extra, program_version),
            )| {
                let [
                    files,
                    dirs,
                    others,
                    files_unchanged,
                    bytes,
                    bytes_read,
                    blobs_added,
                    bytes_added_raw,
                    bytes_added_stored,
                    packs_added,
                    retries,
                    duration_ms,
                ] = counters;
                Snapshot {
                    time_ns,
                    source,
                    source_kind,
                    hostname,
                    username,
                    paths,
                    tags,
                    profile,
                    parent: parent.map(SnapshotId),
                    root,
                    summary: Summary {
                        files,
                        dirs,
                        others,
                        files_unchanged,
                        bytes,
                        bytes_read,
                        blobs_added,
                        bytes_added_raw,
                        bytes_added_stored,
                        packs_added,
                        retries,
                        duration_ms,
                    },
                    command,
                    skipped,
                    extra,
                    program_version,
                }
            },
        )
}

fn kdf_params() -> impl Strategy<Value = KdfParams> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(memory_kib, iterations, parallelism)| KdfParams {
        memory_kib,
        iterations,
        parallelism,
    })
}

fn key_slot() -> impl Strategy<Value = KeySlot> {
    (
        kdf_params(),
        any::<[u8; 32]>(),
        bytes(100),
        any::<i64>(),
        any::<String>(),
        any::<Option<u32>>(),
    )
        .prop_map(|(kdf, salt, wrapped, created, label, epoch)| KeySlot {
            kdf,
            salt,
            wrapped,
            created,
            label,
            epoch,
        })
}

fn even(range: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = u32> {
    range.prop_map(|n| n & !1)
}

/// A chunker profile `ChunkerProfile::validate` accepts.
fn chunker_profile() -> impl Strategy<Value = ChunkerProfile> {
    even(64..=1_048_576)
        .prop_flat_map(|min| (Just(min), even(min.max(256)..=4_194_304)))
        .prop_flat_map(|(min, avg)| (Just(min), Just(avg), even(avg.max(1024)..=16_777_216)))
        .prop_map(|(min, avg, max)| ChunkerProfile { min, avg, max })
}

fn config_body() -> impl Strategy<Value = ConfigBody> {
    (
        4 * 1024 * 1024..=128 * 1024 * 1024u32,
        any::<i32>(),
        vec((any::<String>(), chunker_profile()), 0..4),
        any::<i64>(),
        proptest::option::of((1..=2u8, 1..=1_000_000u64, 0..=1_000_000u64)),
    )
        .prop_map(|(pack_size, zstd_level, profiles, created, lock)| ConfigBody {
            pack_size,
            zstd_level,
            profiles,
            created,
            object_lock: lock.map(|(mode, retain_secs, extra)| nfrepo_format::ObjectLock {
                mode,
                retain_secs,
                audit_retain_secs: retain_secs + extra,
            }),
        })
}

fn config_header() -> impl Strategy<Value = ConfigHeader> {
    (any::<[u8; 32]>(), cipher()).prop_map(|(repo, cipher)| ConfigHeader {
        repo: RepoId(repo),
        cipher,
    })
}

/// Blob plaintext: random (stored as is) or repetitive (compressed).
fn blob_plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(5000),
        (vec(any::<u8>(), 1..8), 0..5000usize).prop_map(|(pattern, len)| pattern
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()),
    ]
}

/// A pack kind and blobs whose kinds belong to it (mixed, for tree packs).
fn pack_contents() -> impl Strategy<Value = (PackKind, Vec<(BlobKind, Vec<u8>)>)> {
    (pack_kind(), vec((any::<bool>(), blob_plaintext()), 0..20)).prop_map(|(kind, blobs)| {
        let blobs = blobs
            .into_iter()
            .map(|(alt, plain)| {
                let blob_kind = match (kind, alt) {
                    (PackKind::Tree, false) => BlobKind::Tree,
                    (PackKind::Tree, true) => BlobKind::ContentList,
                    _ => BlobKind::Data,
                };
                (blob_kind, plain)
            })
            .collect();
        (kind, blobs)
    })
}

/// An edit to a valid encoding, to reach deep into a decoder with bytes it almost accepts.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Remove(Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, mask)| Edit::Flip(i, mask)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Remove),
    ];
    vec(edit, 1..4)
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match *edit {
            Edit::Flip(i, mask) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= mask;
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
            Edit::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            Edit::Flip(..) | Edit::Remove(_) => {}
        }
    }
    bytes
}

/// Arbitrary bytes, half of them behind a valid `magic | version` header.
fn garbage(magic: &'static [u8; 4]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(600),
        bytes(600).prop_map(move |rest| {
            let mut out = header(magic);
            out.extend(rest);
            out
        }),
    ]
}

// ---------------------------------------------------------------------------
// Helpers for content lists and packs
// ---------------------------------------------------------------------------

/// Walks a list tree from `id` (a list of `level`), appending its chunks to
/// `out`; returns the content bytes it covers.
fn walk(
    id: &BlobId,
    level: u8,
    store: &HashMap<BlobId, ContentList>,
    visited: &mut HashSet<BlobId>,
    out: &mut Vec<ListEntry>,
) -> u64 {
    let list = store.get(id).unwrap_or_else(|| panic!("list {id:?} was never emitted"));
    assert_eq!(list.level, level, "list {id:?} is at the wrong level");
    visited.insert(*id);
    for entry in &list.entries {
        if level == 1 {
            out.push(*entry);
        } else {
            let covered = walk(&entry.id, level - 1, store, visited, out);
            assert_eq!(covered, entry.len, "a parent entry's len is not its child's");
        }
    }
    list.len()
}

fn build_pack(codec: &mut BlobCodec, kind: PackKind, blobs: &[(BlobKind, Vec<u8>)]) -> nfrepo_format::FinishedPack {
    let mut builder = PackBuilder::new(kind, 0);
    for (blob_kind, plain) in blobs {
        builder.add(&codec.seal(*blob_kind, plain).unwrap()).unwrap();
    }
    builder.finish(codec.sealer(), &repo()).unwrap()
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tree_round_trips(tree in tree()) {
        let bytes = tree.encode().unwrap();
        // The plaintext is exactly the header and the postcard body (tree.md).
        let mut expected = header(TREE_MAGIC);
        expected.extend(postcard::to_allocvec(&tree).unwrap());
        prop_assert_eq!(&bytes, &expected);
        prop_assert_eq!(Tree::decode(&bytes).unwrap(), tree.clone());
        for node in &tree.nodes {
            prop_assert_eq!(tree.find(&node.name), Some(node));
        }
    }

    #[test]
    fn tree_refuses_unsorted_or_duplicate_names(
        tree in tree_sized(2..8),
        a in any::<Index>(),
        b in any::<Index>(),
        duplicate in any::<bool>(),
    ) {
        let mut bad = tree;
        let n = bad.nodes.len();
        let (i, j) = (a.index(n), b.index(n));
        let (i, j) = if i == j { (0, n - 1) } else { (i.min(j), i.max(j)) };
        if duplicate {
            bad.nodes[j].name = bad.nodes[i].name.clone();
        } else {
            bad.nodes.swap(i, j);
        }
        prop_assert!(matches!(bad.encode(), Err(Error::Malformed { .. })), "encoded {:?}", bad);
        // Bytes written by something else are refused on the way in too.
        let mut bytes = header(TREE_MAGIC);
        bytes.extend(postcard::to_allocvec(&bad).unwrap());
        prop_assert!(matches!(Tree::decode(&bytes), Err(Error::Malformed { .. })), "decoded {:?}", bad);
    }

    #[test]
    fn tree_refuses_invalid_names(tree in tree(), name in bad_name(), kind in node_kind()) {
        let mut bad = tree;
        let at = bad.nodes.partition_point(|n| n.name < name);
        bad.nodes.insert(at, node(name, kind, Metadata::default()));
        prop_assert!(matches!(bad.encode(), Err(Error::Malformed { .. })), "encoded {:?}", bad);
        let mut bytes = header(TREE_MAGIC);
        bytes.extend(postcard::to_allocvec(&bad).unwrap());
        prop_assert!(matches!(Tree::decode(&bytes), Err(Error::Malformed { .. })), "decoded {:?}", bad);
    }

    #[test]
    fn content_list_round_trips(list in content_list()) {
        let bytes = list.encode().unwrap();
        prop_assert_eq!(ContentList::decode(&bytes).unwrap(), list);
    }

    #[test]
    fn content_list_refuses_levels_out_of_range(
        level in prop_oneof![Just(0u8), MAX_DEPTH + 1..=u8::MAX],
        entries in vec(list_entry(), 0..4),
    ) {
        let bytes = ContentList { level, entries }.encode().unwrap();
        prop_assert!(matches!(ContentList::decode(&bytes), Err(Error::Malformed { .. })), "level {}", level);
    }

    #[test]
    fn index_delta_round_trips_under_both_ciphers(delta in index_delta()) {
        let keys = keys();
        for cipher in CIPHERS {
            let sealer = keys.sealer(cipher);
            let (id, bytes) = delta.encode(&sealer, &repo()).unwrap();
            prop_assert_eq!(id, IndexId(content_hash(&bytes)));
            prop_assert_eq!(IndexDelta::decode(&id, &bytes, &sealer, &repo()).unwrap(), delta.clone());
            prop_assert!(matches!(
                IndexDelta::decode(&id, &bytes, &sealer, &RepoId([1; 32])),
                Err(Error::Authentication { .. })
            ), "another repository's delta opened");
            let other = keys.sealer(if cipher == Cipher::Aes256Gcm { Cipher::XChaCha20Poly1305 } else { Cipher::Aes256Gcm });
            prop_assert!(matches!(
                IndexDelta::decode(&id, &bytes, &other, &repo()),
                Err(Error::Authentication { .. })
            ), "a delta opened under the other cipher");
        }
    }

    #[test]
    fn snapshot_round_trips_under_both_ciphers(snapshot in snapshot()) {
        let keys = keys();
        for cipher in CIPHERS {
            let sealer = keys.sealer(cipher);
            let (id, bytes) = snapshot.encode(&sealer, &repo()).unwrap();
            prop_assert_eq!(id, SnapshotId(content_hash(&bytes)));
            prop_assert_eq!(Snapshot::decode(&id, &bytes, &sealer, &repo()).unwrap(), snapshot.clone());
            prop_assert!(matches!(
                Snapshot::decode(&SnapshotId([0; 32]), &bytes, &sealer, &repo()),
                Err(Error::HashMismatch { .. })
            ), "a renamed snapshot decoded");
            prop_assert!(matches!(
                Snapshot::decode(&id, &bytes, &sealer, &RepoId([1; 32])),
                Err(Error::Authentication { .. })
            ), "another repository's snapshot opened");
        }
    }

    #[test]
    fn key_slot_round_trips(slot in key_slot()) {
        let bytes = slot.encode().unwrap();
        prop_assert_eq!(KeySlot::decode(&bytes).unwrap(), slot);
    }

    #[test]
    fn config_round_trips(header in config_header(), body in config_body()) {
        let sealer = keys().sealer(header.cipher);
        let bytes = encode_config(&header, &body, &sealer).unwrap();
        let (decoded, sealed) = decode_config_header(&bytes).unwrap();
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(decode_config_body(&decoded, sealed, &sealer).unwrap(), body.clone());
        let other = ConfigHeader { repo: RepoId([!header.repo.0[0]; 32]), ..header };
        prop_assert!(matches!(
            decode_config_body(&other, sealed, &sealer),
            Err(Error::Authentication { .. })
        ), "another repository's config opened");
        for name in body.profiles.iter().map(|(n, _)| n) {
            prop_assert!(body.profile(name).is_some());
        }
    }

    #[test]
    fn config_refuses_bad_pack_sizes_and_profiles(
        header in config_header(),
        body in config_body(),
        pack_size in prop_oneof![0..4 * 1024 * 1024u32, 128 * 1024 * 1024 + 1..=u32::MAX],
        profile in (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(min, avg, max)| ChunkerProfile { min, avg, max }),
    ) {
        let sealer = keys().sealer(header.cipher);
        let open = |body: &ConfigBody| {
            let bytes = encode_config(&header, body, &sealer).unwrap();
            let (h, sealed) = decode_config_header(&bytes).unwrap();
            decode_config_body(&h, sealed, &sealer)
        };
        prop_assert!(
            matches!(open(&ConfigBody { pack_size, ..body.clone() }), Err(Error::Malformed { .. })),
            "pack size {}", pack_size
        );
        let mut profiles = body.profiles.clone();
        profiles.push(("x".into(), profile));
        prop_assert_eq!(open(&ConfigBody { profiles, ..body }).is_ok(), profile.validate().is_ok());
    }

    #[test]
    fn ids_round_trip_through_hex(id in any::<[u8; 32]>()) {
        prop_assert_eq!(BlobId(id).to_hex().parse::<BlobId>().unwrap(), BlobId(id));
        prop_assert_eq!(PackId(id).to_hex().to_uppercase().parse::<PackId>().unwrap(), PackId(id));
    }
}

proptest! {
    // argon2id, even at its smallest parameters, dominates this one.
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn key_slot_wraps_and_unwraps(
        master in any::<[u8; 32]>(),
        password in bytes(64),
        wrong in bytes(64),
        repo_bytes in any::<[u8; 32]>(),
        created in any::<i64>(),
        label in any::<String>(),
    ) {
        let repo = RepoId(repo_bytes);
        let slot = KeySlot::wrap(
            &MasterKey::from_bytes(master),
            &password,
            KdfParams::insecure_for_tests(),
            &repo,
            created,
            label.clone(),
        )
        .unwrap();
        prop_assert_eq!(slot.created, created);
        prop_assert_eq!(&slot.label, &label);
        let slot = KeySlot::decode(&slot.encode().unwrap()).unwrap();
        let back = slot.unwrap_key(&password, &repo).unwrap().derive();
        let expected = MasterKey::from_bytes(master).derive();
        prop_assert_eq!(back.id_key.expose(), expected.id_key.expose());
        prop_assert_eq!(back.sealing_key.expose(), expected.sealing_key.expose());
        if wrong != password {
            prop_assert!(matches!(slot.unwrap_key(&wrong, &repo), Err(Error::WrongPassword)));
        }
        let other_repo = RepoId([!repo_bytes[0]; 32]);
        prop_assert!(matches!(slot.unwrap_key(&password, &other_repo), Err(Error::WrongPassword)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Flattening the emitted lists from the root gives back exactly the
    /// chunks pushed, in order; every list is well formed, reachable, named
    /// by its keyed hash and at most `LIST_MAX_ENTRIES` long.
    #[test]
    fn content_list_builder_flattens_to_the_pushed_chunks(
        n in 0usize..5000,
        seed in any::<[u8; 32]>(),
        // 0: ids as they come; 1: no id ever cuts (lists fill up to the
        // maximum); 2: every id cuts (lists of the minimum); 3: runs of each.
        mode in 0u8..4,
    ) {
        let keys = MasterKey::from_bytes(seed).derive();
        let chunks: Vec<ListEntry> = (0..n as u64)
            .map(|i| {
                let mut id = keys.blob_id(&i.to_le_bytes());
                let never_cut = mode == 1 || (mode == 3 && (i / 1500) % 2 == 0);
                let always_cut = mode == 2 || (mode == 3 && (i / 1500) % 3 == 1);
                if never_cut {
                    id.0[0] |= 1;
                } else if always_cut {
                    id.0[0] = 0;
                    id.0[1] = 0;
                }
                let len = u64::from(u32::from_le_bytes(id.0[28..32].try_into().unwrap()) >> 8);
                ListEntry { id, len }
            })
            .collect();

        let mut builder = ContentListBuilder::new();
        let mut emitted = Vec::new();
        for chunk in &chunks {
            builder.push(&keys, *chunk, &mut emitted).unwrap();
        }
        let content = builder.finish(&keys, &mut emitted).unwrap();

        let mut store = HashMap::new();
        for list in &emitted {
            prop_assert_eq!(list.id, keys.blob_id(&list.plaintext));
            let decoded = ContentList::decode(&list.plaintext).unwrap();
            prop_assert!(decoded.entries.len() <= LIST_MAX_ENTRIES);
            prop_assert!(!decoded.entries.is_empty());
            store.insert(list.id, decoded);
        }

        let mut visited = HashSet::new();
        let flat = match &content {
            Content::Inline(entries) => {
                prop_assert!(emitted.is_empty());
                prop_assert!(entries.len() <= INLINE_MAX_ENTRIES);
                entries.clone()
            }
            Content::List { root, depth } => {
                prop_assert!((1..=MAX_DEPTH).contains(depth));
                let mut out = Vec::new();
                let covered = walk(root, *depth, &store, &mut visited, &mut out);
                prop_assert_eq!(covered, chunks.iter().map(|c| c.len).sum::<u64>());
                out
            }
        };
        prop_assert_eq!(flat, chunks);
        prop_assert_eq!(visited, store.keys().copied().collect::<HashSet<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn packs_round_trip_and_verify((kind, blobs) in pack_contents(), cipher in cipher()) {
        let mut codec = codec(cipher);
        let pack = build_pack(&mut codec, kind, &blobs);
        prop_assert_eq!(pack.id, PackId(content_hash(&pack.bytes)));
        prop_assert_eq!(pack.kind, kind);
        prop_assert_eq!(pack.entries.len(), blobs.len());
        prop_assert_eq!(decode_pack_header(&pack.bytes[..PACK_HEADER_LEN]).unwrap(), kind);
        let tlen = trailer_len(&pack.bytes[pack.bytes.len() - 4..]).unwrap();
        let trailer = &pack.bytes[pack.bytes.len() - 4 - tlen..pack.bytes.len() - 4];
        prop_assert_eq!(
            decode_trailer(trailer, pack.bytes.len() as u64, codec.sealer(), &repo()).unwrap(),
            pack.entries.clone()
        );

        let (read_kind, read) = read_pack_entries(&pack.bytes, codec.sealer(), &repo()).unwrap();
        prop_assert_eq!(read_kind, kind);
        prop_assert_eq!(&read, &pack.entries);

        let (verified_kind, entries, faults) = verify_pack(&pack.id, &pack.bytes, &mut codec, &repo()).unwrap();
        prop_assert_eq!(verified_kind, kind);
        prop_assert_eq!(&entries, &pack.entries);
        prop_assert!(faults.is_empty(), "faults: {:?}", faults);

        for (entry, (blob_kind, plain)) in entries.iter().zip(&blobs) {
            prop_assert_eq!(entry.kind, *blob_kind);
            prop_assert_eq!(entry.id, codec.id_of(plain));
            prop_assert_eq!(entry.raw_len as usize, plain.len());
            let at = entry.offset as usize;
            let sealed = &pack.bytes[at..at + entry.sealed_len as usize];
            prop_assert_eq!(&codec.open(entry.kind, &entry.id, entry.raw_len, sealed).unwrap(), plain);
        }
        prop_assert!(matches!(
            verify_pack(&pack.id, &pack.bytes, &mut codec, &RepoId([1; 32])),
            Err(Error::Authentication { what: "pack trailer" })
        ), "another repository's pack verified");
    }

    /// No single-byte change passes `verify_pack` unnoticed, even when the
    /// pack is renamed to the hash of its new bytes (so the pack-id check
    /// cannot mask the header, trailer and blob checks).
    #[test]
    fn any_flipped_pack_byte_is_caught(
        (kind, blobs) in pack_contents(),
        cipher in cipher(),
        // 0: anywhere; 1: in the header; 2: in the last 64 bytes (trailer and its length).
        region in 0u8..3,
        at in any::<Index>(),
        mask in 1..=255u8,
    ) {
        let mut codec = codec(cipher);
        let pack = build_pack(&mut codec, kind, &blobs);
        let len = pack.bytes.len();
        let i = match region {
            0 => at.index(len),
            1 => at.index(PACK_HEADER_LEN),
            _ => len - 1 - at.index(len.min(64)),
        };
        let mut bytes = pack.bytes.clone();
        bytes[i] ^= mask;
        prop_assert!(matches!(
            verify_pack(&pack.id, &bytes, &mut codec, &repo()),
            Err(Error::HashMismatch { what: "pack", .. })
        ), "byte {} under the old name", i);
        let renamed = PackId(content_hash(&bytes));
        // The header's kind byte is covered by the pack id alone: turning a
        // data pack into a tree pack (01 ^ 03 = 02) opens cleanly, so here a
        // change of the kind reported counts as caught (the caller knows which
        // family it asked for from the pack's path).
        let caught = match verify_pack(&renamed, &bytes, &mut codec, &repo()) {
            Err(_) => true,
            Ok((got_kind, _, faults)) => !faults.is_empty() || got_kind != kind,
        };
        prop_assert!(caught, "byte {} ^ {:#04x} of {} passed", i, mask, len);
    }
}

// ---------------------------------------------------------------------------
// No panic on garbage: every decoder returns an error (or a value that
// round trips) for arbitrary bytes and for valid encodings with a few edits.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tree_decode_survives_garbage(junk in garbage(TREE_MAGIC), tree in tree(), edits in edits()) {
        let mut mutated = header(TREE_MAGIC);
        mutated.extend(mutate(postcard::to_allocvec(&tree).unwrap(), &edits));
        for bytes in [junk, mutated] {
            if let Ok(tree) = Tree::decode(&bytes) {
                prop_assert_eq!(Tree::decode(&tree.encode().unwrap()).unwrap(), tree);
            }
        }
    }

    #[test]
    fn content_list_decode_survives_garbage(junk in garbage(CONTENT_LIST_MAGIC), list in content_list(), edits in edits()) {
        let mut mutated = header(CONTENT_LIST_MAGIC);
        mutated.extend(mutate(postcard::to_allocvec(&list).unwrap(), &edits));
        for bytes in [junk, mutated] {
            if let Ok(list) = ContentList::decode(&bytes) {
                prop_assert!((1..=MAX_DEPTH).contains(&list.level));
                prop_assert_eq!(ContentList::decode(&list.encode().unwrap()).unwrap(), list);
            }
        }
    }

    #[test]
    fn key_slot_decode_survives_garbage(junk in garbage(KEY_SLOT_MAGIC), slot in key_slot(), edits in edits()) {
        // Version 1 or 2 (by the slot's `epoch`), its body mutated.
        let encoded = slot.encode().unwrap();
        let mut mutated = encoded[..5].to_vec();
        mutated.extend(mutate(encoded[5..].to_vec(), &edits));
        for bytes in [junk, mutated] {
            if let Ok(slot) = KeySlot::decode(&bytes) {
                prop_assert_eq!(KeySlot::decode(&slot.encode().unwrap()).unwrap(), slot);
            }
        }
    }

    #[test]
    fn index_delta_decode_survives_garbage(
        junk in garbage(INDEX_MAGIC),
        delta in index_delta(),
        edits in edits(),
        cipher in cipher(),
    ) {
        let sealer = keys().sealer(cipher);
        // Sealed under the right key, a mutated body reaches postcard.
        let body = mutate(postcard::to_allocvec(&delta).unwrap(), &edits);
        let sealed_junk = sealed_object(INDEX_MAGIC, SealedKind::Index, &junk, &sealer);
        let sealed_body = sealed_object(INDEX_MAGIC, SealedKind::Index, &body, &sealer);
        for bytes in [junk, sealed_junk, sealed_body] {
            let id = IndexId(content_hash(&bytes));
            if let Ok(delta) = IndexDelta::decode(&id, &bytes, &sealer, &repo()) {
                let (id, bytes) = delta.encode(&sealer, &repo()).unwrap();
                prop_assert_eq!(IndexDelta::decode(&id, &bytes, &sealer, &repo()).unwrap(), delta);
            }
        }
    }

    #[test]
    fn snapshot_decode_survives_garbage(
        junk in garbage(SNAPSHOT_MAGIC),
        snapshot in snapshot(),
        edits in edits(),
        cipher in cipher(),
    ) {
        let sealer = keys().sealer(cipher);
        let body = mutate(postcard::to_allocvec(&snapshot).unwrap(), &edits);
        let sealed_junk = sealed_object(SNAPSHOT_MAGIC, SealedKind::Snapshot, &junk, &sealer);
        let sealed_body = sealed_object(SNAPSHOT_MAGIC, SealedKind::Snapshot, &body, &sealer);
        for bytes in [junk, sealed_junk, sealed_body] {
            let id = SnapshotId(content_hash(&bytes));
            if let Ok(snapshot) = Snapshot::decode(&id, &bytes, &sealer, &repo()) {
                let (id, bytes) = snapshot.encode(&sealer, &repo()).unwrap();
                prop_assert_eq!(Snapshot::decode(&id, &bytes, &sealer, &repo()).unwrap(), snapshot);
            }
        }
    }

    #[test]
    fn config_decode_survives_garbage(
        junk in garbage(CONFIG_MAGIC),
        header in config_header(),
        body in config_body(),
        edits in edits(),
    ) {
        let sealer = keys().sealer(header.cipher);
        let _ = decode_config_header(&junk).and_then(|(h, sealed)| decode_config_body(&h, sealed, &sealer));
        // A valid clear header before a sealed garbage or mutated body.
        let mutated = mutate(postcard::to_allocvec(&body).unwrap(), &edits);
        for plain in [junk, mutated] {
            let mut bytes = CONFIG_MAGIC.to_vec();
            bytes.push(FORMAT_VERSION);
            bytes.extend_from_slice(&header.repo.0);
            bytes.push(header.cipher.code());
            sealer
                .seal_into(Aad::object(SealedKind::Config, header.repo.0), &plain, &mut bytes)
                .unwrap();
            let (h, sealed) = decode_config_header(&bytes).unwrap();
            if let Ok(body) = decode_config_body(&h, sealed, &sealer) {
                let bytes = encode_config(&h, &body, &sealer).unwrap();
                let (h, sealed) = decode_config_header(&bytes).unwrap();
                prop_assert_eq!(decode_config_body(&h, sealed, &sealer).unwrap(), body);
            }
        }
    }

    #[test]
    fn pack_readers_survive_garbage(
        junk in garbage(PACK_MAGIC),
        entries in vec(pack_entry(), 0..8),
        area in bytes(200),
        edits in edits(),
        cipher in cipher(),
    ) {
        let mut codec = codec(cipher);
        let sealer = codec.sealer().clone();
        let _ = decode_pack_header(&junk);
        let _ = trailer_len(&junk);
        let _ = trailer_len(junk.get(..4).unwrap_or_default());
        let _ = decode_trailer(&junk, junk.len() as u64, &sealer, &repo());
        let _ = read_pack_entries(&junk, &sealer, &repo());
        let _ = verify_pack(&PackId(content_hash(&junk)), &junk, &mut codec, &repo());
        // A well-formed pack whose sealed trailer holds garbage or arbitrary
        // (mutated) entries pointing anywhere.
        let mutated = mutate(postcard::to_allocvec(&entries).unwrap(), &edits);
        for plain in [junk, postcard::to_allocvec(&entries).unwrap(), mutated] {
            let mut bytes = header(PACK_MAGIC);
            bytes.extend_from_slice(&[1, 0, 0]);
            bytes.extend_from_slice(&area);
            let trailer = sealer.seal(Aad::object(SealedKind::PackTrailer, repo().0), &plain).unwrap();
            bytes.extend_from_slice(&trailer);
            bytes.extend_from_slice(&u32::try_from(trailer.len()).unwrap().to_le_bytes());
            let _ = decode_trailer(&trailer, bytes.len() as u64, &sealer, &repo());
            let _ = read_pack_entries(&bytes, &sealer, &repo());
            if let Ok((_, _, faults)) = verify_pack(&PackId(content_hash(&bytes)), &bytes, &mut codec, &repo()) {
                // Nothing in `area` was sealed as a blob, so every entry is a fault.
                prop_assert!(faults.iter().all(|f| f.error.is_corruption()));
            }
        }
    }

    #[test]
    fn blob_open_survives_garbage(
        junk in bytes(600),
        plain in blob_plaintext(),
        edits in edits(),
        kind in blob_kind(),
        raw_len in prop_oneof![0..10_000u32, any::<u32>()],
        cipher in cipher(),
    ) {
        let mut codec = codec(cipher);
        let id = codec.id_of(&plain);
        let aad = Aad::blob(kind.sealed_kind(), &id);
        let _ = codec.open(kind, &id, raw_len, &junk);
        let _ = codec.sealer().open("blob", aad, &junk);
        // Authentic frames with a garbage or mutated (zstd) payload.
        let mut zstd_frame = vec![1];
        zstd_frame.extend(zstd::bulk::compress(&plain, 3).unwrap());
        let mut frames = vec![mutate(zstd_frame, &edits)];
        for codec_byte in [0u8, 1, 2] {
            let mut frame = vec![codec_byte];
            frame.extend_from_slice(&junk);
            frames.push(frame);
        }
        frames.push(Vec::new());
        for frame in frames {
            let sealed = codec.sealer().seal(aad, &frame).unwrap();
            if let Ok(opened) = codec.open(kind, &id, raw_len, &sealed) {
                prop_assert_eq!(opened, plain.clone());
            }
        }
    }

    #[test]
    fn small_decoders_survive_garbage(junk in bytes(80), text in any::<String>(), key in any::<[u8; 32]>()) {
        let _ = Cipher::from_code(junk.first().copied().unwrap_or_default());
        for cipher in CIPHERS {
            let sealer = Sealer::new(cipher, SecretKey::from_bytes(key));
            let _ = sealer.open("x", Aad::object(SealedKind::Config, key), &junk);
        }
        for s in [text, hex::encode(&junk)] {
            if let Ok(id) = s.parse::<BlobId>() {
                prop_assert_eq!(id.to_hex(), s.to_lowercase());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Put-only sessions (format-spec/put-only.md)

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A put-only session's pack: built with the session's sealer, it
    /// verifies under the password holder's keys from the pack alone, its
    /// entries start after the 44-byte header, and the host's own keys
    /// (the credential's index key) open neither its trailer nor its blobs.
    #[test]
    fn session_packs_round_trip_and_stay_closed_to_the_host(
        (kind, blobs) in pack_contents(),
        cipher in cipher(),
    ) {
        let (credential, slot) = nfrepo_format::PutOnlyCredential::issue(
            repo(),
            &keys(),
            cipher,
            &nfrepo_format::ConfigBody::default(),
            "host",
            0,
        )
        .unwrap();
        credential.check_slot(&slot).unwrap();
        let session = credential.begin_session().unwrap();
        let mut host_codec = BlobCodec::new(keys(), session.clone(), 3).unwrap();
        let mut builder = PackBuilder::for_sealer(kind, 0, &session).unwrap();
        for (blob_kind, plain) in &blobs {
            builder.add(&host_codec.seal(*blob_kind, plain).unwrap()).unwrap();
        }
        let pack = builder.finish(&session, &repo()).unwrap();
        prop_assert!(pack.sealing.is_some());
        let mut reader = codec(cipher);
        let (read_kind, entries, faults) =
            nfrepo_format::verify_pack(&pack.id, &pack.bytes, &mut reader, &repo()).unwrap();
        prop_assert_eq!(read_kind, kind);
        prop_assert_eq!(&entries, &pack.entries);
        prop_assert!(faults.is_empty());
        for e in &entries {
            prop_assert!(e.offset as usize >= nfrepo_format::SESSION_PACK_HEADER_LEN);
        }
        let host = credential.index_sealer();
        let refused = matches!(
            nfrepo_format::read_pack_sealing(&pack.bytes, &host, &repo()),
            Err(Error::MissingKey { .. })
        );
        prop_assert!(refused);
        for (e, (_, plain)) in entries.iter().zip(&blobs) {
            let sealed = &pack.bytes[e.offset as usize..][..e.sealed_len as usize];
            prop_assert!(host_codec.open_with(&host, e.kind, &e.id, e.raw_len, sealed).is_err());
            let blob_sealer = nfrepo_format::pack_sealer(reader.sealer(), pack.sealing.as_ref()).unwrap();
            prop_assert_eq!(&reader.open_with(&blob_sealer, e.kind, &e.id, e.raw_len, sealed).unwrap(), plain);
        }
        // The index delta listing it is version 2, readable by the host and the key holder.
        let delta = IndexDelta {
            packs: vec![IndexedPack {
                id: pack.id,
                kind,
                size: pack.bytes.len() as u64,
                blobs: entries,
                sealing: pack.sealing,
            }],
            supersedes: Vec::new(),
        };
        let (id, bytes) = delta.encode(&host, &repo()).unwrap();
        prop_assert_eq!(&bytes[..6], b"NFRI\x02\x02");
        prop_assert_eq!(&IndexDelta::decode(&id, &bytes, &host, &repo()).unwrap(), &delta);
        prop_assert_eq!(&IndexDelta::decode(&id, &bytes, reader.sealer(), &repo()).unwrap(), &delta);
    }
}
