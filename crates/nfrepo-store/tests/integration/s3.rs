//! Tests against a real S3 server (SeaweedFS in CI).
//!
//! They read `NFREPO_TEST_S3_ENDPOINT` (e.g. `http://127.0.0.1:18333`),
//! `NFREPO_TEST_S3_BUCKET` (`nfrepo-test`), `NFREPO_TEST_S3_ACCESS_KEY`
//! (`nfrepo-test`) and `NFREPO_TEST_S3_SECRET_KEY` (`nfrepo-test-secret`), and fail
//! rather than skip when they are unset, so a green run always includes S3.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use nfrepo_store::{
    Credentials, ErrorKind, ObjectKey, ObjectKind, OpenOptions, PutMode, RetryPolicy, RetryStore, Store, StoreUrl, open,
};

use super::conformance;

struct S3Env {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

fn env() -> S3Env {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run scripts/test.sh (which starts SeaweedFS), or set \
                 NFREPO_TEST_S3_ENDPOINT, NFREPO_TEST_S3_BUCKET, NFREPO_TEST_S3_ACCESS_KEY \
                 and NFREPO_TEST_S3_SECRET_KEY"
            )
        })
    };
    S3Env {
        endpoint: var("NFREPO_TEST_S3_ENDPOINT"),
        bucket: var("NFREPO_TEST_S3_BUCKET"),
        access_key: var("NFREPO_TEST_S3_ACCESS_KEY"),
        secret_key: var("NFREPO_TEST_S3_SECRET_KEY"),
    }
}

/// A store under a fresh prefix, so runs never see each other's objects.
/// A store on a fresh prefix, behind the same retry layer the CLI uses: a
/// loaded server may answer 5xx now and then, which production retries too.
fn open_fresh(env: &S3Env, test: &str, creds: &Credentials) -> Arc<dyn Store> {
    let prefix = format!("it-{test}-{:016x}", getrandom::u64().unwrap());
    let url = StoreUrl::parse(&format!("s3://{}/{prefix}?endpoint={}", env.bucket, env.endpoint)).unwrap();
    Arc::new(RetryStore::new(
        open(&url, creds, &OpenOptions::default()).unwrap(),
        RetryPolicy::default(),
    ))
}

fn creds(env: &S3Env) -> Credentials {
    Credentials::new(&env.access_key, &env.secret_key)
}

/// Runs `f` over `items` with a few requests in flight.
async fn for_each_concurrently<F, Fut>(items: Vec<ObjectKey>, f: F)
where
    F: Fn(ObjectKey) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
        tasks.spawn(f(item));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow() {
    let env = env();
    let store = open_fresh(&env, "flow", &creds(&env));

    // Every kind: CreateNew twice (If-None-Match really refuses), get_range, stat, list, delete.
    conformance::round_trip(store.as_ref(), true).await;

    // Concurrent CreateNew of one key: the conditional PUT lets exactly one win.
    for round in 0..5 {
        let key = ObjectKey::new(ObjectKind::Lease, format!("gc-{round}")).unwrap();
        let racers: Vec<_> = (0..4u8)
            .map(|writer| {
                let (store, key) = (Arc::clone(&store), key.clone());
                tokio::spawn(async move {
                    store
                        .put(&key, Bytes::from(vec![writer; 1024]), PutMode::CreateNew)
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => wins += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
        store.delete(&key).await.unwrap();
    }

    // Listing past the 1000-key page size, with fan-out directories.
    let keys: Vec<_> = (0..1100u32)
        .map(|i| ObjectKey::new(ObjectKind::Data, format!("{:02x}{i:06}", i % 256)).unwrap())
        .collect();
    let put_store = Arc::clone(&store);
    for_each_concurrently(keys.clone(), move |key| {
        let store = Arc::clone(&put_store);
        async move {
            let data = Bytes::from(key.name().to_owned());
            store.put(&key, data, PutMode::CreateNew).await.unwrap();
        }
    })
    .await;
    // Streamed page by page, already in name order (nothing sorted here).
    let listed: Vec<_> = store.list_stream(ObjectKind::Data).try_collect().await.unwrap();
    assert_eq!(listed.len(), keys.len());
    let mut expected: Vec<_> = keys.iter().map(|k| k.name().to_owned()).collect();
    expected.sort();
    assert!(listed.iter().map(|i| i.key.name().to_owned()).eq(expected));
    assert!(listed.iter().all(|i| i.size == 8 && i.last_modified.is_some()));

    let delete_store = Arc::clone(&store);
    for_each_concurrently(keys, move |key| {
        let store = Arc::clone(&delete_store);
        async move { store.delete(&key).await.unwrap() }
    })
    .await;
    assert!(store.list(ObjectKind::Data).await.unwrap().is_empty());
}

/// Streamed puts of several parts are S3 multipart uploads: complete only
/// at the end, with `If-None-Match: *`, and aborted when the body fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_stream_in_name_order() {
    let env = env();
    conformance::list_stream_in_name_order(open_fresh(&env, "order", &creds(&env)).as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_names_match_list() {
    let env = env();
    conformance::list_names_match_list(open_fresh(&env, "names", &creds(&env)).as_ref()).await;
}

#[tokio::test]
async fn ranged_pieces_hold_the_range() {
    let env = env();
    // However the response was framed, the pieces hold the range.
    conformance::ranged_pieces(open_fresh(&env, "pieces", &creds(&env)).as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_puts_are_multipart_and_invisible_until_complete() {
    let env = env();
    let store = open_fresh(&env, "stream", &creds(&env));
    conformance::streamed_puts(store.as_ref()).await;
}

#[tokio::test]
async fn wrong_secret_is_permission_denied() {
    let env = env();
    let store = open_fresh(&env, "auth", &Credentials::new(&env.access_key, "not-the-secret"));
    let key = ObjectKey::new(ObjectKind::Index, "i1").unwrap();
    let err = store
        .put(&key, Bytes::from_static(b"x"), PutMode::CreateNew)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.to_string().contains(&env.secret_key));
}

#[tokio::test]
async fn ranged_streams_hold_the_range() {
    let env = env();
    let store = open_fresh(&env, "streams", &creds(&env));
    assert!(
        conformance::ranged_streams(store.as_ref()).await,
        "S3 streams one request's response"
    );
}
