//! Snapshots crafted through the engine, for tests of what readers do with
//! a snapshot the backup side would never write (feature `engine`).

#![allow(clippy::expect_used, reason = "a test fixture fails its test by panicking")]

use nfrepo_engine::{BackupOptions, CommitDetails, Repository};
use nfrepo_format::{Metadata, Node, NodeKind, SnapshotId, Tree};

/// Commits a snapshot of one file `f` holding `data`, whose node is changed
/// by `alter` before its tree is stored (a wrong size or hash, say).
///
/// # Panics
/// On any engine error: this is a test fixture.
pub async fn commit_altered_file(repo: &Repository, data: Vec<u8>, alter: fn(&mut NodeKind)) -> SnapshotId {
    commit_one_file(repo, "f", data, alter).await.0
}

/// Commits a snapshot of one file `name` holding `data`; returns the
/// snapshot and the file's node.
///
/// # Panics
/// On any engine error: this is a test fixture.
pub async fn commit_file(repo: &Repository, name: &str, data: Vec<u8>) -> (SnapshotId, Node) {
    commit_one_file(repo, name, data, |_| {}).await
}

// With `sha256(true)`, so that the node carries a SHA-256 for the
// verified read to check (and for the tests that alter it).
async fn commit_one_file(repo: &Repository, name: &str, data: Vec<u8>, alter: fn(&mut NodeKind)) -> (SnapshotId, Node) {
    let session = repo
        .begin_backup(BackupOptions::new("crafted", "stdin", "dump").sha256(true))
        .await
        .expect("begin backup");
    let writer = session.writer();
    let name = name.as_bytes().to_vec();
    let (root, node) = tokio::task::spawn_blocking(move || {
        let stored = writer.store_stream(&data[..], true).expect("store stream");
        let mut kind = stored.file_kind();
        alter(&mut kind);
        let node = Node {
            name,
            kind,
            meta: Metadata::default(),
        };
        let root = writer
            .store_tree(&Tree {
                nodes: vec![node.clone()],
            })
            .expect("store tree");
        (root, node)
    })
    .await
    .expect("join");
    let snapshot = session.commit(root, CommitDetails::default()).await.expect("commit").0;
    (snapshot, node)
}
