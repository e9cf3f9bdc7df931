//! Standard input and command sources.

use crate::harness::{Env, describe, run_with_stdin, sql_dump};
use crate::servers::sha256_hex;

#[test]
fn stdin_round_trip_records_digests_and_the_sha256_asked_for() {
    let env = Env::new();
    env.init();
    let dump = sql_dump(30_000, 5);
    let mut cmd = env.cmd();
    cmd.args([
        "--json",
        "snapshot",
        "--stdin",
        "--name",
        "db.sql",
        "--source",
        "mysql-main",
        "--sha256",
    ]);
    let out = run_with_stdin(cmd, &dump);
    assert!(out.status.success(), "{}", describe(&out));

    let listed = env.json(&["snapshots", "--source", "mysql-main"]);
    let snap = &listed[0];
    assert_eq!(snap["source_kind"], "stdin");
    assert_eq!(snap["profile"], "dump");
    assert_eq!(snap["extra"]["stream.sha256"], sha256_hex(&dump));
    let restored = env.cmd().args(["cat", "mysql-main@latest:db.sql"]).output().unwrap();
    assert!(restored.status.success());
    assert_eq!(restored.stdout, dump);
}

#[test]
fn command_output_is_stored_with_its_status() {
    let env = Env::new();
    env.init();
    let result = env.json(&[
        "snapshot",
        "--command",
        "--name",
        "out.txt",
        "--",
        "sh",
        "-c",
        "seq 1 100000",
    ]);
    assert_eq!(result["extra"]["stream.blake3"].as_str().unwrap().len(), 64);
    // SHA-256 is opt-in (--sha256), and only for streams.
    assert!(result["extra"].get("stream.sha256").is_none(), "{result}");
    let dir = env.path("tree");
    std::fs::create_dir_all(&dir).unwrap();
    let err = env.fails(&["snapshot", "--sha256", dir.to_str().unwrap()], 2, "error");
    assert!(err.contains("--stdin") || err.contains("--command"), "{err}");
    let listed = env.json(&["snapshots"]);
    assert_eq!(listed[0]["command"]["exit_code"], 0);
    assert_eq!(listed[0]["command"]["argv"][0], "sh");
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(env.ok(&["cat", "latest:out.txt"]), expected);
}

#[test]
fn failing_command_commits_nothing() {
    let env = Env::new();
    env.init();
    // Half a dump, then a failure: must not become a snapshot.
    let stderr = env.fails(
        &[
            "snapshot",
            "--command",
            "--",
            "sh",
            "-c",
            "seq 1 200000; echo 'mysqldump: Lost connection' >&2; exit 2",
        ],
        10,
        "BACKUP_FAILED",
    );
    assert!(stderr.contains("exited with status 2"), "{stderr}");
    assert!(stderr.contains("Lost connection"), "{stderr}");
    assert_eq!(env.snapshot_count(), 0);
    env.fails(
        &["snapshot", "--command", "--", "/nonexistent/dumper"],
        10,
        "SOURCE_COMMAND_FAILED",
    );
    assert_eq!(env.snapshot_count(), 0);
}
