//! The bucket source on OpenDAL's in-memory service: objects become files
//! at their keys, with the ETag recorded.

use nfrepo_format::NodeKind;
use nfrepo_sources::BucketSource;

use super::fixture::{repo, run};

async fn bucket(objects: &[(&str, &[u8])]) -> opendal::Operator {
    let operator = opendal::Operator::new(opendal::services::Memory::default()).unwrap();
    for (key, body) in objects {
        operator.write(key, body.to_vec()).await.unwrap();
    }
    operator
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_becomes_a_file_at_its_key() {
    let repo = repo().await;
    let operator = bucket(&[("a.txt", b"alpha"), ("logs/2026/b.log", b"beta!"), ("logs/c.log", b"c")]).await;
    let report = run(&repo, "uploads", BucketSource::new(operator, "memory://uploads"))
        .await
        .unwrap();
    assert_eq!(report.snapshot.source_kind, "bucket");
    assert_eq!(report.snapshot.paths, ["memory://uploads"]);
    assert_eq!(report.snapshot.summary.files, 3);
    assert_eq!(report.snapshot.summary.bytes, 11);
    assert!(!report.partial());
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&report.id.to_hex()).await.unwrap();
    let node = reader
        .resolve(&entry, "logs/2026/b.log")
        .await
        .unwrap()
        .expect("object stored at its key");
    assert!(matches!(node.kind, NodeKind::File { size: 5, .. }));
    let mut out = Vec::new();
    nfrepo_sources::write_content(&reader, &node, &mut out).await.unwrap();
    assert_eq!(out, b"beta!");
}

// The memory service gives no ETag, so nothing may be trusted unchanged:
// every object is read again, and deduplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_without_an_etag_are_read_again_and_deduplicated() {
    let repo = repo().await;
    let operator = bucket(&[("a.txt", b"alpha"), ("b.txt", b"beta")]).await;
    let first = run(&repo, "uploads", BucketSource::new(operator.clone(), "memory://u"))
        .await
        .unwrap();
    let second = run(&repo, "uploads", BucketSource::new(operator, "memory://u"))
        .await
        .unwrap();
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!(second.snapshot.summary.files_unchanged, 0);
    assert_eq!(second.snapshot.summary.bytes_read, 9);
    assert_eq!(second.snapshot.summary.blobs_added, 0);
}
