//! Issue 9, bugs 5, 8, 11, 15, 18 and 19: permissions, escaping, init
//! validation, broken pipes, exit codes and messages, progress.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::harness::{BIN, Env, PASSWORD, describe};

fn files(env: &Env) -> String {
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), b"alpha").unwrap();
    std::fs::write(data.join("sub/b.txt"), b"beta").unwrap();
    data.to_str().unwrap().to_owned()
}

// Bug 15: `nfrepo snapshots | head -1` panicked with exit 101.
#[test]
fn a_closed_stdout_is_a_normal_end() {
    let env = Env::new();
    env.init();
    let data = files(&env);
    env.ok(&["snapshot", &data]);
    std::fs::write(format!("{data}/a.txt"), b"changed").unwrap();
    env.ok(&["snapshot", &data]);
    let commands: [&[&str]; 8] = [
        &["snapshots"],
        &["--json", "snapshots"],
        &["ls", "-R", "-l", "latest"],
        &["cat", "latest:data/a.txt"],
        &["diff", "latest", "latest"],
        &["key", "list"],
        &["check"],
        &["verify", "latest"],
    ];
    for args in commands {
        // The read end is closed before nfrepo starts: its first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .cmd()
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

// Bug 18: bad values gave BACKUP_FAILED (10), SNAPSHOT_INVALID (17)…
#[test]
fn bad_argument_values_are_usage_errors() {
    let env = Env::new();
    env.init();
    let data = files(&env);
    let cases: [&[&str]; 9] = [
        &["snapshots", "--tag", "novalue"],
        &["snapshot", "--tag", "=x", &data],
        &["snapshots", "--since", "yesterday-ish"],
        &["gc", "--grace", "5 parsecs"],
        &["gc", "--max-unused", "200%"],
        &["check", "--read-data-subset", "lots"],
        &["check", "--max-age", "old"],
        &["forget", "--keep-within", "forever", "--dry-run"],
        &["init", "--cipher", "rot13"],
    ];
    for args in cases {
        env.fails(args, 2, "invalid value");
    }
    assert_eq!(env.snapshot_count(), 0);
}

// Bug 11: `init --pack-size-mib 0` made a repository nothing could open.
#[test]
fn init_validates_every_parameter_before_writing() {
    for args in [
        ["--pack-size-mib", "0"],
        ["--pack-size-mib", "129"],
        ["--kdf-memory-kib", "0"],
        ["--kdf-iterations", "0"],
        ["--kdf-iterations", "65"],
        ["--zstd-level", "0"],
        ["--zstd-level", "20"],
    ] {
        let env = Env::new();
        let stderr = env.fails(&["init", args[0], args[1]], 2, "invalid value");
        assert!(stderr.contains(".."), "the allowed range is named: {stderr}");
        assert!(!env.repo_dir().exists(), "{args:?} wrote a repository");
    }
    let env = Env::new();
    env.ok(&[
        "init",
        "--pack-size-mib",
        "4",
        "--zstd-level",
        "19",
        "--kdf-memory-kib",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    env.ok(&["snapshots"]);
}

// Bug 18: `--quiet` did not quiet `verify`.
#[test]
fn quiet_verify_prints_nothing() {
    let env = Env::new();
    env.init();
    let data = files(&env);
    env.ok(&["snapshot", &data]);
    let out = env.run(&["--quiet", "verify", "latest"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}", describe(&out));
}

// Bug 18: `key add` without a new password named NFREPO_PASSWORD.
#[test]
fn key_add_names_the_missing_new_password() {
    let env = Env::new();
    env.init();
    let stderr = env.fails(&["key", "add"], 16, "PERMISSION_DENIED/NO_NEW_PASSWORD");
    assert!(
        stderr.contains("NFREPO_NEW_PASSWORD") && stderr.contains("--new-password-file"),
        "{stderr}"
    );
}

// Bug 18: ANSI colour in logs written to a pipe.
#[test]
fn no_colour_when_stderr_is_not_a_terminal() {
    let env = Env::new();
    env.init();
    let mut cmd = env.cmd();
    cmd.env("NFREPO_LOG", "trace")
        .args(["snapshot", "--stdin", "--name", "f"]);
    let out = crate::harness::run_with_stdin(cmd, b"logged\n");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!out.stderr.is_empty(), "trace logs something");
    assert!(!out.stderr.contains(&0x1b), "{}", describe(&out));
}

// Bug 18: a missing --config was ignored when --repo was given.
#[test]
fn a_missing_config_file_is_an_error_even_with_repo() {
    let env = Env::new();
    env.init();
    let missing = env.path("nope.toml");
    env.fails(
        &["--config", missing.to_str().unwrap(), "snapshots"],
        12,
        "CONFIG_NOT_FOUND",
    );
}

// Bug 18: `cron` printed schedules cron rejects.
#[test]
fn cron_rejects_invalid_schedules() {
    let env = Env::new();
    let config = env.path("nfrepo.toml");
    for schedule in ["99 * * * *", "* * * * mon-xyz", "*/0 * * * *"] {
        std::fs::write(
            &config,
            format!("[sources.a]\nkind = \"files\"\npaths = [\"/tmp\"]\nschedule = \"{schedule}\"\n"),
        )
        .unwrap();
        env.fails(&["--config", config.to_str().unwrap(), "cron"], 10, "CONFIG_INVALID");
    }
}

// Bug 18: `--json snapshot --all` printed one document per source.
#[test]
fn json_all_prints_one_document() {
    let env = Env::new();
    env.init();
    let data = files(&env);
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.good]\nkind = \"files\"\npaths = [\"{data}\"]\n\n[sources.bad]\nkind = \"files\"\npaths = [\"{data}\"]\npre_hook = \"exit 3\"\n"
        ),
    )
    .unwrap();
    let out = env.run(&["--json", "--config", config.to_str().unwrap(), "snapshot", "--all"]);
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    let sources = doc["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{doc}");
    assert_eq!(doc["error"]["code"], "BACKUP_FAILED");
    assert_eq!(doc["error"]["detail"], "SOURCES_FAILED");
}

// Bug 8: names with terminal controls or invalid UTF-8 reached the terminal raw.
#[test]
fn names_are_escaped_in_human_output_and_exact_in_json() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("evil\x1b[2Jname"), b"x").unwrap();
    std::fs::write(data.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), b"y").unwrap();
    let data = data.to_str().unwrap();
    env.ok(&["snapshot", "--source", "src\x1b]0;pwned\x07", data]);
    let ls = env.ok(&["ls", "-l", "latest:data"]);
    assert!(!ls.contains('\x1b'), "{ls:?}");
    assert!(ls.contains("evil\\x1b[2Jname") && ls.contains("caf\\xe9"), "{ls}");
    let table = env.ok(&["snapshots"]);
    assert!(!table.contains('\x1b') && !table.contains('\x07'), "{table:?}");
    assert!(table.contains("src\\x1b]0;pwned\\x07"), "{table}");
    let json = env.json(&["ls", "latest:data"]);
    let entries = json.as_array().unwrap();
    assert!(entries.iter().any(|e| e["path"] == "data/evil\x1b[2Jname"), "{json}");
    let cafe = entries.iter().find(|e| e["path_hex"].is_string()).unwrap();
    assert_eq!(cafe["path_hex"], hex_of(b"data/caf\xe9"));
    assert_eq!(env.json(&["snapshots"])[0]["source"], "src\x1b]0;pwned\x07");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Bug 5: key slots, repository files and the cache followed the umask.
