//! `forget` by policy, protection, and dry runs.

use nfrepo_engine::{ForgetOptions, KeepReason, RetentionPolicy};

use super::fixture::{backup_stream, init, memory, pseudo_random};

fn keep_last(n: u32) -> RetentionPolicy {
    serde_json::from_value(serde_json::json!({ "keep-last": n })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_keeps_by_policy_per_source_and_protected_snapshots() {
    let repo = init(memory()).await;
    let mut ids = Vec::new();
    for i in 0..3u64 {
        ids.push(backup_stream(&repo, "db", "f", pseudo_random(1000, i)).await.unwrap().0);
    }
    let other = backup_stream(&repo, "web", "f", pseudo_random(1000, 9))
        .await
        .unwrap()
        .0;
    repo.protect(&ids[0].to_hex()[..10], "legal hold").await.unwrap();
    repo.protect(&ids[0].to_hex(), "twice is fine").await.unwrap();

    let mut options = ForgetOptions::with_policy(keep_last(1));
    options.source = Some("db".into());
    options.dry_run = true;
    let dry = repo.forget(&options).await.unwrap();
    let removed: Vec<_> = dry.removed().map(|d| d.entry.id).collect();
    assert_eq!(removed, vec![ids[1]]);
    assert_eq!(repo.snapshots().await.unwrap().len(), 4, "a dry run deletes nothing");
    let decisions = &dry.groups[0].1;
    assert_eq!(decisions[0].reasons, vec![KeepReason::Protected]);
    assert_eq!(decisions[2].reasons, vec![KeepReason::Last]);

    options.dry_run = false;
    repo.forget(&options).await.unwrap();
    let left: Vec<_> = repo.snapshots().await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&ids[1]));
    assert!(left.contains(&other), "other sources are not touched with --source");

    let done = repo.unprotect(&ids[0].to_hex()).await.unwrap();
    assert_eq!((done.snapshot, done.was_protected, done.orphan), (ids[0], true, false));
    repo.forget(&options).await.unwrap();
    let left: Vec<_> = repo.snapshots().await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left, vec![ids[2], other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_refuses_an_empty_policy_and_leaves_sources_without_one() {
    let repo = init(memory()).await;
    backup_stream(&repo, "db", "f", pseudo_random(10, 1)).await.unwrap();
    let err = repo
        .forget(&ForgetOptions::with_policy(RetentionPolicy::default()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without any keep rule"), "{err}");
    let mut options = ForgetOptions::default();
    options.per_source.insert("other".into(), keep_last(1));
    let report = repo.forget(&options).await.unwrap();
    assert_eq!(report.removed().count(), 0);
    assert_eq!(report.groups[0].1[0].reasons, vec![KeepReason::NoPolicy]);
}
