//! Configured sources without a database server: `nfrepo.toml` discovery,
//! the repository from the file, hooks, `--all`, `cron`, include/exclude.

use nfrepo_testing::write_tree;

use crate::harness::{Env, PASSWORD, describe};

fn config_env(body: &str) -> (Env, String) {
    let env = Env::new();
    env.init();
    let path = env.path("nfrepo.toml");
    std::fs::write(&path, body).unwrap();
    (env, path.display().to_string())
}

#[test]
fn the_repository_and_its_password_come_from_the_config_file() {
    let env = Env::new();
    let data = env.path("etc");
    write_tree(
        &data,
        &[("nginx/site.conf", "server {}\n"), ("nginx/site.conf.bak", "old\n")],
    )
    .unwrap();
    std::fs::write(env.path("repo.pass"), format!("{PASSWORD}\n")).unwrap();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
             [sources.etc]\nkind = \"config\"\npaths = [\"{}\"]\nexclude = [\"*.bak\"]\n",
            env.repo,
            env.path("repo.pass").display(),
            data.display()
        ),
    )
    .unwrap();
    // No NFREPO_REPOSITORY, no NFREPO_PASSWORD: only NFREPO_CONFIG.
    let from_config = |args: &[&str]| {
        let out = env
            .cmd()
            .env_remove("NFREPO_REPOSITORY")
            .env_remove("NFREPO_PASSWORD")
            .env("NFREPO_CONFIG", &config)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
    };
    from_config(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    from_config(&["snapshot", "--source", "etc"]);
    let listing = env.ok(&["ls", "-R", "etc@latest"]);
    assert!(listing.contains("site.conf"), "{listing}");
    assert!(!listing.contains(".bak"), "excluded file was backed up:\n{listing}");
    let snapshots = env.json(&["snapshots"]);
    assert_eq!(snapshots[0]["source_kind"], "config");
    assert_eq!(snapshots[0]["profile"], "files");
}

#[test]
fn a_failing_pre_hook_aborts_and_the_post_hook_still_runs() {
    let (env, config) = config_env("");
    let marker = env.path("post-ran");
    let data = env.path("data");
    write_tree(&data, &[("a", "a")]).unwrap();
    std::fs::write(
        env.path("nfrepo.toml"),
        format!(
            "[sources.frozen]\nkind = \"files\"\npaths = [\"{}\"]\npre_hook = \"exit 3\"\npost_hook = \"touch {}\"\n",
            data.display(),
            marker.display()
        ),
    )
    .unwrap();
    let stderr = env.fails(
        &["--config", &config, "snapshot", "--source", "frozen"],
        10,
        "BACKUP_FAILED/PRE_HOOK_FAILED",
    );
    assert!(stderr.contains("status 3"), "{stderr}");
    assert!(marker.exists(), "post_hook did not run after the failed pre_hook");
    assert_eq!(env.snapshot_count(), 0);
}

#[test]
fn a_failing_post_hook_is_reported_after_the_snapshot_is_saved() {
    let (env, config) = config_env("");
    let data = env.path("data");
    write_tree(&data, &[("a", "a")]).unwrap();
    std::fs::write(
        env.path("nfrepo.toml"),
        format!(
            "[sources.thaw]\nkind = \"files\"\npaths = [\"{}\"]\npre_hook = \"true\"\npost_hook = \"false\"\n",
            data.display()
        ),
    )
    .unwrap();
    let stderr = env.fails(
        &["--config", &config, "snapshot", "--source", "thaw"],
        10,
        "POST_HOOK_FAILED",
    );
    assert!(stderr.contains("snapshot was saved"), "{stderr}");
    assert_eq!(env.snapshot_count(), 1);
}

