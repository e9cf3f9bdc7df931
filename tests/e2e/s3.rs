//! The same operator flows on a real S3 server (SeaweedFS from `scripts/test.sh`).

use std::io::Write;
use std::process::Stdio;

use crate::harness::{Env, describe, pseudo_random, snapshot_of_tree};

#[test]
fn s3_repository_round_trip_and_dedup() {
    let env = Env::s3("round-trip");
    env.init();
    env.fails(
        &["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"],
        10,
        "REPOSITORY_EXISTS",
    );

    let src = env.path("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/big.bin"), pseudo_random(5 * 1024 * 1024, 77)).unwrap();
    std::fs::write(src.join("a.conf"), b"listen 80;\n").unwrap();
    std::os::unix::fs::symlink("a.conf", src.join("link")).unwrap();
    let first = env.json(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    assert!(first["summary"]["bytes_added_stored"].as_u64().unwrap() > 5 * 1024 * 1024);

    std::fs::write(src.join("a.conf"), b"listen 8080;\n").unwrap();
    let second = env.json(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    assert_eq!(second["summary"]["files_unchanged"], 1);
    assert!(
        second["summary"]["bytes_added_stored"].as_u64().unwrap() < 64 * 1024,
        "{second}"
    );

    let out = env.path("out");
    env.ok(&["restore", "files@latest", "--target", out.to_str().unwrap(), "--verify"]);
    assert_eq!(snapshot_of_tree(&src), snapshot_of_tree(&out.join("data")));

    let mut child = env
        .cmd()
        .args(["snapshot", "--stdin", "--name", "dump.sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"CREATE TABLE t (id INT);\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        env.ok(&["cat", "dump.sql@latest:dump.sql"]),
        "CREATE TABLE t (id INT);\n"
    );
    assert_eq!(env.snapshot_count(), 3);

    let wrong = env
        .cmd()
        .env("NFREPO_PASSWORD", "nope")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(16), "{}", describe(&wrong));
}
