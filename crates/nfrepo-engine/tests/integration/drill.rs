//! Drill records (issue 11): written once, listed oldest first, kept by
//! forget and gc, and a damaged one is reported, not dropped.

use nfrepo_engine::{ForgetOptions, GcOptions, RetentionPolicy};
use nfrepo_format::{DrillCheck, DrillId, DrillPhase, DrillRecord};
use nfrepo_store::{ObjectKey, ObjectKind, PutMode, Store};

use super::fixture::{backup_stream, init, memory, pseudo_random};

fn record(id: u8, started_ns: i64, snapshot: nfrepo_format::SnapshotId) -> DrillRecord {
    DrillRecord {
        id: DrillId([id; 32]),
        source: "db".into(),
        source_kind: "mysql".into(),
        snapshot: Some(snapshot),
        snapshot_time_ns: 1,
        started_ns,
        by: "dr@host".into(),
        passed: true,
        code: String::new(),
        failed_check: String::new(),
        message: String::new(),
        rto_ms: Some(1500),
        rpo_ms: Some(60_000),
        phases: vec![DrillPhase {
            name: "restore".into(),
            ms: 1000,
        }],
        checks: vec![DrillCheck {
            name: "rows app.t".into(),
            passed: true,
            detail: "3 rows".into(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_records_survive_forget_and_gc_and_damage_is_reported() {
    let store = memory();
    let repo = init(store.clone()).await;
    let (old, _) = backup_stream(&repo, "db", "f", pseudo_random(1000, 1)).await.unwrap();
    backup_stream(&repo, "db", "f", pseudo_random(1000, 2)).await.unwrap();
    // Written out of time order: the history sorts by start.
    repo.record_drill(&record(2, 200, old)).await.unwrap();
    repo.record_drill(&record(1, 100, old)).await.unwrap();

    let keep_last: RetentionPolicy = serde_json::from_value(serde_json::json!({ "keep-last": 1 })).unwrap();
    repo.forget(&ForgetOptions::with_policy(keep_last)).await.unwrap();
    let mut gc = GcOptions::default();
    gc.grace = std::time::Duration::ZERO;
    repo.gc(&gc).await.unwrap();
    repo.gc(&gc).await.unwrap();
    assert!(repo.snapshots().await.unwrap().iter().all(|e| e.id != old));

    let history = repo.drill_history().await.unwrap();
    let started: Vec<i64> = history.records.iter().map(|r| r.started_ns).collect();
    assert_eq!(started, vec![100, 200], "records outlive the snapshot they drilled");
    assert_eq!(history.records[0], record(1, 100, old));
    assert!(history.damaged.is_empty());

    // A record renamed onto another id does not open, and is named.
    let bytes = store
        .get(&ObjectKey::new(ObjectKind::Drill, DrillId([1; 32]).to_hex()).unwrap())
        .await
        .unwrap();
    let renamed = ObjectKey::new(ObjectKind::Drill, DrillId([3; 32]).to_hex()).unwrap();
    store.put(&renamed, bytes, PutMode::CreateNew).await.unwrap();
    let history = repo.drill_history().await.unwrap();
    assert_eq!(history.records.len(), 2);
    assert_eq!(history.damaged.len(), 1);
    assert_eq!(history.damaged[0].0, renamed.path());
    assert!(history.damaged[0].1.contains("records"), "{}", history.damaged[0].1);
}
