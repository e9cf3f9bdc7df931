//! GC's two phases on a fake clock: objects are backdated in a MemoryStore
//! instead of waiting for grace periods and session expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nfrepo_engine::{BackupOptions, CommitDetails, Error, GcOptions, Repository};
use nfrepo_format::SnapshotId;
use nfrepo_store::{MemoryStore, ObjectKey, ObjectKind, Store};

use super::fixture::{backup_stream, init, pseudo_random, read_file, store_single_file, stream_uncommitted};

pub(super) const HOUR: Duration = Duration::from_secs(3600);

async fn repo_on_memory() -> (MemoryStore, Repository) {
    let memory = MemoryStore::new();
    let repo = init(Arc::new(memory.clone())).await;
    (memory, repo)
}

/// Moves every object of `kind` `by` into the past.
pub(super) async fn age(memory: &MemoryStore, kind: ObjectKind, by: Duration) {
    for info in memory.list(kind).await.unwrap() {
        memory.set_last_modified(&info.key, SystemTime::now() - by).unwrap();
    }
}

async fn forget_snapshot(repo: &Repository, id: SnapshotId) {
    let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex()).unwrap();
    repo.store().delete(&key).await.unwrap();
}

fn options() -> GcOptions {
    GcOptions::default().grace(HOUR)
}

/// Every pack the index names exists, and every snapshot reads back as `expected`.
async fn assert_intact(repo: &Repository, expected: &[(SnapshotId, &[u8])]) {
    let reader = repo.reader().await.unwrap();
    for (pack, kind, _) in reader.index().packs() {
        let object = match kind {
            nfrepo_format::PackKind::Tree => ObjectKind::Tree,
            _ => ObjectKind::Data,
        };
        let key = ObjectKey::new(object, pack.to_hex()).unwrap();
        repo.store()
            .stat(&key)
            .await
            .unwrap_or_else(|e| panic!("indexed pack {pack} is gone: {e}"));
    }
    for (id, data) in expected {
        let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
        assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), *data, "snapshot {id}");
    }
}

