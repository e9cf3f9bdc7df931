//! `check`, `verify` and `repair` on the in-memory store, with damage made
//! by the fault-injection layer: what each reports, and what repair fixes.

use std::sync::Arc;

use nfrepo_engine::{CheckOptions, Error, ErrorClass, ErrorCode, Operation, ReadDataSubset, Repository};
use nfrepo_store::{Cache, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, Store};

use super::fixture::{backup_stream, init, pseudo_random, read_file};

async fn faulty_repo() -> (Arc<FaultStore<MemoryStore>>, Repository) {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store).await;
    (faults, repo)
}

fn read_all() -> CheckOptions {
    let mut options = CheckOptions::default();
    options.read_data = Some(ReadDataSubset::All);
    options.merkle = true;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_repository_checks_clean_at_every_level() {
    let (_, repo) = faulty_repo().await;
    let (id, snapshot) = backup_stream(&repo, "db", "dump.sql", pseudo_random(600_000, 1))
        .await
        .unwrap();
    let report = repo.check(&read_all()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.failure_code(), None);
    assert_eq!(report.roots, vec![(id, snapshot.root)]);
    assert!(report.lists > 0, "a 600 kB dump has a content list");
    assert_eq!(report.packs_read, report.packs_indexed);
    let verified = repo.verify_snapshot("latest", true).await.unwrap();
    assert!(verified.is_intact());
    assert_eq!(verified.computed_root, Some(snapshot.root));
    assert_eq!(verified.bytes_read, 600_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_data_pack_names_pack_blob_snapshot_and_file() {
    let (faults, repo) = faulty_repo().await;
    let (id, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 2))
        .await
        .unwrap();
    let pack = repo.store().list(ObjectKind::Data).await.unwrap().remove(0);
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 100, bit: 1 }).kind(ObjectKind::Data));
    // Structure does not read data packs.
    assert!(repo.check(&CheckOptions::default()).await.unwrap().findings.is_empty());
    let report = repo.check(&read_all()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    let finding = &report.findings[0];
    assert_eq!(finding.object, pack.key.path());
    assert_eq!(finding.blobs.len(), 1, "{finding:?}");
    assert_eq!(finding.affected.len(), 1);
    assert_eq!(finding.affected[0].snapshot, id);
    assert_eq!(finding.affected[0].path, "dump.sql");
    let verified = repo.verify_snapshot("latest", true).await.unwrap();
    assert!(!verified.is_intact());
    assert_eq!(verified.content_problems.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_tree_pack_is_found_by_the_structure_check() {
    let (faults, repo) = faulty_repo().await;
    let (id, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 3))
        .await
        .unwrap();
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 20, bit: 0 }).kind(ObjectKind::Tree));
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert!(report.findings[0].object.starts_with("tree/"), "{:?}", report.findings);
    assert!(report.damaged_snapshots().contains(&id));
    assert!(report.roots.is_empty(), "no root is proven");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_lost_packs_and_a_lost_index_are_named() {
    let (faults, repo) = faulty_repo().await;
    let (id, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 4))
        .await
        .unwrap();
    let pack = repo.store().list(ObjectKind::Data).await.unwrap().remove(0);

    faults.add_rule(FaultRule::new(FaultOp::Any, Fault::Truncate { len: 1000 }).kind(ObjectKind::Data));
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert_eq!(report.findings[0].object, pack.key.path());
    assert_eq!(report.findings[0].affected[0].path, "dump.sql");
    faults.clear();

    faults.add_rule(FaultRule::new(FaultOp::Any, Fault::Lose).kind(ObjectKind::Data));
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupNotFound));
    assert_eq!(report.findings[0].affected[0].snapshot, id);
    faults.clear();

    faults.add_rule(FaultRule::new(FaultOp::Any, Fault::Lose).kind(ObjectKind::Index));
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupNotFound));
    assert_eq!(report.stray_packs.len(), 2, "both packs are now in no index");
}

