//! Snapshot headers come from the local object cache after one listing
//! (issue 14, item 7): only names not seen before are fetched, the cache
//! follows snapshots added and removed by other processes, and a damaged
//! entry is detected and fetched again.

use std::collections::BTreeSet;
use std::sync::Arc;

use nfrepo_engine::Repository;
use nfrepo_format::SnapshotId;
use nfrepo_store::{Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectCache, ObjectKind, Store};

use super::fixture::{PASSWORD, backup_stream, init};

async fn cached(store: Arc<dyn Store>, dir: &tempfile::TempDir) -> Repository {
    Repository::open(store, PASSWORD)
        .await
        .unwrap()
        .with_index_cache(Some(dir.path().to_owned()))
}

async fn ids(repo: &Repository) -> BTreeSet<SnapshotId> {
    repo.snapshots().await.unwrap().into_iter().map(|e| e.id).collect()
}

fn cached_names(repo: &Repository, dir: &tempfile::TempDir) -> BTreeSet<String> {
    ObjectCache::open(dir.path(), &repo.id().to_hex())
        .unwrap()
        .load(ObjectKind::Snapshot)
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

fn hexes(ids: &BTreeSet<SnapshotId>) -> BTreeSet<String> {
    ids.iter().map(SnapshotId::to_hex).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_headers_are_read_from_the_cache_and_follow_other_processes() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let here = cached(store.clone(), &cache).await;
    let (a, _) = backup_stream(&here, "db", "a", vec![1; 1000]).await.unwrap();
    let (b, _) = backup_stream(&here, "db", "b", vec![2; 1000]).await.unwrap();
    assert_eq!(ids(&here).await, BTreeSet::from([a, b]));
    assert_eq!(cached_names(&here, &cache), hexes(&BTreeSet::from([a, b])));

    // Every snapshot it knows now comes from the cache: with snapshot
    // reads failing, the listing alone is enough.
    faults
        .add_rule(FaultRule::new(FaultOp::Get, Fault::Fail(nfrepo_store::ErrorKind::Other)).kind(ObjectKind::Snapshot));
    assert_eq!(ids(&here).await, BTreeSet::from([a, b]));
    faults.clear();

    // Another process (without a cache) adds one and forgets one: the new
    // name is fetched, the removed one leaves the cache.
    let elsewhere = Repository::open(store.clone(), PASSWORD).await.unwrap();
    let (c, _) = backup_stream(&elsewhere, "db", "c", vec![3; 1000]).await.unwrap();
    store
        .delete(&nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, a.to_hex()).unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&here).await, BTreeSet::from([b, c]));
    assert_eq!(cached_names(&here, &cache), hexes(&BTreeSet::from([b, c])));
    // A second process sharing the cache sees the same.
    let other = cached(store.clone(), &cache).await;
    assert_eq!(ids(&other).await, BTreeSet::from([b, c]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cache_entry_is_fetched_again_and_replaced() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let (a, _) = backup_stream(&repo, "db", "a", vec![1; 1000]).await.unwrap();
    let (b, _) = backup_stream(&repo, "db", "b", vec![2; 1000]).await.unwrap();
    let expected = repo.snapshots().await.unwrap();
    let objects = ObjectCache::open(cache.path(), &repo.id().to_hex()).unwrap();
    // Flip a byte of one entry, and replace another's bytes with a
    // different (valid) snapshot's: both must be caught by opening them.
    let rows = objects.load(ObjectKind::Snapshot).unwrap();
    let a_bytes = rows.iter().find(|(n, _)| *n == a.to_hex()).unwrap().1.clone();
    let mut flipped = a_bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    objects
        .update(
            ObjectKind::Snapshot,
            &[(a.to_hex(), &flipped[..]), (b.to_hex(), &a_bytes[..])],
            &[],
        )
        .unwrap();
    let again = repo.snapshots().await.unwrap();
    assert_eq!(
        again.iter().map(|e| (e.id, e.snapshot.clone())).collect::<Vec<_>>(),
        expected.iter().map(|e| (e.id, e.snapshot.clone())).collect::<Vec<_>>()
    );
    // The entries hold the repository's bytes again.
    for (name, bytes) in objects.load(ObjectKind::Snapshot).unwrap() {
        let key = nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, name).unwrap();
        assert_eq!(bytes, store.get(&key).await.unwrap().to_vec(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_file_that_is_not_a_database_is_replaced() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let (a, _) = backup_stream(&repo, "db", "a", vec![1; 1000]).await.unwrap();
    let path = cache.path().join(format!("{}.objects.sqlite", repo.id().to_hex()));
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::write(&path, vec![0x55; 8192]).unwrap();
    assert_eq!(ids(&repo).await, BTreeSet::from([a]));
    assert_eq!(cached_names(&repo, &cache), hexes(&BTreeSet::from([a])));
}
