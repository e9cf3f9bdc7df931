//! A repository on a fresh in-memory store, and helpers to look into it.

use std::sync::Arc;

use nfrepo_engine::{InitOptions, Repository, SnapshotEntry};
use nfrepo_format::{KdfParams, Node};
use nfrepo_sources::{BackupReport, RunOptions, Source};
use nfrepo_store::{MemoryStore, ObjectKind, Store};

pub async fn repo() -> Repository {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut options = InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    options.pack_size = 4 * 1024 * 1024;
    Repository::init(store, b"test password", options).await.expect("init")
}

/// Runs `source` under source name `name`, ignoring progress.
pub async fn run(repo: &Repository, name: &str, source: impl Source + 'static) -> nfrepo_sources::Result<BackupReport> {
    nfrepo_sources::run_backup(repo, Box::new(source), &RunOptions::new(name), &mut |_| {}).await
}

pub async fn snapshots(repo: &Repository) -> Vec<SnapshotEntry> {
    repo.snapshots().await.expect("list snapshots")
}

/// Live session markers: a finished or aborted backup leaves none.
pub async fn session_markers(repo: &Repository) -> usize {
    repo.store()
        .list(ObjectKind::Session)
        .await
        .expect("list sessions")
        .len()
}

/// Asserts that nothing was committed and no session was left behind.
pub async fn assert_nothing_committed(repo: &Repository) {
    assert_eq!(snapshots(repo).await.len(), 0, "a snapshot was committed");
    assert_eq!(session_markers(repo).await, 0, "a session marker was left behind");
}

/// The top-level nodes of a snapshot's root tree.
pub async fn root_nodes(repo: &Repository, report: &BackupReport) -> Vec<Node> {
    let reader = repo.reader().await.expect("reader");
    reader
        .tree(&report.snapshot.root)
        .await
        .expect("root tree")
        .nodes
        .clone()
}

/// The content of the top-level file `name`.
pub async fn file_content(repo: &Repository, report: &BackupReport, name: &str) -> Vec<u8> {
    let reader = repo.reader().await.expect("reader");
    let root = reader.tree(&report.snapshot.root).await.expect("root tree");
    let node = root.find(name.as_bytes()).expect("file in root");
    let mut out = Vec::new();
    nfrepo_sources::write_content(&reader, node, &mut out)
        .await
        .expect("read back");
    out
}

/// The snapshot's extra fact `key`.
pub fn fact<'a>(report: &'a BackupReport, key: &str) -> Option<&'a str> {
    report.snapshot.fact(key)
}
