//! `nfrepo replicate` across two SeaweedFS instances (two regions), file → S3
//! → file, a forged pack, and kill -9 of the real binary mid-pass.
//!
//! Region 1 is `NFREPO_TEST_S3_ENDPOINT`, region 2 `NFREPO_TEST_S3_ENDPOINT_2`
//! (both started by `scripts/test.sh`); the tests fail when either is missing.
//! Region 1 is shared by every test, so "region 1 is lost" is played by
//! pointing the configured repository at a closed port: every read then has
//! to come from region 2 alone.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, describe, pseudo_random, snapshot_of_tree};

fn region_2(name: &str) -> String {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: replication tests need two SeaweedFS instances; run scripts/test.sh")
        })
    };
    let unique = format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    format!(
        "s3://{}/e2e/{unique}?endpoint={}&region=us-east-1",
        var("NFREPO_TEST_S3_BUCKET"),
        var("NFREPO_TEST_S3_ENDPOINT_2")
    )
}

fn write_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/big.bin"), pseudo_random(900_000, seed)).unwrap();
    std::fs::write(root.join("app.conf"), format!("seed = {seed}\n")).unwrap();
}

/// Runs with `--json` and returns stdout parsed, whatever the exit code.
fn json_of(cmd: &mut Command) -> (Option<i32>, serde_json::Value) {
    let out = cmd.output().unwrap();
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", describe(&out)));
    (out.status.code(), value)
}

#[test]
fn s3_to_s3_across_regions_then_restore_from_region_2_alone() {
    let env = Env::s3("replicate-primary");
    env.init();
    let src = env.path("data");
    write_tree(&src, 1);
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    write_tree(&src, 2);
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    let replica = region_2("replicate-dr");

    let passes = env.json(&["replicate", "--to", &replica]);
    assert_eq!(passes[0]["ok"], true, "{passes}");
    assert_eq!(passes[0]["result"], "complete");
    assert!(passes[0]["copied_objects"].as_u64().unwrap() >= 9, "{passes}");
    let again = env.json(&["replicate", "--to", &replica]);
    // Nothing but the audit entry the first pass logged on the source.
    assert_eq!(
        again[0]["copied"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["audit"],
        "a second pass copies nothing else: {again}"
    );
    assert_eq!(again[0]["copied"]["audit"]["objects"], 1, "{again}");
    let status = env.json(&["replicate", "status", "--to", &replica]);
    assert_eq!(status[0]["live"], true, "{status}");
    assert_eq!(
        (
            &status[0]["lag_seconds"],
            &status[0]["snapshots_behind"],
            &status[0]["objects_behind"]
        ),
        (&serde_json::json!(0), &serde_json::json!(0), &serde_json::json!(0))
    );

    // Region 1 is gone: the configured repository no longer answers.
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"s3://nfrepo-test/lost?endpoint=http://127.0.0.1:9&region=us-east-1\"\nreplica = \"dr\"\n\n[replication.dr]\nurl = \"{replica}\"\n"
        ),
    )
    .unwrap();
    let lost = || {
        let mut cmd = env.cmd();
        cmd.env_remove("NFREPO_REPOSITORY").env("NFREPO_CONFIG", &config);
        cmd
    };
    let (code, snapshots) = json_of(lost().args(["--json", "--from-replica", "snapshots"]));
    assert_eq!(code, Some(0), "{snapshots}");
    assert_eq!(snapshots.as_array().unwrap().len(), 2);
    let out = env.path("out");
    let restored = lost()
        .args([
            "--from-replica",
            "restore",
            "files@latest",
            "--target",
            out.to_str().unwrap(),
            "--verify",
        ])
        .output()
        .unwrap();
    assert_eq!(restored.status.code(), Some(0), "{}", describe(&restored));
    assert_eq!(snapshot_of_tree(&src), snapshot_of_tree(&out.join("data")));
    let checked = lost()
        .args(["--from-replica", "check", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(0), "{}", describe(&checked));

    // Status answers from the replica's state while the source is unreachable.
    let (code, status) = json_of(lost().args(["--json", "replicate", "status"]));
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status[0]["target"], "dr");
    assert_eq!(status[0]["live"], false, "{status}");
    assert_eq!(status[0]["last_result"], "complete");
    assert_eq!(status[0]["snapshots_behind"], 0);
    assert_eq!(status[0]["lag_is_bound"], true);

    // Without a replica named, --from-replica is a usage error.
    let plain = env.cmd().args(["--from-replica", "snapshots"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(2), "{}", describe(&plain));
}

