//! The values the test vectors are made of, shared by the generator and the
//! checks. Changing anything here changes the vectors: the checks then fail
//! until the vectors are regenerated, which is a format change.

use nfrepo_format::{
    BlobId, BlobKind, CommandRecord, ConfigBody, Content, ContentList, ListEntry, MasterKey, Metadata, Node, NodeKind,
    RepoId, RepoKeys, Snapshot, SnapshotId, Summary, Tree, Xattr,
};

/// The master key of every vector: bytes 0x00, 0x01, ..., 0x1f.
pub fn master_bytes() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

pub fn master() -> MasterKey {
    MasterKey::from_bytes(master_bytes())
}

pub fn keys() -> RepoKeys {
    master().derive()
}

/// The repository id of every vector: bytes 0x20, 0x21, ..., 0x3f.
pub fn repo() -> RepoId {
    RepoId(std::array::from_fn(|i| 0x20 + i as u8))
}

/// The nonce of the fixed-nonce sealing vectors: bytes 0x40, 0x41, ..., 0x57.
pub fn fixed_nonce() -> [u8; 24] {
    std::array::from_fn(|i| 0x40 + i as u8)
}

/// The password of the key slot vector.
pub const PASSWORD: &str = "test";
/// The label of the key slot vector.
pub const KEY_SLOT_LABEL: &str = "vectors@nfrepo";
/// The creation time of the key slot vector, Unix seconds.
pub const KEY_SLOT_CREATED: i64 = 1_700_000_000;

/// How [`pseudo_random`] makes its bytes, for the JSON files.
pub const PSEUDO_RANDOM_RULE: &str = "xorshift64: state = 0x9E3779B97F4A7C15; for each byte: state ^= state << 13; \
     state ^= state >> 7; state ^= state << 17 (all mod 2^64); byte = (state >> 24) & 0xff";

/// Deterministic bytes that look random to the chunker.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// 1000 bytes: byte i is i mod 251.
pub fn pattern_1000() -> Vec<u8> {
    (0..1000u32).map(|i| (i % 251) as u8).collect()
}

/// The plaintexts of the blob id vectors.
pub fn blob_id_inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("hello", b"hello".to_vec()),
        ("pattern-1000", pattern_1000()),
    ]
}

/// The content of `big.dump`, as its three chunks: two compressible, one not.
pub fn dump_chunks() -> Vec<Vec<u8>> {
    vec![
        b"INSERT INTO t VALUES (1,'one');\n".repeat(40),
        b"INSERT INTO t VALUES (2,'two');\n".repeat(40),
        pseudo_random(300),
    ]
}

/// SHA-256 of `hello`, as stored in the `hello.txt` node.
pub const SHA256_HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// The content list of `big.dump`: one level-1 list of its three chunks.
pub fn content_list(keys: &RepoKeys) -> ContentList {
    ContentList {
        level: 1,
        entries: dump_chunks()
            .iter()
            .map(|c| ListEntry {
                id: keys.blob_id(c),
                len: c.len() as u64,
            })
            .collect(),
    }
}

/// The empty directory `bin` points to.
pub fn empty_tree() -> Tree {
    Tree::default()
}

