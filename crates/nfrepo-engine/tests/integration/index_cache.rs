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

// Issue 9, bugs 1 and 7: processes sharing one cache directory, and a
// damaged cache. (Each `Repository` handle below opens its own connection to
// the cache file, as separate processes do.)

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use nfrepo_engine::{CheckOptions, CommitDetails, GcOptions};
use nfrepo_format::{IndexId, Metadata, Node, NodeKind, Tree};

const HOUR: Duration = Duration::from_secs(3600);

/// Deletes snapshot `id` (a `forget` on another host).
async fn forget(store: &Arc<dyn Store>, id: nfrepo_format::SnapshotId) {
    let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex()).unwrap();
    store.delete(&key).await.unwrap();
}

/// Replaces every index delta by one compacted delta listing the packs in
/// reverse order, as another host's compaction may (pack order is not part
/// of the format): a rebuild then assigns the packs other numbers.
async fn compact_reversed(store: &Arc<dyn Store>, repo: &Repository) {
    let listed = store.list(ObjectKind::Index).await.unwrap();
    let mut packs = Vec::new();
    let mut old = Vec::new();
    for info in &listed {
        let id: IndexId = info.key.name().parse().unwrap();
        let bytes = store.get(&info.key).await.unwrap();
        packs.extend(
            IndexDelta::decode(&id, &bytes, repo.sealer(), &repo.id())
                .unwrap()
                .packs,
        );
        old.push(id);
    }
    packs.reverse();
    repo.write_index_delta(&IndexDelta { packs, supersedes: old })
        .await
        .unwrap();
    for info in listed {
        store.delete(&info.key).await.unwrap();
    }
}

/// Moves every GC plan two hours into the past (past the grace period).
async fn age_plans(memory: &MemoryStore) {
    for info in memory.list(ObjectKind::Gc).await.unwrap() {
        memory
            .set_last_modified(&info.key, SystemTime::now() - 2 * HOUR)
            .unwrap();
    }
}

/// Feeds `data` to `session` as file `f` and returns it with the root tree.
async fn feed(
    session: nfrepo_engine::BackupSession,
    data: Vec<u8>,
) -> (nfrepo_engine::BackupSession, nfrepo_format::BlobId) {
    tokio::task::spawn_blocking(move || {
        let stored = session.store_stream(&data[..], false).unwrap();
        let node = Node {
            name: b"f".to_vec(),
            kind: stored.file_kind(),
            meta: Metadata::default(),
        };
        let root = session.store_tree(&Tree { nodes: vec![node] }).unwrap();
        (session, root)
    })
    .await
    .unwrap()
}

async fn assert_check_clean(repo: &Repository) {
    let mut options = CheckOptions::default();
    options.merkle = true;
    let report = repo.check(&options).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// Issue 9, bug 1, deterministically: host A backs up, host B forgets and
/// plans, A starts a backup, a second process of A rebuilds the shared
/// cache (after a compaction on B), A then meets the planned data, B sweeps,
/// and A commits. The snapshot must restore and `check` must be clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_cache_rebuilt_by_another_process_never_maps_a_blob_to_another_pack() {
    let memory = MemoryStore::new();
    let store: Arc<dyn Store> = Arc::new(memory.clone());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let host_a = cached(store.clone(), &cache).await;
    let old = pseudo_random(600_000, 31);
    let kept = pseudo_random(600_000, 32);
    let (old_id, _) = backup_stream(&host_a, "old", "f", old.clone()).await.unwrap();
    backup_stream(&host_a, "kept", "f", kept.clone()).await.unwrap();
    // Host B (no shared cache) forgets `old` and plans its packs.
    let host_b = Repository::open(store.clone(), PASSWORD).await.unwrap();
    forget(&store, old_id).await;
    let planned = host_b.gc(&GcOptions::default().grace(HOUR)).await.unwrap();
    assert!(planned.planned.packs > 0, "{planned:?}");
    // Host A starts a backup: it has seen the plan.
    let session = host_a
        .begin_backup(BackupOptions::new("new", "stdin", "dump"))
        .await
        .unwrap();
    // A compaction elsewhere, then a second process of host A (`ls`)
    // rebuilds the cache the running backup reads.
    compact_reversed(&store, &host_b).await;
    let second_process = cached(store.clone(), &cache).await;
    second_process.load_index().await.unwrap();
    // The backup now meets the planned data: it must store it again.
    let (session, root) = feed(session, old.clone()).await;
    age_plans(&memory).await;
    let swept = host_b.gc(&GcOptions::default().grace(HOUR)).await.unwrap();
    assert!(swept.deleted.packs > 0, "host B deleted the planned packs: {swept:?}");
    let (new_id, _) = session.commit(root, CommitDetails::default()).await.unwrap();
    let fresh = cached(store.clone(), &cache).await;
    let reader = fresh.reader().await.unwrap();
    let entry = fresh.find_snapshot(&new_id.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), old);
    assert_check_clean(&host_b).await;
}

