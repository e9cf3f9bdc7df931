//! S3 Object Lock against a real server: SeaweedFS's `nfrepo-lock` bucket,
//! made with object lock enabled by `scripts/start-seaweedfs.sh`.
//!
//! They read `NFREPO_TEST_S3_LOCK_BUCKET` besides the variables of `s3.rs`,
//! and fail rather than skip when it is unset.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nfrepo_store::{
    Credentials, ErrorKind, ObjectKey, ObjectKind, ObjectLockPolicy, ObjectLockStore, PutMode, Retention,
    RetentionMode, RetryPolicy, RetryStore, Store, StoreUrl, open,
};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run scripts/test.sh (which starts SeaweedFS with the object-lock bucket \
             nfrepo-lock), or set NFREPO_TEST_S3_ENDPOINT, NFREPO_TEST_S3_LOCK_BUCKET, \
             NFREPO_TEST_S3_ACCESS_KEY and NFREPO_TEST_S3_SECRET_KEY"
        )
    })
}

fn open_bucket(bucket: &str, test: &str) -> Arc<dyn Store> {
    let prefix = format!("it-{test}-{:016x}", getrandom::u64().unwrap());
    let url = StoreUrl::parse(&format!(
        "s3://{bucket}/{prefix}?endpoint={}",
        var("NFREPO_TEST_S3_ENDPOINT")
    ))
    .unwrap();
    let creds = Credentials::new(var("NFREPO_TEST_S3_ACCESS_KEY"), var("NFREPO_TEST_S3_SECRET_KEY"));
    Arc::new(RetryStore::new(
        open(&url, &creds, &nfrepo_store::OpenOptions::default()).unwrap(),
        RetryPolicy::default(),
    ))
}

fn locked(test: &str) -> Arc<dyn Store> {
    open_bucket(&var("NFREPO_TEST_S3_LOCK_BUCKET"), test)
}

fn key(kind: ObjectKind, name: &str) -> ObjectKey {
    ObjectKey::new(kind, name).unwrap()
}

fn compliance(until: SystemTime) -> Retention {
    Retention {
        mode: RetentionMode::Compliance,
        until,
    }
}

/// Whole seconds, as S3 stores retain-until dates.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

async fn sleep_past(t: SystemTime) {
    if let Ok(left) = t.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(1500)).await;
    }
}

