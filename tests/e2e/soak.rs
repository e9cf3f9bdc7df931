//! Issue 17's concurrency soak: backups, forget, protect and unprotect, gc
//! and repair from two hosts, two backup processes per host sharing that
//! host's cache directory, on SeaweedFS, with kill -9 of any of them.
//!
//! What it holds the repository to, at the end:
//! - `check --read-data` from a fresh cache is clean;
//! - every snapshot reported committed, and not reported forgotten,
//!   restores byte-exact (one whose forget was killed may be gone, but if it
//!   is there it restores);
//! - no snapshot reported forgotten is still listed, and every snapshot
//!   reported protected (and not unprotected since) still exists;
//! - a backup after all of it stores what it must and restores.
//!
//! Gc, repair and forget may answer "busy" (another holds the maintenance
//! lease);
//! every other failure, of any command, fails the soak. Choices come from a
//! seed, so a failing run replays: `NFREPO_SOAK_SEED`. CI runs a few rounds;
//! `scripts/soak.sh` runs many (`NFREPO_SOAK_ROUNDS`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::harness::{Env, Rng, describe, pseudo_random};

const DEFAULT_ROUNDS: u64 = 12;
const DEFAULT_SEED: u64 = 0x736f_616b_3137;
/// Bytes every backup starts with, so backups of different sources dedup.
const SHARED_LEN: usize = 384 << 10;
/// Exit status of "busy, try again later" (EX_TEMPFAIL).
const EXIT_BUSY: i32 = 75;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// The bytes of backup number `n` (shared prefix, then its own data).
fn backup_data(n: u64) -> Vec<u8> {
    let mut data = pseudo_random(SHARED_LEN, 17);
    let len = 128 << 10 | usize::try_from(n % 5).unwrap() << 18;
    data.extend(pseudo_random(len, 10_000 + n));
    data
}

#[derive(Debug, Clone)]
enum Op {
    Backup { source: String, data: u64 },
    Forget { source: String },
    Protect { id: String },
    Unprotect { id: String },
    Gc,
    Repair,
}

struct Running {
    op: Op,
    host: usize,
    child: Child,
    feeder: Option<std::thread::JoinHandle<()>>,
}

/// What the commands reported, which the repository must bear out at the end.
#[derive(Default)]
struct Reported {
    /// Snapshot id → backup number of its data and its source.
    committed: BTreeMap<String, (u64, String)>,
    forgotten: BTreeSet<String>,
    /// Snapshots a killed forget may have removed.
    maybe_forgotten: BTreeSet<String>,
    protected: BTreeSet<String>,
    busy: u64,
    killed: u64,
}

impl Reported {
    fn live(&self) -> Vec<&String> {
        self.committed
            .keys()
            .filter(|id| !self.forgotten.contains(*id) && !self.maybe_forgotten.contains(*id))
            .collect()
    }

