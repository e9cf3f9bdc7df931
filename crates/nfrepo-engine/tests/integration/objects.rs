//! Loading metadata objects (issue 9, "one typed object layer"): every
//! reader sorts what it lists into objects that open, damaged ones (with
//! the specific error) and ones removed since the listing (a normal race),
//! and a storage failure is never mistaken for either.

use std::sync::Arc;

use nfrepo_engine::{CheckOptions, Error, ErrorCode, Repository};
use nfrepo_store::{
    ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKey, ObjectKind, PutMode, Store,
};

use super::fixture::{backup_stream, init, pseudo_random};

async fn faulty_repo() -> (Arc<FaultStore<MemoryStore>>, Repository) {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store).await;
    (faults, repo)
}

/// Two snapshots of different sources; returns their keys.
async fn two_snapshots(repo: &Repository) -> (ObjectKey, ObjectKey) {
    let (a, _) = backup_stream(repo, "a", "f", pseudo_random(10_000, 1)).await.unwrap();
    let (b, _) = backup_stream(repo, "b", "f", pseudo_random(10_000, 2)).await.unwrap();
    let key = |id: nfrepo_format::SnapshotId| ObjectKey::new(ObjectKind::Snapshot, id.to_hex()).unwrap();
    (key(a), key(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_named_with_its_specific_error() {
    let (faults, repo) = faulty_repo().await;
    let (a, b) = two_snapshots(&repo).await;
    // A flipped bit: the bytes no longer hash to the snapshot's name.
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 40, bit: 1 })
            .kind(ObjectKind::Snapshot)
            .name_prefix(a.name()),
    );
    match repo.snapshots().await {
        Err(Error::Corrupted { object, source }) => {
            assert_eq!(object, a.path());
            assert!(
                matches!(source, nfrepo_format::Error::HashMismatch { what: "snapshot", .. }),
                "{source:?}"
            );
        }
        other => panic!("expected the damaged snapshot, got {other:?}"),
    }
    let readable = repo.readable_snapshots().await.unwrap();
    assert_eq!(readable.len(), 1);
    assert_eq!(readable[0].id.to_hex(), b.name());
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert_eq!(report.findings[0].object, a.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_of_another_kind_is_a_wrong_kind_not_a_snapshot() {
    let (_, repo) = faulty_repo().await;
    two_snapshots(&repo).await;
    // An index delta stored under the snapshots' prefix, named by its own
    // hash (as a snapshot would be): the id matches, the magic does not.
    let delta = repo.store().list(ObjectKind::Index).await.unwrap().remove(0);
    let bytes = repo.store().get(&delta.key).await.unwrap();
    let planted = ObjectKey::new(ObjectKind::Snapshot, delta.key.name()).unwrap();
    repo.store().put(&planted, bytes, PutMode::CreateNew).await.unwrap();
    match repo.snapshots().await {
        Err(Error::Corrupted { object, source }) => {
            assert_eq!(object, planted.path());
            assert!(matches!(source, nfrepo_format::Error::BadMagic { .. }), "{source:?}");
        }
        other => panic!("expected a wrong kind, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_removed_after_the_listing_are_not_damage() {
    let (faults, repo) = faulty_repo().await;
    let (a, _) = two_snapshots(&repo).await;
    repo.protect(a.name(), "hold").await.unwrap();
    // Listed, but gone when fetched: forgotten, unprotected meanwhile.
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::Lose).name_prefix(a.name()));
    let snapshots = repo.snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 1, "the vanished snapshot is simply gone");
    assert!(repo.protected_snapshots().await.unwrap().is_empty());
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_is_neither_damage_nor_a_race() {
    let (faults, repo) = faulty_repo().await;
    two_snapshots(&repo).await;
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::PermissionDenied)).kind(ObjectKind::Snapshot));
    assert!(matches!(
        repo.readable_snapshots().await,
        Err(Error::StoragePermission(_))
    ));
    assert!(matches!(
        repo.check(&CheckOptions::default()).await,
        Err(Error::StoragePermission(_))
    ));
    faults.clear();
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::PermissionDenied)).kind(ObjectKind::Protect));
    repo.protected_snapshots().await.unwrap(); // nothing to read yet
    let any = repo.snapshots().await.unwrap().remove(0);
    faults.clear();
    repo.protect(&any.id.to_hex(), "hold").await.unwrap();
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::PermissionDenied)).kind(ObjectKind::Protect));
    assert!(matches!(
        repo.protected_snapshots().await,
        Err(Error::StoragePermission(_))
    ));
}

/// Issue 9: `repair index` skipped every delta it could not fetch, for any
/// reason, and then deleted it as superseded: a storage hiccup lost the
/// only record of packs whose trailers are damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_index_stops_on_a_storage_failure_and_deletes_nothing() {
    let (faults, repo) = faulty_repo().await;
    two_snapshots(&repo).await;
    let before = repo.store().list(ObjectKind::Index).await.unwrap();
    faults.add_rule(
        FaultRule::new(FaultOp::Get, Fault::Fail(ErrorKind::PermissionDenied))
            .kind(ObjectKind::Index)
            .times(1),
    );
    let err = repo.repair_index(false).await.expect_err("the repair must stop");
    assert!(matches!(err, Error::StoragePermission(_)), "{err:?}");
    faults.clear();
    let after = repo.store().list(ObjectKind::Index).await.unwrap();
    assert_eq!(after.len(), before.len(), "no delta was deleted or added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_name_is_reported_by_check_and_ignored_elsewhere() {
    let (_, repo) = faulty_repo().await;
    two_snapshots(&repo).await;
    let stray = ObjectKey::new(ObjectKind::Snapshot, "notes.txt").unwrap();
    repo.store()
        .put(&stray, bytes::Bytes::from_static(b"hello"), PutMode::CreateNew)
        .await
        .unwrap();
    assert_eq!(repo.snapshots().await.unwrap().len(), 2);
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert_eq!(report.failure_code(), Some(ErrorCode::BackupCorrupted));
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].object, stray.path());
}
