//! Issue 10, items 6 and 10: restores into a live bucket on the SeaweedFS
//! that `scripts/test.sh` starts. Objects are compared by content, never by
//! ETag; an object that differs is a RESTORE_CONFLICT before anything is
//! written unless `--overwrite`; `--dry-run` lists the plan; `SNAP:PREFIX`
//! is an S3 key prefix and globs follow the directory-restore rules.

use std::collections::BTreeMap;
use std::process::Output;

use crate::bucket::{Bucket, run_json, uploads_config, with_s3};
use crate::harness::{Env, describe, pseudo_random};

/// A repository with a bucket source `uploads` reading `bucket`'s `src`,
/// snapshotted once.
fn snapshot_of(env: &Env, bucket: &Bucket) {
    env.init();
    let config = uploads_config(env, bucket);
    run_json(env, &["--config", &config, "snapshot", "--source", "uploads"]);
}

fn run(env: &Env, args: &[&str]) -> Output {
    let mut cmd = env.cmd();
    with_s3(env, &mut cmd);
    cmd.args(args).output().unwrap()
}

/// Runs, asserts the exit code and that stderr names `code`; returns (stdout, stderr).
fn fails(env: &Env, args: &[&str], exit: i32, code: &str) -> (String, String) {
    let out = run(env, args);
    assert_eq!(out.status.code(), Some(exit), "nfrepo {args:?}:\n{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains(code), "nfrepo {args:?}: stderr lacks {code}:\n{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// key → content of every object under `sub`.
fn contents(bucket: &Bucket, sub: &str) -> BTreeMap<String, Vec<u8>> {
    bucket
        .objects(sub)
        .into_iter()
        .map(|(key, (bytes, _))| (key, bytes))
        .collect()
}

fn keys(bucket: &Bucket, sub: &str) -> Vec<String> {
    bucket.objects(sub).into_keys().collect()
}

/// (ETag, last-modified) of one object.
fn stamp(bucket: &Bucket, sub: &str, key: &str) -> (String, String) {
    let op = bucket.operator(sub);
    let meta = bucket.runtime.block_on(op.stat(key)).unwrap();
    (
        meta.etag().unwrap_or_default().to_owned(),
        format!("{:?}", meta.last_modified()),
    )
}

fn delete(bucket: &Bucket, sub: &str, key: &str) {
    let op = bucket.operator(sub);
    bucket.runtime.block_on(op.delete(key)).unwrap();
}

// Issue 10, item 6: a re-run rewrote every multipart object (its ETag never
// matches the source's) and counted nothing as already there.
#[test]
fn issue10_item6_rerun_into_the_same_bucket_writes_nothing_even_multipart() {
    let env = Env::new();
    let bucket = Bucket::new();
    // Above OpenDAL's 5 MiB multipart threshold, streamed in chunks: the
    // restore writes it as a multipart upload.
    let big = pseudo_random(12 << 20, 1);
    bucket.put("src", "big/blob.bin", "application/octet-stream", big.clone());
    bucket.put("src", "small/a.txt", "text/plain", b"alpha\n".to_vec());
    snapshot_of(&env, &bucket);

    let copy = bucket.url("copy");
    let first = run_json(&env, &["restore", "uploads@latest", "--into", &copy]);
    assert_eq!(
        (first["objects"].as_u64(), first["objects_unchanged"].as_u64()),
        (Some(2), Some(0))
    );
    let before = stamp(&bucket, "copy", "big/blob.bin");
    assert!(before.0.contains('-'), "not a multipart upload: ETag {:?}", before.0);
    assert_ne!(before.0, stamp(&bucket, "src", "big/blob.bin").0);

    // Last-modified has a resolution of one second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = run_json(&env, &["restore", "uploads@latest", "--into", &copy]);
    assert_eq!(
        (again["objects"].as_u64(), again["objects_unchanged"].as_u64()),
        (Some(0), Some(2)),
        "{again}"
    );
    // Both objects have the snapshot's size, so both were read and hashed.
    assert_eq!(again["bytes_compared"].as_u64(), Some(big.len() as u64 + 6));
    assert_eq!(stamp(&bucket, "copy", "big/blob.bin"), before);
    assert_eq!(contents(&bucket, "copy"), contents(&bucket, "src"));
}

// Issue 10, item 6: `restore --into s3://` replaced target objects that
// differ without `--overwrite`, and had no `--dry-run`.
#[test]
fn issue10_item6_differing_objects_conflict_before_any_write() {
    let env = Env::new();
    let bucket = Bucket::new();
    bucket.put("src", "a.txt", "text/plain", b"alpha\n".to_vec());
    bucket.put("src", "b.txt", "text/plain", b"bravo\n".to_vec());
    bucket.put("src", "c/d.txt", "text/plain", b"delta\n".to_vec());
    snapshot_of(&env, &bucket);
    let copy = bucket.url("copy");
    run_json(&env, &["restore", "uploads@latest", "--into", &copy]);
    let source = contents(&bucket, "src");

    // Changed after the backup: same size (only the hash tells), another
    // size; and one object removed, which a restore would write.
    bucket.put("copy", "a.txt", "text/plain", b"ALPHA\n".to_vec());
    bucket.put("copy", "b.txt", "text/plain", b"bravo, changed\n".to_vec());
    delete(&bucket, "copy", "c/d.txt");
    let changed = contents(&bucket, "copy");

    let restore = ["restore", "uploads@latest", "--into", copy.as_str()];
    let (_, stderr) = fails(&env, &restore, 14, "RESTORE_CONFLICT/OBJECTS_DIFFER");
    assert!(
        stderr.contains("2 object(s)") && stderr.contains("a.txt, b.txt") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert_eq!(contents(&bucket, "copy"), changed, "a refused restore wrote something");

    // The dry run lists the plan and refuses the same way.
    let (stdout, _) = fails(&env, &[&restore[..], &["--dry-run"]].concat(), 14, "RESTORE_CONFLICT");
    let plan: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("dry run:")).collect();
    assert_eq!(
        plan,
        ["would write c/d.txt", "differs a.txt", "differs b.txt"],
        "{stdout}"
    );
    let out = run_json(&env, &[&restore[..], &["--dry-run", "--overwrite"]].concat());
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["new_keys"], serde_json::json!(["c/d.txt"]));
    assert_eq!(out["differing_keys"], serde_json::json!(["a.txt", "b.txt"]));
    assert_eq!(
        (out["objects"].as_u64(), out["objects_replaced"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(contents(&bucket, "copy"), changed, "a dry run wrote something");

    let out = run_json(&env, &[&restore[..], &["--overwrite", "--verify"]].concat());
    assert_eq!(
        (
            out["objects"].as_u64(),
            out["objects_replaced"].as_u64(),
            out["verified"].as_u64()
        ),
        (Some(3), Some(2), Some(3))
    );
    assert_eq!(contents(&bucket, "copy"), source);
}

#[test]
fn issue10_item6_conflict_lists_ten_objects_and_counts_the_rest() {
    let env = Env::new();
    let bucket = Bucket::new();
    for i in 0..12 {
        bucket.put("src", &format!("k/{i:02}"), "text/plain", vec![b'a'; 4]);
    }
    snapshot_of(&env, &bucket);
    for i in 0..12 {
        bucket.put("copy", &format!("k/{i:02}"), "text/plain", vec![b'b'; 4]);
    }
    let copy = bucket.url("copy");
    let (_, stderr) = fails(
        &env,
        &["restore", "uploads@latest", "--into", &copy],
        14,
        "RESTORE_CONFLICT",
    );
    let listed: String = (0..10).map(|i| format!("k/{i:02}")).collect::<Vec<_>>().join(", ");
    assert!(
        stderr.contains(&format!(
            "12 object(s) in the target exist and differ from the snapshot: {listed} and 2 more;"
        )),
        "{stderr}"
    );
}

/// A snapshot of objects whose keys share prefixes at and inside components.
fn prefixed_keys(env: &Env, bucket: &Bucket) {
    for key in [
        "photos/2026-01/a.jpg",
        "photos/2026-02/b.txt",
        "photos/2025-12/c.jpg",
        "photos.txt",
        "photos-old/d.jpg",
        "notes/x.txt",
        "notes/sub/y.txt",
    ] {
        bucket.put("src", key, "text/plain", key.as_bytes().to_vec());
    }
    snapshot_of(env, bucket);
}

/// Restores `spec` into `sub` with `extra` arguments; the keys written there.
fn restored(env: &Env, bucket: &Bucket, spec: &str, sub: &str, extra: &[&str]) -> Vec<String> {
    let into = bucket.url(sub);
    run_json(env, &[&["restore", spec, "--into", &into][..], extra].concat());
    keys(bucket, sub)
}

// Issue 10, item 10: `SNAP:PREFIX` took only whole path components.
#[test]
fn issue10_item10_prefix_is_an_s3_key_prefix() {
    let env = Env::new();
    let bucket = Bucket::new();
    prefixed_keys(&env, &bucket);
    let restore = |spec: &str, sub: &str| restored(&env, &bucket, spec, sub, &[]);
    assert_eq!(
        restore("uploads@latest:photos/2026-", "p1"),
        ["photos/2026-01/a.jpg", "photos/2026-02/b.txt"]
    );
    assert_eq!(
        restore("uploads@latest:photos/", "p2"),
        ["photos/2025-12/c.jpg", "photos/2026-01/a.jpg", "photos/2026-02/b.txt"]
    );
    assert_eq!(
        restore("uploads@latest:photos", "p3"),
        [
            "photos-old/d.jpg",
            "photos.txt",
            "photos/2025-12/c.jpg",
            "photos/2026-01/a.jpg",
            "photos/2026-02/b.txt"
        ]
    );
    assert_eq!(restore("uploads@latest:notes/x.txt", "p4"), ["notes/x.txt"]);
    let into = bucket.url("p5");
    fails(
        &env,
        &["restore", "uploads@latest:notes/z", "--into", &into],
        12,
        "BACKUP_NOT_FOUND",
    );
}

// Issue 10, item 10: `--include` globs matched across `/`, and a pattern
// without `/` never matched a name below the root.
#[test]
fn issue10_item10_globs_follow_the_directory_restore_rules() {
    let env = Env::new();
    let bucket = Bucket::new();
    prefixed_keys(&env, &bucket);
    let restore = |spec: &str, sub: &str, extra: &[&str]| restored(&env, &bucket, spec, sub, extra);
    // `*` does not cross `/`; a pattern without `/` matches a name at any depth.
    assert_eq!(
        restore("uploads@latest", "g1", &["--include", "notes/*.txt"]),
        ["notes/x.txt"]
    );
    assert_eq!(
        restore("uploads@latest", "g2", &["--include", "y.txt"]),
        ["notes/sub/y.txt"]
    );
    assert_eq!(
        restore("uploads@latest", "g3", &["--include", "*.txt", "--exclude", "notes"]),
        ["photos.txt", "photos/2026-02/b.txt"]
    );
    assert_eq!(
        restore("uploads@latest:photos/", "g4", &["--include", "*.jpg"]),
        ["photos/2025-12/c.jpg", "photos/2026-01/a.jpg"]
    );
    // A filter that matches nothing fails before anything is written.
    let into = bucket.url("g5");
    fails(
        &env,
        &[
            "restore",
            "uploads@latest",
            "--into",
            &into,
            "--include",
            "*.txt",
            "--include",
            "nope*",
        ],
        13,
        "RESTORE_FAILED/FILTER_MATCHED_NOTHING",
    );
    assert!(keys(&bucket, "g5").is_empty());
}
