//! Issue 12, item 1: the audit log through the real binary.

use std::io::Write;
use std::process::Stdio;

use crate::harness::{Env, PASSWORD, describe};

fn feed(env: &Env, source: &str, data: &[u8]) -> String {
    let mut child = env
        .cmd()
        .args(["--json", "snapshot", "--stdin", "--name", "f", "--source", source])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["snapshot"]
        .as_str()
        .or(json["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn log(env: &Env) -> Vec<serde_json::Value> {
    env.json(&["audit", "log"])["entries"].as_array().unwrap().clone()
}

fn audit_files(env: &Env) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(env.repo_dir().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn every_command_leaves_one_entry_and_verify_names_a_tampered_one() {
    let env = Env::new();
    env.init();
    let id = feed(&env, "db", b"hello audit");
    env.ok(&["snapshots"]);
    env.ok(&["cat", "db@latest:f"]);
    let entries = log(&env);
    let ops: Vec<&str> = entries.iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, ["init", "snapshot", "snapshots", "cat"], "{entries:?}");
    let snapshot = &entries[1];
    assert_eq!(snapshot["authenticated"], true);
    assert_eq!(snapshot["sources"], serde_json::json!(["db"]));
    assert!(
        snapshot["key_slot"].as_str().is_some_and(|k| k.len() == 64),
        "{snapshot}"
    );
    let created = snapshot["snapshots_created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{snapshot}");
    if !id.is_empty() {
        assert!(created[0].as_str().unwrap().starts_with(&id[..8]), "{id} {snapshot}");
    }
    let objects = snapshot["objects"].as_array().unwrap();
    assert!(
        objects.iter().any(|o| o["kind"] == "snapshots" && o["created"] == 1),
        "{objects:?}"
    );
    // One entry per command, this `audit log` included: five files now.
    assert_eq!(audit_files(&env).len(), 5);

    let verified = env.json(&["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["entries"], 5);

    // A storage-level attacker alters the snapshot's entry.
    let target = audit_files(&env)[1].clone();
    let mut bytes = std::fs::read(&target).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    let mut perms = std::fs::metadata(&target).unwrap().permissions();
    #[allow(
        clippy::permissions_set_readonly_false,
        reason = "test: damaging a stored object on purpose"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(&target, perms).unwrap();
    std::fs::write(&target, bytes).unwrap();
    let stderr = env.fails(&["audit", "verify"], 11, "BACKUP_CORRUPTED");
    let name = target.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr.contains("AUDIT_TAMPERED") && stderr.contains(&name), "{stderr}");
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&name),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_wrong_password_shows_up_in_the_log() {
    let env = Env::new();
    env.init();
    let out = env
        .cmd()
        .env("NFREPO_PASSWORD", "not the password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WRONG_PASSWORD") && !stderr.contains("AUDIT"),
        "{stderr}"
    );
    let entries = log(&env);
    let attempt = entries
        .iter()
        .find(|e| e["detail"] == "WRONG_PASSWORD")
        .unwrap_or_else(|| panic!("no wrong-password entry: {entries:?}"));
    assert_eq!(attempt["authenticated"], false);
    assert_eq!(attempt["operation"], "snapshots");
    assert_eq!(attempt["code"], "PERMISSION_DENIED");
    assert!(attempt["key_slot"].is_null());
    env.ok(&["audit", "verify"]);
    // Filters select the same entries the panel's audit page does.
    let failed = env.json(&["audit", "log", "--failed"])["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["detail"], "WRONG_PASSWORD");
    let inits = env.json(&["audit", "log", "--operation", "init", "--until", "1d"])["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert!(inits.is_empty(), "nothing is older than a day: {inits:?}");
    let inits = env.json(&["audit", "log", "--operation", "init", "--since", "1d"])["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(inits.len(), 1, "{inits:?}");
    env.fails(&["audit", "log", "--until", "soon"], 2, "error[USAGE/INVALID_ARGUMENT]");
}

#[test]
fn no_secret_reaches_an_entry() {
    const S3_SECRET: &str = "s3-secret-for-audit-8c1d";
    const DB_SECRET: &str = "db-secret-for-audit-52aa";
    let env = Env::new();
    env.init();
    let with_secrets = |args: &[&str]| {
        env.cmd()
            .env("NFREPO_S3_SECRET_ACCESS_KEY", S3_SECRET)
            .env("NFREPO_S3_ACCESS_KEY_ID", "id")
            .args(args)
            .output()
            .unwrap()
    };
    let dump = env.path("dump.sql");
    std::fs::write(&dump, "select 1;").unwrap();
    let out = with_secrets(&[
        "snapshot",
        dump.to_str().unwrap(),
        "--tag",
        &format!("note={PASSWORD}"),
        "--tag",
        &format!("s3={S3_SECRET}"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // A backed-up command whose own arguments hold a database password.
    let db_url = format!("mysql://root:{DB_SECRET}@127.0.0.1:1/app");
    let password_option = format!("--password={DB_SECRET}");
    let short_option = format!("-p{DB_SECRET}");
    let out = with_secrets(&[
        "snapshot",
        "--command",
        "--name",
        "out.txt",
        "--",
        "sh",
        "-c",
        "echo ok",
        "sh",
        &password_option,
        &short_option,
        &db_url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = env.ok(&["--json", "audit", "log"]);
    for secret in [PASSWORD, S3_SECRET, DB_SECRET] {
        assert!(!text.contains(secret), "the audit log holds {secret:?}: {text}");
    }
    assert!(text.contains("mysql://root:***@127.0.0.1:1/app"), "{text}");
    for file in audit_files(&env) {
        let raw = std::fs::read(&file).unwrap();
        for secret in [PASSWORD, S3_SECRET, DB_SECRET] {
            assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}

#[test]
fn concurrent_processes_and_hosts_keep_valid_chains() {
    let env = Env::new();
    env.init();
    let mut children = Vec::new();
    for n in 0..9 {
        let mut cmd = env.cmd();
        // Three hosts; the processes of one host share one cache directory.
        cmd.env("NFREPO_HOSTNAME", format!("host-{}", n % 3))
            .env("NFREPO_CACHE_DIR", env.path(&format!("cache-{}", n % 3)))
            .args(["snapshots"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(out.stderr.is_empty(), "{}", describe(&out));
    }
    let verified = env.json(&["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    // init, nine snapshots, and this verify (its own entry is written after it reads).
    assert_eq!(verified["entries"], 10, "{verified}");
    assert_eq!(verified["writers"], 4, "{verified}");
}

/// Issue 13, item 2: a restore's entry names the snapshot's source (it has
/// no `--source`) and how long it ran, which `high_latency` compares with
/// the source's earlier restores; `alerts --json` reads it.
#[test]
fn r13_a_restore_entry_names_its_source_and_duration() {
    let env = Env::new();
    env.init();
    feed(&env, "db", b"hello restore");
    let out = env.path("out");
    env.ok(&["restore", "db@latest", "--target", out.to_str().unwrap()]);
    let entries = log(&env);
    let restore = entries
        .iter()
        .find(|e| e["operation"] == "restore")
        .expect("a restore entry");
    assert_eq!(restore["sources"], serde_json::json!(["db"]), "{restore}");
    assert!(restore["duration_ms"].as_u64().is_some(), "{restore}");
    // Every command of this build records its duration.
    assert!(entries.iter().all(|e| e["duration_ms"].is_u64()), "{entries:?}");
}
