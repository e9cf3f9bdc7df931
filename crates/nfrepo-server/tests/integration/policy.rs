//! The append-only policy through the REST client: deletes and overwrites
//! of repository data are refused with `ErrorKind::AppendOnly`, new objects
//! are created, everything can be read and listed, session markers are
//! rewritten and removed, maintenance objects are never written; and the
//! token is required.

use std::sync::Arc;

use bytes::Bytes;
use nfrepo_store::{ErrorKind, MemoryStore, ObjectKey, ObjectKind, PutMode, Store};

use super::harness::Running;

fn key(kind: ObjectKind) -> ObjectKey {
    match kind {
        ObjectKind::Config => ObjectKey::config(),
        kind => ObjectKey::new(kind, "0a1b2c3d").unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_overwrites_of_data_are_refused() {
    let backing = MemoryStore::new();
    let server = Running::start(Arc::new(backing.clone())).await;
    let client = server.client();
    for &kind in ObjectKind::all() {
        if matches!(
            kind,
            ObjectKind::Session | ObjectKind::Gc | ObjectKind::Lease | ObjectKind::Tombstone
        ) {
            continue;
        }
        let key = key(kind);
        let original = Bytes::from(format!("original {key}"));
        // Creating a new object is fine, with either mode.
        client.put(&key, original.clone(), PutMode::CreateNew).await.unwrap();
        let fresh = ObjectKey::new(kind, "fresh0001").unwrap_or_else(|_| key.clone());
        if fresh != key {
            client
                .put(&fresh, Bytes::from_static(b"new"), PutMode::Overwrite)
                .await
                .unwrap();
            assert_eq!(
                backing.get(&fresh).await.unwrap(),
                Bytes::from_static(b"new"),
                "{fresh}"
            );
        }

        let err = client.delete(&key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AppendOnly, "{key}: {err}");
        assert_eq!(
            err.to_string(),
            format!("{key}: the server is append-only: deleting {kind}/ objects is refused")
        );
        let err = client
            .put(&key, Bytes::from_static(b"evil"), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AppendOnly, "{key}: {err}");
        assert!(err.to_string().contains("overwriting"), "{err}");
        let (_, stream) = stream_of(b"evil streamed");
        let err = client.put_stream(&key, stream, PutMode::Overwrite).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AppendOnly, "{key}: {err}");
        // A conditional create of an existing object is the ordinary AlreadyExists.
        let err = client
            .put(&key, Bytes::from_static(b"evil"), PutMode::CreateNew)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{key}: {err}");
        assert!(!err.is_retryable());

        // Nothing changed, on the server's store or through the client.
        assert_eq!(backing.get(&key).await.unwrap(), original, "{key}");
        assert_eq!(client.get(&key).await.unwrap(), original, "{key}");
        assert_eq!(client.get_range(&key, 0..8).await.unwrap(), original.slice(0..8));
        assert_eq!(client.stat(&key).await.unwrap().size, original.len() as u64);
        let listed = client.list(kind).await.unwrap();
        assert!(listed.iter().any(|info| info.key == key), "{key}: {listed:?}");
    }
    server.stop().await;
}

fn stream_of(bytes: &'static [u8]) -> (Bytes, nfrepo_store::ByteStream<'static>) {
    use futures::StreamExt;
    let bytes = Bytes::from_static(bytes);
    let chunk = bytes.clone();
    (bytes, futures::stream::once(async move { Ok(chunk) }).boxed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_markers_are_rewritten_and_removed() {
    let backing = MemoryStore::new();
    let server = Running::start(Arc::new(backing.clone())).await;
    let client = server.client();
    let marker = key(ObjectKind::Session);
    client
        .put(&marker, Bytes::from_static(b"beat 1"), PutMode::Overwrite)
        .await
        .unwrap();
    client
        .put(&marker, Bytes::from_static(b"beat 2"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(backing.get(&marker).await.unwrap(), Bytes::from_static(b"beat 2"));
    client.delete(&marker).await.unwrap();
    assert_eq!(backing.get(&marker).await.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_objects_are_never_written() {
    let backing = MemoryStore::new();
    let lease = key(ObjectKind::Lease);
    backing
        .put(&lease, Bytes::from_static(b"held"), PutMode::CreateNew)
        .await
        .unwrap();
    let server = Running::start(Arc::new(backing.clone())).await;
    let client = server.client();
    for kind in [ObjectKind::Gc, ObjectKind::Lease, ObjectKind::Tombstone] {
        let new = ObjectKey::new(kind, "gc-7").unwrap();
        for mode in [PutMode::CreateNew, PutMode::Overwrite] {
            let err = client.put(&new, Bytes::from_static(b"x"), mode).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AppendOnly, "{new}: {err}");
            assert!(err.to_string().contains("maintenance (gc, forget)"), "{err}");
        }
        assert_eq!(backing.get(&new).await.unwrap_err().kind(), ErrorKind::NotFound);
    }
    assert_eq!(client.delete(&lease).await.unwrap_err().kind(), ErrorKind::AppendOnly);
    // Reading them is fine (a backup host may look at the lease chain).
    assert_eq!(client.get(&lease).await.unwrap(), Bytes::from_static(b"held"));
    assert_eq!(client.list(ObjectKind::Lease).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused() {
    let backing = MemoryStore::new();
    let snapshot = key(ObjectKind::Snapshot);
    backing
        .put(&snapshot, Bytes::from_static(b"s"), PutMode::CreateNew)
        .await
        .unwrap();
    let server = Running::start(Arc::new(backing.clone())).await;
    for (token, message) in [
        (
            Some("wrong-token-0123456789abcdef"),
            "permission denied by the server: the server refused the bearer token",
        ),
        (
            None,
            "permission denied by the server: the server needs a bearer token (set NFREPO_REST_TOKEN_FILE)",
        ),
    ] {
        let client = server.client_with(token);
        let err = client.get(&snapshot).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert_eq!(err.to_string(), format!("{snapshot}: {message}"));
        let err = client.list(ObjectKind::Snapshot).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        let new = ObjectKey::new(ObjectKind::Snapshot, "intruder").unwrap();
        let err = client
            .put(&new, Bytes::from_static(b"x"), PutMode::CreateNew)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert_eq!(backing.get(&new).await.unwrap_err().kind(), ErrorKind::NotFound);
    }
    assert_eq!(server.client().get(&snapshot).await.unwrap(), Bytes::from_static(b"s"));
}

/// Anonymous access only on loopback; plain http off loopback only when allowed.
#[tokio::test]
async fn unsafe_settings_are_refused_at_bind() {
    use nfrepo_server::{Auth, Error, Server, ServerOptions, Token};
    let store = || -> Arc<dyn Store> { Arc::new(MemoryStore::new()) };
    let token = || Auth::Token(Token::from_secret(b"0123456789abcdef0123"));
    let open = "0.0.0.0:0".parse().unwrap();
    let err = Server::bind(store(), ServerOptions::new(open, Auth::None).allow_insecure_http(true))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoAuthOffLoopback(_)), "{err}");
    let err = Server::bind(store(), ServerOptions::new(open, token()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InsecureHttp(_)), "{err}");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    let server = Server::bind(store(), ServerOptions::new(open, token()).allow_insecure_http(true))
        .await
        .unwrap();
    assert_ne!(server.local_addr().port(), 0);
}

/// A listing is one line per object and an end line; the client reads it
/// incrementally and takes many objects in one response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_listings_arrive_whole() {
    let backing = MemoryStore::new();
    for i in 0..5000u32 {
        let key = ObjectKey::new(ObjectKind::Data, format!("{i:08x}")).unwrap();
        backing
            .put(&key, Bytes::from_static(b"p"), PutMode::CreateNew)
            .await
            .unwrap();
    }
    let server = Running::start(Arc::new(backing)).await;
    let mut names: Vec<String> = server
        .client()
        .list(ObjectKind::Data)
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.key.name().to_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5000);
    assert_eq!(names[4999], "00001387");
}
