//! Issue 17: maintenance racing backups and `protect` racing `forget`,
//! reproduced deterministically. See: issue 17 items 1 and 2.

use std::sync::Arc;

use nfrepo_engine::{BackupOptions, Error, ErrorCode, Operation, Repository};
use nfrepo_store::{MemoryStore, ObjectKind, Store};

use super::fixture::{PASSWORD, backup_stream, init, pseudo_random, read_file, store_single_file};

async fn open(store: &Arc<dyn Store>, cache: Option<&tempfile::TempDir>) -> Repository {
    Repository::open(store.clone(), PASSWORD)
        .await
        .unwrap()
        .with_index_cache(cache.map(|c| c.path().to_owned()))
}

/// Deletes every pack object of `kinds`, leaving the index deltas that name them.
async fn delete_packs(store: &Arc<dyn Store>, kinds: &[ObjectKind]) -> usize {
    let mut deleted = 0;
    for kind in kinds {
        for info in store.list(*kind).await.unwrap() {
            store.delete(&info.key).await.unwrap();
            deleted += 1;
        }
    }
    deleted
}

async fn restores(repo: &Repository, id: &nfrepo_format::SnapshotId, data: &[u8]) {
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&id.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "x").await.unwrap(), data);
}

/// Issue 17 item 1: `repair index` re-indexed packs a gc then deleted, so
/// the index names packs that are gone. The next backup of that data, from
/// a host with a fresh cache, stored nothing ("0 B added") and committed a
/// snapshot that could not be restored. Now the packs missing from the
/// listing are no deduplication targets: the data is stored again, the
/// snapshot restores (through any index, cached or not, on any host), and
/// a later backup deduplicates against the new copy instead of storing it
/// a third time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_a_backup_stores_again_what_the_index_says_is_in_a_pack_that_is_gone() {
    for with_cache in [false, true] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let repo = init(store.clone()).await;
        let data = pseudo_random(3_000_000, 17);
        let (first, _) = backup_stream(&repo, "a", "x", data.clone()).await.unwrap();
        // The race's aftermath: no snapshot uses the packs any more, they
        // are deleted, and the index still names them.
        store
            .delete(&nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, first.to_hex()).unwrap())
            .await
            .unwrap();
        assert!(delete_packs(&store, &[ObjectKind::Data, ObjectKind::Tree]).await >= 2);

        let cache = tempfile::tempdir().unwrap();
        let host = open(&store, with_cache.then_some(&cache)).await;
        let (second, snapshot) = backup_stream(&host, "a", "x", data.clone()).await.unwrap();
        assert!(
            snapshot.summary.bytes_added_raw >= data.len() as u64,
            "cache {with_cache}: the data must be stored again, not deduplicated: {:?}",
            snapshot.summary
        );
        restores(&host, &second, &data).await;
        // check names the packs that are gone, and no snapshot they reach.
        let report = host.check(&nfrepo_engine::CheckOptions::default()).await.unwrap();
        assert!(!report.findings.is_empty());
        assert!(
            report.findings.iter().all(|f| f.affected.is_empty()),
            "{:?}",
            report.findings
        );
        // Another host, without a cache, finds the first copy's pack gone and reads the second.
        restores(&open(&store, None).await, &second, &data).await;

        // The next run on this host does not store it a third time.
        let (third, snapshot) = backup_stream(&host, "a", "x", data.clone()).await.unwrap();
        assert_eq!(
            snapshot.summary.blobs_added, 0,
            "cache {with_cache}: {:?}",
            snapshot.summary
        );
        restores(&host, &third, &data).await;
        restores(&open(&store, None).await, &third, &data).await;
    }
}