/// The probe the issue asks for: does SeaweedFS enforce retention, or only
/// accept it? A retained version must survive a delete, stay readable by
/// version, and refuse a versioned delete until its date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_enforces_object_lock() {
    let store = locked("probe");
    assert!(
        store.object_lock_enabled().await.unwrap(),
        "the lock bucket has object lock"
    );
    let plain = open_bucket(&var("NFREPO_TEST_S3_BUCKET"), "probe");
    assert!(!plain.object_lock_enabled().await.unwrap(), "the plain bucket has none");

    let k = key(ObjectKind::Snapshot, "5e1f00");
    store
        .put(&k, Bytes::from_static(b"root"), PutMode::CreateNew)
        .await
        .unwrap();
    let until = SystemTime::now() + Duration::from_secs(120);
    store.set_retention(&k, compliance(until)).await.unwrap();
    // Compliance mode: shortening is refused.
    let err = store
        .set_retention(&k, compliance(SystemTime::now() + Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

    // A plain delete only hides the object behind a delete marker.
    store.delete(&k).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(
        store.list(ObjectKind::Snapshot).await.unwrap().is_empty(),
        "listings ignore hidden objects"
    );
    let purgeable = store.list_purgeable(ObjectKind::Snapshot).await.unwrap();
    assert_eq!(purgeable.len(), 1);
    assert_eq!((purgeable[0].key.clone(), purgeable[0].size), (k.clone(), 4));

    // Deleting the version itself is refused by the server: retained, with its date.
    let err = store.purge(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Retained, "{err}");
    assert_eq!(secs(err.retained_until().unwrap()), secs(until));
    assert_eq!(
        store.list_purgeable(ObjectKind::Snapshot).await.unwrap().len(),
        1,
        "still kept"
    );
    // It stays hidden: the delete marker was not removed.
    assert_eq!(store.stat(&k).await.unwrap_err().kind(), ErrorKind::NotFound);
    // And a write-once put of the same name works again (the latest version is a marker).
    store
        .put(&k, Bytes::from_static(b"again"), PutMode::CreateNew)
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap(), Bytes::from_static(b"again"));

    // Without object lock there is nothing to set.
    let err = plain
        .set_retention(&k, compliance(SystemTime::now() + Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_ne!(err.kind(), ErrorKind::Retained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_versions_are_freed_after_their_date() {
    let store = locked("lapse");
    let k = key(ObjectKind::Data, "ab0001");
    store
        .put(&k, Bytes::from_static(b"pack"), PutMode::CreateNew)
        .await
        .unwrap();
    let until = SystemTime::now() + Duration::from_secs(3);
    store.set_retention(&k, compliance(until)).await.unwrap();
    store.delete(&k).await.unwrap();
    assert_eq!(store.purge(&k).await.unwrap_err().kind(), ErrorKind::Retained);

    sleep_past(until).await;
    store.purge(&k).await.unwrap();
    assert!(
        store.list_purgeable(ObjectKind::Data).await.unwrap().is_empty(),
        "versions and markers gone"
    );
    assert_eq!(store.stat(&k).await.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_versions_are_purged_and_the_current_one_kept() {
    let store = locked("overwrite");
    let k = key(ObjectKind::Session, "5e5510");
    for body in ["one", "two", "three"] {
        store.put(&k, Bytes::from(body), PutMode::Overwrite).await.unwrap();
    }
    let purgeable = store.list_purgeable(ObjectKind::Session).await.unwrap();
    assert_eq!(purgeable.len(), 1);
    assert_eq!(purgeable[0].size, 6, "the two older versions");
    store.purge(&k).await.unwrap();
    assert!(store.list_purgeable(ObjectKind::Session).await.unwrap().is_empty());
    assert_eq!(store.get(&k).await.unwrap(), Bytes::from_static(b"three"));
}

/// `ObjectLockStore` retains write-once objects of retained kinds and leaves
/// rewritten ones alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_store_retains_write_once_objects_by_class() {
    let policy = ObjectLockPolicy::new(
        RetentionMode::Governance,
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    let store = ObjectLockStore::new(locked("classes"), policy);
    let before = SystemTime::now();
    let snapshot = key(ObjectKind::Snapshot, "aa01");
    let audit = key(ObjectKind::Audit, "aa02");
    let session = key(ObjectKind::Session, "aa03");
    for k in [&snapshot, &audit, &session] {
        store
            .put(k, Bytes::from_static(b"x"), PutMode::CreateNew)
            .await
            .unwrap();
        store.delete(k).await.unwrap();
    }
    let until = |k: &ObjectKey| {
        let store = &store;
        let k = k.clone();
        async move {
            store.purge(&k).await.map(|()| None).or_else(|e| match e.kind() {
                ErrorKind::Retained => Ok(e.retained_until()),
                _ => Err(e),
            })
        }
    };
    let snapshot_until = until(&snapshot).await.unwrap().expect("snapshot retained");
    let audit_until = until(&audit).await.unwrap().expect("audit entry retained");
    assert_eq!(
        until(&session).await.unwrap(),
        None,
        "a session marker is never retained"
    );
    let near = |t: SystemTime, period: u64| {
        let from = secs(before) + period;
        (from..=from + 30).contains(&secs(t))
    };
    assert!(near(snapshot_until, 60), "snapshot: {snapshot_until:?}");
    assert!(
        near(audit_until, 600),
        "audit entries get the longest retention: {audit_until:?}"
    );
}
