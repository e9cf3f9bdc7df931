//! kill -9 at random points of `nfrepo snapshot`, again and again: after
//! each kill the repository checks clean down to the data, and the next
//! snapshot completes. The kill points come from a fixed seed, so a
//! failure can be replayed.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Env, Rng, describe, pseudo_random};

const ITERATIONS: u64 = 20;
const SEED: u64 = 0x6e66_7265_706f;

fn check_clean(env: &Env, iteration: u64) {
    let out = env.run(&["--json", "check", "--read-data", "--merkle", "--no-cache"]);
    assert_eq!(out.status.code(), Some(0), "iteration {iteration}:\n{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        0,
        "iteration {iteration}: {report}"
    );
}

#[test]
fn killing_snapshot_at_random_points_never_breaks_the_repository() {
    let env = Env::new();
    env.ok(&[
        "init",
        "--kdf-memory-kib",
        "64",
        "--kdf-iterations",
        "1",
        "--pack-size-mib",
        "4",
    ]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(1 << 20, 100 + i)).unwrap();
    }
    // Kill points are spread over the length of a full run, measured here
    // (the test asserts nothing about time; this only aims the kills).
    let started = std::time::Instant::now();
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "loop", "--no-parent"]);
    let window_ms = u64::try_from(started.elapsed().as_millis()).unwrap().max(20);
    let mut rng = Rng(SEED);
    let mut kills_before_commit = 0;
    for iteration in 0..ITERATIONS {
        // New data every time, so each run has packs to upload.
        let changed = src.join(format!("f{}", iteration % 6));
        std::fs::write(&changed, pseudo_random(1 << 20, 1000 + iteration)).unwrap();
        std::fs::write(
            src.join(format!("new{iteration}")),
            pseudo_random(300_000, 2000 + iteration),
        )
        .unwrap();
        let before = env.snapshot_count();
        let delay = Duration::from_millis(rng.next() % window_ms);
        let mut child = env
            .cmd()
            .args(["snapshot", src.to_str().unwrap(), "--source", "loop", "--no-parent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        child.wait().unwrap();
        if env.snapshot_count() == before {
            kills_before_commit += 1;
        }
        check_clean(&env, iteration);
        env.ok(&["snapshot", src.to_str().unwrap(), "--source", "loop"]);
    }
    eprintln!("{kills_before_commit} of {ITERATIONS} kills landed before the commit point");
    assert!(
        kills_before_commit > 0,
        "no kill landed before a commit: the loop tested nothing"
    );
    check_clean(&env, ITERATIONS);
    let target = env.path("restored");
    env.ok(&["restore", "loop@latest", "--target", target.to_str().unwrap()]);
    // A path given on the command line is stored under its last component.
    let restored = target.join("src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(restored.join(entry.file_name())).unwrap(),
            "{}",
            entry.path().display()
        );
    }
}
