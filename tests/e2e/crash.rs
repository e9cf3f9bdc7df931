//! A backup killed with SIGKILL leaves a valid repository, and the next run
//! reuses what the dead one uploaded.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Env, describe, pseudo_random};

fn pack_count(env: &Env) -> usize {
    let data = env.repo_dir().join("data");
    let Ok(dirs) = std::fs::read_dir(data) else { return 0 };
    dirs.flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
        .count()
}

#[test]
fn killed_backup_leaves_a_valid_repository_and_is_resumed() {
    let env = Env::new();
    env.init();
    let file = env.path("dump.bin");
    let data = pseudo_random(70 * 1024 * 1024, 21);
    std::fs::write(&file, &data).unwrap();

    // The source writes everything, then hangs: we kill nfrepo while its packs are uploaded
    // but before it can commit.
    let script = format!("cat {}; sleep 60", file.display());
    let mut child = env
        .cmd()
        .args([
            "snapshot",
            "--command",
            "--name",
            "dump.bin",
            "--source",
            "db",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while pack_count(&env) < 3 {
        assert!(Instant::now() < deadline, "no packs were uploaded");
        assert!(child.try_wait().unwrap().is_none(), "nfrepo exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let uploaded = pack_count(&env);

    // The repository is valid and holds no snapshot from the killed run.
    assert_eq!(env.snapshot_count(), 0);

    // The same data again: the packs of the killed run are adopted, not re-uploaded.
    let input = std::fs::File::open(&file).unwrap();
    let out = env
        .cmd()
        .args(["--json", "snapshot", "--stdin", "--name", "dump.bin", "--source", "db"])
        .stdin(input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let added = result["summary"]["bytes_added_stored"].as_u64().unwrap();
    let adopted_share = uploaded as u64 * 16 * 1024 * 1024;
    assert!(
        added + adopted_share / 2 < data.len() as u64,
        "resume re-uploaded too much: {added} added after {uploaded} packs were already there"
    );
    let restored = env.cmd().args(["cat", "db@latest:dump.bin"]).output().unwrap();
    assert!(restored.status.success(), "{}", describe(&restored));
    assert!(restored.stdout == data, "restored bytes differ");

    // A third run of the same data adds nothing.
    let input = std::fs::File::open(&file).unwrap();
    let out = env
        .cmd()
        .args(["--json", "snapshot", "--stdin", "--name", "dump.bin"])
        .stdin(input)
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Only the new tree node (the stream has a fresh mtime) is stored.
    assert!(
        result["summary"]["bytes_added_raw"].as_u64().unwrap() < 1024,
        "{result}"
    );
}
