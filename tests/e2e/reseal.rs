//! `nfrepo key rotate --reseal` and `nfrepo gc --reseal` (issue 12, item 3):
//! after a reseal the old passwords open nothing, even with their old key
//! slots put back into `keys/`; a reseal killed half-way (kill -9) is
//! finished by `gc --reseal`; every snapshot restores byte-identical.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::harness::{Env, describe, pseudo_random, snapshot_of_tree};

const OTHER: &str = "another password";

/// A password file for `password` (mode 0600).
fn password_file(env: &Env, name: &str, password: &str) -> String {
    let path = env.path(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Sets up a repository with a second password and one snapshot per
/// directory; returns the directories and a copy of `keys/` before any rotation.
fn repository_with_data(env: &Env, dirs: usize) -> (Vec<PathBuf>, PathBuf) {
    env.init();
    let out = env
        .cmd()
        .env("NFREPO_NEW_PASSWORD", OTHER)
        .args(["key", "add", "--kdf-memory-kib", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut sources = Vec::new();
    for i in 0..dirs {
        let dir = env.path(&format!("src{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("big.bin"), pseudo_random(3_000_000, 40 + i as u64)).unwrap();
        std::fs::write(dir.join("note.txt"), format!("source {i}\n")).unwrap();
        env.ok(&["snapshot", dir.to_str().unwrap(), "--source", &format!("src{i}")]);
        sources.push(dir);
    }
    let old_keys = env.path("old-keys");
    std::fs::create_dir_all(&old_keys).unwrap();
    for entry in std::fs::read_dir(env.repo_dir().join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), old_keys.join(entry.file_name())).unwrap();
    }
    (sources, old_keys)
}

/// Copies every key slot of `from` into `keys/` under a new name.
fn put_back_old_slots(env: &Env, from: &Path) {
    let slots = std::fs::read_dir(from)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|n| n.len() == 64));
    for (n, path) in slots.enumerate() {
        let name = format!("{:064x}", 0xdead_0000_u64 + n as u64);
        std::fs::copy(path, env.repo_dir().join("keys").join(name)).unwrap();
    }
}

/// Every snapshot restores byte-identical, the repository checks clean, and
/// the old password, its old slot put back, is refused.
fn everything_restores_and_old_keys_open_nothing(env: &Env, sources: &[PathBuf], old_keys: &Path) {
    for (i, source) in sources.iter().enumerate() {
        let target = env.path(&format!("restored{i}"));
        env.ok(&[
            "restore",
            &format!("src{i}@latest"),
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_eq!(
            snapshot_of_tree(&target.join(source.file_name().unwrap())),
            snapshot_of_tree(source),
            "src{i} restores byte-identical"
        );
    }
    let check = env.run(&["--json", "check", "--read-data", "--merkle", "--no-cache"]);
    assert_eq!(check.status.code(), Some(0), "{}", describe(&check));
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), sources.len());

    put_back_old_slots(env, old_keys);
    let other = password_file(env, "other.txt", OTHER);
    for args in [
        &["snapshots"][..],
        &["restore", "src0@latest", "--target", "/nonexistent-target"][..],
    ] {
        let out = env
            .cmd()
            .env_remove("NFREPO_PASSWORD")
            .env("NFREPO_PASSWORD_FILE", &other)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED/RETIRED_KEY_EPOCH"),
            "{}",
            describe(&out)
        );
    }
    // The password that rotated still opens its rewritten slot first.
    env.ok(&["snapshots"]);
}

#[test]
fn key_rotate_reseal_leaves_nothing_the_old_passwords_open() {
    let env = Env::new();
    let (sources, old_keys) = repository_with_data(&env, 2);
    let report = env.json(&["key", "rotate", "--reseal", "--grace", "0s"]);
    assert_eq!(report["epoch"], 1, "{report}");
    assert_eq!(report["revoked"].as_array().unwrap().len(), 1, "{report}");
    let reseal = &report["reseal"];
    assert_eq!(reseal["finished"], true, "{report}");
    assert_eq!(reseal["dropped_epochs"], serde_json::json!([0]), "{report}");
    assert_eq!(reseal["snapshots"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(reseal["pending"], serde_json::json!([]), "{report}");
    // The only key history left is epoch 1's.
    let histories: Vec<String> = std::fs::read_dir(env.repo_dir().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("epoch-"))
        .collect();
    assert_eq!(histories, vec!["epoch-00000000000000000001".to_owned()]);
    everything_restores_and_old_keys_open_nothing(&env, &sources, &old_keys);
}

#[test]
fn a_reseal_killed_mid_way_is_finished_by_gc_reseal() {
    let env = Env::new();
    let (sources, old_keys) = repository_with_data(&env, 3);
    let mut child = env
        .cmd()
        .env("NFREPO_FAILPOINT_RESEAL", "pause-after:2")
        .args(["key", "rotate", "--reseal", "--grace", "0s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let paused = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("nfrepo failpoint: reseal paused after 2 steps"));
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    assert!(paused, "the reseal reached its failpoint");

    // Half-way: a plan names the old packs; everything still reads.
    assert!(
        std::fs::read_dir(env.repo_dir().join("gc")).unwrap().count() >= 1,
        "the batch's plan was written before its copies"
    );
    let target = env.path("half-way");
    env.ok(&["restore", "src0@latest", "--target", target.to_str().unwrap()]);
    // The dead process's lease would block the next run until it expires.
    let _ = std::fs::remove_dir_all(env.repo_dir().join("lease"));

    let report = env.json(&["gc", "--reseal", "--grace", "0s"]);
    assert_eq!(report["finished"], true, "{report}");
    assert_eq!(report["dropped_epochs"], serde_json::json!([0]), "{report}");
    assert!(report["resealed"]["packs"].as_u64().unwrap() >= 1, "{report}");
    everything_restores_and_old_keys_open_nothing(&env, &sources, &old_keys);
    // Nothing left to do.
    let again = env.json(&["gc", "--reseal", "--grace", "0s"]);
    assert_eq!(again["finished"], true, "{again}");
    assert_eq!(again["resealed"]["packs"], 0, "{again}");
}