/// Issue 9: a blob in no index is the same failure whoever meets it (it
/// was BACKUP_NOT_FOUND from a restore but SNAPSHOT_INVALID from check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_blob_has_the_same_code_in_restore_and_check() {
    let (faults, repo) = faulty_repo().await;
    backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 4))
        .await
        .unwrap();
    faults.add_rule(FaultRule::new(FaultOp::Any, Fault::Lose).kind(ObjectKind::Index));
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    let check_code = report.failure_code();
    assert!(
        report.findings.iter().all(|f| Some(f.code) == check_code),
        "{:?}",
        report.findings
    );
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot("latest").await.unwrap();
    let err = match read_file(&reader, &entry, "dump.sql").await {
        Err(err @ Error::Missing { .. }) => err,
        other => panic!("expected a missing blob, got {other:?}"),
    };
    assert_eq!(err.class(), ErrorClass::Missing);
    assert_eq!(Some(err.code(Operation::Restore)), check_code);
    assert_eq!(check_code, Some(ErrorCode::BackupNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_an_index_delta_is_repaired_from_the_trailers() {
    let (faults, repo) = faulty_repo().await;
    backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 5))
        .await
        .unwrap();
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 30, bit: 2 }).kind(ObjectKind::Index));
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert!(report.findings.iter().any(|f| f.object.starts_with("index/")));
    faults.clear();
    // The damage is permanent from here on: make it so in the store itself.
    let delta = repo.store().list(ObjectKind::Index).await.unwrap().remove(0);
    let mut bytes = repo.store().get(&delta.key).await.unwrap().to_vec();
    bytes[30] ^= 4;
    repo.store().delete(&delta.key).await.unwrap();
    repo.store()
        .put(&delta.key, bytes.into(), nfrepo_store::PutMode::CreateNew)
        .await
        .unwrap();

    let dry = repo.repair_index(true).await.unwrap();
    assert!(dry.written.is_none());
    assert_eq!(repo.store().list(ObjectKind::Index).await.unwrap().len(), 1);
    let fixed = repo.repair_index(false).await.unwrap();
    assert_eq!(fixed.packs_from_trailers, 2);
    assert_eq!(fixed.superseded, vec![delta.key.name().parse().unwrap()]);
    let report = repo.check(&read_all()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot("latest").await.unwrap();
    assert_eq!(
        read_file(&reader, &entry, "dump.sql").await.unwrap(),
        pseudo_random(300_000, 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_blobs_and_stray_packs_are_notes_not_failures() {
    let (_, repo) = faulty_repo().await;
    let data = pseudo_random(200_000, 6);
    // Two sessions that start before either commits both upload the same blobs.
    let first = repo
        .begin_backup(nfrepo_engine::BackupOptions::new("a", "stdin", "dump"))
        .await
        .unwrap();
    backup_stream(&repo, "b", "f", data.clone()).await.unwrap();
    let (first, root) = tokio::task::spawn_blocking(move || {
        let stored = first.store_stream(&data[..], false).unwrap();
        let node = nfrepo_format::Node {
            name: b"f".to_vec(),
            kind: stored.file_kind(),
            meta: nfrepo_format::Metadata::default(),
        };
        let root = first.store_tree(&nfrepo_format::Tree { nodes: vec![node] }).unwrap();
        (first, root)
    })
    .await
    .unwrap();
    first
        .commit(root, nfrepo_engine::CommitDetails::default())
        .await
        .unwrap();
    let report = repo.check(&read_all()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(report.duplicate_blobs > 0, "the same chunks are indexed in two packs");

    // A backup that died before its commit point leaves packs in no index:
    // make one by removing a fresh backup's snapshot and index delta.
    let before: Vec<_> = repo.store().list(ObjectKind::Index).await.unwrap();
    let (stray_snapshot, _) = backup_stream(&repo, "c", "g", pseudo_random(50_000, 9)).await.unwrap();
    let snapshot_key = nfrepo_store::ObjectKey::new(ObjectKind::Snapshot, stray_snapshot.to_hex()).unwrap();
    repo.store().delete(&snapshot_key).await.unwrap();
    for info in repo.store().list(ObjectKind::Index).await.unwrap() {
        if !before.iter().any(|b| b.key == info.key) {
            repo.store().delete(&info.key).await.unwrap();
        }
    }
    let report = repo.check(&read_all()).await.unwrap();
    assert_eq!(report.stray_packs.len(), 2, "its data and tree packs");
    let report = repo.check(&read_all()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    repo.repair_index(false).await.unwrap();
    let report = repo.check(&read_all()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(report.stray_packs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_snapshots_drops_damaged_files_and_keeps_the_original() {
    let (faults, repo) = faulty_repo().await;
    let (original, _) = backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 7))
        .await
        .unwrap();
    faults.add_rule(FaultRule::new(FaultOp::Any, Fault::Lose).kind(ObjectKind::Data));
    let dry = repo.repair_snapshots(false, true).await.unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!(dry[0].removed, vec!["dump.sql".to_owned()]);
    assert!(dry[0].repaired.is_none());
    assert_eq!(repo.snapshots().await.unwrap().len(), 1, "a dry run writes nothing");
    let done = repo.repair_snapshots(false, false).await.unwrap();
    let repaired = done[0].repaired.expect("a new snapshot");
    let all = repo.snapshots().await.unwrap();
    assert!(all.iter().any(|e| e.id == original), "the original is kept");
    let new = all.iter().find(|e| e.id == repaired).unwrap();
    assert!(new.snapshot.skipped.contains(&"damaged: dump.sql".to_owned()));
    assert!(
        new.snapshot
            .extra
            .contains(&("repaired_from".to_owned(), original.to_hex()))
    );
    let mut options = CheckOptions::default();
    options.snapshots = vec![repaired.to_hex()];
    assert!(
        repo.check(&options)
            .await
            .unwrap()
            .findings
            .iter()
            .all(|f| f.affected.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_read_data_runs_cover_every_pack_before_repeating() {
    let (_, repo) = faulty_repo().await;
    for seed in 0..4 {
        backup_stream(&repo, &format!("s{seed}"), "f", pseudo_random(100_000, 10 + seed))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(dir.path(), &repo.id().to_hex()).unwrap());
    let total = repo.check(&CheckOptions::default()).await.unwrap().packs_indexed;
    assert!(total >= 4, "{total}");
    let per_run = total.div_ceil(4);
    let mut options = CheckOptions::default();
    options.read_data = Some(ReadDataSubset::Percent(25.0));
    options.cache = Some(cache.clone());
    for _ in 0..4 {
        assert_eq!(repo.check(&options).await.unwrap().packs_read, per_run);
    }
    assert_eq!(
        cache.pack_checks().unwrap().len() as u64,
        total,
        "four runs of 25% read every pack"
    );
    // With --max-age, packs verified just now are skipped.
    options.read_data = Some(ReadDataSubset::All);
    options.max_age_secs = Some(3600);
    let report = repo.check(&options).await.unwrap();
    assert_eq!((report.packs_read, report.packs_fresh), (0, total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_lagging_listings_are_not_mistaken_for_lost_packs() {
    let (faults, repo) = faulty_repo().await;
    backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 8))
        .await
        .unwrap();
    let pack = repo.store().list(ObjectKind::Data).await.unwrap().remove(0);
    // The listing is slow and does not show the pack yet; the pack is there.
    faults.add_rule(FaultRule::new(
        FaultOp::List,
        Fault::Delay(std::time::Duration::from_millis(20)),
    ));
    faults.add_rule(
        FaultRule::new(FaultOp::List, Fault::Lose)
            .kind(ObjectKind::Data)
            .name_prefix(pack.key.name()),
    );
    let report = repo.check(&read_all()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.packs_read, report.packs_indexed);
    // Gone for real, it is named.
    faults.add_rule(FaultRule::new(FaultOp::Any, Fault::Lose).kind(ObjectKind::Data));
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_whose_index_delta_is_gone_when_it_is_read_says_so() {
    let (faults, repo) = faulty_repo().await;
    backup_stream(&repo, "db", "dump.sql", pseudo_random(300_000, 9))
        .await
        .unwrap();
    let pack = repo.store().list(ObjectKind::Data).await.unwrap().remove(0);
    assert_eq!(repo.store().list(ObjectKind::Index).await.unwrap().len(), 1);
    // The pack's trailer does not open, so its entries are read again from
    // its delta, which a compaction has removed since the load pass read it.
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::Truncate { len: 1000 }).kind(ObjectKind::Data));
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::Lose)
            .kind(ObjectKind::Index)
            .after(1),
    );
    let report = repo.check(&read_all()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    let finding = report.findings.iter().find(|f| f.object == pack.key.path()).unwrap();
    assert!(finding.message.contains("pack trailer does not open"), "{finding:?}");
    assert!(finding.message.contains("no longer opens"), "{finding:?}");
    assert!(finding.blobs.is_empty(), "no blob list to open: {finding:?}");
}