/// Issue 9, bug 1: the commit re-checks the packs it deduplicated against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_backup_whose_deduplicated_pack_vanished_fails_and_removes_its_marker() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let data = pseudo_random(500_000, 41);
    backup_stream(&repo, "a", "f", data.clone()).await.unwrap();
    let snapshots = store.list(ObjectKind::Snapshot).await.unwrap().len();
    let session = repo
        .begin_backup(BackupOptions::new("b", "stdin", "dump"))
        .await
        .unwrap();
    let (session, root) = feed(session, data).await;
    for info in store.list(ObjectKind::Data).await.unwrap() {
        store.delete(&info.key).await.unwrap();
    }
    let error = session.commit(root, CommitDetails::default()).await.unwrap_err();
    assert!(
        matches!(error, nfrepo_engine::Error::DedupPackMissing { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("deduplicated against are gone"), "{error}");
    assert_eq!(
        error.code(nfrepo_engine::Operation::Backup),
        nfrepo_engine::ErrorCode::BackupFailed
    );
    assert_eq!(
        store.list(ObjectKind::Snapshot).await.unwrap().len(),
        snapshots,
        "nothing committed"
    );
    assert!(
        store.list(ObjectKind::Session).await.unwrap().is_empty(),
        "the marker is removed"
    );
}

/// Issue 9, bug 1: readers in other processes never see a half-rebuilt cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_lookups_during_rebuilds_never_miss() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let (id, _) = backup_stream(&repo, "a", "f", pseudo_random(400_000, 51))
        .await
        .unwrap();
    backup_stream(&repo, "b", "f", pseudo_random(400_000, 52))
        .await
        .unwrap();
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    let node = reader.resolve(&entry, "f").await.unwrap().unwrap();
    let NodeKind::File { content, .. } = &node.kind else {
        panic!("a file")
    };
    let chunks: Vec<nfrepo_format::ListEntry> = futures::TryStreamExt::try_collect(reader.content_chunks(content))
        .await
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lookups = {
        let (done, index) = (done.clone(), reader.index().clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds == 0 {
                for chunk in &chunks {
                    assert!(index.get(&chunk.id).is_some(), "a lookup missed during a rebuild");
                }
                rounds += 1;
            }
            rounds
        })
    };
    let other = cached(store.clone(), &cache).await;
    for _ in 0..4 {
        compact_reversed(&store, &other).await;
        other.load_index().await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(lookups.join().unwrap() > 0);
    assert!(reader.index().cache_failure().is_none());
}

/// Issue 9, bug 7: a cache whose rows were tampered with (a wrong offset, a
/// wrong pack, a missing row) is distrusted, not blamed on the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_tampered_cache_is_rebuilt_and_the_restore_succeeds() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store.clone(), &cache).await;
    let data = pseudo_random(900_000, 61);
    let other = pseudo_random(300_000, 62);
    let (id, _) = backup_stream(&repo, "a", "f", data.clone()).await.unwrap();
    backup_stream(&repo, "b", "f", other).await.unwrap();
    repo.load_index().await.unwrap();
    let file = cache.path().join(format!("{}.sqlite", repo.id().to_hex()));
    {
        let conn = rusqlite::Connection::open(&file).unwrap();
        // Shift offsets, move rows to another pack, drop rows.
        conn.execute_batch(
            "UPDATE index_blobs SET offset = offset + 1 WHERE substr(id, 1, 1) < x'55';
             UPDATE index_blobs SET pack = (SELECT max(number) FROM index_packs)
                 WHERE substr(id, 1, 1) >= x'55' AND substr(id, 1, 1) < x'aa';
             DELETE FROM index_blobs WHERE substr(id, 1, 1) >= x'aa';",
        )
        .unwrap();
    }
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), data);
    // (Whether a tampered row or a missing one was met first, the read went
    // through `Index::recover`, which also emptied the cache.)
    // The next run rebuilt the cache and reads it without falling back.
    let reader = repo.reader().await.unwrap();
    assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), data);
    assert!(reader.index().cache_failure().is_none());
    assert_check_clean(&repo).await;
}

