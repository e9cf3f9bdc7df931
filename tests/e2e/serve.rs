//! Issue 12, item 4: `nfrepo serve --append-only` serves a repository's
//! store to backup hosts over HTTP; they can init and back up through it,
//! and read everything, but `forget` and `gc` (deletes, overwrites,
//! maintenance objects) are refused with `PERMISSION_DENIED/APPEND_ONLY`.
//!
//! `init` goes through the server too: it only creates objects (config,
//! key slots, the public key, the first audit entry), so the server's
//! operator needs no password at all.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::harness::{Env, describe, pseudo_random, snapshot_of_tree, spawn_server};

const TOKEN: &str = "e2e-serve-token-5f0c1d9a7b3e";

/// A running `nfrepo serve`, its URL and the file its stderr (the log) goes to.
struct Served {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Served {
    fn start(env: &Env, extra: &[&str]) -> Self {
        let log = env.path("server.log");
        let mut cmd = env.cmd();
        // The server needs the store only: no password.
        cmd.env_remove("NFREPO_PASSWORD")
            .args(["serve", "--append-only", "--listen", "127.0.0.1:0"])
            .args(extra);
        let (child, url) = spawn_server(cmd, &log, "serving ", " (append-only)\n");
        assert!(url.starts_with("rest+http://127.0.0.1:") && url.ends_with('/'), "{url}");
        Self { child, url, log }
    }

    /// SIGTERM, then the exit status (a clean stop is 0) and the log.
    fn stop(mut self) -> (Option<i32>, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("the server did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.code(), std::fs::read_to_string(&self.log).unwrap())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A backup host: the repository is the server's URL, the token in a file.
fn host_cmd(host: &Env, token: &Path, args: &[&str]) -> Command {
    let mut cmd = host.cmd();
    cmd.env("NFREPO_REST_TOKEN_FILE", token).args(args);
    cmd
}

/// Runs, asserts the exit code and the one error line's prefix; returns stderr.
fn refused(mut cmd: Command, exit: i32, prefix: &str) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(exit), "{}", describe(&out));
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(errors[0].starts_with(prefix), "expected {prefix}:\n{stderr}");
    stderr
}

fn ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(TOKEN));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn backup_hosts_add_through_an_append_only_server_and_delete_nothing() {
    let env = Env::new();
    let token = token_file(env.dir.path(), "token", TOKEN);
    let server = Served::start(&env, &["--token-file", token.to_str().unwrap()]);
    let host = Env::with_repo(&server.url, env.dir.path());

    // init and two snapshots from the backup host, through the server.
    ok(host_cmd(
        &host,
        &token,
        &["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"],
    ));
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("big.bin"), pseudo_random(6 << 20, 7)).unwrap();
    std::fs::write(data.join("sub/small.txt"), b"small file\n").unwrap();
    ok(host_cmd(&host, &token, &["snapshot", data.to_str().unwrap()]));
    std::fs::write(data.join("sub/small.txt"), b"small file, changed\n").unwrap();
    ok(host_cmd(&host, &token, &["snapshot", data.to_str().unwrap()]));
    assert_eq!(env.snapshot_count(), 2, "both snapshots are in the repository itself");

    // Deleting through the server is refused, naming append-only; nothing is lost.
    let stderr = refused(
        host_cmd(&host, &token, &["forget", "--keep-last", "1"]),
        16,
        "error[PERMISSION_DENIED/APPEND_ONLY]: ",
    );
    assert!(
        stderr.contains("the server is append-only: lease/ objects belong to maintenance (gc, forget)"),
        "{stderr}"
    );
    let stderr = refused(
        host_cmd(&host, &token, &["gc"]),
        16,
        "error[PERMISSION_DENIED/APPEND_ONLY]: ",
    );
    assert!(stderr.contains("the server is append-only"), "{stderr}");
    assert_eq!(env.snapshot_count(), 2, "forget through the server removed nothing");

    // The latest snapshot restores byte-identical through the server and directly.
    let through = env.path("restored-through");
    ok(host_cmd(
        &host,
        &token,
        &["restore", "latest", "--target", through.to_str().unwrap(), "--verify"],
    ));
    let direct = env.path("restored-direct");
    env.ok(&["restore", "latest", "--target", direct.to_str().unwrap(), "--verify"]);
    let original = snapshot_of_tree(&data);
    assert!(
        snapshot_of_tree(&through.join("data")) == original,
        "restored through the server"
    );
    assert!(snapshot_of_tree(&direct.join("data")) == original, "restored directly");

    // A wrong token is refused: PERMISSION_DENIED, not an append-only refusal.
    let wrong = token_file(env.dir.path(), "wrong-token", "not-the-token-0123456789");
    let stderr = refused(
        host_cmd(&host, &wrong, &["snapshots"]),
        16,
        "error[PERMISSION_DENIED]: ",
    );
    assert!(stderr.contains("the server refused the bearer token"), "{stderr}");

    // Direct maintenance still works: forget on the repository itself.
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshot_count(), 1);

    let (status, log) = server.stop();
    assert_eq!(status, Some(0), "a clean stop on SIGTERM:\n{log}");
    assert!(log.contains("method=PUT object=/v1/lease/"), "{log}");
    assert!(log.contains("status=403 error=\"append-only\""), "{log}");
    assert!(log.contains("status=401"), "{log}");
    assert!(log.contains("method=PUT object=/v1/data/"), "{log}");
    assert!(!log.contains(TOKEN), "the server's log holds the token:\n{log}");
    assert!(
        !log.contains("not-the-token"),
        "the server's log holds the wrong token:\n{log}"
    );
}

#[test]
fn unsafe_or_incomplete_serve_settings_are_refused() {
    let env = Env::new();
    env.init();
    let token = token_file(env.dir.path(), "token", TOKEN);
    // A token file belongs to --append-only, which needs a token or --no-auth.
    let out = env.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--append-only"),
        "{}",
        describe(&out)
    );
    let out = env.run(&["serve", "--append-only", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token-file"),
        "{}",
        describe(&out)
    );

    let mut cmd = env.cmd();
    cmd.args(["serve", "--append-only", "--listen", "0.0.0.0:0", "--no-auth"]);
    let stderr = refused(cmd, 16, "error[PERMISSION_DENIED/NO_AUTH]: ");
    assert!(stderr.contains("only a loopback address may be served"), "{stderr}");
    let mut cmd = env.cmd();
    cmd.args([
        "serve",
        "--append-only",
        "--listen",
        "0.0.0.0:0",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let stderr = refused(cmd, 16, "error[PERMISSION_DENIED/INSECURE_HTTP]: ");
    assert!(stderr.contains("--allow-insecure-http"), "{stderr}");

    // A token file others can read is refused, without quoting it.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = env.cmd();
    cmd.args([
        "serve",
        "--append-only",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let stderr = refused(cmd, 16, "error[PERMISSION_DENIED/CREDENTIALS]: ");
    assert!(stderr.contains("readable by others (mode 0644)"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
}
