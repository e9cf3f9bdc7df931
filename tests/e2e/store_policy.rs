//! Issue 12, items 5 and 6: the host's security policy for stores and
//! repositories. S3 over plain `http://` is refused off loopback unless
//! allowed (then warned about on every run), wherever a URL becomes a
//! store; a required cipher is enforced on every repository opened, and
//! the cipher is shown by `init`, `snapshots --json` and `check`.

use std::process::Command;

use crate::bucket::{Bucket, var, with_s3};
use crate::harness::{Env, describe};

/// The shared SeaweedFS, named by an address that is not loopback: Linux
/// delivers connections to 0.0.0.0 to this machine, so the store works
/// when allowed, while the URL says "some host, over plain http".
fn unspecified_endpoint() -> String {
    var("NFREPO_TEST_S3_ENDPOINT").replace("127.0.0.1", "0.0.0.0")
}

fn insecure_repo(name: &str) -> String {
    format!(
        "s3://{}/e2e/{}?endpoint={}&region=us-east-1",
        var("NFREPO_TEST_S3_BUCKET"),
        crate::servers::unique(name),
        unspecified_endpoint()
    )
}

const WARNING: &str = "is reached over plain http (http://0.0.0.0:";

/// Runs and asserts the one-line `PERMISSION_DENIED/INSECURE_HTTP` refusal (exit 16).
fn refused(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(16), "{what}:\n{}", describe(&out));
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line expected:\n{stderr}");
    assert!(
        errors[0].starts_with("error[PERMISSION_DENIED/INSECURE_HTTP]: ")
            && errors[0].ends_with(&format!(
                "refusing plain http:// endpoint {}: only loopback addresses may use http, use https:// \
                 (to allow it anyway: --allow-insecure-http, or allow_insecure_http = true under [repository])",
                unspecified_endpoint()
            )),
        "{what}: {stderr}"
    );
    assert!(!stderr.contains(WARNING), "{what}: refused, yet warned:\n{stderr}");
    stderr
}

fn succeeds_with_warning(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(WARNING),
        "{}",
        describe(&out)
    );
}

/// A `file://` repository sealed with XChaCha20-Poly1305 holding one
/// snapshot of `data/a.txt`.
fn repo_with_a_snapshot() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.ok(&[
        "init",
        "--cipher",
        "xchacha20poly1305",
        "--kdf-memory-kib",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"a").unwrap();
    env.ok(&["snapshot", data.to_str().unwrap()]);
    (env, data)
}

/// An nfrepo.toml whose `[repository]` names `env`'s repository and holds `setting`.
fn repository_config(env: &Env, setting: &str) -> std::path::PathBuf {
    let config = env.path("nfrepo.toml");
    std::fs::write(&config, format!("[repository]\nurl = \"{}\"\n{setting}\n", env.repo)).unwrap();
    config
}

fn s3_cmd(env: &Env) -> Command {
    let mut cmd = env.cmd();
    with_s3(env, &mut cmd);
    cmd
}

#[test]
fn plain_http_repositories_are_refused_off_loopback_unless_allowed() {
    let mut env = Env::new();
    env.repo = insecure_repo("insecure-repo");
    let mut init = s3_cmd(&env);
    init.args(["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    refused(init, "init");

    // Allowed by the flag: it works, and warns on every run.
    for args in [
        vec![
            "--allow-insecure-http",
            "init",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
        ],
        vec!["--allow-insecure-http", "snapshots"],
        vec!["--allow-insecure-http", "--quiet", "snapshots"],
    ] {
        let out = s3_cmd(&env).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.starts_with("warning: ") && l.contains(WARNING))
                .count(),
            1,
            "{args:?}: one warning expected:\n{stderr}"
        );
    }
    // Without it, the existing repository is refused as well.
    let mut list = s3_cmd(&env);
    list.arg("snapshots");
    refused(list, "snapshots");

    // Allowed by the configuration file: also warned about.
    let config = repository_config(&env, "allow_insecure_http = true");
    let mut list = s3_cmd(&env);
    list.env_remove("NFREPO_REPOSITORY")
        .arg("--config")
        .arg(&config)
        .arg("snapshots");
    succeeds_with_warning(list);

    // Loopback over http needs nothing and warns of nothing.
    let local = Env::s3("loopback-http");
    let out = local.run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        describe(&out)
    );
}

#[test]
fn plain_http_replicas_bucket_sources_and_bucket_restores_are_refused() {
    let (env, _) = repo_with_a_snapshot();
    let replica = insecure_repo("insecure-replica");

    // `replicate --to URL`.
    let mut to = s3_cmd(&env);
    to.args(["replicate", "--to", &replica]);
    refused(to, "replicate --to URL");

    // `[replication.NAME]`, by name and as every configured target.
    let bucket = Bucket::new();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[replication.dr]\nurl = \"{replica}\"\n\n\
             [sources.uploads]\nkind = \"bucket\"\nconnection = \"{}\"\n",
            bucket.url("src").replace("127.0.0.1", "0.0.0.0")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for args in [
        vec!["--config", config, "replicate", "--to", "dr"],
        vec!["--config", config, "replicate"],
        vec!["--config", config, "snapshot", "--source", "uploads"],
    ] {
        let mut cmd = s3_cmd(&env);
        cmd.args(&args);
        refused(cmd, &format!("{args:?}"));
    }

    // `restore --into s3://…` (refused before the snapshot is even looked up).
    let into = bucket.url("dst").replace("127.0.0.1", "0.0.0.0");
    let mut restore = s3_cmd(&env);
    restore.args(["restore", "latest", "--into", &into]);
    refused(restore, "restore --into s3://");
    assert!(bucket.objects("dst").is_empty());

    // Allowed, the replica is written (and warned about).
    let mut replicate = s3_cmd(&env);
    replicate.args(["--allow-insecure-http", "replicate", "--to", &replica]);
    succeeds_with_warning(replicate);
}

