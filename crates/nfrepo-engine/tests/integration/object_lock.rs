//! An object-locked repository on a real S3 server that enforces retention
//! (SeaweedFS's `nfrepo-lock` bucket, made by `scripts/start-seaweedfs.sh`),
//! with a retention of seconds so that it lapses within the test: the server's
//! own clock decides, nothing is faked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nfrepo_engine::{CheckOptions, Error, GcOptions, InitOptions, Repository};
use nfrepo_format::{KdfParams, ObjectLock};
use nfrepo_store::{Credentials, ErrorKind, ObjectKey, ObjectKind, RetryPolicy, RetryStore, Store, StoreUrl};

use super::fixture::{PASSWORD, backup_stream, pseudo_random, read_file};

const RETAIN_SECS: u64 = 6;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: object-lock tests need SeaweedFS with the nfrepo-lock bucket; run \
             scripts/test.sh or export NFREPO_TEST_S3_ENDPOINT, NFREPO_TEST_S3_LOCK_BUCKET, \
             NFREPO_TEST_S3_BUCKET, NFREPO_TEST_S3_ACCESS_KEY and NFREPO_TEST_S3_SECRET_KEY"
        )
    })
}

fn store_in(bucket: &str, test: &str) -> Arc<dyn Store> {
    let prefix = format!("engine-{test}-{:016x}", rand_u64());
    let url = StoreUrl::parse(&format!(
        "s3://{bucket}/{prefix}?endpoint={}",
        var("NFREPO_TEST_S3_ENDPOINT")
    ))
    .unwrap();
    let creds = Credentials::new(var("NFREPO_TEST_S3_ACCESS_KEY"), var("NFREPO_TEST_S3_SECRET_KEY"));
    Arc::new(RetryStore::new(
        nfrepo_store::open(&url, &creds, &nfrepo_store::OpenOptions::default()).unwrap(),
        RetryPolicy::default(),
    ))
}

fn rand_u64() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn options() -> InitOptions {
    let mut options = InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    options.pack_size = 4 * 1024 * 1024;
    options.object_lock = Some(ObjectLock {
        mode: ObjectLock::COMPLIANCE,
        retain_secs: RETAIN_SECS,
        audit_retain_secs: RETAIN_SECS,
    });
    options
}

async fn assert_clean(repo: &Repository) {
    let report = repo.check(&CheckOptions::default()).await.unwrap();
    assert!(report.findings.is_empty(), "check: {:?}", report.findings);
}

async fn sleep_past(t: SystemTime) {
    if let Ok(left) = t.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(1500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_a_bucket_without_object_lock_and_writes_nothing() {
    let plain = store_in(&var("NFREPO_TEST_S3_BUCKET"), "nolock");
    let err = Repository::init(plain.clone(), PASSWORD, options()).await.unwrap_err();
    assert!(
        matches!(err, Error::Invalid(ref m) if m.contains("object lock")),
        "{err}"
    );
    assert!(plain.list(ObjectKind::Key).await.unwrap().is_empty());
    assert!(plain.list(ObjectKind::Config).await.unwrap().is_empty());
}

/// Deletes of retained objects are refused by the server, gc reports them as
/// retained (not as an error), a later gc after the date frees them, live
/// objects get their retention renewed, and the repository checks clean
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reports_retained_packs_then_frees_them_after_expiry() {
    let store = store_in(&var("NFREPO_TEST_S3_LOCK_BUCKET"), "gc");
    let repo = Repository::init(store.clone(), PASSWORD, options()).await.unwrap();
    let reopened = Repository::open(store.clone(), PASSWORD).await.unwrap();
    assert_eq!(
        reopened.object_lock(),
        repo.object_lock(),
        "the config keeps the policy"
    );
    assert!(repo.object_lock().is_some());

    let kept = pseudo_random(1 << 20, 1);
    let (keep, _) = backup_stream(&repo, "db", "f", kept.clone()).await.unwrap();
    let (gone, _) = backup_stream(&repo, "db", "f", pseudo_random(1 << 20, 2))
        .await
        .unwrap();
    // forget: a plain delete hides the snapshot at once, whatever its retention.
    let gone_key = ObjectKey::new(ObjectKind::Snapshot, gone.to_hex()).unwrap();
    repo.store().delete(&gone_key).await.unwrap();
    assert!(repo.find_snapshot(&gone.to_hex()).await.is_err());

    let gc = GcOptions::default().grace(Duration::ZERO);
    let first = repo.gc(&gc).await.unwrap();
    assert!(first.planned.packs >= 1, "{first:?}");
    let second = repo.gc(&gc).await.unwrap();
    assert!(second.deleted.packs >= 1, "{second:?}");
    let locked = second
        .object_lock
        .clone()
        .expect("an object-locked gc reports its passes");
    // The doomed packs and the forgotten snapshot: the server refused every versioned delete.
    assert!(locked.retained > second.deleted.packs, "{locked:?}");
    let until = locked.retained_until.expect("a retain-until date");
    assert!(until > SystemTime::now(), "{locked:?}");
    assert_clean(&repo).await;
    assert!(
        !store.list_purgeable(ObjectKind::Data).await.unwrap().is_empty(),
        "versions kept"
    );
    let err = store.purge(&gone_key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Retained, "{err}");

    sleep_past(until).await;
    let third = repo.gc(&gc).await.unwrap();
    let locked = third.object_lock.clone().unwrap();
    assert!(locked.purged > second.deleted.packs, "{locked:?}");
    assert!(
        store.list_purgeable(ObjectKind::Data).await.unwrap().is_empty(),
        "{locked:?}"
    );
    assert!(
        store.list_purgeable(ObjectKind::Snapshot).await.unwrap().is_empty(),
        "{locked:?}"
    );
    // Live objects older than half their period were renewed.
    assert!(locked.renewed >= 3, "{locked:?}");
    assert_clean(&repo).await;
    let reader = repo.reader().await.unwrap();
    let entry = repo.find_snapshot(&keep.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), kept);

    // The renewal is real: the kept snapshot, written more than a period ago,
    // is retained again.
    let keep_key = ObjectKey::new(ObjectKind::Snapshot, keep.to_hex()).unwrap();
    repo.store().delete(&keep_key).await.unwrap();
    let err = store.purge(&keep_key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Retained, "{err}");
}
