//! Builds a large synthetic repository for measuring GC's time and memory.
//!
//! Not a test: it is `#[ignore]`d and writes to a directory given in
//! `NFREPO_GC_SCALE_DIR`. Measure with the real binary afterwards, e.g.
//!
//! ```text
//! NFREPO_GC_SCALE_DIR=/tmp/scale NFREPO_GC_SCALE_BLOBS=10000000 \
//!   cargo test --release -p nfrepo-engine --test gc_scale -- --ignored --nocapture
//! NFREPO_PASSWORD='test password' /usr/bin/time -v nfrepo -r /tmp/scale/repo gc --dry-run
//! ```
//!
//! What it builds, and why it is a fair stand-in for GC: GC reads only
//! snapshots, index deltas and tree packs, and lists data packs, so those are
//! real (sealed, hashed, in the real format), while data packs are tiny
//! placeholder files under real pack ids (GC never opens them). There are
//! `BLOBS` data blobs in packs of 250 blobs (16 MiB at a 64 KiB average),
//! indexed by deltas of 100 packs; 120 snapshots each name one file whose
//! content is a window of 40 % of the blobs, the windows sliding by 0.5 %, so
//! level-1 content lists (1000 chunks) are shared between snapshots as real
//! dumps share them. The oldest windows' first blobs end up unreferenced
//! after a `forget --keep-last 100`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "measurement harness")]

use std::sync::Arc;

use bytes::Bytes;
use nfrepo_engine::{InitOptions, Repository};
use nfrepo_format::{
    BlobId, BlobKind, Content, ContentList, IndexDelta, IndexedPack, KdfParams, ListEntry, Metadata, Node, NodeKind,
    PackBuilder, PackEntry, PackId, PackKind, Snapshot, Summary, Tree,
};
use nfrepo_store::{Credentials, ObjectKey, ObjectKind, OpenOptions, PutMode, StoreUrl};

const BLOBS_PER_PACK: usize = 250;
const PACKS_PER_DELTA: usize = 100;
const SNAPSHOTS: usize = 120;
const CHUNK_LEN: u64 = 65_536;

