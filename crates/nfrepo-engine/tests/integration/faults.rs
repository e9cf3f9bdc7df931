//! Storage faults: nothing is committed after a failed upload, and damaged
//! bytes are reported, never returned.

use std::sync::Arc;

use nfrepo_engine::{Error, ErrorClass, ErrorCode, Operation, Repository};
use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKind, Store};

use super::fixture::{PASSWORD, backup_stream, init, pseudo_random, read_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pack_upload_commits_nothing() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store).await;
    faults.add_rule(FaultRule::new(FaultOp::Put, Fault::Fail(ErrorKind::PermissionDenied)).kind(ObjectKind::Data));
    let err = backup_stream(&repo, "s", "f", pseudo_random(9 * 1024 * 1024, 2))
        .await
        .expect_err("the backup must fail");
    // Issue 9: the storage's refusal reaches the caller typed, whichever
    // worker met it first (it used to arrive as a pipeline message: exit 10).
    assert_eq!(err.class(), ErrorClass::Denied, "{err:?}");
    assert_eq!(err.code(Operation::Backup), ErrorCode::PermissionDenied, "{err:?}");
    faults.clear();
    assert!(repo.snapshots().await.unwrap().is_empty());
    assert!(repo.store().list(ObjectKind::Index).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_snapshot_write_leaves_no_snapshot() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store).await;
    faults.add_rule(FaultRule::new(FaultOp::Put, Fault::Fail(ErrorKind::Unreachable)).kind(ObjectKind::Snapshot));
    let err = backup_stream(&repo, "s", "f", pseudo_random(100_000, 2))
        .await
        .expect_err("the snapshot write fails");
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable());
    faults.clear();
    assert!(repo.snapshots().await.unwrap().is_empty());
    // The next run works, and reuses the data already uploaded.
    let (_, snapshot) = backup_stream(&repo, "s", "f", pseudo_random(100_000, 2)).await.unwrap();
    assert_eq!(snapshot.summary.bytes_added_raw, 0, "{:?}", snapshot.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_in_a_data_pack_is_reported_with_the_pack() {
    let faults = Arc::new(FaultStore::new(MemoryStore::new()));
    let store: Arc<dyn Store> = faults.clone();
    let repo = init(store.clone()).await;
    let data = pseudo_random(300_000, 4);
    backup_stream(&repo, "s", "f", data.clone()).await.unwrap();
    let pack = repo.store().list(ObjectKind::Data).await.unwrap().remove(0);
    faults.add_rule(FaultRule::new(FaultOp::Get, Fault::FlipBit { byte: 200, bit: 3 }).kind(ObjectKind::Data));
    let repo = Repository::open(store, PASSWORD).await.unwrap();
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot("latest").await.unwrap();
    match read_file(&reader, &entry, "f").await {
        Err(Error::Corrupted { object, .. }) => assert!(object.contains(pack.key.name()), "{object}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}