/// Runs and asserts the one-line `PERMISSION_DENIED/CIPHER_NOT_ALLOWED` refusal (exit 16).
fn cipher_refused(env: &Env, args: &[&str]) -> String {
    let stderr = env.fails(args, 16, "error[PERMISSION_DENIED/CIPHER_NOT_ALLOWED]: ");
    assert!(
        stderr.starts_with("error[PERMISSION_DENIED/CIPHER_NOT_ALLOWED]: "),
        "{stderr}"
    );
    stderr
}

#[test]
fn a_required_cipher_is_enforced_on_every_repository_opened() {
    let (env, data) = repo_with_a_snapshot();
    let expected = format!(
        "error[PERMISSION_DENIED/CIPHER_NOT_ALLOWED]: the repository at {} uses cipher xchacha20poly1305, \
         but aes256gcm is required; refusing to open it\n",
        env.repo
    );
    for args in [
        vec!["--require-cipher", "aes256gcm", "snapshots"],
        vec!["--require-cipher", "aes256gcm", "snapshot", data.to_str().unwrap()],
        vec!["--require-cipher", "aes256gcm", "check"],
        vec!["--require-cipher", "aes256gcm", "ls", "latest"],
        vec![
            "--require-cipher",
            "aes256gcm",
            "restore",
            "latest",
            "--target",
            "/nonexistent/x",
        ],
    ] {
        assert_eq!(cipher_refused(&env, &args), expected, "{args:?}");
    }
    assert_eq!(env.snapshot_count(), 1, "the refused snapshot wrote nothing");
    env.ok(&["--require-cipher", "xchacha20poly1305", "snapshots"]);

    // The same policy from the configuration file, even with --repo given.
    let config = repository_config(&env, "require_cipher = \"aes256gcm\"");
    let config = config.to_str().unwrap();
    assert_eq!(cipher_refused(&env, &["--config", config, "snapshots"]), expected);
    assert_eq!(cipher_refused(&env, &["--config", config, "--json", "check"]), expected);
}

/// `init` with `global` flags and cheap argon2 parameters; the cipher it reports.
fn cheap_init(env: &Env, global: &[&str]) -> String {
    let mut args = global.to_vec();
    args.extend(["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    let init = env.json(&args);
    init["cipher"].as_str().unwrap().to_owned()
}

#[test]
fn init_without_a_cipher_takes_aes_256_gcm_where_the_cpu_has_hardware_aes() {
    let env = Env::new();
    let chosen = cheap_init(&env, &[]);
    assert_eq!(chosen, nfrepo_format::Cipher::preferred().name());
    #[cfg(target_arch = "x86_64")]
    {
        let hardware = std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq");
        assert_eq!(chosen, if hardware { "aes256gcm" } else { "xchacha20poly1305" });
    }
    let check = env.json(&["check"]);
    assert_eq!(check["cipher"], chosen.as_str(), "{check}");
}

#[test]
fn init_follows_the_configured_cipher_and_the_policy() {
    // `[repository] cipher` chooses what `init` seals with.
    let env = Env::new();
    let config = repository_config(&env, "cipher = \"aes256gcm\"");
    let config = config.to_str().unwrap();
    assert_eq!(cheap_init(&env, &["--config", config]), "aes256gcm");
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"a").unwrap();
    env.ok(&["--require-cipher", "aes256gcm", "snapshot", data.to_str().unwrap()]);

    // Shown per repository in `snapshots --json` (on every entry: the output stays an array) and by `check`.
    let list = env.json(&["snapshots"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["cipher"], "aes256gcm", "{list:?}");
    assert!(
        list[0]["id"].is_string() && list[0]["summary"].is_object(),
        "older fields stay"
    );
    let check = env.json(&["check"]);
    assert_eq!(check["cipher"], "aes256gcm", "{check}");
    assert_eq!(check["ok"], true, "{check}");
    let human = env.ok(&["check"]);
    let first = human.lines().next().unwrap();
    assert!(
        first.starts_with("repository ") && first.ends_with(" sealed with aes256gcm"),
        "{human}"
    );

    // The policy alone makes `init` use the required cipher…
    let required = Env::new();
    assert_eq!(cheap_init(&required, &["--require-cipher", "aes256gcm"]), "aes256gcm");

    // …and refuses to create a repository with another, writing nothing.
    let other = Env::new();
    let stderr = other.fails(
        &[
            "--require-cipher",
            "aes256gcm",
            "init",
            "--cipher",
            "xchacha20poly1305",
            "--kdf-memory-kib",
            "64",
        ],
        16,
        "CIPHER_NOT_ALLOWED",
    );
    assert_eq!(
        stderr,
        "error[PERMISSION_DENIED/CIPHER_NOT_ALLOWED]: cipher xchacha20poly1305 is not allowed: \
         aes256gcm is required; refusing to create the repository\n"
    );
    assert!(!other.repo_dir().exists(), "a refused init wrote nothing");
}
