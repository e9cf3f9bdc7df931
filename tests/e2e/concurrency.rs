//! Issue 9, bugs 1, 6 and 7 through the binary: processes of one host
//! sharing a cache directory while another host forgets and collects, a
//! backup killed mid-way, and a damaged cache.
//!
//! Hosts are simulated by separate cache directories and `NFREPO_HOSTNAME`.
//! See: issue 9 ("One backup driver, one object layer, one walker").

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Env, describe, pseudo_random};

const HOST_A: &str = "host-a";
const HOST_B: &str = "host-b";

fn on(env: &Env, host: &str) -> Command {
    let mut cmd = env.cmd();
    cmd.env("NFREPO_HOSTNAME", host);
    cmd
}

fn ok(env: &Env, host: &str, args: &[&str]) -> String {
    let out = on(env, host).args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "nfrepo {args:?} on {host}:\n{}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(env: &Env, host: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(env, host, &all)).unwrap()
}

/// `snapshot --stdin` of `source` as file `f`, fed by the caller.
fn spawn_backup(env: &Env, host: &str, source: &str) -> Child {
    on(env, host)
        .args(["--json", "snapshot", "--stdin", "--name", "f", "--source", source])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn backup(env: &Env, host: &str, source: &str, data: &[u8]) -> String {
    let mut child = spawn_backup(env, host, source);
    let _ = child.stdin.take().unwrap().write_all(data);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value["snapshot_id"].as_str().unwrap().to_owned()
}

fn restored(env: &Env, host: &str, id: &str, into: &str) -> Vec<u8> {
    let target = env.path(into);
    ok(
        env,
        host,
        &["restore", id, "--target", target.to_str().unwrap(), "--verify"],
    );
    std::fs::read(target.join("f")).unwrap()
}

fn check_clean(env: &Env, host: &str) {
    ok(env, host, &["check"]);
}

/// The exact sequence of the issue: host A backs up, host B forgets and
/// plans gc, host A starts a slow `snapshot --stdin`, a compaction on B and
/// a second command on host A (`ls`) rebuild A's cache, A's backup then
/// meets the data of the planned packs, host B sweeps, and A's backup ends.
/// It must commit a snapshot that restores, or fail loudly; `check` must be
/// clean either way.
#[test]
fn r9_a_cache_rebuild_during_a_backup_loses_nothing() {
    let a = Env::new();
    a.init();
    let b = Env::with_repo(&a.repo, a.dir.path());
    let old = pseudo_random(1 << 20, 901);
    backup(&a, HOST_A, "old", &old);
    backup(&a, HOST_A, "old", &pseudo_random(256 << 10, 902));
    let kept = backup(&a, HOST_A, "kept", &pseudo_random(512 << 10, 903));
    ok(&a, HOST_A, &["ls", &kept]);

    // Host B forgets the first `old` snapshot and plans its packs.
    ok(&b, HOST_B, &["forget", "--source", "old", "--keep-last", "1"]);
    let planned = json(&b, HOST_B, &["gc", "--grace", "0s"]);
    assert!(planned["planned"]["packs"].as_u64().unwrap() > 0, "{planned}");

    // Host A starts a slow backup: it has seen the plan.
    let mut slow = spawn_backup(&a, HOST_A, "slow");
    let mut feed = slow.stdin.take().unwrap();
    feed.write_all(&pseudo_random(256 << 10, 904)).unwrap();
    feed.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Enough index deltas for B's next gc to compact the index (its plan is
    // younger than this grace period, so it deletes nothing).
    for i in 0..32u64 {
        backup(&b, HOST_B, "tiny", &pseudo_random(4 << 10, 1000 + i));
    }
    let compacted = json(&b, HOST_B, &["gc", "--grace", "1h"]);
    assert_eq!(compacted["deleted"]["packs"], 0, "{compacted}");
    assert!(
        compacted["index_deltas"]["after"].as_u64() < compacted["index_deltas"]["before"].as_u64(),
        "the index was compacted: {compacted}"
    );
    // A second command on host A rebuilds the shared cache.
    ok(&a, HOST_A, &["ls", &kept]);

    // The backup now meets the planned data, then host B sweeps.
    feed.write_all(&old).unwrap();
    feed.write_all(&pseudo_random(1 << 20, 905)).unwrap();
    feed.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let swept = json(&b, HOST_B, &["gc", "--grace", "0s"]);
    assert!(swept["deleted"]["packs"].as_u64().unwrap() > 0, "{swept}");
    drop(feed);
    let out = slow.wait_with_output().unwrap();
    check_clean(&a, HOST_A);
    if out.status.success() {
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = value["snapshot_id"].as_str().unwrap();
        let mut want = pseudo_random(256 << 10, 904);
        want.extend(&old);
        want.extend(pseudo_random(1 << 20, 905));
        assert!(restored(&a, HOST_A, id, "slow") == want, "the slow backup restores");
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(10), "a loud BACKUP_FAILED:\n{}", describe(&out));
        assert!(stderr.contains("BACKUP_FAILED"), "{stderr}");
    }
}

