//! The one backup driver through the binary: issue 9, bugs 12, 13 and 14.
//! See: issues/9.

use std::io::Write;
use std::process::Stdio;

use crate::harness::{Env, describe};
use crate::servers::{mysql, mysql_url, unique};

fn write_config(env: &Env, body: &str) -> String {
    let path = env.path("nfrepo.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

// Issue 9, bug 12: `snapshot data/nonexistent` committed an empty "partial" snapshot.
#[test]
fn issue9_bug12_a_missing_path_fails_and_commits_nothing() {
    let env = Env::new();
    env.init();
    let missing = env.path("data/nonexistent");
    let stderr = env.fails(
        &["snapshot", missing.to_str().unwrap()],
        10,
        "BACKUP_FAILED/SOURCE_NOT_FOUND",
    );
    assert!(stderr.contains("data/nonexistent"), "{stderr}");
    assert_eq!(env.snapshot_count(), 0);

    // The same for a configured source whose path is missing.
    std::fs::create_dir_all(env.path("conf")).unwrap();
    let config = write_config(
        &env,
        &format!(
            "[sources.cfg]\nkind = \"config\"\npaths = [\"{}\", \"{}\"]\n",
            env.path("conf").display(),
            missing.display()
        ),
    );
    env.fails(
        &["--config", &config, "snapshot", "--source", "cfg"],
        10,
        "BACKUP_FAILED/SOURCE_NOT_FOUND",
    );
    assert_eq!(env.snapshot_count(), 0);
}

// Issue 9, bug 14: `snapshot x1/conf` and `snapshot x2/conf` shared source
// `conf`, so `forget --keep-last 1 --source conf` removed x1's only backup.
#[test]
fn issue9_bug14_same_last_component_different_paths_are_different_sources() {
    let env = Env::new();
    env.init();
    for dir in ["x1/conf", "x2/conf"] {
        std::fs::create_dir_all(env.path(dir)).unwrap();
        std::fs::write(env.path(dir).join("app.ini"), dir).unwrap();
    }
    let mut cmd = env.cmd();
    cmd.current_dir(env.dir.path());
    let out = cmd.args(["--json", "snapshot", "x1/conf"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut cmd = env.cmd();
    cmd.current_dir(env.dir.path().join("x1"));
    let out = cmd.args(["--json", "snapshot", "../x2/conf/"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let x1 = env.dir.path().join("x1/conf").display().to_string();
    let x2 = env.dir.path().join("x2/conf").display().to_string();
    assert_eq!(first["source"], x1.as_str());
    assert_eq!(
        second["source"],
        x2.as_str(),
        "the path is cleaned: no `..`, no trailing /"
    );

    for args in [
        &["forget", "--keep-last", "1", "--source", "conf"][..],
        &["forget", "--keep-last", "1"][..],
    ] {
        env.ok(args);
        let sources: Vec<String> = env
            .json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["source"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(sources.len(), 2, "forget {args:?} removed a backup: {sources:?}");
        assert!(sources.contains(&x1) && sources.contains(&x2), "{sources:?}");
    }
    // Each is its own source's latest.
    let listing = env.ok(&["ls", &format!("{x1}@latest:conf")]);
    assert!(listing.contains("app.ini"), "{listing}");
}

// Issue 9, bug 13: a failed producer must not become a good snapshot; with
// `--command` nfrepo sees its status (a pipe into `--stdin` cannot).
#[test]
fn issue9_bug13_a_failing_dump_command_commits_nothing_and_the_help_says_so() {
    let env = Env::new();
    env.init();
    let stderr = env.fails(
        &[
            "snapshot",
            "--command",
            "--name",
            "dump.sql",
            "--",
            "sh",
            "-c",
            "head -c 1000 /dev/zero; exit 2",
        ],
        10,
        "BACKUP_FAILED/SOURCE_COMMAND_FAILED",
    );
    assert!(stderr.contains("exited with status 2"), "{stderr}");
    assert_eq!(env.snapshot_count(), 0);
    let help = env.ok(&["snapshot", "--help"]);
    assert!(help.contains("pipefail") && help.contains("--command"), "{help}");
}

// Issue 9, bug 13: a dump piped into `--stdin --source NAME`, NAME a
// configured mysql source, records kind mysql and restores with `--into`.
#[test]
fn issue9_bug13_a_stdin_dump_of_a_configured_mysql_source_restores_into_mariadb() {
    let env = Env::new();
    env.init();
    let db = unique("nf_stdin");
    mysql(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(50)); \
         INSERT INTO `{db}`.t VALUES (1, 'one'), (2, 'two'), (3, 'three');"
    ));
    let config = write_config(
        &env,
        &format!(
            "[sources.maindb]\nkind = \"mysql\"\nconnection = \"{}/{db}\"\n",
            mysql_url()
        ),
    );
    let dump = std::process::Command::new("mysqldump")
        .args(["--no-defaults", "--protocol=TCP", "--single-transaction"])
        .args(mysql_client_args())
        .arg(&db)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", describe(&dump));

    let mut child = env
        .cmd()
        .args(["--json", "--config", &config, "snapshot", "--stdin", "--name"])
        .arg(format!("{db}.sql"))
        .args(["--source", "maindb"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&dump.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let snapshots = env.json(&["snapshots"]);
    assert_eq!(snapshots[0]["source_kind"], "mysql", "{snapshots}");

    let copy = unique("nf_stdin_copy");
    let into = format!("{}/{copy}", mysql_url());
    env.ok(&["restore", "maindb@latest", "--into", &into]);
    assert_eq!(
        mysql(&format!("SELECT GROUP_CONCAT(v ORDER BY id) FROM `{copy}`.t")),
        "one,two,three"
    );
    mysql(&format!("DROP DATABASE `{db}`; DROP DATABASE `{copy}`;"));
}

/// `--host`, `--port` and `--user` of the test server, for `mysqldump`.
fn mysql_client_args() -> Vec<String> {
    let url = mysql_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let (user, hostport) = rest.split_once('@').unwrap_or(("root", rest));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    vec![
        format!("--host={host}"),
        format!("--port={port}"),
        format!("--user={user}"),
    ]
}