    fn of_source(&self, source: &str) -> Vec<String> {
        self.committed
            .iter()
            .filter(|(_, (_, s))| s == source)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn spawn(host: &Env, op: &Op) -> (Child, Option<std::thread::JoinHandle<()>>) {
    let mut cmd = host.cmd();
    cmd.arg("--json");
    match op {
        Op::Backup { source, .. } => cmd.args(["snapshot", "--stdin", "--name", "f", "--source", source]),
        Op::Forget { source } => cmd.args(["forget", "--source", source, "--keep-last", "2"]),
        Op::Protect { id } => cmd.args(["protect", id]),
        Op::Unprotect { id } => cmd.args(["unprotect", id]),
        Op::Gc => cmd.args(["gc", "--grace", "0s"]),
        Op::Repair => cmd.args(["repair", "index"]),
    };
    let stdin = if matches!(op, Op::Backup { .. }) {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let feeder = match op {
        Op::Backup { data, .. } => {
            let mut pipe = child.stdin.take().unwrap();
            let bytes = backup_data(*data);
            // A killed backup closes the pipe: the write error is expected.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    (child, feeder)
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", describe(out)))
}

fn is_busy(out: &Output) -> bool {
    out.status.code() == Some(EXIT_BUSY) || String::from_utf8_lossy(&out.stderr).contains("LEASE_HELD")
}

/// Records what a finished command reported; panics on a failure the soak does not allow.
fn settle(reported: &mut Reported, op: &Op, out: &Output, killed: bool) {
    if killed {
        reported.killed += 1;
        match op {
            // A killed forget may have removed any snapshot of its source.
            Op::Forget { source } => {
                let ids = reported.of_source(source);
                reported.maybe_forgotten.extend(ids);
            }
            // Unknown whether the marker went: no longer promised.
            Op::Unprotect { id } => {
                reported.protected.remove(id);
            }
            _ => {}
        }
        return;
    }
    let what = format!("{op:?}");
    match op {
        Op::Backup { source, data } => {
            assert!(out.status.success(), "{what}:\n{}", describe(out));
            let id = json_of(out)["snapshot_id"].as_str().unwrap().to_owned();
            reported.committed.insert(id, (*data, source.clone()));
        }
        Op::Forget { .. } => {
            if is_busy(out) {
                reported.busy += 1;
                return;
            }
            assert!(out.status.success(), "{what}:\n{}", describe(out));
            for group in json_of(out)["groups"].as_array().unwrap() {
                for snapshot in group["snapshots"].as_array().unwrap() {
                    if snapshot["keep"] == false {
                        reported.forgotten.insert(snapshot["id"].as_str().unwrap().to_owned());
                    }
                }
            }
        }
        Op::Protect { id } => {
            if out.status.success() {
                reported.protected.insert(id.clone());
            } else {
                // Only a snapshot that is gone may be refused.
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.contains("BACKUP_NOT_FOUND"), "{what}:\n{}", describe(out));
                assert!(
                    reported.forgotten.contains(id) || reported.maybe_forgotten.contains(id),
                    "{what} refused a snapshot nobody forgot:\n{}",
                    describe(out)
                );
            }
        }
        Op::Unprotect { id } => {
            assert!(out.status.success(), "{what}:\n{}", describe(out));
            reported.protected.remove(id);
        }
        Op::Gc | Op::Repair => {
            if is_busy(out) {
                reported.busy += 1;
            } else {
                assert!(out.status.success(), "{what}:\n{}", describe(out));
            }
        }
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        return None;
    }
    items.get(usize::try_from(rng.below(items.len() as u64)).unwrap())
}

fn maintenance(rng: &mut Rng, reported: &Reported) -> Op {
    let live: Vec<String> = reported.live().into_iter().cloned().collect();
    let protected: Vec<String> = reported.protected.iter().cloned().collect();
    loop {
        let op = match rng.below(6) {
            0 => Op::Forget {
                source: format!("s{}{}", rng.below(2), rng.below(2)),
            },
            1 => match pick(rng, &live) {
                Some(id) => Op::Protect { id: id.clone() },
                None => continue,
            },
            2 => match pick(rng, &protected) {
                Some(id) => Op::Unprotect { id: id.clone() },
                None => continue,
            },
            3 | 4 => Op::Gc,
            _ => Op::Repair,
        };
        return op;
    }
}

fn restored(host: &Env, id: &str, into: &str) -> Vec<u8> {
    let target = host.path(into);
    host.ok(&["restore", id, "--target", target.to_str().unwrap(), "--verify"]);
    std::fs::read(target.join("f")).unwrap()
}

#[test]
fn soak_backups_and_maintenance_from_two_hosts_with_kill_9() {
    let rounds = setting("NFREPO_SOAK_ROUNDS", DEFAULT_ROUNDS);
    let seed = setting("NFREPO_SOAK_SEED", DEFAULT_SEED);
    eprintln!("soak: {rounds} rounds, NFREPO_SOAK_SEED={seed}");
    let repo = Env::s3("soak");
    eprintln!("soak: repository {}", repo.repo);
    repo.init();
    let hosts = [repo.host("soak-0"), repo.host("soak-1")];
    let mut rng = Rng(seed | 1);
    let mut reported = Reported::default();
    let mut next_data = 0;
    // Kills are aimed within the length of the previous round (this only
    // aims them; nothing is asserted about time).
    let mut round_ms: u64 = 500;
    for round in 0..rounds {
        let started = std::time::Instant::now();
        let mut ops = Vec::new();
        for (h, _) in hosts.iter().enumerate() {
            for p in 0..2 {
                next_data += 1;
                ops.push((
                    h,
                    Op::Backup {
                        source: format!("s{h}{p}"),
                        data: next_data,
                    },
                ));
            }
        }
        for _ in 0..1 + rng.below(2) {
            let host = usize::try_from(rng.below(2)).unwrap();
            ops.push((host, maintenance(&mut rng, &reported)));
        }
        let mut running: Vec<Running> = ops
            .into_iter()
            .map(|(host, op)| {
                let (child, feeder) = spawn(&hosts[host], &op);
                Running {
                    op,
                    host,
                    child,
                    feeder,
                }
            })
            .collect();
        let victim = (rng.below(2) == 0).then(|| usize::try_from(rng.below(running.len() as u64)).unwrap());
        if let Some(victim) = victim {
            std::thread::sleep(Duration::from_millis(rng.below(round_ms)));
            let pid = i32::try_from(running[victim].child.id()).unwrap();
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        for (i, run) in running.drain(..).enumerate() {
            let out = run.child.wait_with_output().unwrap();
            if let Some(feeder) = run.feeder {
                feeder.join().unwrap();
            }
            // A command that finished before the kill reports as usual.
            let killed = victim == Some(i) && out.status.code().is_none();
            eprintln!(
                "soak round {round}: host {} {:?} -> {:?}{}",
                run.host,
                run.op,
                out.status.code(),
                if killed { " (killed)" } else { "" }
            );
            settle(&mut reported, &run.op, &out, killed);
        }
        round_ms = u64::try_from(started.elapsed().as_millis()).unwrap().max(50);
    }
    eprintln!(
        "soak: {} committed, {} forgotten, {} maybe forgotten, {} protected, {} busy, {} killed",
        reported.committed.len(),
        reported.forgotten.len(),
        reported.maybe_forgotten.len(),
        reported.protected.len(),
        reported.busy,
        reported.killed
    );
    assert!(
        reported.killed > 0 || rounds < 4,
        "no kill landed while its command ran: the soak tested no crash"
    );

    let auditor = repo.host("soak-auditor");
    // Every process has ended, so a lease left by a killed one may be
    // broken; the gc settles what a killed forget left (its tombstone).
    let out = auditor.run(&["--json", "gc", "--break-lease"]);
    assert_eq!(out.status.code(), Some(0), "gc after the soak:\n{}", describe(&out));
    let settled = &json_of(&out)["settled_forgets"];
    eprintln!("soak: the last gc settled {settled}");
    let out = auditor.run(&["--json", "check", "--read-data", "--no-cache"]);
    assert_eq!(out.status.code(), Some(0), "check after the soak:\n{}", describe(&out));
    let report = json_of(&out);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["unsettled_forgets"], serde_json::json!([]), "{report}");

    let listed: BTreeSet<String> = auditor
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &reported.forgotten {
        assert!(
            !listed.contains(id),
            "snapshot {id} was reported forgotten but is still listed"
        );
    }
    for id in &reported.protected {
        assert!(listed.contains(id), "snapshot {id} was reported protected but is gone");
    }
    for (id, (data, _)) in &reported.committed {
        let must = !reported.forgotten.contains(id) && !reported.maybe_forgotten.contains(id);
        if must {
            assert!(
                listed.contains(id),
                "committed snapshot {id} is gone, though nobody forgot it"
            );
        }
        if listed.contains(id) {
            assert!(
                restored(&auditor, id, &format!("r-{id}")) == backup_data(*data),
                "snapshot {id} does not restore byte-exact"
            );
        }
    }
    // Maintenance left nothing that makes a later backup store nothing.
    for (h, host) in hosts.iter().enumerate() {
        next_data += 1;
        let (child, feeder) = spawn(
            host,
            &Op::Backup {
                source: format!("after{h}"),
                data: next_data,
            },
        );
        let out = child.wait_with_output().unwrap();
        feeder.unwrap().join().unwrap();
        assert!(out.status.success(), "backup after the soak:\n{}", describe(&out));
        let id = json_of(&out)["snapshot_id"].as_str().unwrap().to_owned();
        assert!(
            restored(&auditor, &id, &format!("after-{id}")) == backup_data(next_data),
            "the backup after the soak restores"
        );
    }
}
