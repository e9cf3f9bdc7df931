//! Issue 17, items 3 and 5: the maintenance lease through the real binary.
//! A gc is parked in the middle of its sweep with the engine's failpoint
//! (`NFREPO_FAILPOINT_GC_SWEEP`, honoured only by the binary `cargo test`
//! builds, through the dev-dependency on `nfrepo-engine/failpoints`).

use std::io::{BufRead, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, describe, pseudo_random};

const FAILPOINT: &str = "NFREPO_FAILPOINT_GC_SWEEP";

/// Kills the parked gc however the test ends.
struct Parked(Child);

impl Drop for Parked {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn backup(env: &Env, data: &[u8]) {
    let mut child = env
        .cmd()
        .args(["--json", "snapshot", "--stdin", "--name", "f", "--source", "db"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// Two snapshots of `db`, the older forgotten and its packs planned by a
/// first gc (grace 0), so that the next gc sweeps. Returns the newest data.
fn planned(env: &Env) -> Vec<u8> {
    env.init();
    backup(env, &pseudo_random(3 << 20, 1701));
    let kept = pseudo_random(3 << 20, 1703);
    backup(env, &kept);
    env.ok(&["forget", "--keep-last", "1"]);
    let first = env.json(&["gc", "--grace", "0s"]);
    assert!(first["planned"]["packs"].as_u64().unwrap() > 0, "{first}");
    kept
}

/// A gc parked before its first pack delete, holding the lease.
fn park_gc(env: &Env) -> Parked {
    let mut child = env
        .cmd()
        .env(FAILPOINT, "pause-before:0")
        .args(["gc", "--grace", "0s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let paused = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("nfrepo failpoint: gc sweep paused before step 0"));
    assert!(paused, "the gc never reached its sweep");
    Parked(child)
}

fn assert_sound(env: &Env, kept: &[u8]) {
    env.ok(&["check", "--read-data"]);
    let restored = env.cmd().args(["cat", "db@latest:f"]).output().unwrap();
    assert!(restored.status.success(), "{}", describe(&restored));
    assert!(restored.stdout == kept, "restored bytes differ");
}

/// Issue 17, items 3 and 5: while a gc sweeps, a second gc (and a repair)
/// exits 75 with `error[BACKUP_FAILED/GC_LEASE_HELD]` naming the holder and
/// what to do; after `kill -9` of the first, the next gc on this host takes
/// over at once (its process is gone) and finishes the sweep.
#[test]
fn r17_a_second_gc_is_busy_and_a_killed_gcs_lease_is_taken_over_at_once() {
    let env = Env::new();
    let kept = planned(&env);
    let mut parked = park_gc(&env);
    let pid = parked.0.id();

    let stderr = env.fails(&["gc", "--grace", "0s"], 75, "error[BACKUP_FAILED/GC_LEASE_HELD]: ");
    assert!(stderr.contains("held by `gc` on "), "{stderr}");
    assert!(stderr.contains(&format!(" pid {pid} (renewed ")), "{stderr}");
    assert!(stderr.contains("wait for it to finish and try again"), "{stderr}");
    assert!(stderr.contains("--break-lease"), "{stderr}");
    env.fails(&["repair", "index"], 75, "error[BACKUP_FAILED/GC_LEASE_HELD]: ");
    let out = env.run(&["--json", "gc", "--grace", "0s"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["code"], "BACKUP_FAILED", "{json}");
    assert_eq!(json["error"]["detail"], "GC_LEASE_HELD", "{json}");
    assert_eq!(json["error"]["exit_code"], 75, "{json}");
    // A dry run takes no lease.
    env.ok(&["gc", "--grace", "0s", "--dry-run"]);

    parked.0.kill().unwrap();
    let status = parked.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9));

    let started = Instant::now();
    let out = env.run(&["--json", "gc", "--grace", "0s"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the next gc waited for the lease"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["replaced_lease"]["how"], "holder_exited", "{report}");
    assert_eq!(report["replaced_lease"]["pid"], pid, "{report}");
    assert!(report["deleted"]["packs"].as_u64().unwrap() > 0, "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: took over the maintenance lease lease/gc-"),
        "{stderr}"
    );
    assert_sound(&env, &kept);
}

/// Issue 17, item 3: `gc --break-lease` replaces a lease whose holder is
/// still running (as an operator would for a holder dead on another host),
/// names it on stderr and in the audit log; the holder stops before its next
/// destructive step.
#[test]
fn r17_break_lease_names_whose_lease_it_broke_in_the_output_and_the_audit_log() {
    let env = Env::new();
    let kept = planned(&env);
    env.fails(&["gc", "--break-lease", "--dry-run"], 2, "cannot be used with");
    let mut parked = park_gc(&env);
    let pid = parked.0.id();
    let out = env.run(&["gc", "--grace", "0s", "--break-lease"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("warning[LEASE_BROKEN]: broke the maintenance lease lease/gc-"))
        .unwrap_or_else(|| panic!("no broken-lease line: {stderr}"));
    assert!(line.contains("held by `gc` on "), "{line}");
    assert!(
        line.contains(&format!(" pid {pid} (broken by --break-lease, renewed ")),
        "{line}"
    );

    let entries = env.json(&["audit", "log"])["entries"].as_array().unwrap().clone();
    let gc = entries
        .iter()
        .rev()
        .find(|e| e["operation"] == "gc" && e["code"] == "")
        .unwrap_or_else(|| panic!("no gc entry: {entries:?}"));
    let message = gc["message"].as_str().unwrap();
    assert!(message.contains("broke the maintenance lease lease/gc-"), "{gc}");
    assert!(message.contains(&format!(" pid {pid} ")), "{gc}");
    assert!(gc["command"].to_string().contains("--break-lease"), "{gc}");

    // The broken holder (its lease object is gone) is killed; nothing holds
    // the lease now, so another gc needs no --break-lease.
    parked.0.kill().unwrap();
    parked.0.wait().unwrap();
    env.ok(&["gc", "--grace", "0s"]);
    assert_sound(&env, &kept);
}
