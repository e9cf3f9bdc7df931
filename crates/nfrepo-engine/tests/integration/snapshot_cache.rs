//! Snapshot headers come from the local object cache after one listing
//! (issue 14, item 7): only names not seen before are fetched, the cache
//! follows snapshots added and removed by other processes, and a damaged
//! entry is detected and fetched again.

use std::collections::BTreeSet;
use std::sync::Arc;

use nfrepo_engine::Repository;
use nfrepo_format::SnapshotId;
use nfrepo_store::{Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectCache, ObjectKind, SnapshotRow, Store};

use super::fixture::{PASSWORD, backup_stream, init, pseudo_random};

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

/// Fails every listing of `kinds`: a run that lists one of them fails.
fn no_listing(faults: &FaultStore<MemoryStore>, kinds: &[ObjectKind]) {
    for kind in kinds {
        faults.add_rule(FaultRule::new(FaultOp::List, Fault::Fail(nfrepo_store::ErrorKind::Other)).kind(*kind));
    }
}

/// Issue 14 item 7: after a full start, a backup takes its parent from the
/// cache and the index as the cache holds it, listing neither the
/// snapshots nor the index deltas, and picks the snapshot it just committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_lists_neither_snapshots_nor_deltas_after_a_full_start() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let host = cached(store.clone(), &cache).await;
    let data = pseudo_random(300_000, 7);
    let (a, _) = backup_stream(&host, "db", "x", data.clone()).await.unwrap();
    no_listing(&faults, &[ObjectKind::Snapshot, ObjectKind::Index]);
    let (b, snapshot) = backup_stream(&host, "db", "x", data.clone()).await.unwrap();
    assert_eq!(snapshot.parent, Some(a));
    assert_eq!(snapshot.summary.blobs_added, 0, "deduplicated through the cached index");
    let (_, snapshot) = backup_stream(&host, "db", "x", data).await.unwrap();
    assert_eq!(snapshot.parent, Some(b), "its own last commit, from the cache");
    // Another source has no snapshot the host knows of: no parent.
    let (_, other) = backup_stream(&host, "web", "x", vec![5; 100]).await.unwrap();
    assert_eq!(other.parent, None);
}

/// A snapshot another host writes after this host's cache was filled is
/// listed by `snapshot_list`, which brings the cache up to date, and is
/// then the parent of this host's next backup of the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_hosts_snapshot_is_listed_and_then_picked_as_parent() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (here_dir, there_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    init(store.clone()).await;
    let here = cached(store.clone(), &here_dir).await;
    let there = cached(store.clone(), &there_dir).await;
    let (a, _) = backup_stream(&here, "db", "x", vec![1; 1000]).await.unwrap();
    assert_eq!(shown(&here).await, BTreeSet::from([a]));
    let (b, snapshot) = backup_stream(&there, "db", "x", vec![2; 1000]).await.unwrap();
    assert_eq!(snapshot.parent, Some(a), "the other host's first run lists");
    assert_eq!(shown(&here).await, BTreeSet::from([a, b]));
    let (_, snapshot) = backup_stream(&here, "db", "x", vec![3; 1000]).await.unwrap();
    assert_eq!(snapshot.parent, Some(b));
}

/// A parent written by another host since this host last listed the
/// index deltas may refer to blobs its index cache lacks: the backup then
/// lists the deltas rather than trusting the cache as it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_newer_than_the_cached_index_makes_the_backup_list_the_deltas() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let (here_dir, there_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    init(store.clone()).await;
    let here = cached(store.clone(), &here_dir).await;
    let there = cached(store.clone(), &there_dir).await;
    // (Seeds apart by more than one: `pseudo_random` sets the low bit.)
    backup_stream(&here, "db", "x", pseudo_random(100_000, 10))
        .await
        .unwrap();
    backup_stream(&here, "db", "x", pseudo_random(100_000, 20))
        .await
        .unwrap();
    let (b, _) = backup_stream(&there, "db", "x", pseudo_random(100_000, 30))
        .await
        .unwrap();
    assert!(shown(&here).await.contains(&b));
    no_listing(&faults, &[ObjectKind::Index]);
    backup_stream(&here, "db", "x", pseudo_random(100_000, 40))
        .await
        .expect_err("the parent's root is not in the cached index: the deltas are listed");
    faults.clear();
    let (_, snapshot) = backup_stream(&here, "db", "x", pseudo_random(100_000, 40))
        .await
        .unwrap();
    assert_eq!(snapshot.parent, Some(b));
}