/// Issue 9, bug 6: a backup killed mid-way leaves its marker, and gc on the
/// same host sees at once that its process is gone instead of waiting an hour.
#[test]
fn r9_gc_on_the_same_host_ignores_the_marker_of_a_killed_backup() {
    let env = Env::new();
    env.init();
    backup(&env, HOST_A, "db", &pseudo_random(512 << 10, 911));
    backup(&env, HOST_A, "db", &pseudo_random(512 << 10, 912));
    ok(&env, HOST_A, &["forget", "--source", "db", "--keep-last", "1"]);
    let mut killed = spawn_backup(&env, HOST_A, "other");
    let mut feed = killed.stdin.take().unwrap();
    feed.write_all(&pseudo_random(64 << 10, 913)).unwrap();
    feed.flush().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(killed.id()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = killed.wait();
    drop(feed);
    let markers = env.repo_dir().join("sessions");
    let left = std::fs::read_dir(&markers).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 1, "kill -9 leaves the marker");
    // Another host cannot tell: it waits for the expiry.
    let b = Env::with_repo(&env.repo, env.dir.path());
    let elsewhere = json(&b, HOST_B, &["gc", "--grace", "0s"]);
    assert_eq!(elsewhere["live_sessions"], 1, "{elsewhere}");
    // The same host can: the marker is dead, and the sweep is not held back.
    let planned = json(&env, HOST_A, &["gc", "--grace", "0s"]);
    assert_eq!(planned["live_sessions"], 0, "{planned}");
    assert_eq!(planned["expired_sessions_removed"], 1, "{planned}");
    // B's plan is old enough (grace 0s) and no live backup holds it back, so
    // the packs of the forgotten snapshot go in this run or the next.
    let swept = json(&env, HOST_A, &["gc", "--grace", "0s"]);
    let deleted = planned["deleted"]["packs"].as_u64().unwrap() + swept["deleted"]["packs"].as_u64().unwrap();
    assert!(deleted > 0, "{planned} {swept}");
    check_clean(&env, HOST_A);
}

/// Issue 9, bug 7: a damaged cache is rebuilt; restore does not blame the repository.
#[test]
fn r9_a_damaged_cache_does_not_fail_a_restore() {
    let env = Env::new();
    env.init();
    let data = pseudo_random(1 << 20, 921);
    let id = backup(&env, HOST_A, "db", &data);
    backup(&env, HOST_A, "other", &pseudo_random(256 << 10, 922));
    ok(&env, HOST_A, &["ls", &id]);
    let caches: Vec<_> = std::fs::read_dir(env.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        // The index cache, not the snapshot-header cache or the session
        // record beside it.
        .filter(|p| {
            let name = p.to_string_lossy();
            !name.ends_with(".objects.sqlite") && !name.ends_with(".sessions.sqlite")
        })
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    {
        let conn = rusqlite::Connection::open(&caches[0]).unwrap();
        conn.execute_batch(
            "UPDATE index_blobs SET offset = offset + 7 WHERE substr(id, 1, 1) < x'80';
             DELETE FROM index_blobs WHERE substr(id, 1, 1) >= x'80';",
        )
        .unwrap();
    }
    assert_eq!(restored(&env, HOST_A, &id, "r1"), data);
    check_clean(&env, HOST_A);
    // The cache was rebuilt: a second restore reads through it.
    assert_eq!(restored(&env, HOST_A, &id, "r2"), data);
    // A file that is not a database at all is replaced.
    std::fs::write(&caches[0], b"garbage, not a database").unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut name = caches[0].clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
    assert_eq!(restored(&env, HOST_A, &id, "r3"), data);
    check_clean(&env, HOST_A);
}