/// Issue 9, bug 1, randomised: several "processes" per cache directory back
/// up overlapping data while others reload (and so rebuild) the cache after
/// compactions, and another host forgets, plans and sweeps with no grace.
/// Every snapshot that committed must restore; `check` must be clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_randomised_processes_sharing_a_cache_lose_nothing() {
    let seed: u64 = std::env::var("NFREPO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!("NFREPO_TEST_SEED={seed}");
    let memory = MemoryStore::new();
    let store: Arc<dyn Store> = Arc::new(memory.clone());
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let gc_host = Repository::open(store.clone(), PASSWORD).await.unwrap();
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // A small pool of contents, so backups dedup against each other's packs.
    let pool: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(200_000, 70 + i)).collect();
    let mut committed: Vec<(nfrepo_format::SnapshotId, Vec<u8>)> = Vec::new();
    for round in 0..6 {
        let mut sessions = Vec::new();
        for w in 0..3 {
            let process = cached(store.clone(), &cache).await;
            let mut data = pool[usize::try_from(next() % 4).unwrap()].clone();
            data.extend(pseudo_random(50_000, 1000 * round + w));
            let session = process
                .begin_backup(BackupOptions::new(format!("w{w}"), "stdin", "dump"))
                .await
                .unwrap();
            sessions.push((process, session, data));
        }
        // Interleave: forget, plan, compaction, a reloading process, a sweep.
        let snapshots = gc_host.snapshots().await.unwrap();
        if snapshots.len() > 3 {
            let victim = &snapshots[usize::try_from(next()).unwrap() % snapshots.len()];
            forget(&store, victim.id).await;
            committed.retain(|(id, _)| *id != victim.id);
        }
        let mut options = GcOptions::default().grace(Duration::ZERO);
        options.compact_deltas = 2;
        gc_host.gc(&options).await.unwrap();
        let mut done = Vec::new();
        for (process, session, data) in sessions {
            if next() % 2 == 0 {
                compact_reversed(&store, &gc_host).await;
            }
            cached(store.clone(), &cache).await.load_index().await.unwrap();
            let (session, root) = feed(session, data.clone()).await;
            age_plans(&memory).await;
            gc_host.gc(&options).await.unwrap();
            match session.commit(root, CommitDetails::default()).await {
                Ok((id, _)) => done.push((id, data)),
                // A loud refusal is allowed; a silent loss is not.
                Err(e) => eprintln!("round {round}: a backup refused to commit: {e}"),
            }
            drop(process);
        }
        committed.extend(done);
    }
    let known: HashSet<_> = gc_host.snapshots().await.unwrap().into_iter().map(|e| e.id).collect();
    let reader = cached(store.clone(), &cache).await.reader().await.unwrap();
    for (id, data) in &committed {
        assert!(known.contains(id));
        let entry = gc_host.find_snapshot(&id.to_hex()).await.unwrap();
        assert!(
            read_file(&reader, &entry, "f").await.unwrap() == *data,
            "snapshot {id} (seed {seed})"
        );
    }
    assert!(committed.len() >= 6, "most backups commit (seed {seed})");
    assert_check_clean(&gc_host).await;
}

/// A read that started loading the index afresh (`Index::recover`) and was
/// then set aside (a list read buffered ahead in a content stream) must not
/// hold up the other reads that need that load: they drive it themselves.
#[tokio::test]
async fn an_index_recovery_started_by_a_read_set_aside_still_serves_the_others() {
    let faults = Arc::new(nfrepo_store::FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let cache = tempfile::tempdir().unwrap();
    init(store.clone()).await;
    let repo = cached(store, &cache).await;
    let data = pseudo_random(300_000, 63);
    let (id, _) = backup_stream(&repo, "a", "f", data.clone()).await.unwrap();
    let reader = repo.reader().await.unwrap();
    faults.add_rule(
        nfrepo_store::FaultRule::new(
            nfrepo_store::FaultOp::Get,
            nfrepo_store::Fault::Delay(std::time::Duration::from_millis(200)),
        )
        .kind(ObjectKind::Index),
    );
    let index = reader.index();
    let mut first = Box::pin(index.recover(&repo));
    assert!(futures::poll!(first.as_mut()).is_pending(), "the load is under way");
    tokio::time::timeout(std::time::Duration::from_secs(10), index.recover(&repo))
        .await
        .expect("the second recovery waited for the one set aside")
        .unwrap();
    first.await.unwrap();
    faults.clear();
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), data);
}
