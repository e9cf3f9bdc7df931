//! Trees read alone come out of blocks of their tree pack (issue 14): a
//! walk of many directories costs a request per block, not per directory,
//! and every tree is still opened and checked.

use std::sync::Arc;

use nfrepo_engine::{BackupOptions, CommitDetails};
use nfrepo_format::{Metadata, Node, NodeKind, Tree};
use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, Store};

use super::fixture::init;

/// A root of `dirs` directories, each holding one empty directory of its
/// own name (so every tree differs), stored in one session.
async fn many_directories(repo: &nfrepo_engine::Repository, dirs: usize) -> Vec<nfrepo_format::BlobId> {
    let session = repo
        .begin_backup(BackupOptions::new("tree", "files", "files"))
        .await
        .unwrap();
    let (session, root, leaves) = tokio::task::spawn_blocking(move || {
        let dir = |name: String, tree| Node {
            name: name.into_bytes(),
            kind: NodeKind::Dir { tree },
            meta: Metadata::default(),
        };
        let empty = session.store_tree(&Tree { nodes: Vec::new() }).unwrap();
        let mut leaves = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..dirs {
            let name = format!("dir-{i:05}");
            let leaf = session
                .store_tree(&Tree {
                    nodes: vec![dir(name.clone(), empty)],
                })
                .unwrap();
            leaves.push(leaf);
            nodes.push(dir(name, leaf));
        }
        let root = session.store_tree(&Tree { nodes }).unwrap();
        (session, root, leaves)
    })
    .await
    .unwrap();
    session.commit(root, CommitDetails::default()).await.unwrap();
    leaves
}

#[tokio::test]
async fn a_walk_of_many_directories_reads_their_tree_pack_a_block_at_a_time() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store).await;
    let leaves = many_directories(&repo, 400).await;
    let reader = repo.reader().await.unwrap();
    // 400 trees of well under 1 KiB sealed: one tree pack, less than a
    // block of it. The second read of a tree pack fails.
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::Unreachable))
            .kind(ObjectKind::Tree)
            .after(1),
    );
    for (i, leaf) in leaves.iter().enumerate() {
        let tree = reader.tree(leaf).await.unwrap();
        assert_eq!(tree.nodes.len(), 1);
        assert_eq!(tree.nodes[0].name, format!("dir-{i:05}").into_bytes());
    }
    // Read in the opposite order to the one they were sealed in (as a walk
    // meets trees a backup stored children first), by a fresh reader: one
    // request again.
    faults.clear();
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::Unreachable))
            .kind(ObjectKind::Tree)
            .after(1),
    );
    let reader = repo.reader().await.unwrap();
    for (i, leaf) in leaves.iter().enumerate().rev() {
        let tree = reader.tree(leaf).await.unwrap();
        assert_eq!(tree.nodes[0].name, format!("dir-{i:05}").into_bytes());
    }
}

#[tokio::test]
async fn a_tree_damaged_in_its_block_is_named_and_the_others_still_read() {
    let repo = init(Arc::new(MemoryStore::new())).await;
    let leaves = many_directories(&repo, 50).await;
    let reader = repo.reader().await.unwrap();
    let damaged = leaves[20];
    let location = reader.locate(&damaged).unwrap();
    let key = nfrepo_store::ObjectKey::new(ObjectKind::Tree, location.pack.to_hex()).unwrap();
    let mut pack = repo.store().get(&key).await.unwrap().to_vec();
    pack[location.offset as usize + 8] ^= 0x40;
    repo.store().delete(&key).await.unwrap();
    repo.store()
        .put(&key, pack.into(), nfrepo_store::PutMode::CreateNew)
        .await
        .unwrap();
    let reader = repo.reader().await.unwrap();
    for leaf in &leaves {
        let read = reader.tree(leaf).await;
        if *leaf == damaged {
            let error = read.unwrap_err();
            let text = error.to_string();
            assert!(
                matches!(error, nfrepo_engine::Error::Corrupted { .. }) && text.contains(&damaged.to_string()),
                "{error:?}"
            );
        } else {
            assert!(read.is_ok(), "{leaf}: {read:?}");
        }
    }
}

// A read that started fetching a block and was then set aside (a list read
// buffered ahead in a content stream while an inner list is read, or a
// restore's planner waiting to hand over its batch) must not hold up the
// other reads of that block: a restore of a 964 MB dump waited for itself
// this way, for ever.
#[tokio::test]
async fn a_block_fetch_started_by_a_read_set_aside_still_serves_the_others() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store).await;
    let leaves = many_directories(&repo, 50).await;
    let reader = repo.reader().await.unwrap();
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::Delay(std::time::Duration::from_millis(200))).kind(ObjectKind::Tree),
    );
    let mut first = Box::pin(reader.tree(&leaves[0]));
    assert!(
        futures::poll!(first.as_mut()).is_pending(),
        "the block's fetch is under way"
    );
    let second = tokio::time::timeout(std::time::Duration::from_secs(10), reader.tree(&leaves[1]))
        .await
        .expect("the second read waited for the one set aside")
        .unwrap();
    assert_eq!(second.nodes[0].name, b"dir-00001");
    assert_eq!(first.await.unwrap().nodes[0].name, b"dir-00000");
}