async fn data_packs(memory: &MemoryStore) -> usize {
    memory.list(ObjectKind::Data).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_packs_are_planned_then_deleted_after_the_grace_period() {
    let (memory, repo) = repo_on_memory().await;
    let a = pseudo_random(9 << 20, 1);
    let b = pseudo_random(3 << 20, 2);
    let (a_id, _) = backup_stream(&repo, "a", "f", a).await.unwrap();
    let (b_id, _) = backup_stream(&repo, "b", "f", b.clone()).await.unwrap();
    let before = data_packs(&memory).await;
    forget_snapshot(&repo, a_id).await;

    let first = repo.gc(&options()).await.unwrap();
    assert!(first.planned.packs >= 2, "{first:?}");
    assert_eq!(first.deleted.packs, 0);
    assert!(first.new_plan.is_some());
    assert_eq!(data_packs(&memory).await, before, "phase 1 deletes nothing");

    let second = repo.gc(&options()).await.unwrap();
    assert_eq!(second.planned.packs, 0, "already planned");
    assert_eq!(second.deleted.packs, 0);
    assert!(
        second.waiting.keys().any(|k| k.starts_with("grace period ends in")),
        "{second:?}"
    );
    assert_eq!(second.reclaimable_later(), first.planned.bytes);

    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let dry = repo.gc(&options().dry_run(true)).await.unwrap();
    assert_eq!(dry.deleted, first.planned);
    assert_eq!(data_packs(&memory).await, before, "a dry run deletes nothing");

    let third = repo.gc(&options()).await.unwrap();
    assert_eq!(third.deleted, first.planned, "{third:?}");
    assert_eq!(third.plans_removed, 1);
    assert_eq!(third.deltas_after, 1, "index rewritten into one delta");
    assert!(data_packs(&memory).await < before);
    assert!(memory.list(ObjectKind::Gc).await.unwrap().is_empty());
    assert!(
        memory.list(ObjectKind::Lease).await.unwrap().is_empty(),
        "lease released"
    );
    assert_intact(&repo, &[(b_id, &b)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_referenced_packs_are_unmarked() {
    let (memory, repo) = repo_on_memory().await;
    let a = pseudo_random(5 << 20, 3);
    let (a_id, _) = backup_stream(&repo, "a", "f", a.clone()).await.unwrap();
    // Started before the plan, so it deduplicates against the soon-planned packs.
    let early = repo
        .begin_backup(BackupOptions::new("a2", "stdin", "dump"))
        .await
        .unwrap();
    forget_snapshot(&repo, a_id).await;
    let planned = repo.gc(&options()).await.unwrap().planned;
    assert!(planned.packs > 0);
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let blocked = repo.gc(&options()).await.unwrap();
    assert_eq!(blocked.deleted.packs, 0);
    assert!(
        blocked.waiting.keys().any(|k| k.contains("started before the plan")),
        "{blocked:?}"
    );
    let (again, snapshot) = store_file(early, a.clone()).await.await;
    assert_eq!(snapshot.summary.blobs_added, 0);
    let report = repo.gc(&options()).await.unwrap();
    assert_eq!(report.deleted.packs, 0, "{report:?}");
    assert_eq!(report.plans_removed, 1);
    assert_eq!(report.unmarked, planned);
    assert_intact(&repo, &[(again, &a)]).await;
}

/// The hazard: a backup that deduplicates against a blob in a planned pack.
/// A backup started *after* the plan never does (it stores the blob again),
/// so GC may delete the pack while it runs; one started *before* blocks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_never_lose_blobs_of_planned_packs() {
    let (memory, repo) = repo_on_memory().await;
    let data = pseudo_random(6 << 20, 4);
    let (old, _) = backup_stream(&repo, "db", "f", data.clone()).await.unwrap();
    // Started before the plan: it may dedup against everything.
    // (Another source: a backup of "db" would name the old snapshot as its
    // parent, and GC keeps a live session's parent, planned or not.)
    let early = repo
        .begin_backup(BackupOptions::new("db-early", "stdin", "dump"))
        .await
        .unwrap();
    forget_snapshot(&repo, old).await;
    repo.gc(&options()).await.unwrap();
    // Started after the plan: must not dedup against planned packs.
    let late = repo
        .begin_backup(BackupOptions::new("db2", "stdin", "dump"))
        .await
        .unwrap();
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;

    let blocked = repo.gc(&options()).await.unwrap();
    assert_eq!(blocked.deleted.packs, 0, "the early session blocks: {blocked:?}");

    let early_root = store_file(early, data.clone()).await;
    let (early_id, early_snapshot) = early_root.await;
    assert_eq!(early_snapshot.summary.blobs_added, 0, "the early backup deduplicated");

    let late_result = store_file(late, data.clone()).await;
    // The early snapshot references the planned packs again: nothing to delete yet.
    let report = repo.gc(&options()).await.unwrap();
    assert_eq!(report.deleted.packs, 0, "{report:?}");
    let (late_id, late_snapshot) = late_result.await;
    assert!(
        late_snapshot.summary.blobs_added > 0,
        "the late backup stored the planned blobs again"
    );
    assert_intact(&repo, &[(early_id, &data), (late_id, &data)]).await;
}

/// A planned pack whose blobs a later backup stored again goes, even though
/// a snapshot still names those blobs: the new copies serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_packs_with_copies_elsewhere_are_deleted() {
    let (memory, repo) = repo_on_memory().await;
    let data = pseudo_random(6 << 20, 14);
    let (old, _) = backup_stream(&repo, "db", "f", data.clone()).await.unwrap();
    let early = repo
        .begin_backup(BackupOptions::new("db-early", "stdin", "dump"))
        .await
        .unwrap();
    forget_snapshot(&repo, old).await;
    let planned = repo.gc(&options()).await.unwrap().planned;
    let (early_id, _) = store_file(early, data.clone()).await.await;
    let (late_id, late) = backup_stream(&repo, "db-late", "f", data.clone()).await.unwrap();
    assert!(late.summary.blobs_added > 0);
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let report = repo.gc(&options()).await.unwrap();
    assert_eq!(report.deleted, planned, "{report:?}");
    assert_intact(&repo, &[(early_id, &data), (late_id, &data)]).await;
}

/// Stores `data` as file `f` in `session` and returns a future that commits it.
async fn store_file(
    session: nfrepo_engine::BackupSession,
    data: Vec<u8>,
) -> impl std::future::Future<Output = (SnapshotId, nfrepo_format::Snapshot)> {
    let (session, root) = tokio::task::spawn_blocking(move || {
        let root = store_single_file(&session, "f", &data).unwrap();
        (session, root)
    })
    .await
    .unwrap();
    async move { session.commit(root, CommitDetails::default()).await.unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_sessions_stop_blocking_after_they_expire() {
    let (memory, repo) = repo_on_memory().await;
    let (old, _) = backup_stream(&repo, "a", "f", pseudo_random(5 << 20, 5)).await.unwrap();
    let crashed = repo
        .begin_backup(BackupOptions::new("b", "stdin", "dump"))
        .await
        .unwrap();
    // A crash: no commit, no abort, no drop (which would delete the marker),
    // and a process that is still running (this one), so only the expiry ends it.
    std::mem::forget(crashed);
    forget_snapshot(&repo, old).await;
    repo.gc(&options()).await.unwrap();
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let blocked = repo.gc(&options()).await.unwrap();
    assert_eq!(blocked.deleted.packs, 0);
    assert_eq!(blocked.live_sessions, 1);
    age(&memory, ObjectKind::Session, nfrepo_engine::SESSION_EXPIRY + HOUR).await;
    let report = repo.gc(&options()).await.unwrap();
    assert!(report.deleted.packs > 0, "{report:?}");
    assert_eq!(report.expired_sessions_removed, 1);
    assert!(memory.list(ObjectKind::Session).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unindexed_packs_are_collected_only_when_old() {
    let (memory, repo) = repo_on_memory().await;
    let keep = pseudo_random(1 << 20, 6);
    let (keep_id, _) = backup_stream(&repo, "k", "f", keep.clone()).await.unwrap();
    let session = repo
        .begin_backup(BackupOptions::new("x", "stdin", "dump"))
        .await
        .unwrap();
    let session = stream_uncommitted(session, pseudo_random(9 << 20, 7)).await;
    session.abort().await;
    let young = repo.gc(&options()).await.unwrap();
    assert_eq!(
        young.planned.packs, 0,
        "young orphans may belong to a running backup: {young:?}"
    );
    age(&memory, ObjectKind::Data, 2 * HOUR).await;
    let planned = repo.gc(&options()).await.unwrap().planned;
    assert!(planned.packs >= 1, "the aborted run uploaded full packs");
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let report = repo.gc(&options()).await.unwrap();
    assert_eq!(report.deleted, planned);
    assert_intact(&repo, &[(keep_id, &keep)]).await;
    // A backup after that stores everything it needs afresh and restores.
    let (again, _) = backup_stream(&repo, "k", "f", keep.clone()).await.unwrap();
    assert_intact(&repo, &[(again, &keep)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gc_waits_for_the_lease_and_takes_over_an_expired_one() {
    let (memory, repo) = repo_on_memory().await;
    backup_stream(&repo, "a", "f", pseudo_random(100_000, 8)).await.unwrap();
    // A crashed GC's lease.
    let key = ObjectKey::new(ObjectKind::Lease, "gc-00000000000000000007").unwrap();
    let lease = nfrepo_format::Lease {
        generation: 7,
        holder: [1; 32],
        hostname: "other".into(),
        pid: 1,
        acquired_ns: 0,
        ttl_secs: 3600,
        ..Default::default()
    };
    let bytes = lease.encode(repo.sealer(), &repo.id()).unwrap();
    memory
        .put(&key, bytes.into(), nfrepo_store::PutMode::CreateNew)
        .await
        .unwrap();
    let err = repo.gc(&options()).await.unwrap_err();
    assert!(matches!(err, nfrepo_engine::Error::LeaseHeld(_)), "{err}");
    assert_eq!(err.detail_code(), Some("GC_LEASE_HELD"));
    // A dry run needs no lease.
    repo.gc(&options().dry_run(true)).await.unwrap();
    memory.set_last_modified(&key, SystemTime::now() - 2 * HOUR).unwrap();
    repo.gc(&options()).await.unwrap();
    assert!(memory.list(ObjectKind::Lease).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mostly_unused_packs_are_repacked_then_deleted() {
    let (memory, repo) = repo_on_memory().await;
    let kept = pseudo_random(1 << 20, 21);
    let gone = pseudo_random(2 << 20, 23);
    let (both, _) = backup_stream(&repo, "a", "f", [kept.clone(), gone].concat())
        .await
        .unwrap();
    let (only_kept, _) = backup_stream(&repo, "b", "f", kept.clone()).await.unwrap();
    forget_snapshot(&repo, both).await;
    let dry = repo.gc(&options().dry_run(true)).await.unwrap();
    // The shared data pack is two-thirds unused; the first snapshot's tree pack
    // may be too, when its content lists share a list blob with the second's.
    assert!((1..=2).contains(&dry.repacked.packs), "{dry:?}");
    assert!(dry.repacked.bytes > 3_000_000, "{dry:?}");
    assert_eq!(dry.repack_copied_blobs, 0, "a dry run copies nothing");

    let report = repo.gc(&options()).await.unwrap();
    assert_eq!(report.repacked, dry.repacked);
    assert!(report.repack_copied_blobs > 10, "{report:?}");
    assert!(report.repack_written_bytes < report.repacked.bytes / 2, "{report:?}");
    assert_intact(&repo, &[(only_kept, &kept)]).await;
    let before = data_packs(&memory).await;
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let swept = repo.gc(&options()).await.unwrap();
    assert!(swept.deleted.packs >= 1, "{swept:?}");
    assert_eq!(data_packs(&memory).await, before - 1, "the old data pack is gone");
    assert_intact(&repo, &[(only_kept, &kept)]).await;
}

/// A running backup reuses its parent's tree without looking blobs up, so
/// GC keeps the parent's blobs while the backup lives, even after the parent
/// is forgotten and its packs are in a plan the backup has seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_backup_keeps_its_parents_blobs() {
    let (memory, repo) = repo_on_memory().await;
    let data = pseudo_random(5 << 20, 31);
    let (old, _) = backup_stream(&repo, "other", "f", data.clone()).await.unwrap();
    // Started before the plan: it will commit a snapshot using the old packs.
    let early = repo
        .begin_backup(BackupOptions::new("db", "stdin", "dump"))
        .await
        .unwrap();
    forget_snapshot(&repo, old).await;
    let planned = repo.gc(&options()).await.unwrap().planned;
    assert!(planned.packs > 0);
    let (parent, _) = store_file(early, data.clone()).await.await;
    // Starts after the plan, with the early snapshot as its parent.
    let child = repo
        .begin_backup(BackupOptions::new("db", "stdin", "dump"))
        .await
        .unwrap();
    assert_eq!(child.parent().map(|p| p.id), Some(parent));
    forget_snapshot(&repo, parent).await;
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let report = repo.gc(&options()).await.unwrap();
    assert_eq!(report.deleted.packs, 0, "the child's parent tree is a root: {report:?}");
    assert!(report.unmarked.packs > 0);
    child.abort().await;
    // Without the session, nothing references the old packs any more.
    repo.gc(&options()).await.unwrap();
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    assert!(repo.gc(&options()).await.unwrap().deleted.packs > 0);
}

/// GC never reads a data pack (a cold tier), unless it repacks; and a failed
/// delete leaves a repository that still restores, and a later run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reads_no_data_pack_and_survives_failed_deletes() {
    use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore};
    let memory = MemoryStore::new();
    let faults = Arc::new(FaultStore::new(memory.clone()));
    let repo = init(faults.clone()).await;
    let keep = pseudo_random(2 << 20, 41);
    let (old, _) = backup_stream(&repo, "a", "f", pseudo_random(5 << 20, 43))
        .await
        .unwrap();
    let (kept, _) = backup_stream(&repo, "b", "f", keep.clone()).await.unwrap();
    forget_snapshot(&repo, old).await;
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::PermissionDenied)).kind(ObjectKind::Data));
    let mut no_repack = options();
    no_repack.max_unused = 1.0;
    let planned = repo.gc(&no_repack).await.unwrap().planned;
    assert!(planned.packs > 0);
    let stored_packs = || async {
        memory.list(ObjectKind::Data).await.unwrap().len() + memory.list(ObjectKind::Tree).await.unwrap().len()
    };
    let before = stored_packs().await;
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    faults.add_rule(FaultRule::new(FaultOp::Delete, Fault::Fail(ErrorKind::Unreachable)).kind(ObjectKind::Data));
    let err = repo.gc(&no_repack).await.expect_err("the delete fails");
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    faults.clear();
    assert_intact(&repo, &[(kept, &keep)]).await;
    age(&memory, ObjectKind::Lease, 2 * HOUR).await;
    let report = repo.gc(&no_repack).await.unwrap();
    // The failed run may have deleted the planned tree packs already; by
    // now every planned pack is gone, and nothing else.
    assert!(report.deleted.packs > 0, "{report:?}");
    assert_eq!(stored_packs().await, before - planned.packs as usize, "{report:?}");
    assert_intact(&repo, &[(kept, &keep)]).await;
}

/// Writes a marker for a backup that ran on this host as a process that has
/// exited (or, with `host`, on another host), as a failed backup may leave.
async fn leave_marker(
    repo: &Repository,
    host: Option<&str>,
    process: Option<nfrepo_format::ProcessStart>,
) -> ObjectKey {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let marker = nfrepo_format::SessionMarker {
        started_ns: 1,
        hostname: host.map_or_else(nfrepo_engine::hostname, str::to_owned),
        pid,
        source: "gone".into(),
        plans_listed: false,
        plans_seen: Vec::new(),
        parent_root: None,
        process,
    };
    let key = ObjectKey::new(ObjectKind::Session, format!("{:064x}", u128::from(pid))).unwrap();
    let bytes = marker.encode(repo.sealer(), &repo.id()).unwrap();
    repo.store()
        .put(&key, bytes.into(), nfrepo_store::PutMode::CreateNew)
        .await
        .unwrap();
    key
}

fn this_boot() -> Option<nfrepo_format::ProcessStart> {
    let me = nfrepo_store::ProcessStamp::current()?;
    Some(nfrepo_format::ProcessStart {
        boot_id: me.boot_id,
        pid_namespace: me.pid_namespace,
        start_ticks: 1,
    })
}

/// Issue 9, bug 6: a marker whose process on this host has exited no
/// longer holds GC back for an hour; markers of other hosts, or without a
/// process stamp, still do until they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_marker_of_an_exited_process_on_this_host_is_dead_at_once() {
    let Some(process) = this_boot() else {
        return; // no /proc: the expiry alone applies
    };
    let (memory, repo) = repo_on_memory().await;
    let (old, _) = backup_stream(&repo, "a", "f", pseudo_random(2 << 20, 8)).await.unwrap();
    forget_snapshot(&repo, old).await;
    repo.gc(&options()).await.unwrap();
    age(&memory, ObjectKind::Gc, 2 * HOUR).await;
    let elsewhere = leave_marker(&repo, Some("another-host"), Some(process.clone())).await;
    let unstamped = leave_marker(&repo, None, None).await;
    let gone = leave_marker(&repo, None, Some(process)).await;
    let blocked = repo.gc(&options()).await.unwrap();
    assert_eq!(blocked.deleted.packs, 0, "{blocked:?}");
    assert_eq!(blocked.live_sessions, 2, "the other host's and the unstamped marker");
    assert_eq!(blocked.expired_sessions_removed, 1);
    assert!(repo.store().stat(&gone).await.is_err(), "the dead marker is removed");
    repo.store().delete(&elsewhere).await.unwrap();
    repo.store().delete(&unstamped).await.unwrap();
    let report = repo.gc(&options()).await.unwrap();
    assert!(report.deleted.packs > 0, "{report:?}");
}

/// Issue 9, bug 6: a backup that fails, or is dropped without commit or
/// abort, removes its marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_a_failed_or_dropped_backup_removes_its_marker() {
    let (memory, repo) = repo_on_memory().await;
    let dropped = repo
        .begin_backup(BackupOptions::new("x", "stdin", "dump"))
        .await
        .unwrap();
    assert_eq!(memory.list(ObjectKind::Session).await.unwrap().len(), 1);
    drop(dropped);
    for _ in 0..100 {
        if memory.list(ObjectKind::Session).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(memory.list(ObjectKind::Session).await.unwrap().is_empty(), "dropped");
    // A commit that fails leaves nothing either.
    let session = repo
        .begin_backup(BackupOptions::new("y", "stdin", "dump"))
        .await
        .unwrap();
    let mut marker = memory.list(ObjectKind::Session).await.unwrap();
    let marker = marker.remove(0).key;
    // GC declared the session dead and removed its marker: the commit must refuse.
    memory.delete(&marker).await.unwrap();
    let error = session
        .commit(nfrepo_format::BlobId([0; 32]), CommitDetails::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("session marker"), "{error}");
    assert!(memory.list(ObjectKind::Snapshot).await.unwrap().is_empty());
    assert!(memory.list(ObjectKind::Session).await.unwrap().is_empty());
}
