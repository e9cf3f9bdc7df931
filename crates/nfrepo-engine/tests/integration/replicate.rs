//! Replication between in-memory stores, with kills at seeded points, forged
//! and flipped bytes, and a fake clock for deletions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nfrepo_engine::{
    CheckOptions, Error, ErrorCode, InitOptions, Operation, ReadDataSubset, ReplicateOptions, Repository, VerifySubset,
    replica_status, replicate,
};
use nfrepo_format::{KdfParams, PassResult, SnapshotId};
use nfrepo_store::{
    Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKey, ObjectKind, OpendalStore, PutMode, Store,
};

use super::fixture::{PASSWORD, backup_stream, init, memory, pseudo_random, read_file};

const DAY: Duration = Duration::from_secs(86_400);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn at(now: SystemTime) -> ReplicateOptions {
    let mut options = ReplicateOptions::default();
    options.now = Some(now);
    options
}

fn read_all() -> CheckOptions {
    let mut options = CheckOptions::default();
    options.read_data = Some(ReadDataSubset::All);
    options.merkle = true;
    options
}

/// A source with two snapshots of different data.
async fn source_with_two_snapshots() -> (Arc<dyn Store>, Repository, [SnapshotId; 2]) {
    let store = memory();
    let repo = init(store.clone()).await;
    let (a, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(700_000, 1))
        .await
        .unwrap();
    let (b, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(500_000, 2))
        .await
        .unwrap();
    (store, repo, [a, b])
}

async fn snapshot_ids(repo: &Repository) -> Vec<SnapshotId> {
    let mut ids: Vec<_> = repo.snapshots().await.unwrap().into_iter().map(|s| s.id).collect();
    ids.sort();
    ids
}