/// A root directory with a list-backed file, a directory, an inline file and a symlink.
pub fn tree(keys: &RepoKeys) -> Tree {
    let dump: Vec<u8> = dump_chunks().concat();
    let list_plain = content_list(keys).encode().expect("content list encodes");
    let empty_plain = empty_tree().encode().expect("empty tree encodes");
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(SHA256_HELLO, &mut sha256).expect("constant is hex");
    Tree {
        nodes: vec![
            Node {
                name: b"big.dump".to_vec(),
                kind: NodeKind::File {
                    size: dump.len() as u64,
                    content: Content::List {
                        root: keys.blob_id(&list_plain),
                        depth: 1,
                    },
                    blake3: *blake3::hash(&dump).as_bytes(),
                    sha256: None,
                },
                meta: Metadata {
                    mode: 0o640,
                    uid: 999,
                    gid: 999,
                    user: Some("mysql".into()),
                    group: Some("mysql".into()),
                    mtime_ns: 1_700_000_000_123_456_789,
                    ctime_ns: 1_700_000_000_123_456_789,
                    inode: 1_048_577,
                    device: 2049,
                    xattrs: Vec::new(),
                },
            },
            Node {
                name: b"bin".to_vec(),
                kind: NodeKind::Dir {
                    tree: keys.blob_id(&empty_plain),
                },
                meta: Metadata {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    user: Some("root".into()),
                    group: Some("root".into()),
                    mtime_ns: 1_600_000_000_000_000_000,
                    ctime_ns: 1_600_000_000_000_000_001,
                    inode: 131,
                    device: 2049,
                    xattrs: Vec::new(),
                },
            },
            Node {
                name: b"hello.txt".to_vec(),
                kind: NodeKind::File {
                    size: 5,
                    content: Content::Inline(vec![ListEntry {
                        id: keys.blob_id(b"hello"),
                        len: 5,
                    }]),
                    blake3: *blake3::hash(b"hello").as_bytes(),
                    sha256: Some(sha256),
                },
                meta: Metadata {
                    mode: 0o644,
                    uid: 1000,
                    gid: 1000,
                    user: None,
                    group: None,
                    mtime_ns: -1_000_000_000,
                    ctime_ns: 0,
                    inode: 132,
                    device: 2049,
                    xattrs: vec![Xattr {
                        name: b"user.comment".to_vec(),
                        value: b"hi".to_vec(),
                    }],
                },
            },
            Node {
                name: b"link".to_vec(),
                kind: NodeKind::Symlink {
                    target: b"hello.txt".to_vec(),
                },
                meta: Metadata {
                    mode: 0o777,
                    uid: 1000,
                    gid: 1000,
                    user: None,
                    group: None,
                    mtime_ns: 1_700_000_000_000_000_000,
                    ctime_ns: 1_700_000_000_000_000_000,
                    inode: 133,
                    device: 2049,
                    xattrs: Vec::new(),
                },
            },
        ],
    }
}

/// The blobs of the data pack vector, in pack order.
pub fn data_pack_blobs() -> Vec<(BlobKind, Vec<u8>)> {
    let mut blobs = vec![(BlobKind::Data, b"hello".to_vec()), (BlobKind::Data, pattern_1000())];
    blobs.extend(dump_chunks().into_iter().map(|c| (BlobKind::Data, c)));
    blobs.push((BlobKind::Data, Vec::new()));
    blobs
}

/// The blobs of the tree pack vector, in pack order.
pub fn tree_pack_blobs(keys: &RepoKeys) -> Vec<(BlobKind, Vec<u8>)> {
    vec![
        (BlobKind::Tree, tree(keys).encode().expect("tree encodes")),
        (BlobKind::Tree, empty_tree().encode().expect("empty tree encodes")),
        (
            BlobKind::ContentList,
            content_list(keys).encode().expect("content list encodes"),
        ),
    ]
}

/// The snapshot vector, whose root is [`tree`].
pub fn snapshot(root: BlobId) -> Snapshot {
    Snapshot {
        time_ns: 1_700_000_000_000_000_000,
        source: "db-main".into(),
        source_kind: "command".into(),
        hostname: "host1".into(),
        username: "backup".into(),
        paths: vec!["/srv".into()],
        tags: vec![("env".into(), "prod".into()), ("type".into(), "mysql".into())],
        profile: "dump".into(),
        parent: Some(SnapshotId([0x11; 32])),
        root,
        summary: Summary {
            files: 2,
            dirs: 2,
            others: 1,
            files_unchanged: 0,
            bytes: 2865,
            bytes_read: 2865,
            blobs_added: 9,
            bytes_added_raw: 300,
            bytes_added_stored: 128,
            packs_added: 2,
            retries: 0,
            duration_ms: 1_234_567,
        },
        command: Some(CommandRecord {
            argv: vec!["mysqldump".into(), "--all-databases".into()],
            exit_code: 0,
        }),
        skipped: vec!["/srv/lost+found".into()],
        extra: vec![("mysqldump".into(), "8.0.36".into())],
        program_version: "0.1.0".into(),
    }
}

/// The config body vector: the defaults of when it was made (zstd level 3,
/// the default until level 1 replaced it), at a fixed time.
pub fn config_body() -> ConfigBody {
    ConfigBody {
        created: 1_700_000_000,
        zstd_level: 3,
        ..ConfigBody::default()
    }
}

/// The id of the delta the index vector claims to supersede.
pub fn superseded_index() -> nfrepo_format::IndexId {
    nfrepo_format::IndexId([0x77; 32])
}