/// Issue 17 item 1: a parent snapshot whose packs are gone is not reused
/// (its unchanged files would refer to them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_no_parent_is_reused_while_indexed_packs_are_gone() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let repo = init(store.clone()).await;
    backup_stream(&repo, "a", "x", pseudo_random(100_000, 1)).await.unwrap();
    let session = repo
        .begin_backup(BackupOptions::new("a", "stdin", "dump"))
        .await
        .unwrap();
    assert!(session.parent().is_some(), "a sound parent is reused");
    session.abort().await;
    delete_packs(&store, &[ObjectKind::Data]).await;
    let session = repo
        .begin_backup(BackupOptions::new("a", "stdin", "dump"))
        .await
        .unwrap();
    assert!(session.parent().is_none());
    session.abort().await;
}

/// Issue 17 item 1: a pack the backup deduplicated against vanishes while
/// it runs. The commit fails with DEDUP_PACK_MISSING naming the pack,
/// nothing is committed, and the next run stores the data again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_a_pack_gone_before_the_commit_point_fails_the_backup_loudly() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let repo = init(store.clone()).await;
    let data = pseudo_random(2_000_000, 5);
    backup_stream(&repo, "a", "x", data.clone()).await.unwrap();
    let packs: Vec<nfrepo_format::PackId> = store
        .list(ObjectKind::Data)
        .await
        .unwrap()
        .iter()
        .map(|info| info.key.name().parse().unwrap())
        .collect();

    let session = repo
        .begin_backup(BackupOptions::new("b", "stdin", "dump"))
        .await
        .unwrap();
    let (session, root) = tokio::task::spawn_blocking({
        let data = data.clone();
        move || {
            let root = store_single_file(&session, "x", &data).unwrap();
            (session, root)
        }
    })
    .await
    .unwrap();
    assert_eq!(session.progress().blobs_added, 0, "everything deduplicated");
    delete_packs(&store, &[ObjectKind::Data]).await;
    let err = session.commit(root, Default::default()).await.unwrap_err();
    let Error::DedupPackMissing { packs: missing } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(missing, &packs);
    assert_eq!(err.detail_code(), Some("DEDUP_PACK_MISSING"));
    assert_eq!(err.code(Operation::Backup), ErrorCode::BackupFailed);
    let message = err.to_string();
    assert!(
        message.contains(&packs[0].to_string()) && message.contains("nfrepo check"),
        "{message}"
    );
    assert!(
        repo.snapshots().await.unwrap().iter().all(|e| e.snapshot.source != "b"),
        "nothing committed"
    );

    let (id, snapshot) = backup_stream(&repo, "b", "x", data.clone()).await.unwrap();
    assert!(
        snapshot.summary.bytes_added_raw >= data.len() as u64,
        "{:?}",
        snapshot.summary
    );
    restores(&open(&store, None).await, &id, &data).await;
}

mod protect_vs_forget {
    //! Issue 17 item 2: `protect` racing `forget`. Each test holds one
    //! party at a named request (`Fault::Pause`) while the other acts, and
    //! asserts that `protect` reports success only when the snapshot stays.
    //! The protocol is in format-spec/protect.md.

    use std::sync::Arc;

    use nfrepo_engine::{Error, ErrorCode, ForgetOptions, ForgetReport, KeepReason, Operation, RetentionPolicy};
    use nfrepo_format::SnapshotId;
    use nfrepo_store::{FaultOp, FaultRule, FaultStore, Gate, MemoryStore, ObjectKey, ObjectKind, Store};

    use super::super::fixture::{backup_stream, init, pseudo_random};

    struct Race {
        faults: Arc<FaultStore<MemoryStore>>,
        repo: nfrepo_engine::Repository,
        /// The older snapshot of `db`, which `keep-last 1` forgets.
        old: SnapshotId,
    }

    async fn race() -> Race {
        let faults = Arc::new(FaultStore::new(MemoryStore::new()));
        let store: Arc<dyn Store> = faults.clone();
        let repo = init(store).await;
        let old = backup_stream(&repo, "db", "f", pseudo_random(1000, 1)).await.unwrap().0;
        backup_stream(&repo, "db", "f", pseudo_random(1000, 2)).await.unwrap();
        Race { faults, repo, old }
    }

    fn pause(op: FaultOp, kind: ObjectKind, after: u64) -> (FaultRule, Gate) {
        let (rule, gate) = FaultRule::pause(op);
        (rule.kind(kind).after(after), gate)
    }

