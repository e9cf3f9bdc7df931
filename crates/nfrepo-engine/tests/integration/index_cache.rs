//! The local index cache answers like the in-memory index, picks up deltas
//! written by other runs, and is rebuilt when a delta it holds goes away.

use std::sync::Arc;

use nfrepo_engine::{BackupOptions, Repository};
use nfrepo_format::IndexDelta;
use nfrepo_store::{MemoryStore, ObjectKey, ObjectKind, Store};

use super::fixture::{PASSWORD, backup_stream, init, pseudo_random, read_file};

async fn cached(store: Arc<dyn Store>, dir: &tempfile::TempDir) -> Repository {
    Repository::open(store, PASSWORD)
        .await
        .unwrap()
        .with_index_cache(Some(dir.path().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_index_dedups_and_restores_like_the_in_memory_one() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    let repo = init(store.clone())
        .await
        .with_index_cache(Some(cache.path().to_owned()));
    let data = pseudo_random(3_000_000, 21);
    let (_, first) = backup_stream(&repo, "a", "x", data.clone()).await.unwrap();
    assert!(first.summary.blobs_added > 10);
    let (id, second) = backup_stream(&repo, "a", "x", data.clone()).await.unwrap();
    assert_eq!(second.summary.blobs_added, 0, "{:?}", second.summary);
    let index = repo.load_index().await.unwrap();
    let in_memory = Repository::open(store, PASSWORD)
        .await
        .unwrap()
        .load_index()
        .await
        .unwrap();
    assert_eq!(index.len(), in_memory.len());
    assert_eq!(index.packs().count(), in_memory.packs().count());
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "x").await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_index_picks_up_deltas_written_elsewhere() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let here = cached(store.clone(), &cache).await;
    backup_stream(&here, "a", "x", pseudo_random(1_000_000, 1))
        .await
        .unwrap();
    // Another host (no cache) adds data; this one must see it.
    let elsewhere = Repository::open(store.clone(), PASSWORD).await.unwrap();
    let data = pseudo_random(1_000_000, 2);
    let (id, _) = backup_stream(&elsewhere, "b", "y", data.clone()).await.unwrap();
    let reader = here.reader().await.unwrap();
    let entry = here.find_snapshot(&id.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "y").await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_superseded_delta_rebuilds_the_cache() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let kept = pseudo_random(800_000, 3);
    let (kept_id, _) = backup_stream(&repo, "a", "kept", kept.clone()).await.unwrap();
    let deltas_before = store.list(ObjectKind::Index).await.unwrap();
    let (_, _) = backup_stream(&repo, "b", "dropped", pseudo_random(800_000, 4))
        .await
        .unwrap();
    let before = repo.load_index().await.unwrap();
    // Compaction: one delta supersedes the first; then a delta disappears.
    let first = &deltas_before[0];
    let first_id = first.key.name().parse().unwrap();
    let bytes = store.get(&first.key).await.unwrap();
    let decoded = IndexDelta::decode(&first_id, &bytes, repo.sealer(), &repo.id()).unwrap();
    let compacted = IndexDelta {
        packs: decoded.packs,
        supersedes: vec![first_id],
    };
    repo.write_index_delta(&compacted).await.unwrap();
    store.delete(&first.key).await.unwrap();
    let after = repo.load_index().await.unwrap();
    assert_eq!(after.len(), before.len(), "a compaction loses nothing");
    // Removing the second session's delta must drop its blobs from the cache.
    let second: Vec<ObjectKey> = store
        .list(ObjectKind::Index)
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.key)
        .collect();
    for key in &second {
        let id = key.name().parse().unwrap();
        let bytes = store.get(key).await.unwrap();
        if IndexDelta::decode(&id, &bytes, repo.sealer(), &repo.id())
            .unwrap()
            .supersedes
            .is_empty()
        {
            store.delete(key).await.unwrap();
        }
    }
    let pruned = repo.load_index().await.unwrap();
    assert!(pruned.len() < after.len(), "{} vs {}", pruned.len(), after.len());
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&kept_id.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "kept").await.unwrap(), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_session_still_dedups_after_its_claims_are_indexed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let mut options = BackupOptions::new("db", "stdin", "dump");
    options.index_flush_blobs = 32;
    let part = pseudo_random(12 * 1024 * 1024, 5);
    let doubled = [part.clone(), part].concat();
    let session = repo.begin_backup(options).await.unwrap();
    let input = doubled.clone();
    let (session, stored) = tokio::task::spawn_blocking(move || {
        let stored = session.store_stream(&input[..], false).unwrap();
        (session, stored)
    })
    .await
    .unwrap();
    let progress = session.progress();
    // The second half repeats the first: nearly nothing new past 12 MiB.
    assert!(
        progress.bytes_added_raw < 13 * 1024 * 1024,
        "added {} of {}",
        progress.bytes_added_raw,
        stored.size
    );
    session.abort().await;
    assert!(
        store.list(ObjectKind::Index).await.unwrap().len() >= 2,
        "deltas were written mid-session"
    );
}
