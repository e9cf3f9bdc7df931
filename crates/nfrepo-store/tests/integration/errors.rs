use std::time::{Duration, Instant};

use nfrepo_store::{Credentials, ErrorKind, ObjectKey, ObjectKind, OpenOptions, StoreUrl, open};

#[tokio::test]
async fn refused_connection_is_unreachable_and_fast() {
    let url = StoreUrl::parse("s3://bucket/prefix?endpoint=http://127.0.0.1:1").unwrap();
    let store = open(&url, &Credentials::new("id", "secret"), &OpenOptions::default()).unwrap();
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
    let err = open(&url, &Credentials::none(), &OpenOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
}

// Issue 12, item 5: an S3 endpoint over plain http is refused off this
// machine, by both ways a URL becomes a store, unless allowed.
#[test]
fn plain_http_off_loopback_is_refused_unless_allowed() {
    let creds = Credentials::new("id", "secret");
    let remote = StoreUrl::parse("s3://bucket/p?endpoint=http://10.1.2.3:9000").unwrap();
    let strict = OpenOptions::default();
    let err = open(&remote, &creds, &strict).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{err}");
    assert_eq!(
        err.to_string(),
        "s3://bucket/p?endpoint=http://10.1.2.3:9000: refusing plain http:// endpoint http://10.1.2.3:9000: \
         only loopback addresses may use http, use https://"
    );
    let err = nfrepo_store::s3_bucket_operator(&remote, &creds, &strict).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsecureTransport, "{err}");

    let allowed = OpenOptions::default().allow_insecure_http(true);
    assert!(open(&remote, &creds, &allowed).is_ok());
    assert!(nfrepo_store::s3_bucket_operator(&remote, &creds, &allowed).is_ok());
    for fine in [
        "s3://bucket/p?endpoint=http://127.0.0.1:9000",
        "s3://bucket/p?endpoint=http://localhost:9000",
        "s3://bucket/p?endpoint=http://[::1]:9000",
        "s3://bucket/p?endpoint=https://10.1.2.3:9000",
    ] {
        let url = StoreUrl::parse(fine).unwrap();
        assert!(open(&url, &creds, &strict).is_ok(), "{fine}");
        assert!(
            nfrepo_store::s3_bucket_operator(&url, &creds, &strict).is_ok(),
            "{fine}"
        );
    }
}
