//! The store conformance suite through the REST client, over servers backed
//! by the in-memory store and by a local directory. Session markers are the
//! one kind an append-only server lets a client overwrite and delete, so
//! the round trip runs on them; every other kind's refusal is in `policy.rs`.

use std::sync::Arc;

use nfrepo_store::{Credentials, MemoryStore, ObjectKind, OpenOptions, Store, StoreUrl};

use super::conformance;
use super::harness::Running;

fn local(dir: &std::path::Path) -> Arc<dyn Store> {
    let url = StoreUrl::parse(&format!("file://{}", dir.display())).unwrap();
    nfrepo_store::open(&url, &Credentials::none(), &OpenOptions::default()).unwrap()
}

/// The suite's round trip (put, conditional put, get, ranges, stat, list,
/// overwrite, delete) on every kind the server lets a client replace.
async fn round_trip(server: &Running, has_mtime: bool) {
    let client = server.client();
    assert!(client.location().starts_with("rest+http://127.0.0.1:"));
    conformance::round_trip_kinds(&client, has_mtime, &[ObjectKind::Session]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_round_trip() {
    let server = Running::start(Arc::new(MemoryStore::new())).await;
    round_trip(&server, true).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(local(&dir.path().join("repo"))).await;
    round_trip(&server, true).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_list_by_kind() {
    let server = Running::start(Arc::new(MemoryStore::new())).await;
    conformance::list_by_kind(&server.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_list_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(local(dir.path())).await;
    conformance::list_by_kind(&server.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_list_stream_in_name_order() {
    let server = Running::start(Arc::new(MemoryStore::new())).await;
    conformance::list_stream_in_name_order(&server.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_list_stream_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(local(dir.path())).await;
    conformance::list_stream_in_name_order(&server.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_streamed_puts() {
    let server = Running::start(Arc::new(MemoryStore::new())).await;
    conformance::streamed_puts(&server.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_streamed_puts_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let server = Running::start(local(&root)).await;
    conformance::streamed_puts(&server.client()).await;
    // The refused uploads leave no temp file on the server either, once
    // the server has seen their bodies fail (it may answer the aborted
    // request after the client has given up on it).
    let files = || {
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        files.sort();
        files
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files().len() > 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(files(), ["data/5a/5a5a0001", "index/5a5a0002"]);
}

/// A URL opens the REST store through `open`, and plain http off loopback is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_url_and_http_policy() {
    let server = Running::with(Arc::new(MemoryStore::new()), nfrepo_server::Auth::None, None).await;
    let url = StoreUrl::parse(&format!("rest+{}/", server.endpoint)).unwrap();
    let store = nfrepo_store::open(&url, &Credentials::none(), &OpenOptions::default()).unwrap();
    assert!(store.list(ObjectKind::Snapshot).await.unwrap().is_empty());

    let remote = StoreUrl::parse("rest+http://192.0.2.10:8000/").unwrap();
    let err = nfrepo_store::open(&remote, &Credentials::none(), &OpenOptions::default()).unwrap_err();
    assert_eq!(err.kind(), nfrepo_store::ErrorKind::InsecureTransport);
    assert!(
        nfrepo_store::open(
            &remote,
            &Credentials::none(),
            &OpenOptions::default().allow_insecure_http(true)
        )
        .is_ok()
    );
}
