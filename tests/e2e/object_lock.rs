//! `init --object-lock` on SeaweedFS's object-lock bucket: forget and gc
//! through the binary, with the server refusing to delete what is retained.
//! (The expiry of a retention within a test is covered by the engine's
//! `object_lock` integration test, with a retention of seconds.)

use std::io::Write;
use std::process::Stdio;

use crate::harness::{Env, describe, pseudo_random};

const INIT: &[&str] = &["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"];

fn backup(env: &Env, data: &[u8]) -> String {
    let mut child = env
        .cmd()
        .args(["--json", "snapshot", "--stdin", "--name", "f", "--source", "db"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(data);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value["snapshot_id"].as_str().unwrap().to_owned()
}

#[test]
fn object_lock_retains_what_forget_and_gc_delete() {
    let env = Env::s3_lock("objlock");
    let init = env.json(&[INIT, &["--object-lock", "1"]].concat());
    assert_eq!(
        init["object_lock"],
        serde_json::json!({"mode": "compliance", "retain_days": 1, "audit_retain_days": 365}),
        "{init}"
    );

    // forget --keep-last 1 keeps the second.
    backup(&env, &pseudo_random(2 << 20, 11));
    let kept = pseudo_random(2 << 20, 12);
    backup(&env, &kept);
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshot_count(), 1, "forget hides the snapshot at once");

    let planned = env.json(&["gc", "--grace", "0s"]);
    assert!(planned["planned"]["packs"].as_u64().unwrap() >= 1, "{planned}");
    let swept = env.json(&["gc", "--grace", "0s"]);
    assert!(swept["deleted"]["packs"].as_u64().unwrap() >= 1, "{swept}");
    let lock = &swept["object_lock"];
    // The packs gc deleted, and the forgotten snapshot, stay on the server for a day.
    let retained = lock["retained"]["objects"].as_u64().unwrap();
    assert!(retained > swept["deleted"]["packs"].as_u64().unwrap(), "{swept}");
    let until = chrono::DateTime::parse_from_rfc3339(lock["retained"]["until"].as_str().unwrap()).unwrap();
    let left = until.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((23 * 3600..=24 * 3600 + 60).contains(&left), "{swept}");
    // Nothing retained was freed (what was: the released gc lease, which is never retained).
    assert!(
        lock["retained"]["bytes"].as_u64().unwrap() >= swept["deleted"]["bytes"].as_u64().unwrap(),
        "{swept}"
    );

    let human = env.ok(&["gc", "--grace", "0s"]);
    assert!(human.contains("retained until"), "{human}");
    env.ok(&["check", "--read-data"]);
    let out = env.path("out");
    env.ok(&["restore", "db@latest", "--target", out.to_str().unwrap(), "--verify"]);
    assert_eq!(std::fs::read(out.join("f")).unwrap(), kept);
}

#[test]
fn object_lock_needs_a_bucket_with_object_lock() {
    let env = Env::s3("objlock-plain");
    let stderr = env.fails(
        &[
            "init",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
            "--object-lock",
            "7",
        ],
        10,
        "BACKUP_FAILED",
    );
    assert!(stderr.contains("object lock enabled"), "{stderr}");
    // Nothing was written: a plain init still works there.
    env.init();
    env.fails(&["init", "--object-lock", "0"], 2, "invalid value");
    env.fails(
        &["init", "--object-lock-mode", "governance"],
        2,
        "required arguments were not provided",
    );
}