    impl Race {
        fn forget(&self) -> tokio::task::JoinHandle<nfrepo_engine::Result<ForgetReport>> {
            let repo = self.repo.clone();
            tokio::spawn(async move {
                let policy: RetentionPolicy = serde_json::from_value(serde_json::json!({ "keep-last": 1 })).unwrap();
                repo.forget(&ForgetOptions::with_policy(policy)).await
            })
        }

        fn protect(&self) -> tokio::task::JoinHandle<nfrepo_engine::Result<SnapshotId>> {
            let repo = self.repo.clone();
            let spec = self.old.to_hex();
            tokio::spawn(async move { repo.protect(&spec, "hold").await })
        }

        async fn exists(&self, kind: ObjectKind) -> bool {
            let key = ObjectKey::new(kind, self.old.to_hex()).unwrap();
            match self.faults.inner().stat(&key).await {
                Ok(_) => true,
                Err(e) if e.kind() == nfrepo_store::ErrorKind::NotFound => false,
                Err(e) => panic!("{e}"),
            }
        }

        /// Snapshot and marker present, as `(snapshot, marker)`.
        async fn state(&self) -> (bool, bool) {
            (
                self.exists(ObjectKind::Snapshot).await,
                self.exists(ObjectKind::Protect).await,
            )
        }

        fn kept_as_protected(&self, report: &ForgetReport) -> bool {
            report
                .groups
                .iter()
                .flat_map(|(_, d)| d)
                .any(|d| d.entry.id == self.old && d.keep() && d.reasons.contains(&KeepReason::Protected))
        }
    }

