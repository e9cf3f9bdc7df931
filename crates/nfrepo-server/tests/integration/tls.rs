//! TLS: a client that trusts the server's CA works; one that does not is
//! refused, and so is plain http to the TLS port.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use nfrepo_server::{Auth, TlsFiles, Token};
use nfrepo_store::{ErrorKind, MemoryStore, ObjectKey, ObjectKind, PutMode, RestStore, Store};
use zeroize::Zeroizing;

use super::harness::{Running, TOKEN};

/// A CA and a leaf certificate for 127.0.0.1 signed by it, made with the
/// openssl command (a test that needs it fails without it).
pub fn make_certificates(dir: &Path) -> (TlsFiles, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=nfrepo test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        },
        dir.join("ca.pem"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_its_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = make_certificates(dir.path());
    let auth = Auth::Token(Token::from_secret(TOKEN.as_bytes()));
    let server = Running::with(Arc::new(MemoryStore::new()), auth, Some(files)).await;
    assert!(server.endpoint.starts_with("https://127.0.0.1:"));

    let token = || Some(Zeroizing::new(TOKEN.to_owned()));
    let client = RestStore::new(&server.endpoint, token(), Some(&ca)).unwrap();
    let key = ObjectKey::new(ObjectKind::Snapshot, "5e1f").unwrap();
    client
        .put(&key, Bytes::from_static(b"root"), PutMode::CreateNew)
        .await
        .unwrap();
    assert_eq!(client.get(&key).await.unwrap(), Bytes::from_static(b"root"));
    assert_eq!(client.delete(&key).await.unwrap_err().kind(), ErrorKind::AppendOnly);

    // The system's roots do not know the test CA.
    let untrusting = RestStore::new(&server.endpoint, token(), None).unwrap();
    let err = untrusting.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert!(err.to_string().contains("tls handshake failed"), "{err}");

    // Plain http to the TLS port gets no answer.
    let plain = RestStore::new(&server.endpoint.replace("https://", "http://"), token(), None).unwrap();
    assert!(plain.get(&key).await.is_err());
    server.stop().await;
}