fn blob(i: usize) -> BlobId {
    BlobId(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
}

struct TreeWriter {
    repo: Repository,
    codec: nfrepo_format::BlobCodec,
    pack: PackBuilder,
    done: Vec<IndexedPack>,
}

impl TreeWriter {
    async fn add(&mut self, kind: BlobKind, plaintext: &[u8]) -> BlobId {
        let sealed = self.codec.seal(kind, plaintext).unwrap();
        self.pack.add(&sealed).unwrap();
        if self.pack.len() > 8 << 20 {
            self.flush().await;
        }
        sealed.id
    }

    async fn flush(&mut self) {
        if self.pack.is_empty() {
            return;
        }
        let pack = std::mem::replace(&mut self.pack, PackBuilder::new(PackKind::Tree, 16 << 20));
        let finished = pack.finish(self.repo.sealer(), &self.repo.id()).unwrap();
        let key = ObjectKey::new(ObjectKind::Tree, finished.id.to_hex()).unwrap();
        let size = finished.bytes.len() as u64;
        self.repo
            .store()
            .put(&key, Bytes::from(finished.bytes), PutMode::CreateNew)
            .await
            .unwrap();
        self.done.push(IndexedPack {
            id: finished.id,
            kind: PackKind::Tree,
            size,
            blobs: finished.entries,
            sealing: None,
        });
    }

    async fn list(&mut self, level: u8, entries: Vec<ListEntry>) -> ListEntry {
        let len = entries.iter().map(|e| e.len).sum();
        let plaintext = ContentList { level, entries }.encode().unwrap();
        ListEntry {
            id: self.add(BlobKind::ContentList, &plaintext).await,
            len,
        }
    }
}

async fn put_delta(repo: &Repository, packs: Vec<IndexedPack>) {
    let (id, bytes) = IndexDelta {
        packs,
        supersedes: Vec::new(),
    }
    .encode(repo.sealer(), &repo.id())
    .unwrap();
    let key = ObjectKey::new(ObjectKind::Index, id.to_hex()).unwrap();
    repo.store()
        .put(&key, Bytes::from(bytes), PutMode::CreateNew)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds a multi-GB synthetic repository; run by hand to measure gc"]
async fn build_synthetic_repository() {
    let dir = std::env::var("NFREPO_GC_SCALE_DIR").expect("set NFREPO_GC_SCALE_DIR");
    let blobs: usize = std::env::var("NFREPO_GC_SCALE_BLOBS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1_000_000);
    let url = StoreUrl::parse(&format!("{dir}/repo")).unwrap();
    let store = nfrepo_store::open(&url, &Credentials::none(), &OpenOptions::default()).unwrap();
    let mut options = InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    let repo = Repository::init(Arc::clone(&store), b"test password", options)
        .await
        .unwrap();
    let started = std::time::Instant::now();

    // Data: placeholder packs, real index deltas.
    let packs = blobs.div_ceil(BLOBS_PER_PACK);
    let mut batch = Vec::new();
    for p in 0..packs {
        let id = PackId(*blake3::hash(format!("pack {p}").as_bytes()).as_bytes());
        let key = ObjectKey::new(ObjectKind::Data, id.to_hex()).unwrap();
        store
            .put(&key, Bytes::from_static(b"placeholder"), PutMode::CreateNew)
            .await
            .unwrap();
        let first = p * BLOBS_PER_PACK;
        let entries = (first..(first + BLOBS_PER_PACK).min(blobs))
            .enumerate()
            .map(|(n, i)| PackEntry {
                id: blob(i),
                kind: BlobKind::Data,
                offset: 8 + n as u32 * 65_576,
                sealed_len: 65_576,
                raw_len: CHUNK_LEN as u32,
            })
            .collect();
        batch.push(IndexedPack {
            id,
            kind: PackKind::Data,
            size: 16 << 20,
            blobs: entries,
            sealing: None,
        });
        if batch.len() == PACKS_PER_DELTA {
            put_delta(&repo, std::mem::take(&mut batch)).await;
        }
    }
    put_delta(&repo, batch).await;
    eprintln!(
        "data index written: {blobs} blobs, {packs} packs, {:?}",
        started.elapsed()
    );

    // Trees: shared level-1 lists of 1000 chunks, per-snapshot upper levels.
    let mut writer = TreeWriter {
        codec: repo.codec().unwrap(),
        repo: repo.clone(),
        pack: PackBuilder::new(PackKind::Tree, 16 << 20),
        done: Vec::new(),
    };
    let mut level1 = Vec::new();
    for start in (0..blobs).step_by(1000) {
        let entries = (start..(start + 1000).min(blobs))
            .map(|i| ListEntry {
                id: blob(i),
                len: CHUNK_LEN,
            })
            .collect();
        level1.push(writer.list(1, entries).await);
    }
    let window = level1.len() * 2 / 5;
    let slide = (level1.len() - window) / SNAPSHOTS;
    let base = chrono::Utc::now().timestamp_nanos_opt().unwrap() - 3_600_000_000_000 * SNAPSHOTS as i64;
    for s in 0..SNAPSHOTS {
        let lists = &level1[s * slide..s * slide + window];
        let mut level2 = Vec::new();
        for group in lists.chunks(1000) {
            level2.push(writer.list(2, group.to_vec()).await);
        }
        let root_list = writer.list(3, level2).await;
        let node = Node {
            name: b"dump.sql".to_vec(),
            kind: NodeKind::File {
                size: root_list.len,
                content: Content::List {
                    root: root_list.id,
                    depth: 3,
                },
                blake3: [0; 32],
                sha256: None,
            },
            meta: Metadata::default(),
        };
        let tree = Tree { nodes: vec![node] }.encode().unwrap();
        let root = writer.add(BlobKind::Tree, &tree).await;
        writer.flush().await;
        put_delta(&repo, std::mem::take(&mut writer.done)).await;
        let snapshot = Snapshot {
            time_ns: base + 3_600_000_000_000 * s as i64,
            source: "db".into(),
            source_kind: "stdin".into(),
            hostname: "synthetic".into(),
            username: "bench".into(),
            paths: vec!["dump.sql".into()],
            tags: Vec::new(),
            profile: "dump".into(),
            parent: None,
            root,
            summary: Summary::default(),
            command: None,
            skipped: Vec::new(),
            extra: Vec::new(),
            program_version: "synthetic".into(),
        };
        let (id, bytes) = snapshot.encode(repo.sealer(), &repo.id()).unwrap();
        let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex()).unwrap();
        store.put(&key, Bytes::from(bytes), PutMode::CreateNew).await.unwrap();
    }
    eprintln!(
        "{SNAPSHOTS} snapshots of {} chunks each written in {:?}",
        window * 1000,
        started.elapsed()
    );
}
