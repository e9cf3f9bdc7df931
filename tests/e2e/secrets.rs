//! Issue 9, bug 4: nfrepo's secrets never reach a child process, a log line
//! or a recorded command line.

use crate::harness::{Env, PASSWORD};

const S3_SECRET: &str = "s3-secret-never-shown-4f1c";
const AWS_SECRET: &str = "aws-secret-never-shown-9d2e";
const DB_PASSWORD: &str = "db-password-never-shown-77ab";
const TOOL_PASSWORD: &str = "mysql-pwd-never-shown-31c0";

/// A command with every kind of secret nfrepo may hold in its environment.
fn with_secrets(env: &Env, config: Option<&std::path::Path>) -> std::process::Command {
    let mut cmd = env.cmd();
    cmd.env("NFREPO_S3_SECRET_ACCESS_KEY", S3_SECRET)
        .env("NFREPO_S3_ACCESS_KEY_ID", "access-id")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("MYSQL_BACKUP_PW", DB_PASSWORD)
        .env("MYSQL_PWD", TOOL_PASSWORD)
        .env("NFREPO_E2E_HARMLESS", "visible");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd
}

fn assert_no_secret(what: &str, text: &str) {
    assert_none_of(
        what,
        text,
        &[PASSWORD, S3_SECRET, AWS_SECRET, DB_PASSWORD, TOOL_PASSWORD],
    );
}

fn assert_none_of(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} holds the secret {secret:?}:\n{text}");
    }
}

#[test]
fn a_backed_up_command_sees_no_secret() {
    let env = Env::new();
    env.init();
    let out = with_secrets(&env, None)
        .args(["snapshot", "--command", "--name", "env.txt", "--", "env"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::harness::describe(&out));
    let stored = env.ok(&["cat", "latest:env.txt"]);
    // MYSQL_BACKUP_PW is no secret of nfrepo's here: no configuration names it.
    assert_none_of(
        "the stored `env` output",
        &stored,
        &[PASSWORD, S3_SECRET, AWS_SECRET, TOOL_PASSWORD],
    );
    // Only nfrepo's secrets are removed, not the operator's environment.
    assert!(stored.contains("NFREPO_E2E_HARMLESS=visible"), "{stored}");
}

#[test]
fn hooks_see_no_secret_and_no_configured_password_variable() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"a").unwrap();
    let (pre, post) = (env.path("pre.env"), env.path("post.env"));
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.files]\nkind = \"files\"\npaths = [\"{}\"]\npre_hook = \"env > {}\"\npost_hook = \"env > {}\"\n\n\
             [sources.db]\nkind = \"mysql\"\nconnection = \"mysql://backup@127.0.0.1:1\"\npassword_env = \"MYSQL_BACKUP_PW\"\n",
            data.display(),
            pre.display(),
            post.display()
        ),
    )
    .unwrap();
    let out = with_secrets(&env, Some(&config))
        .args(["snapshot", "--source", "files"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::harness::describe(&out));
    for file in [&pre, &post] {
        let seen = std::fs::read_to_string(file).unwrap();
        assert_no_secret("a hook's environment", &seen);
        assert!(seen.contains("NFREPO_SOURCE=files"), "{seen}");
    }
}

#[test]
fn verbose_logs_never_show_a_secret() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"a").unwrap();
    let data = data.to_str().unwrap();
    for args in [vec!["-vv", "snapshot", data], vec!["-vv", "snapshots"]] {
        let out = with_secrets(&env, None).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", crate::harness::describe(&out));
        assert_no_secret("stderr", &String::from_utf8_lossy(&out.stderr));
    }
    // At trace level for every crate, the redacting log writer is what stops them.
    let out = with_secrets(&env, None)
        .env("NFREPO_LOG", "trace")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::harness::describe(&out));
    assert_no_secret("stderr", &String::from_utf8_lossy(&out.stderr));
}

/// On S3 the secret access key is really used (and a dependency's Debug
/// output holds it at debug level).
#[test]
fn s3_logs_never_show_the_secret_key() {
    let env = Env::s3("secrets-log");
    env.init();
    let secret = std::env::var("NFREPO_TEST_S3_SECRET_KEY").unwrap();
    for (log, args) in [(None, vec!["-vv", "snapshots"]), (Some("trace"), vec!["snapshots"])] {
        let mut cmd = env.cmd();
        if let Some(level) = log {
            cmd.env("NFREPO_LOG", level);
        }
        let out = cmd.args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", crate::harness::describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(&secret), "{args:?} logged the S3 secret:\n{stderr}");
        assert!(!stderr.contains(PASSWORD), "{args:?} logged the password");
    }
}

#[test]
fn recorded_command_lines_hide_passwords() {
    let env = Env::new();
    env.init();
    env.ok(&[
        "snapshot",
        "--command",
        "--name",
        "out",
        "--",
        "sh",
        "-c",
        "echo hi # redis-cli -a hunter2",
        "x",
        "--password=hunter2",
        "host=db password=hunter2",
    ]);
    let json = env.json(&["snapshots"]);
    let argv = json[0]["command"]["argv"].to_string();
    assert!(!argv.contains("hunter2"), "{argv}");
    assert!(argv.contains("--password=***"), "{argv}");
}