#[test]
fn file_to_s3_to_file_and_a_forged_pack_is_refused() {
    let s3 = Env::s3("replicate-creds");
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write_tree(&src, 3);
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    let middle = region_2("replicate-middle");
    // A target that cannot be opened (no S3 credentials in this
    // environment) fails the command with one error line.
    env.fails(&["replicate", "--to", &middle], 16, "PERMISSION_DENIED/CREDENTIALS");
    let last = format!("file://{}", env.path("last").display());

    // file → S3, then S3 → file (the S3 credentials come from the S3 handle's environment).
    let first = s3
        .cmd()
        .args(["--repo", &env.repo, "replicate", "--to", &middle])
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let second = s3
        .cmd()
        .args(["--repo", &middle, "replicate", "--to", &last])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", describe(&second));
    let out = env.path("out");
    env.ok(&[
        "--repo",
        &last,
        "restore",
        "files@latest",
        "--target",
        out.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(snapshot_of_tree(&src), snapshot_of_tree(&out.join("data")));

    // A pack whose bytes do not match its name appears on the source.
    let pack = first_file(&env.repo_dir().join("data"));
    let dir = pack.parent().unwrap();
    let prefix = dir.file_name().unwrap().to_str().unwrap();
    let forged_name = format!("{prefix}{}", "0".repeat(62));
    std::fs::copy(&pack, dir.join(&forged_name)).unwrap();
    write_tree(&src, 4);
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    let stdout = {
        let out = env.run(&["replicate", "--to", &last]);
        assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("BACKUP_CORRUPTED"), "{stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(stdout.contains(&forged_name), "the forged pack is named: {stdout}");
    assert!(stdout.contains("held back snapshots/"), "{stdout}");
    assert!(
        !env.path("last/data").join(prefix).join(&forged_name).exists(),
        "never uploaded"
    );
    let snapshots = env.json(&["--repo", &last, "snapshots"]);
    assert_eq!(
        snapshots.as_array().unwrap().len(),
        1,
        "the new snapshot waits: {snapshots}"
    );
    env.ok(&["--repo", &last, "check", "--read-data"]);
}

fn first_file(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = walk(dir);
    files.sort();
    files.remove(0)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(path);
        }
    }
    out
}

#[test]
fn kill_9_at_several_points_leaves_a_valid_replica_that_the_next_run_completes() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    for seed in 10..16 {
        write_tree(&src, seed);
        env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    }
    let mut interrupted = 0;
    for (i, stop_at) in [1, 2, 3, 5, 7, 9, 12, 15, 18, 21].into_iter().enumerate() {
        let dir = env.path(&format!("replica-{i}"));
        let target = format!("file://{}", dir.display());
        let mut child = env
            .cmd()
            .args(["replicate", "--to", &target, "--jobs", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while walk(&dir).len() < stop_at && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "replicate made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        child.wait().unwrap();
        if !dir.join("replica/state").exists() {
            interrupted += 1;
        }
        if dir.join("config").exists() {
            env.ok(&["--repo", &target, "check", "--read-data"]);
        }
        let resumed = env.json(&["replicate", "--to", &target]);
        assert_eq!(resumed[0]["ok"], true, "{resumed}");
        env.ok(&["--repo", &target, "check", "--read-data"]);
        assert_eq!(env.json(&["--repo", &target, "snapshots"]).as_array().unwrap().len(), 6);
        // Audit entries grow with every command (on both sides): count the rest.
        let not_audit = |d: &Path| walk(d).iter().filter(|p| !p.starts_with(d.join("audit"))).count();
        assert_eq!(
            not_audit(&dir),
            not_audit(&env.repo_dir()) + 1,
            "everything and the state"
        );
    }
    assert!(interrupted >= 5, "only {interrupted} kills landed mid-pass");
}

#[test]
fn watch_copies_a_new_snapshot_within_seconds() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write_tree(&src, 30);
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    let target = format!("file://{}", env.path("watched").display());
    let mut child = env
        .cmd()
        .args(["replicate", "--to", &target, "--watch", "--interval", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let count = || {
        let out = env.run(&["--json", "--repo", &target, "snapshots"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count() < n {
            assert!(Instant::now() < deadline, "the replica did not reach {n} snapshots");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(1);
    write_tree(&src, 31);
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    let committed = Instant::now();
    wait_for(2);
    assert!(
        committed.elapsed() < Duration::from_secs(10),
        "{:?}",
        committed.elapsed()
    );
    assert!(child.try_wait().unwrap().is_none(), "--watch keeps running");
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn verify_finds_a_flipped_byte_on_the_replica_and_the_next_run_repairs_it() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write_tree(&src, 40);
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    let dir = env.path("replica");
    let target = format!("file://{}", dir.display());
    env.ok(&["replicate", "--to", &target]);
    let pack = first_file(&dir.join("data"));
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[64] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_owned();

    let out = env.run(&["--json", "replicate", "--to", &target, "--verify"]);
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report[0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["code"], "BACKUP_CORRUPTED");
    assert!(problems[0]["object"].as_str().unwrap().ends_with(&name), "{report}");
    let status = env.json(&["replicate", "status", "--to", &target]);
    assert_eq!(status[0]["damaged"], 1, "{status}");

    let repaired = env.json(&["replicate", "--to", &target]);
    assert!(
        repaired[0]["repaired"][0].as_str().unwrap().ends_with(&name),
        "{repaired}"
    );
    env.ok(&["replicate", "--to", &target, "--verify"]);
    env.ok(&["--repo", &target, "check", "--read-data"]);
}