    fn assert_forgotten_while_protecting(result: nfrepo_engine::Result<SnapshotId>) {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::ForgottenWhileProtecting { .. }), "{err:?}");
        assert_eq!(err.detail_code(), Some("SNAPSHOT_FORGOTTEN"));
        assert_eq!(err.code(Operation::Backup), ErrorCode::BackupNotFound);
    }

    /// The race: forget checked for a marker, then `protect` ran
    /// whole (and said "protected"), then forget deleted. Forget now looks
    /// again after deleting and puts the snapshot back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_protect_between_forgets_check_and_delete_wins() {
        let race = race().await;
        let (rule, delete) = pause(FaultOp::Delete, ObjectKind::Snapshot, 0);
        race.faults.add_rule(rule);
        let forget = race.forget();
        delete.reached().await;
        assert_eq!(race.protect().await.unwrap().unwrap(), race.old);
        delete.open();
        let report = forget.await.unwrap().unwrap();
        assert_eq!(race.state().await, (true, true), "protected and present");
        assert!(race.kept_as_protected(&report), "forget reports it kept");
        assert_eq!(report.removed().count(), 0);
        assert!(race.repo.orphaned_protect_markers().await.unwrap().is_empty());
    }

    /// Forget runs whole while `protect` is held before writing its marker:
    /// the snapshot is forgotten and `protect` fails, leaving no marker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_protect_after_forget_deleted_fails_and_leaves_no_marker() {
        let race = race().await;
        let (rule, put) = pause(FaultOp::Put, ObjectKind::Protect, 0);
        race.faults.add_rule(rule);
        let protect = race.protect();
        put.reached().await;
        let report = race.forget().await.unwrap().unwrap();
        assert_eq!(report.removed().map(|d| d.entry.id).collect::<Vec<_>>(), vec![race.old]);
        put.open();
        assert_forgotten_while_protecting(protect.await.unwrap());
        assert_eq!(race.state().await, (false, false));
        assert!(race.repo.orphaned_protect_markers().await.unwrap().is_empty());
    }

    /// `protect` wrote its marker and is held before checking the snapshot:
    /// forget sees the marker and keeps it; `protect` then succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_forget_after_the_marker_keeps_the_snapshot() {
        let race = race().await;
        let (rule, check) = pause(FaultOp::Stat, ObjectKind::Snapshot, 0);
        race.faults.add_rule(rule);
        let protect = race.protect();
        check.reached().await;
        let report = race.forget().await.unwrap().unwrap();
        assert_eq!(report.removed().count(), 0);
        check.open();
        assert_eq!(protect.await.unwrap().unwrap(), race.old);
        assert_eq!(race.state().await, (true, true));
    }

    /// `protect` found the snapshot, then forget deleted it and is held
    /// before looking for a marker again, while `protect` writes its marker,
    /// finds the snapshot gone, and removes the marker again. With
    /// `recheck_before_take_back` forget looks between the last two steps.
    async fn protect_between_forgets_delete_and_recheck(
        recheck_before_take_back: bool,
    ) -> (Race, ForgetReport, nfrepo_engine::Result<SnapshotId>) {
        let race = race().await;
        let (rule, put) = pause(FaultOp::Put, ObjectKind::Protect, 0);
        race.faults.add_rule(rule);
        // Forget's second look at the marker (its first is before deleting).
        let (rule, recheck) = pause(FaultOp::Stat, ObjectKind::Protect, 1);
        race.faults.add_rule(rule);
        let (rule, take_back) = pause(FaultOp::Delete, ObjectKind::Protect, 0);
        race.faults.add_rule(rule);
        let protect = race.protect();
        put.reached().await;
        let forget = race.forget();
        recheck.reached().await;
        put.open();
        if recheck_before_take_back {
            take_back.reached().await;
            recheck.open();
            let report = forget.await.unwrap().unwrap();
            take_back.open();
            let protected = protect.await.unwrap();
            (race, report, protected)
        } else {
            take_back.open();
            let protected = protect.await.unwrap();
            recheck.open();
            let report = forget.await.unwrap().unwrap();
            (race, report, protected)
        }
    }

    /// Forget then finds no marker: the snapshot stays forgotten, `protect` failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_protect_between_forgets_delete_and_recheck_fails() {
        let (race, report, protected) = protect_between_forgets_delete_and_recheck(false).await;
        assert_forgotten_while_protecting(protected);
        assert_eq!(report.removed().map(|d| d.entry.id).collect::<Vec<_>>(), vec![race.old]);
        assert_eq!(race.state().await, (false, false));
    }

    /// Forget finds the marker and puts the snapshot back; `protect` still
    /// reports failure (the snapshot stays, unprotected: the safe side).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_protect_failing_while_forget_puts_back_keeps_the_snapshot() {
        let (race, report, protected) = protect_between_forgets_delete_and_recheck(true).await;
        assert_forgotten_while_protecting(protected);
        assert!(race.kept_as_protected(&report));
        assert_eq!(race.state().await, (true, false), "kept, not protected");
    }

    /// The window the tombstone closes: forget checked for a marker, then
    /// `protect` ran whole (and said "protected"), then forget deleted and
    /// was killed before looking again. The snapshot is gone for now, but
    /// its tombstone is there: `check` says so (and does not call the
    /// marker orphaned), and the next maintenance run puts it back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_forget_killed_after_deleting_a_snapshot_protect_reported_loses_nothing() {
        let race = race().await;
        let (rule, delete) = pause(FaultOp::Delete, ObjectKind::Snapshot, 0);
        race.faults.add_rule(rule);
        // Forget's second look at the marker, after its delete.
        let (rule, recheck) = pause(FaultOp::Stat, ObjectKind::Protect, 1);
        race.faults.add_rule(rule);
        let forget = race.forget();
        delete.reached().await;
        assert_eq!(race.protect().await.unwrap().unwrap(), race.old);
        delete.open();
        recheck.reached().await;
        // kill -9: the forget stops here, its lease left to expire.
        forget.abort();
        assert!(forget.await.unwrap_err().is_cancelled());
        recheck.open();
        assert_eq!(race.state().await, (false, true), "deleted, marker kept");
        assert!(race.exists(ObjectKind::Tombstone).await);
        let check = race.repo.check(&nfrepo_engine::CheckOptions::default()).await.unwrap();
        assert_eq!(check.unsettled_forgets, vec![race.old]);
        assert!(check.orphaned_protect_markers.is_empty(), "{check:?}");
        // Forget holds the maintenance lease: another forget is busy until
        // the killed one's lease lapses or is broken.
        let err = race.forget().await.unwrap().unwrap_err();
        assert!(matches!(err, Error::LeaseHeld(_)), "{err:?}");
        assert_eq!(err.detail_code(), Some("GC_LEASE_HELD"));

        // The killed forget's lease is still valid: the operator breaks it.
        let gc = race
            .repo
            .gc(&nfrepo_engine::GcOptions::default().break_lease(true))
            .await
            .unwrap();
        assert_eq!(gc.settled.restored, vec![race.old]);
        assert!(gc.settled.finished.is_empty());
        assert_eq!(race.state().await, (true, true), "put back, still protected");
        assert!(!race.exists(ObjectKind::Tombstone).await);
        race.repo.find_snapshot(&race.old.to_hex()).await.unwrap();
        // gc walked it: its packs are not planned for deletion.
        assert_eq!(gc.planned.packs, 0, "{gc:?}");
        let check = race.repo.check(&nfrepo_engine::CheckOptions::default()).await.unwrap();
        assert!(
            check.findings.is_empty() && check.unsettled_forgets.is_empty(),
            "{check:?}"
        );
    }

    /// A forget killed between deleting an unprotected snapshot and its
    /// end is finished by the next forget: the snapshot stays forgotten,
    /// its good marker goes, and the tombstone with it. One killed after
    /// its tombstone but before its delete is abandoned: the snapshot stays
    /// until a forget decides again (that same run, here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_the_next_forget_settles_a_killed_forgets_tombstone() {
        for killed_after_delete in [true, false] {
            let race = race().await;
            // Both good, so the newer one is the last good one to keep.
            race.repo.mark_good(&race.old.to_hex(), "deployed").await.unwrap();
            race.repo.mark_good("db@latest", "deployed").await.unwrap();
            let (rule, held) = if killed_after_delete {
                // Its second look at the marker.
                pause(FaultOp::Stat, ObjectKind::Protect, 1)
            } else {
                pause(FaultOp::Delete, ObjectKind::Snapshot, 0)
            };
            race.faults.add_rule(rule);
            let forget = race.forget();
            held.reached().await;
            forget.abort();
            assert!(forget.await.unwrap_err().is_cancelled());
            held.open();
            race.faults.clear();
            assert_eq!(race.state().await, (!killed_after_delete, false));
            assert!(race.exists(ObjectKind::Tombstone).await);

            let mut options = ForgetOptions::with_policy(
                serde_json::from_value::<RetentionPolicy>(serde_json::json!({ "keep-last": 1 })).unwrap(),
            );
            options.dry_run = true;
            let dry = race.repo.forget(&options).await.unwrap();
            assert!(dry.settled.is_empty(), "a dry run settles nothing");
            assert!(race.exists(ObjectKind::Tombstone).await);
            // The killed run's lease is still valid: the operator breaks it.
            options.dry_run = false;
            options.break_lease = true;
            let report = race.repo.forget(&options).await.unwrap();
            assert!(report.replaced_lease.is_some());
            if killed_after_delete {
                assert_eq!(report.settled.finished, vec![race.old]);
                assert_eq!(report.removed().count(), 0, "nothing left to decide");
            } else {
                assert_eq!(report.settled.abandoned, vec![race.old]);
                assert_eq!(report.removed().map(|d| d.entry.id).collect::<Vec<_>>(), vec![race.old]);
            }
            assert_eq!(race.state().await, (false, false));
            assert!(!race.exists(ObjectKind::Tombstone).await);
            assert!(!race.exists(ObjectKind::Good).await, "its good marker is gone with it");
        }
    }

    /// A marker left without its snapshot (by a `protect` killed between
    /// writing it and taking it back) is reported and `unprotect` removes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn r17_unprotect_removes_an_orphaned_marker() {
        let race = race().await;
        race.repo.protect(&race.old.to_hex(), "hold").await.unwrap();
        race.faults
            .inner()
            .delete(&ObjectKey::new(ObjectKind::Snapshot, race.old.to_hex()).unwrap())
            .await
            .unwrap();
        assert_eq!(race.repo.orphaned_protect_markers().await.unwrap(), vec![race.old]);
        let done = race.repo.unprotect(&race.old.to_hex()[..12]).await.unwrap();
        assert_eq!((done.snapshot, done.was_protected, done.orphan), (race.old, true, true));
        assert_eq!(race.state().await, (false, false));
        assert!(race.repo.orphaned_protect_markers().await.unwrap().is_empty());
        let err = race.repo.unprotect(&race.old.to_hex()).await.unwrap_err();
        assert!(matches!(err, Error::SnapshotNotFound(_)), "{err:?}");
    }
}