/// Opens the replica with the source's password and checks every byte of it.
async fn assert_replica_sound(target: &Arc<dyn Store>) -> Repository {
    let replica = Repository::open(target.clone(), PASSWORD)
        .await
        .expect("the replica opens");
    let report = replica.check(&read_all()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    replica
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_copies_everything_byte_for_byte_and_a_second_pass_copies_nothing() {
    let (source, repo, ids) = source_with_two_snapshots().await;
    let target = memory();
    let report = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.result(), PassResult::Complete);
    for kind in [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Data,
        ObjectKind::Tree,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ] {
        for info in source.list(kind).await.unwrap() {
            assert_eq!(
                target.get(&info.key).await.unwrap(),
                source.get(&info.key).await.unwrap(),
                "{}",
                info.key
            );
        }
    }
    let replica = assert_replica_sound(&target).await;
    assert_eq!(snapshot_ids(&replica).await, snapshot_ids(&repo).await);
    let reader = replica.reader().await.unwrap();
    let newest = replica.find_snapshot("latest").await.unwrap();
    assert_eq!(
        read_file(&reader, &newest, "dump.sql").await.unwrap(),
        pseudo_random(500_000, 2)
    );
    let state = report.state.as_ref().unwrap();
    assert_eq!(state.behind.objects, 0);
    assert!(ids.contains(&state.newest_snapshot.unwrap()));
    assert_eq!(state.copied_objects, report.copied_total().0);

    let again = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert_eq!(again.copied_total(), (0, 0), "{:?}", again.copied);
    assert_eq!(again.present, report.copied_total().0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_of_many_points_leaves_a_valid_replica_and_the_next_pass_completes_it() {
    let (source, repo, _) = source_with_two_snapshots().await;
    let all_ids = snapshot_ids(&repo).await;
    let total = {
        let probe = memory();
        replicate(&*source, &*probe, &at(t0())).await.unwrap().copied_total().0
    };
    assert!(total >= 8, "{total} objects");
    let mut points: Vec<u64> = (0..total)
        .step_by(usize::try_from(total / 10).unwrap().max(1))
        .collect();
    points.push(total - 1);
    assert!(points.len() >= 10, "{points:?}");
    for stop in points {
        let target = memory();
        let mut options = at(t0());
        options.stop_after_puts = Some(stop);
        options.jobs = 1 + usize::try_from(stop % 4).unwrap();
        let err = replicate(&*source, &*target, &options).await.unwrap_err();
        assert!(matches!(err, Error::Pipeline(_)), "{err}");
        assert!(
            target
                .get(&ObjectKey::new(ObjectKind::Replica, "state").unwrap())
                .await
                .is_err(),
            "a killed pass writes no state"
        );
        if target.list(ObjectKind::Config).await.unwrap().is_empty() {
            let err = Repository::open(target.clone(), PASSWORD).await.unwrap_err();
            assert_eq!(
                err.code(Operation::Inspect),
                ErrorCode::BackupNotFound,
                "stop {stop}: {err}"
            );
        } else {
            let replica = assert_replica_sound(&target).await;
            let copied = snapshot_ids(&replica).await;
            assert!(copied.iter().all(|id| all_ids.contains(id)), "stop {stop}");
        }
        let resumed = replicate(&*source, &*target, &at(t0())).await.unwrap();
        assert!(resumed.problems.is_empty(), "stop {stop}: {:?}", resumed.problems);
        assert_eq!(
            resumed.copied_total().0 + resumed.present,
            total,
            "stop {stop}: copies only what is missing"
        );
        let replica = assert_replica_sound(&target).await;
        assert_eq!(snapshot_ids(&replica).await, snapshot_ids(&repo).await, "stop {stop}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_pack_on_the_source_is_refused_and_holds_back_the_new_snapshot() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let source: Arc<dyn Store> = faults.clone();
    let repo = init(source.clone()).await;
    let (first, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 3))
        .await
        .unwrap();
    let target = memory();
    replicate(&*source, &*target, &at(t0())).await.unwrap();
    let old_packs: Vec<_> = source.list(ObjectKind::Data).await.unwrap();
    let old_indexes: Vec<_> = source.list(ObjectKind::Index).await.unwrap();
    let (second, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 4))
        .await
        .unwrap();
    let new_pack = source
        .list(ObjectKind::Data)
        .await
        .unwrap()
        .into_iter()
        .find(|p| !old_packs.contains(p))
        .unwrap();
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 40, bit: 2 })
            .kind(ObjectKind::Data)
            .name_prefix(new_pack.key.name()),
    );
    let report = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].object, new_pack.key.path());
    assert!(
        report.problems[0].error.to_string().contains("hash mismatch"),
        "{}",
        report.problems[0].error
    );
    assert!(
        target.get(&new_pack.key).await.is_err(),
        "the forged pack is not uploaded"
    );
    let new_index = source
        .list(ObjectKind::Index)
        .await
        .unwrap()
        .into_iter()
        .find(|i| !old_indexes.contains(i))
        .unwrap();
    assert_eq!(
        report.held_back,
        vec![new_index.key.path(), format!("snapshots/{second}")]
    );
    let state = report.state.as_ref().unwrap();
    assert_eq!(state.result, PassResult::Partial);
    assert_eq!(state.behind.snapshots, 1);
    assert!(state.behind.objects >= 2);
    let replica = assert_replica_sound(&target).await;
    assert_eq!(snapshot_ids(&replica).await, vec![first]);

    let status = replica_status(None, &*target, t0() + Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!status.live);
    assert_eq!(status.snapshots_behind, 1);
    assert_eq!(status.last_result, Some(PassResult::Partial));

    faults.clear();
    let status = replica_status(Some(&*source), &*target, SystemTime::now())
        .await
        .unwrap();
    assert!(status.live);
    assert_eq!(status.snapshots_behind, 1);
    assert!(status.bytes_behind >= new_pack.size);
    let report = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let replica = assert_replica_sound(&target).await;
    assert_eq!(snapshot_ids(&replica).await, snapshot_ids(&repo).await);
    let status = replica_status(Some(&*source), &*target, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(
        (status.lag_seconds, status.snapshots_behind, status.objects_behind),
        (0, 0, 0)
    );
}

