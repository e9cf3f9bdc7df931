//! `check` on a repository whose stored objects were mutated: bytes flipped,
//! objects truncated, deleted or replaced. Built once: a small repository in
//! memory with a tree, a content list and two snapshots; each input is a
//! list of mutations applied to a fresh copy of it.
//!
//! Input: repeated 8-byte mutations `op | object | offset (u32 LE) | value | pad`:
//! - `op % 4 == 0`: xor byte `offset % len` of the object with `value | 1`;
//! - `1`: truncate the object to `offset % (len + 1)` bytes;
//! - `2`: delete the object;
//! - `3`: replace the object with the rest of the input (ends the list).
//!
//! Properties: opening and checking never panic, and check fails only on
//! storage errors it cannot classify (none here: the store itself is sound);
//! a repository that checks clean at every level (`--merkle --read-data`)
//! restores every file of every snapshot to its recorded size and BLAKE3.

#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nfrepo_engine::{BackupOptions, CheckOptions, CommitDetails, InitOptions, ReadDataSubset, Repository};
use nfrepo_format::{KdfParams, Metadata, Node, NodeKind, Tree};
use nfrepo_store::{MemoryStore, ObjectKey, ObjectKind, PutMode, Store};

const PASSWORD: &[u8] = b"fuzz";

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
});

/// The pristine repository's objects, sorted by key.
static OBJECTS: LazyLock<Vec<(ObjectKey, Bytes)>> = LazyLock::new(|| RUNTIME.block_on(build()));

async fn backup(repo: &Repository, source: &str, data: Vec<u8>) {
    let session = repo
        .begin_backup(BackupOptions::new(source, "stdin", "dump"))
        .await
        .expect("begin");
    let (session, root) = tokio::task::spawn_blocking(move || {
        let stored = session.store_stream(&data[..], true).expect("store");
        let file = Node {
            name: b"f".to_vec(),
            kind: stored.file_kind(),
            meta: Metadata::default(),
        };
        let sub = session
            .store_tree(&Tree {
                nodes: vec![file.clone()],
            })
            .expect("tree");
        let dir = Node {
            name: b"d".to_vec(),
            kind: NodeKind::Dir { tree: sub },
            meta: Metadata::default(),
        };
        let root = session.store_tree(&Tree { nodes: vec![dir, file] }).expect("tree");
        (session, root)
    })
    .await
    .expect("join");
    session.commit(root, CommitDetails::default()).await.expect("commit");
}

async fn build() -> Vec<(ObjectKey, Bytes)> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut options = InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    options.pack_size = 4 * 1024 * 1024;
    let repo = Repository::init(store.clone(), PASSWORD, options).await.expect("init");
    // Enough dump chunks (16 KiB average) for a content list.
    let data: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    backup(&repo, "a", data.clone()).await;
    backup(&repo, "b", data[..50_000].to_vec()).await;
    let mut out = Vec::new();
    for kind in ObjectKind::all() {
        for info in store.list(*kind).await.unwrap_or_default() {
            let bytes = store.get(&info.key).await.expect("get");
            out.push((info.key, bytes));
        }
    }
    if let Ok(bytes) = store.get(&ObjectKey::config()).await {
        out.push((ObjectKey::config(), bytes));
    }
    out.sort_by_key(|(key, _)| key.path());
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

async fn run(data: &[u8]) {
    let mut objects: Vec<Option<Vec<u8>>> = OBJECTS.iter().map(|(_, b)| Some(b.to_vec())).collect();
    let mut rest = data;
    while rest.len() >= 8 {
        let (m, tail) = rest.split_at(8);
        rest = tail;
        let target = m[1] as usize % objects.len();
        let offset = u32::from_le_bytes([m[2], m[3], m[4], m[5]]) as usize;
        let Some(object) = objects[target].as_mut() else {
            continue;
        };
        match m[0] % 4 {
            0 if !object.is_empty() => {
                let at = offset % object.len();
                object[at] ^= m[6] | 1;
            }
            1 => object.truncate(offset % (object.len() + 1)),
            2 => objects[target] = None,
            3 => {
                *object = rest.to_vec();
                break;
            }
            _ => {}
        }
    }
    let store = MemoryStore::new();
    for ((key, _), bytes) in OBJECTS.iter().zip(objects) {
        if let Some(bytes) = bytes {
            store
                .put(key, Bytes::from(bytes), PutMode::CreateNew)
                .await
                .expect("put");
        }
    }
    let store: Arc<dyn Store> = Arc::new(store);
    let Ok(repo) = Repository::open(store, PASSWORD).await else {
        return;
    };
    let mut options = CheckOptions::default();
    options.merkle = true;
    options.read_data = Some(ReadDataSubset::All);
    let report = repo
        .check(&options)
        .await
        .expect("check classifies every damaged object");
    if report.findings.is_empty() {
        for snapshot in &report.snapshots {
            let verified = repo
                .verify_snapshot(&snapshot.to_hex(), true)
                .await
                .expect("verify runs on a clean repository");
            assert!(
                verified.is_intact(),
                "check was clean but snapshot {snapshot} does not restore: {:?}",
                verified.content_problems
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Built outside block_on: building blocks on the runtime itself.
    LazyLock::force(&OBJECTS);
    RUNTIME.block_on(run(data));
});