/// A forgotten snapshot leaves `snapshot_list` and the cache, and is not
/// taken as parent, whether the cache still named it or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_snapshot_disappears_and_is_not_a_parent() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let host = cached(store.clone(), &cache).await;
    let (a, _) = backup_stream(&host, "db", "x", vec![1; 1000]).await.unwrap();
    let (b, _) = backup_stream(&host, "db", "x", vec![2; 1000]).await.unwrap();
    let delete = |id: SnapshotId| {
        let store = store.clone();
        async move {
            store
                .delete(&nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, id.to_hex()).unwrap())
                .await
                .unwrap();
        }
    };
    // Gone while the cache still names it: the backup finds out fetching it.
    delete(b).await;
    let (c, snapshot) = backup_stream(&host, "db", "x", vec![3; 1000]).await.unwrap();
    assert_eq!(snapshot.parent, Some(a));
    // Gone and listed: it leaves the list and the cache.
    delete(c).await;
    assert_eq!(shown(&host).await, BTreeSet::from([a]));
    assert_eq!(header_names(&host, &cache), hexes(&BTreeSet::from([a])));
    let (_, snapshot) = backup_stream(&host, "db", "x", vec![4; 1000]).await.unwrap();
    assert_eq!(snapshot.parent, Some(a));
}

/// Processes of one host sharing a cache directory back up at once: each
/// sees every snapshot, and each next backup picks its source's latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_sharing_one_cache_directory() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let hosts = [
        cached(store.clone(), &cache).await,
        cached(store.clone(), &cache).await,
        cached(store.clone(), &cache).await,
    ];
    let mut last: std::collections::HashMap<String, SnapshotId> = std::collections::HashMap::new();
    for round in 0u8..4 {
        let runs = hosts.iter().enumerate().map(|(i, host)| async move {
            let source = format!("s{i}");
            let data = vec![round.wrapping_mul(7).wrapping_add(u8::try_from(i).unwrap()); 2000];
            let (id, snapshot) = backup_stream(host, &source, "x", data).await.unwrap();
            (source, id, snapshot.parent)
        });
        for (source, id, parent) in futures::future::join_all(runs).await {
            assert_eq!(parent, last.get(&source).copied(), "{source} round {round}");
            last.insert(source, id);
        }
    }
    let everything = ids(&hosts[0]).await;
    assert_eq!(everything.len(), 12);
    for host in &hosts {
        assert_eq!(shown(host).await, everything);
    }
    assert_eq!(header_names(&hosts[1], &cache), hexes(&everything));
}

/// A GC plan written since the host last listed the index deltas makes
/// the next backup list them (a swept pack must not be deduplicated
/// against from a stale cache); with the same plans it lists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_gc_plan_makes_the_next_backup_list_the_deltas() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let host = cached(store.clone(), &cache).await;
    let (doomed, _) = backup_stream(&host, "old", "x", pseudo_random(200_000, 3))
        .await
        .unwrap();
    backup_stream(&host, "db", "x", vec![1; 1000]).await.unwrap();
    no_listing(&faults, &[ObjectKind::Index]);
    backup_stream(&host, "db", "x", vec![2; 1000]).await.unwrap();
    faults.clear();
    // Elsewhere, a snapshot goes and GC plans its packs.
    store
        .delete(&nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, doomed.to_hex()).unwrap())
        .await
        .unwrap();
    let maintainer = Repository::open(store.clone(), PASSWORD).await.unwrap();
    let report = maintainer
        .gc(&nfrepo_engine::GcOptions::default().grace(std::time::Duration::ZERO))
        .await
        .unwrap();
    assert!(report.new_plan.is_some(), "{report:?}");
    no_listing(&faults, &[ObjectKind::Index]);
    backup_stream(&host, "db", "x", vec![3; 1000])
        .await
        .expect_err("a new plan: the deltas are listed");
    faults.clear();
    backup_stream(&host, "db", "x", vec![4; 1000]).await.unwrap();
    no_listing(&faults, &[ObjectKind::Index]);
    backup_stream(&host, "db", "x", vec![5; 1000]).await.unwrap();
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
