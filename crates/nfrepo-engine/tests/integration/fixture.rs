//! A repository on a fresh in-memory store.

use std::sync::Arc;

use futures::TryStreamExt;
use nfrepo_engine::{BackupOptions, BackupSession, CommitDetails, InitOptions, Reader, Repository, SnapshotEntry};
use nfrepo_format::{BlobId, KdfParams, Metadata, Node, NodeKind, SnapshotId, Tree};
use nfrepo_store::{MemoryStore, Store};
pub use nfrepo_testing::pseudo_random;

pub const PASSWORD: &[u8] = b"test password";

pub fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

pub async fn init(store: Arc<dyn Store>) -> Repository {
    let mut options = InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    options.pack_size = 4 * 1024 * 1024;
    Repository::init(store, PASSWORD, options).await.expect("init")
}

/// Backs up `data` as the single file `name`; returns the snapshot id and summary.
pub async fn backup_stream(
    repo: &Repository,
    source: &str,
    name: &str,
    data: Vec<u8>,
) -> nfrepo_engine::Result<(SnapshotId, nfrepo_format::Snapshot)> {
    backup_stream_with(repo, BackupOptions::new(source, "stdin", "dump"), name, data).await
}

/// [`backup_stream`] with the session's options given.
pub async fn backup_stream_with(
    repo: &Repository,
    options: BackupOptions,
    name: &str,
    data: Vec<u8>,
) -> nfrepo_engine::Result<(SnapshotId, nfrepo_format::Snapshot)> {
    let session = repo.begin_backup(options).await?;
    let name = name.to_owned();
    let (session, root) = tokio::task::spawn_blocking(move || {
        let root = store_single_file(&session, &name, &data);
        (session, root)
    })
    .await
    .expect("join");
    match root {
        Ok(root) => session.commit(root, CommitDetails::default()).await,
        Err(e) => {
            session.abort().await;
            Err(e)
        }
    }
}

/// Stores `data` as the only file, `name`, of a root tree in `session`
/// (blocking: call it off the runtime); returns the root.
pub fn store_single_file(session: &BackupSession, name: &str, data: &[u8]) -> nfrepo_engine::Result<BlobId> {
    let stored = session.store_stream(data, true)?;
    let node = Node {
        name: name.as_bytes().to_vec(),
        kind: stored.file_kind(),
        meta: Metadata::default(),
    };
    session.store_tree(&Tree { nodes: vec![node] })
}

/// Streams `data` into `session` without making a file of it, as a backup
/// killed before its commit would have; returns the session.
pub async fn stream_uncommitted(session: BackupSession, data: Vec<u8>) -> BackupSession {
    tokio::task::spawn_blocking(move || {
        session.store_stream(&data[..], false).expect("store");
        session
    })
    .await
    .expect("join")
}

/// Reads the file `name` of a snapshot back.
pub async fn read_file(reader: &Reader, snapshot: &SnapshotEntry, name: &str) -> nfrepo_engine::Result<Vec<u8>> {
    let node = reader.resolve(snapshot, name).await?.expect("a file node");
    let NodeKind::File { content, .. } = &node.kind else {
        panic!("not a file")
    };
    let chunks: Vec<Vec<u8>> = reader.content(content).try_collect().await?;
    Ok(chunks.concat())
}