/// Issue 17 item 4: packs a gc left behind after rewriting the index (its
/// deletes failed) are reported as planned for deletion, to be finished by
/// `gc`, not as stray packs of an interrupted backup for `repair index`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_check_tells_packs_planned_by_gc_from_stray_ones() {
    use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore};
    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
    let memory = MemoryStore::new();
    let faults = Arc::new(FaultStore::new(memory.clone()));
    let repo = init(faults.clone()).await;
    let (old, _) = backup_stream(&repo, "a", "x", pseudo_random(1_000_000, 3))
        .await
        .unwrap();
    backup_stream(&repo, "b", "x", pseudo_random(1_000_000, 4))
        .await
        .unwrap();
    memory
        .delete(&nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, old.to_hex()).unwrap())
        .await
        .unwrap();
    let mut gc = nfrepo_engine::GcOptions::default().grace(HOUR);
    gc.max_unused = 1.0;
    assert!(repo.gc(&gc).await.unwrap().planned.packs > 0);
    for info in memory.list(ObjectKind::Gc).await.unwrap() {
        memory
            .set_last_modified(&info.key, std::time::SystemTime::now() - 2 * HOUR)
            .unwrap();
    }
    faults.add_rule(FaultRule::new(FaultOp::Delete, Fault::Fail(ErrorKind::Unreachable)).kind(ObjectKind::Data));
    repo.gc(&gc).await.expect_err("the deletes fail");
    faults.clear();
    let report = repo.check(&nfrepo_engine::CheckOptions::default()).await.unwrap();
    assert!(!report.planned_packs.is_empty(), "{report:?}");
    assert!(report.stray_packs.is_empty(), "{report:?}");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // A pack of an interrupted backup stays a stray pack.
    let session = repo
        .begin_backup(BackupOptions::new("c", "stdin", "dump"))
        .await
        .unwrap();
    // More than a pack: a full pack is uploaded before the abort.
    let session = super::fixture::stream_uncommitted(session, pseudo_random(6_000_000, 5)).await;
    session.abort().await;
    let report = repo.check(&nfrepo_engine::CheckOptions::default()).await.unwrap();
    assert!(!report.stray_packs.is_empty(), "{report:?}");
    assert!(!report.planned_packs.is_empty());
}

/// Issue 17 item 2: `check` reports a protect marker whose snapshot is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_check_reports_orphaned_protect_markers() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let repo = init(store.clone()).await;
    let (id, _) = backup_stream(&repo, "a", "x", pseudo_random(1000, 3)).await.unwrap();
    repo.protect(&id.to_hex(), "").await.unwrap();
    let report = repo.check(&nfrepo_engine::CheckOptions::default()).await.unwrap();
    assert!(report.orphaned_protect_markers.is_empty());
    store
        .delete(&nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, id.to_hex()).unwrap())
        .await
        .unwrap();
    let report = repo.check(&nfrepo_engine::CheckOptions::default()).await.unwrap();
    assert_eq!(report.orphaned_protect_markers, vec![id]);
    assert_eq!(report.failure_code(), None, "a warning, not a finding");
}