#[test]
fn repository_and_cache_files_are_owner_only() {
    let env = Env::new();
    let data = files(&env);
    let run = |args: &[&str]| {
        // umask 022: what most systems use, and what made key slots world-readable.
        let out = env
            .wrapped("sh", &["-c", "umask 022; exec \"$0\" \"$@\"", BIN])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    };
    run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    run(&["snapshot", &data]);
    let mut checked = 0;
    for entry in walk(&env.repo_dir()).into_iter().chain(walk(&env.path("cache"))) {
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        let want = if entry.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", entry.display());
        checked += 1;
    }
    assert!(checked > 5, "only {checked} entries");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

// Bug 5: a password file anyone may read gave no warning.
#[test]
fn a_readable_password_file_is_warned_about() {
    let env = Env::new();
    env.init();
    let file = env.path("pw");
    std::fs::write(&file, PASSWORD).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env
        .cmd()
        .env_remove("NFREPO_PASSWORD")
        .arg("--password-file")
        .arg(&file)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("warning: password file").count(), 1, "{stderr}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env
        .cmd()
        .env_remove("NFREPO_PASSWORD")
        .arg("--password-file")
        .arg(&file)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        describe(&out)
    );
}

// Bug 19: progress on a terminal, nothing on a pipe.
#[test]
fn progress_only_on_a_terminal() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("big"), crate::harness::pseudo_random(4 << 20, 7)).unwrap();
    let data = data.to_str().unwrap().to_owned();
    env.ok(&["snapshot", &data]);
    let target = env.path("restored");
    let target = target.to_str().unwrap();
    for (args, label) in [
        (vec!["snapshot", "--no-parent", data.as_str()], "snapshot: "),
        (vec!["check", "--read-data"], "check: "),
        (
            vec!["restore", "latest", "--target", target, "--overwrite"],
            "restore: ",
        ),
    ] {
        // On a pipe: no progress.
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains(label),
            "{}",
            describe(&out)
        );
        // Under a pseudo-terminal (`script`): progress is drawn.
        let line = std::iter::once(BIN)
            .chain(args.iter().copied())
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let out = env.wrapped("script", &["-qec", &line, "/dev/null"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(text.contains(label), "no progress for {args:?} on a terminal: {text:?}");
    }
}