#[test]
fn all_runs_every_source_and_reports_the_failures() {
    let (env, config) = config_env("");
    let data = env.path("data");
    write_tree(&data, &[("a", "a")]).unwrap();
    let logs = env.path("logs");
    write_tree(&logs, &[("audit.log", "entry\n")]).unwrap();
    std::fs::write(
        env.path("nfrepo.toml"),
        format!(
            "[sources.a-broken]\nkind = \"files\"\npaths = [\"{d}\"]\npre_hook = \"exit 1\"\n\n\
             [sources.b-data]\nkind = \"files\"\npaths = [\"{d}\"]\n\n\
             [sources.c-logs]\nkind = \"logs\"\npaths = [\"{l}\"]\ninclude = [\"*.log\"]\n",
            d = data.display(),
            l = logs.display()
        ),
    )
    .unwrap();
    let stderr = env.fails(&["--config", &config, "snapshot", "--all"], 10, "SOURCES_FAILED");
    assert!(stderr.contains("source a-broken failed"), "{stderr}");
    assert!(stderr.contains("1 of 3 sources failed: a-broken"), "{stderr}");
    let sources: Vec<String> = env
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources.len(), 2);
    assert!(sources.contains(&"b-data".to_owned()) && sources.contains(&"c-logs".to_owned()));

    // The same without the broken source succeeds.
    std::fs::write(
        env.path("nfrepo.toml"),
        format!("[sources.b-data]\nkind = \"files\"\npaths = [\"{}\"]\n", data.display()),
    )
    .unwrap();
    env.ok(&["--config", &config, "snapshot", "--all"]);
}

#[test]
fn cron_prints_one_line_per_scheduled_source() {
    let (env, config) = config_env("");
    std::fs::write(
        env.path("nfrepo.toml"),
        "[sources.mysql-main]\nkind = \"mysql\"\nconnection = \"mysql://backup@db:3306\"\nschedule = \"*/5 * * * *\"\n\n\
         [sources.uploads-index]\nkind = \"files\"\npaths = [\"/srv\"]\nschedule = \"@daily\"\n\n\
         [sources.adhoc]\nkind = \"files\"\npaths = [\"/tmp\"]\n",
    )
    .unwrap();
    let out = env.ok(&["--config", &config, "cron", "--binary", "/usr/bin/nfrepo"]);
    assert_eq!(
        out,
        format!(
            "# nfrepo sources from {config}\n\
             */5 * * * * /usr/bin/nfrepo --config {config} snapshot --source mysql-main --quiet\n\
             @daily /usr/bin/nfrepo --config {config} snapshot --source uploads-index --quiet\n"
        )
    );
}

#[test]
fn config_errors_are_one_line_and_never_quote_secrets() {
    let (env, config) = config_env("");
    std::fs::write(
        env.path("nfrepo.toml"),
        "[sources.db]\nkind = \"mysql\"\nconnection = \"mysql://root:TopSecret99@db\"\n",
    )
    .unwrap();
    let stderr = env.fails(
        &["--config", &config, "snapshot", "--source", "db"],
        10,
        "CONFIG_INVALID",
    );
    assert!(!stderr.contains("TopSecret99"), "{stderr}");
    std::fs::write(
        env.path("nfrepo.toml"),
        "[sources.db]\nkind = \"files\"\npassword = \"TopSecret99\"\n",
    )
    .unwrap();
    let stderr = env.fails(&["--config", &config, "cron"], 10, "CONFIG_INVALID");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(!stderr.contains("TopSecret99"), "{stderr}");
    env.fails(
        &["--config", "/nonexistent/nfrepo.toml", "snapshot", "--source", "db"],
        12,
        "CONFIG_NOT_FOUND",
    );
    std::fs::write(env.path("nfrepo.toml"), "").unwrap();
    env.fails(
        &["--config", &config, "snapshot", "--source", "nope"],
        12,
        "UNKNOWN_SOURCE",
    );
}

/// A stand-in `redis-cli` that answers INFO, then streams part of an RDB
/// and dies the way `$1` says.
fn fake_redis_cli(dir: &std::path::Path, ending: &str) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("redis-cli");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n*INFO*) echo redis_version:7.0.0 ;;\n*--version*) echo redis-cli 7.0.0 ;;\n\
             *--rdb*) head -c 3000000 /dev/urandom; {ending} ;;\nesac\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_dump_that_dies_mid_stream_commits_nothing() {
    for ending in ["exit 1", "kill -9 $$"] {
        let (env, config) = config_env("");
        let bin = env.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        fake_redis_cli(&bin, ending);
        std::fs::write(
            env.path("nfrepo.toml"),
            format!(
                "[sources.cache]\nkind = \"redis\"\nconnection = \"redis://127.0.0.1:1\"\nbin_dir = \"{}\"\n",
                bin.display()
            ),
        )
        .unwrap();
        let stderr = env.fails(
            &["--config", &config, "snapshot", "--source", "cache"],
            10,
            "BACKUP_FAILED/SOURCE_COMMAND_FAILED",
        );
        assert!(stderr.contains("dump of dump.rdb failed"), "{ending}: {stderr}");
        assert_eq!(env.snapshot_count(), 0, "{ending}: a failed dump was committed");
    }
}
