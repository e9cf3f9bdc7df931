//! `--unlock-cache`: the key slot's argon2id once per span on a host that
//! opts in (format-spec/unlock.md). What a cron host relies on: the second
//! run opens through the cache, a wrong password is still refused, a
//! password change ends the cache, `key lock` removes it, the file is
//! private and holds no secret in the clear, and no log line carries one.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::harness::{Env, PASSWORD, describe};

const CACHED: &str = "opened with this host's cached unlock";

/// The one cache file under the env's cache directory, if any.
fn cache_file(env: &Env) -> Option<PathBuf> {
    let dir = env.path("cache/unlock");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(files.len() <= 1, "one cache file per repository: {files:?}");
    files.into_iter().next()
}

/// Runs `args` with `--unlock-cache 1h -vvv`; asserts success and that no
/// log line holds the password; returns stderr.
fn cached_run(env: &Env, password: &str, args: &[&str]) -> String {
    let out = env
        .cmd()
        .env("NFREPO_PASSWORD", password)
        .args(["--unlock-cache", "1h", "-vvv"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains(password), "the password is in a log line:\n{stderr}");
    stderr
}

/// `key passwd` to `new`.
fn change_password(env: &Env, new: &str) {
    let changed = env
        .cmd()
        .env("NFREPO_NEW_PASSWORD", new)
        .args(["key", "passwd", "--kdf-memory-kib", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert!(changed.status.success(), "{}", describe(&changed));
}

#[test]
fn the_second_run_opens_through_the_cache_until_the_password_changes() {
    let env = Env::new();
    env.init();
    std::fs::write(env.path("f"), b"data").unwrap();
    let f = env.path("f").display().to_string();

    let first = cached_run(&env, PASSWORD, &["snapshot", &f]);
    assert!(!first.contains(CACHED), "nothing was cached yet:\n{first}");
    let file = cache_file(&env).expect("the first run cached its unlock");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&env.path("cache/unlock")), 0o700);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..5], b"NFRU\x01");
    assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()));

    let second = cached_run(&env, PASSWORD, &["snapshot", &f]);
    assert!(second.contains(CACHED), "the second run used the cache:\n{second}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "and left it as it was");
    // Without the flag the cache is neither used nor touched.
    let plain = env.cmd().args(["-vv", "snapshots"]).output().unwrap();
    assert!(plain.status.success() && !String::from_utf8_lossy(&plain.stderr).contains(CACHED));

    // A wrong password is refused as ever, and the cache stays.
    let wrong = env
        .cmd()
        .env("NFREPO_PASSWORD", "not the password")
        .args(["--unlock-cache", "1h", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(16), "{}", describe(&wrong));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("WRONG_PASSWORD"));
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // `key passwd` removes this host's cache at once; the old password
    // opens nothing, the new one caches again.
    change_password(&env, "new password");
    assert_eq!(cache_file(&env), None);
    let old = env.cmd().args(["--unlock-cache", "1h", "snapshots"]).output().unwrap();
    assert_eq!(old.status.code(), Some(16), "{}", describe(&old));
    cached_run(&env, "new password", &["snapshots"]);
    assert!(cached_run(&env, "new password", &["snapshots"]).contains(CACHED));
}

#[test]
fn a_cache_put_back_after_a_password_change_opens_nothing() {
    // Another host (or a backup of this one's cache directory) keeps the
    // old file: its slot is gone, so the old password still fails, and the
    // stale file is removed.
    let env = Env::new();
    env.init();
    cached_run(&env, PASSWORD, &["snapshots"]);
    let saved = std::fs::read(cache_file(&env).unwrap()).unwrap();
    change_password(&env, "new password");
    let dir = env.path("cache/unlock");
    let name = std::fs::read_dir(env.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find_map(|n| n.ends_with(".sqlite").then(|| n[..64].to_owned()))
        .expect("the index cache names the repository id");
    let put_back = dir.join(name);
    std::fs::write(&put_back, &saved).unwrap();
    std::fs::set_permissions(&put_back, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.fails(&["--unlock-cache", "1h", "snapshots"], 16, "WRONG_PASSWORD");
    assert_eq!(cache_file(&env), None, "the stale cache was removed");
}

#[test]
fn key_lock_removes_the_cache_without_a_password() {
    let env = Env::new();
    env.init();
    cached_run(&env, PASSWORD, &["snapshots"]);
    assert!(cache_file(&env).is_some());
    let locked = env
        .cmd()
        .env_remove("NFREPO_PASSWORD")
        .args(["key", "lock"])
        .output()
        .unwrap();
    assert!(locked.status.success(), "{}", describe(&locked));
    assert_eq!(
        String::from_utf8_lossy(&locked.stdout).trim(),
        "removed this host's cached unlock"
    );
    assert_eq!(cache_file(&env), None);
    let again = env.json(&["key", "lock"]);
    assert_eq!(again["removed"], false);
    assert_eq!(again["repository"].as_str().unwrap().len(), 64);
    // The next cached run derives the key again.
    assert!(!cached_run(&env, PASSWORD, &["snapshots"]).contains(CACHED));
}

#[test]
fn the_config_file_turns_it_on_and_the_span_is_checked() {
    let mut env = Env::new();
    env.init();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!("[repository]\nurl = \"{}\"\nunlock_cache = \"30m\"\n", env.repo),
    )
    .unwrap();
    env.configure(&config);
    let run = |env: &Env| {
        let out = env
            .cmd()
            .env_remove("NFREPO_REPOSITORY")
            .args(["-vv", "snapshots"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(!run(&env).contains(CACHED));
    assert!(run(&env).contains(CACHED));

    std::fs::write(
        &config,
        format!("[repository]\nurl = \"{}\"\nunlock_cache = \"8d\"\n", env.repo),
    )
    .unwrap();
    let out = env
        .cmd()
        .env_remove("NFREPO_REPOSITORY")
        .args(["snapshots"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    assert!(
        stderr.contains("CONFIG_INVALID") && stderr.contains("between 1s and 7d"),
        "{stderr}"
    );

    let flag = env.run(&["--unlock-cache", "0s", "snapshots"]);
    assert_eq!(flag.status.code(), Some(2), "{}", describe(&flag));
    assert!(String::from_utf8_lossy(&flag.stderr).contains("between 1s and 7d"));
}
