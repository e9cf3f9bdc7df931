//! Snapshot headers come from the local object cache after one listing
//! (issue 14, item 7): only names not seen before are fetched, the cache
//! follows snapshots added and removed by other processes, and a damaged
//! entry is detected and fetched again.

use std::collections::BTreeSet;
use std::sync::Arc;

use nfrepo_engine::Repository;
use nfrepo_format::SnapshotId;
use nfrepo_store::{Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectCache, ObjectKind, SnapshotRow, Store};

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
    header_names(repo, dir)
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
    // Their decoded headers are dropped too: `snapshot_list` fetches them.
    let rows = objects.snapshots(false).unwrap();
    let a_bytes = rows.iter().find(|r| r.name == a.to_hex()).unwrap().bytes.clone();
    let mut flipped = a_bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let (a_name, b_name) = (a.to_hex(), b.to_hex());
    let tampered = |name, sealed| SnapshotRow {
        name,
        source: "db",
        profile: "dump",
        time_ns: 0,
        sealed,
        header: &[],
    };
    objects
        .update_snapshots(&[tampered(&a_name, &flipped), tampered(&b_name, &a_bytes)], &[], None)
        .unwrap();
    let pairs = |entries: &[nfrepo_engine::SnapshotEntry]| {
        entries.iter().map(|e| (e.id, e.snapshot.clone())).collect::<Vec<_>>()
    };
    assert_eq!(pairs(&repo.snapshot_list().await.unwrap()), pairs(&expected));
    objects
        .update_snapshots(&[tampered(&a_name, &flipped), tampered(&b_name, &a_bytes)], &[], None)
        .unwrap();
    assert_eq!(pairs(&repo.snapshots().await.unwrap()), pairs(&expected));
    // The entries hold the repository's bytes again, and their headers.
    for row in objects.snapshots(false).unwrap() {
        let key = nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, row.name).unwrap();
        assert_eq!(row.bytes, store.get(&key).await.unwrap().to_vec(), "{key}");
    }
    assert_eq!(pairs(&repo.snapshot_list().await.unwrap()), pairs(&expected));
}

/// Entries of the earlier layout (sealed bytes only) are opened and moved
/// to the new one, without fetching them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_the_earlier_layout_are_moved_over() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let (a, _) = backup_stream(&repo, "db", "a", vec![1; 1000]).await.unwrap();
    assert_eq!(ids(&repo).await, BTreeSet::from([a]));
    let objects = ObjectCache::open(cache.path(), &repo.id().to_hex()).unwrap();
    let sealed = objects.snapshots(false).unwrap().remove(0).bytes;
    objects.update_snapshots(&[], &[a.to_hex()], None).unwrap();
    objects
        .update(ObjectKind::Snapshot, &[(a.to_hex(), &sealed[..])], &[])
        .unwrap();
    faults
        .add_rule(FaultRule::new(FaultOp::Get, Fault::Fail(nfrepo_store::ErrorKind::Other)).kind(ObjectKind::Snapshot));
    assert_eq!(ids(&repo).await, BTreeSet::from([a]));
    assert!(objects.load(ObjectKind::Snapshot).unwrap().is_empty());
    assert_eq!(header_names(&repo, &cache), hexes(&BTreeSet::from([a])));
    assert_eq!(shown(&repo).await, BTreeSet::from([a]));
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

async fn shown(repo: &Repository) -> BTreeSet<SnapshotId> {
    repo.snapshot_list().await.unwrap().into_iter().map(|e| e.id).collect()
}

fn header_names(repo: &Repository, dir: &tempfile::TempDir) -> BTreeSet<String> {
    ObjectCache::open(dir.path(), &repo.id().to_hex())
        .unwrap()
        .snapshots(true)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect()
}