/// A pack streamed to a directory in several upload parts whose bytes do
/// not match its name (a bit flipped after its first part): the mismatch is
/// only known after the last byte, when parts are already written, and the
/// write is abandoned: no object and no temp file is left on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_pack_streamed_in_parts_leaves_nothing_on_the_target() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let source: Arc<dyn Store> = faults.clone();
    let mut init = InitOptions::default();
    init.kdf = KdfParams::insecure_for_tests();
    init.pack_size = 16 << 20;
    let repo = Repository::init(source.clone(), PASSWORD, init).await.unwrap();
    backup_stream(&repo, "db", "dump.sql", pseudo_random(12_000_000, 5))
        .await
        .unwrap();
    let packs = source.list(ObjectKind::Data).await.unwrap();
    let big = packs.iter().max_by_key(|p| p.size).unwrap().clone();
    assert!(
        big.size > 2 * (5 << 20),
        "the pack spans three upload parts: {}",
        big.size
    );
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 7 << 20, bit: 0 })
            .kind(ObjectKind::Data)
            .name_prefix(big.key.name()),
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("replica");
    let target: Arc<dyn Store> = Arc::new(OpendalStore::local(&root));

    let report = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].object, big.key.path());
    assert!(
        report.problems[0].error.to_string().contains("hash mismatch"),
        "{}",
        report.problems[0].error
    );
    assert_eq!(
        target.get(&big.key).await.unwrap_err().kind(),
        nfrepo_store::ErrorKind::NotFound,
        "the forged pack is not on the target"
    );
    let mut expected: Vec<String> = target
        .list(ObjectKind::Data)
        .await
        .unwrap()
        .iter()
        .map(|i| i.key.path())
        .collect();
    expected.sort();
    let mut on_disk: Vec<String> = files_under(&root.join("data"))
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, expected, "no temp file of the refused pack is left");
    assert!(!expected.contains(&big.key.path()));

    faults.clear();
    let report = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.copied.get("data").map(|c| c.0), Some(1), "{:?}", report.copied);
    assert_replica_sound(&target).await;
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_the_replica_is_found_by_verify_and_repaired_by_the_next_pass() {
    let (source, _repo, _) = source_with_two_snapshots().await;
    let target = memory();
    replicate(&*source, &*target, &at(t0())).await.unwrap();
    let pack = target.list(ObjectKind::Data).await.unwrap().remove(0);
    let mut bytes = target.get(&pack.key).await.unwrap().to_vec();
    bytes[100] ^= 0x20;
    target
        .put(&pack.key, Bytes::from(bytes), PutMode::Overwrite)
        .await
        .unwrap();
    // A plain pass sees the same names and sizes: it does not read the replica.
    let plain = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert!(plain.repaired.is_empty());

    let mut verify = at(t0());
    verify.verify = Some(VerifySubset::All);
    let report = replicate(&*source, &*target, &verify).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].object, pack.key.path());
    assert_eq!(report.copied_total(), (0, 0), "verify copies nothing");
    assert_eq!(report.state.as_ref().unwrap().damaged.len(), 1);
    assert!(report.verified > 5);

    let repair = replicate(&*source, &*target, &at(t0())).await.unwrap();
    assert_eq!(repair.repaired, vec![pack.key.path()]);
    assert!(repair.problems.is_empty(), "{:?}", repair.problems);
    assert_eq!(
        target.get(&pack.key).await.unwrap(),
        source.get(&pack.key).await.unwrap()
    );
    assert_replica_sound(&target).await;
    let clean = replicate(&*source, &*target, &verify).await.unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert!(clean.state.unwrap().damaged.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_missing_objects_and_a_subset_rotates_over_the_replica() {
    let (source, _repo, _) = source_with_two_snapshots().await;
    let target = memory();
    replicate(&*source, &*target, &at(t0())).await.unwrap();
    let index = target.list(ObjectKind::Index).await.unwrap().remove(0);
    target.delete(&index.key).await.unwrap();
    let mut verify = at(t0());
    verify.verify = Some(VerifySubset::parse("30%").unwrap());
    let mut seen = 0;
    for _ in 0..4 {
        let report = replicate(&*source, &*target, &verify).await.unwrap();
        assert_eq!(report.failure_code(), Some(ErrorCode::BackupNotFound));
        assert_eq!(report.problems[0].object, index.key.path());
        seen += report.verified;
    }
    let mut objects = 0;
    for kind in [
        ObjectKind::Key,
        ObjectKind::Config,
        ObjectKind::Data,
        ObjectKind::Tree,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ] {
        objects += target.list(kind).await.unwrap().len();
    }
    assert!(
        seen >= objects as u64,
        "four 30% runs cover the replica: {seen} of {objects}"
    );
    assert!(matches!(VerifySubset::parse("0%"), Err(Error::Invalid(_))));
    assert!(matches!(VerifySubset::parse("5"), Err(Error::Invalid(_))));
    assert_eq!(VerifySubset::parse("100%").unwrap(), VerifySubset::All);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_wait_for_delete_after_since_first_seen_missing() {
    let (source, _repo, [a, b]) = source_with_two_snapshots().await;
    let target = memory();
    replicate(&*source, &*target, &at(t0())).await.unwrap();
    let gone = ObjectKey::new(ObjectKind::Snapshot, a.to_hex()).unwrap();
    let kept = ObjectKey::new(ObjectKind::Snapshot, b.to_hex()).unwrap();
    // A gc on the source (mistaken or malicious) removes a snapshot and every pack.
    source.delete(&gone).await.unwrap();
    for info in source.list(ObjectKind::Data).await.unwrap() {
        source.delete(&info.key).await.unwrap();
    }
    let packs = target.list(ObjectKind::Data).await.unwrap().len() as u64;

    let first = replicate(&*source, &*target, &at(t0() + DAY)).await.unwrap();
    assert!(first.deleted.is_empty());
    assert_eq!(first.pending_deletions, packs + 1);
    assert_eq!(first.next_deletion, Some(t0() + DAY + 7 * DAY));
    let later = replicate(&*source, &*target, &at(t0() + 7 * DAY)).await.unwrap();
    assert!(
        later.deleted.is_empty(),
        "six days after it was first seen missing: {:?}",
        later.deleted
    );
    assert!(target.get(&gone).await.is_ok());

    let due = replicate(&*source, &*target, &at(t0() + 8 * DAY)).await.unwrap();
    assert_eq!(due.deleted.len() as u64, packs + 1, "{:?}", due.deleted);
    assert_eq!(due.deleted[0], gone.path(), "the snapshot goes before the packs");
    assert!(target.get(&gone).await.is_err());
    assert!(
        target.get(&kept).await.is_ok(),
        "what the source lists is never deleted"
    );
    assert_eq!(due.pending_deletions, 0);
    assert!(target.list(ObjectKind::Data).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_another_repository_is_refused() {
    let (source, _repo, _) = source_with_two_snapshots().await;
    let other = memory();
    init(other.clone()).await;
    let err = replicate(&*source, &*other, &at(t0())).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(
        other.list(ObjectKind::Data).await.unwrap().is_empty(),
        "nothing was copied"
    );
    let err = replicate(&*memory(), &*other, &at(t0())).await.unwrap_err();
    assert_eq!(err.code(Operation::Backup), ErrorCode::BackupNotFound);
    let err = replica_status(None, &*memory(), t0()).await.unwrap_err();
    assert_eq!(err.code(Operation::Inspect), ErrorCode::BackupNotFound);
}

/// A real forget and two-phase gc on the source between passes: the replica
/// never lacks a pack any of its index deltas or snapshots needs, keeps the
/// forgotten snapshot and its packs for the grace period, and follows the
/// source after it. The known limit: once the source's gc has compacted the
/// index, the merged delta supersedes the old ones on the replica too, so the
/// snapshot waiting for its deletion is no longer indexed there (check
/// reports its blobs as in no index; its packs are all still there, so
/// `repair index` on the replica would index them again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_the_source_between_passes_never_leaves_the_replica_referencing_a_missing_pack() {
    let memory = MemoryStore::new();
    let source: Arc<dyn Store> = Arc::new(memory.clone());
    let repo = init(source.clone()).await;
    let (a, _) = backup_stream(&repo, "a", "f", pseudo_random(5 << 20, 5)).await.unwrap();
    let (b, _) = backup_stream(&repo, "b", "f", pseudo_random(2 << 20, 6)).await.unwrap();
    let target = memory_store();
    replicate(&*source, &*target, &at(t0())).await.unwrap();

    source
        .delete(&ObjectKey::new(ObjectKind::Snapshot, a.to_hex()).unwrap())
        .await
        .unwrap();
    let grace = Duration::from_secs(3600);
    let planned = repo
        .gc(&nfrepo_engine::GcOptions::default().grace(grace))
        .await
        .unwrap();
    assert!(planned.planned.packs >= 1, "{planned:?}");
    let pass = replicate(&*source, &*target, &at(t0() + DAY)).await.unwrap();
    assert!(pass.problems.is_empty(), "{:?}", pass.problems);
    assert_eq!(pass.pending_deletions, 1, "the forgotten snapshot waits");
    assert_replica_sound(&target).await;

    for info in memory.list(ObjectKind::Gc).await.unwrap() {
        memory
            .set_last_modified(&info.key, SystemTime::now() - 2 * grace)
            .unwrap();
    }
    let swept = repo
        .gc(&nfrepo_engine::GcOptions::default().grace(grace))
        .await
        .unwrap();
    assert!(swept.deleted.packs >= 1, "{swept:?}");
    let pass = replicate(&*source, &*target, &at(t0() + 2 * DAY)).await.unwrap();
    assert!(pass.problems.is_empty(), "{:?}", pass.problems);
    assert!(pass.deleted.is_empty());
    assert!(
        pass.copied.contains_key("index"),
        "the rewritten index is copied: {:?}",
        pass.copied
    );
    for info in memory_packs_gone(&source, &target).await {
        assert!(
            target.get(&info.key).await.is_ok(),
            "{} is kept on the replica",
            info.key
        );
    }
    let replica = Repository::open(target.clone(), PASSWORD).await.unwrap();
    assert_eq!(snapshot_ids(&replica).await.len(), 2, "a is still on the replica");
    let report = replica.check(&read_all()).await.unwrap();
    assert!(!report.findings.is_empty(), "the documented limit: a is unindexed");
    assert!(
        report.findings.iter().all(|f| f.code == ErrorCode::BackupNotFound
            && f.pack.is_none()
            && f.affected.iter().all(|x| x.snapshot == a)),
        "only the forgotten snapshot is unindexed, no pack is missing: {:?}",
        report.findings
    );
    assert!(replica.verify_snapshot(&b.to_hex(), true).await.unwrap().is_intact());

    let due = replicate(&*source, &*target, &at(t0() + 9 * DAY)).await.unwrap();
    assert!(due.problems.is_empty(), "{:?}", due.problems);
    assert!(due.deleted.iter().any(|d| d.starts_with("data/")), "{:?}", due.deleted);
    assert_eq!(due.pending_deletions, 0);
    let replica = assert_replica_sound(&target).await;
    assert_eq!(snapshot_ids(&replica).await, vec![b]);
    for kind in [
        ObjectKind::Data,
        ObjectKind::Tree,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ] {
        let names = |list: Vec<nfrepo_store::ObjectInfo>| {
            let mut names: Vec<_> = list.into_iter().map(|i| i.key).collect();
            names.sort_by(|x, y| x.name().cmp(y.name()));
            names
        };
        assert_eq!(
            names(target.list(kind).await.unwrap()),
            names(source.list(kind).await.unwrap()),
            "{kind}"
        );
    }
}

fn memory_store() -> Arc<dyn Store> {
    memory()
}

/// Packs on the target that the source no longer lists.
async fn memory_packs_gone(source: &Arc<dyn Store>, target: &Arc<dyn Store>) -> Vec<nfrepo_store::ObjectInfo> {
    let mut gone = Vec::new();
    for kind in [ObjectKind::Data, ObjectKind::Tree] {
        let on_source = source.list(kind).await.unwrap();
        for info in target.list(kind).await.unwrap() {
            if !on_source.iter().any(|s| s.key == info.key) {
                gone.push(info);
            }
        }
    }
    assert!(!gone.is_empty(), "gc deleted packs on the source");
    gone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_password_stops_opening_the_replica_at_the_next_pass() {
    let (source, repo, _) = source_with_two_snapshots().await;
    let target = memory();
    replicate(&*source, &*target, &at(t0())).await.unwrap();
    repo.change_password(
        PASSWORD,
        b"new password",
        nfrepo_format::KdfParams::insecure_for_tests(),
    )
    .await
    .unwrap();
    let pass = replicate(&*source, &*target, &at(t0() + Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(pass.problems.is_empty(), "{:?}", pass.problems);
    assert_eq!(pass.deleted.len(), 1, "the old slot, at once: {:?}", pass.deleted);
    assert!(pass.deleted[0].starts_with("keys/"));
    let err = Repository::open(target.clone(), PASSWORD).await.unwrap_err();
    assert_eq!(err.code(Operation::Inspect), ErrorCode::PermissionDenied, "{err}");
    Repository::open(target.clone(), b"new password").await.unwrap();

    // A source that lost every key slot does not make the replica unopenable.
    for info in source.list(ObjectKind::Key).await.unwrap() {
        source.delete(&info.key).await.unwrap();
    }
    let pass = replicate(&*source, &*target, &at(t0() + DAY)).await.unwrap();
    assert!(pass.deleted.is_empty(), "{:?}", pass.deleted);
    assert_eq!(pass.pending_deletions, 1);
    Repository::open(target.clone(), b"new password").await.unwrap();
}

// `key rotate` rewrites each kept key slot in place, under its own name and
// at the same size: a replica compared by name and size kept the old slot,
// which opens only the old key epoch, so a snapshot taken after the rotation
// could not be read from the replica. Key objects are compared by bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_reaches_the_replica_and_new_snapshots_restore_from_it() {
    let (source, repo, _) = source_with_two_snapshots().await;
    let target = memory();
    // Epoch 0 to 1 turns a version-1 slot into a (larger) version-2 one;
    // 1 to 2 rewrites it at the same size.
    repo.rotate_keys(PASSWORD, nfrepo_engine::RotateOptions::default())
        .await
        .unwrap();
    replicate(&*source, &*target, &at(t0())).await.unwrap();
    let before: Vec<_> = source.list(ObjectKind::Key).await.unwrap();
    Repository::open(source.clone(), PASSWORD)
        .await
        .unwrap()
        .rotate_keys(PASSWORD, nfrepo_engine::RotateOptions::default())
        .await
        .unwrap();
    let rotated = Repository::open(source.clone(), PASSWORD).await.unwrap();
    assert_eq!(rotated.epoch(), 2);
    let data = pseudo_random(300_000, 3);
    let (after, _) = backup_stream(&rotated, "db", "dump.sql", data.clone()).await.unwrap();
    let rewritten = source.list(ObjectKind::Key).await.unwrap();
    assert!(
        before
            .iter()
            .any(|b| rewritten.iter().any(|r| r.key == b.key && r.size == b.size)),
        "the test needs a slot rewritten in place at the same size: {before:?} {rewritten:?}"
    );

    let pass = replicate(&*source, &*target, &at(t0() + Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(pass.problems.is_empty(), "{:?}", pass.problems);
    for info in source.list(ObjectKind::Key).await.unwrap() {
        assert_eq!(
            target.get(&info.key).await.unwrap(),
            source.get(&info.key).await.unwrap(),
            "{} differs on the replica",
            info.key
        );
    }
    let replica = assert_replica_sound(&target).await;
    assert_eq!(replica.epoch(), 2);
    let reader = replica.reader().await.unwrap();
    let newest = replica
        .snapshots()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == after)
        .expect("the snapshot taken after the rotation is on the replica");
    assert_eq!(read_file(&reader, &newest, "dump.sql").await.unwrap(), data);
}
