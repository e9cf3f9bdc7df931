use std::time::{Duration, Instant};

use nfrepo_store::{Credentials, ErrorKind, ObjectKey, ObjectKind, StoreUrl, open};

#[tokio::test]
async fn refused_connection_is_unreachable_and_fast() {
    let url = StoreUrl::parse("s3://bucket/prefix?endpoint=http://127.0.0.1:1").unwrap();
    let store = open(&url, &Credentials::new("id", "secret")).unwrap();
    let key = ObjectKey::new(ObjectKind::Index, "i1").unwrap();
    let start = Instant::now();
    let err = store.get(&key).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.is_retryable());
    let shown = err.to_string();
    assert!(
        shown.starts_with("s3://bucket/prefix?endpoint=http://127.0.0.1:1: backend unreachable"),
        "{shown}"
    );
    assert!(!shown.contains("secret"), "{shown}");
    assert_eq!(
        store.list(ObjectKind::Index).await.unwrap_err().kind(),
        ErrorKind::Unreachable
    );
}

#[test]
fn s3_without_credentials_is_refused() {
    let url = StoreUrl::parse("s3://bucket/prefix?endpoint=http://127.0.0.1:1").unwrap();
    let err = open(&url, &Credentials::none()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
}
