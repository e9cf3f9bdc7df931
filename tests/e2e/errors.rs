//! Every failure is one line with a stable code and a distinct exit code.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{BIN, Env};

#[test]
fn wrong_password_is_permission_denied() {
    let env = Env::new();
    env.init();
    let out = env
        .cmd()
        .env("NFREPO_PASSWORD", "not it")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PERMISSION_DENIED/WRONG_PASSWORD"), "{stderr}");
    let out = env
        .cmd()
        .env("NFREPO_PASSWORD", "not it")
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["code"], "PERMISSION_DENIED");
    assert_eq!(json["error"]["detail"], "WRONG_PASSWORD");
    assert_eq!(json["error"]["exit_code"], 16);
}

#[test]
fn missing_and_foreign_repositories() {
    let env = Env::new();
    env.fails(&["snapshots"], 12, "REPOSITORY_NOT_FOUND");
    let foreign = env.path("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("config"), b"[core]\nrepositoryformatversion = 0\n").unwrap();
    env.fails(
        &["--repo", foreign.to_str().unwrap(), "snapshots"],
        12,
        "NOT_A_REPOSITORY",
    );
    env.fails(
        &["--repo", "ftp://example/x", "snapshots"],
        12,
        "INVALID_REPOSITORY_URL",
    );
    let out = std::process::Command::new(BIN)
        .env_remove("NFREPO_REPOSITORY")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::new();
    env.init();
    env.fails(
        &["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"],
        10,
        "REPOSITORY_EXISTS",
    );
}

#[test]
fn unreachable_backend_fails_fast() {
    let env = Env::new();
    let started = std::time::Instant::now();
    let out = env
        .cmd()
        .env("NFREPO_S3_ACCESS_KEY_ID", "x")
        .env("NFREPO_S3_SECRET_ACCESS_KEY", "y")
        .args([
            "--repo",
            "s3://bucket/prefix?endpoint=http://127.0.0.1:1&region=us-east-1",
            "snapshots",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(stderr.contains("STORAGE_UNREACHABLE"), "{stderr}");
    assert!(started.elapsed().as_secs() < 60, "retries must be bounded");
}

#[test]
fn missing_or_half_set_s3_credentials_are_permission_denied_before_any_request() {
    let env = Env::new();
    let repo = "s3://bucket/prefix?endpoint=http://127.0.0.1:1&region=us-east-1";
    for (vars, names) in [
        (&[][..], "NFREPO_S3_ACCESS_KEY_ID"),
        (
            &[("NFREPO_S3_ACCESS_KEY_ID", "x")][..],
            "NFREPO_S3_SECRET_ACCESS_KEY is not",
        ),
        (&[("AWS_SECRET_ACCESS_KEY", "y")][..], "AWS_ACCESS_KEY_ID is not"),
    ] {
        for command in [
            &["snapshots"][..],
            &["restore", "latest", "--target", "/nonexistent/t"][..],
        ] {
            let mut cmd = env.cmd();
            cmd.envs(vars.iter().copied()).arg("--repo").arg(repo).args(command);
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(16), "{vars:?} {command:?}: {stderr}");
            assert!(
                stderr.starts_with("error[PERMISSION_DENIED/CREDENTIALS]: ") && stderr.contains(names),
                "{vars:?} {command:?}: {stderr}"
            );
            assert!(!stderr.contains("STORAGE_UNREACHABLE"), "a request was made: {stderr}");
        }
    }
}

/// A replica's `credentials_file` that is missing or not two lines is
/// `PERMISSION_DENIED/CREDENTIALS`, naming the file and never its lines.
#[test]
fn a_bad_replica_credentials_file_is_permission_denied_and_never_echoed() {
    let env = Env::new();
    let credentials = env.path("dr.s3");
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"s3://bucket/main?endpoint=http://127.0.0.1:1&region=us-east-1\"\nreplica = \"dr\"\n\n\
             [replication.dr]\nurl = \"s3://bucket/dr?endpoint=http://127.0.0.1:1&region=us-east-1\"\n\
             credentials_file = \"{}\"\n",
            credentials.display()
        ),
    )
    .unwrap();
    for (contents, says) in [
        (None, "cannot read credentials file"),
        (Some("only-the-key-id-line\n"), "must hold two lines"),
        (
            Some("key-id\nsecret-line-one\nsecret-line-two\n"),
            "must hold two lines",
        ),
    ] {
        match contents {
            Some(text) => std::fs::write(&credentials, text).unwrap(),
            None => drop(std::fs::remove_file(&credentials)),
        }
        let out = env
            .cmd()
            .env_remove("NFREPO_REPOSITORY")
            .env("NFREPO_CONFIG", &config)
            .args(["--from-replica", "snapshots"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(16), "{contents:?}: {stderr}");
        assert!(
            stderr.starts_with("error[PERMISSION_DENIED/CREDENTIALS]: ")
                && stderr.contains(says)
                && stderr.contains(&credentials.display().to_string()),
            "{contents:?}: {stderr}"
        );
        assert!(!stderr.contains("secret-line"), "a line of the file is shown: {stderr}");
        assert!(!stderr.contains("STORAGE_UNREACHABLE"), "a request was made: {stderr}");
    }
}

#[test]
fn unreadable_file_is_skipped_and_reported_as_partial() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    std::fs::write(src.join("locked.txt"), b"secret").unwrap();
    std::fs::set_permissions(src.join("locked.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads everything: the run is nobody's, who may read ok.txt only.
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = env.unprivileged_cmd(&[&src.join("ok.txt")]);
    let out = cmd.args(["snapshot", src.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "partial exit code expected: {stderr}");
    assert!(stderr.contains("locked.txt"), "{stderr}");
    let listed = env.json(&["snapshots"]);
    assert_eq!(listed[0]["partial"], true);
    assert_eq!(env.ok(&["cat", "latest:data/ok.txt"]), "fine");
    env.fails(&["cat", "latest:data/locked.txt"], 12, "BACKUP_NOT_FOUND");
}

#[test]
fn corrupted_blob_is_named_and_never_restored() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payload.bin"), crate::harness::pseudo_random(300_000, 9)).unwrap();
    env.ok(&["snapshot", src.to_str().unwrap()]);
    // Flip one byte inside the (only) data pack's first blob.
    let data_dir = env.repo_dir().join("data");
    let pack = std::fs::read_dir(&data_dir)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 0x01;
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&pack, &bytes).unwrap();

    let stderr = env.fails(&["cat", "latest:data/payload.bin"], 11, "BACKUP_CORRUPTED");
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(pack_name), "the damaged pack is named: {stderr}");
    let out = env.path("out");
    env.fails(
        &["restore", "latest", "--target", out.to_str().unwrap()],
        11,
        "BACKUP_CORRUPTED",
    );
    assert!(
        !out.join("data/payload.bin").exists(),
        "no damaged file under its real name"
    );
}

// Issue 10: a storage refusal printed one line of about 1,000 characters (the
// storage library's request context with HTTP headers).
#[test]
fn a_storage_refusal_is_one_short_line_and_the_detail_is_behind_v() {
    let env = Env::s3("refusal");
    env.init();
    let run = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.push("snapshots");
        env.cmd()
            .env("NFREPO_S3_SECRET_ACCESS_KEY", "not-the-secret")
            .args(&args)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = lines[0];
    assert!(
        line.starts_with("error[PERMISSION_DENIED]: storage refused access: config: "),
        "{line}"
    );
    assert!(line.contains("SignatureDoesNotMatch"), "{line}");
    assert!(line.len() < 300, "{} characters: {line}", line.len());
    for noise in ["headers", "uri:", "x-amz-request-id", "context"] {
        assert!(!line.contains(noise), "{noise} in {line}");
    }
    // The storage library's context is there for whoever asks with -v.
    let verbose = String::from_utf8_lossy(&run(&["-v"]).stderr).into_owned();
    assert!(verbose.contains("403"), "{verbose}");
}
