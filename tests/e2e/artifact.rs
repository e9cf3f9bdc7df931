//! Deployment artifacts (`kind = "artifact"`): `mark-good`, `rollback --to
//! last-good`, health checks with automatic fallback, `deploy-check`; and
//! analytics exports (`kind = "analytics"`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Env, snapshot_of_tree};

fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot_of_tree(dir)
        .into_iter()
        .map(|(path, entry)| (path, entry.content))
        .collect()
}

/// A release directory and a config naming it as an artifact source, with
/// `extra` lines made from the release path.
fn setup(extra: impl Fn(&Path) -> String) -> (Env, String, PathBuf) {
    let env = Env::new();
    env.init();
    let release = env.path("srv/web/current");
    std::fs::create_dir_all(&release).unwrap();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.web]\nkind = \"artifact\"\npaths = [\"{}\"]\n{}",
            release.display(),
            extra(&release)
        ),
    )
    .unwrap();
    (env, config.display().to_string(), release)
}

/// Deploys release `n` (healthy or not) and snapshots it; returns its id.
fn deploy(env: &Env, config: &str, release: &Path, n: u32, healthy: bool) -> String {
    for entry in std::fs::read_dir(release).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    std::fs::create_dir_all(release.join("static")).unwrap();
    std::fs::write(release.join("app.bin"), format!("build {n}\n").repeat(1000)).unwrap();
    std::fs::write(release.join(format!("static/v{n}.js")), format!("js {n}\n")).unwrap();
    if healthy {
        std::fs::write(release.join("healthy"), "ok\n").unwrap();
    }
    let out = env.json(&["--config", config, "snapshot", "--source", "web"]);
    out["snapshot_id"].as_str().unwrap().to_owned()
}

#[test]
fn rollback_to_last_good_puts_back_the_newest_good_release() {
    let (env, config, release) = setup(|_| String::new());
    let v1 = deploy(&env, &config, &release, 1, true);
    env.ok(&["mark-good", &v1[..12], "--note", "smoke tests"]);
    let v2 = deploy(&env, &config, &release, 2, true);
    let marked = env.json(&["mark-good", &v2[..12]]);
    assert_eq!(marked["source"], "web");
    let good = contents(&release);
    deploy(&env, &config, &release, 3, false);
    // The artifact source's default retention class is recorded.
    let snapshots = env.json(&["snapshots", "--source", "web"]);
    assert_eq!(snapshots[2]["source_kind"], "artifact");
    assert!(
        snapshots[2]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "retention=files"),
        "{snapshots}"
    );

    let out = env.ok(&["--config", &config, "rollback", "web", "--to", "last-good"]);
    assert!(out.contains(&format!("to {}", &v2[..8])), "{out}");
    assert_eq!(contents(&release), good);

    // forget keeps the newest good snapshot whatever the policy says.
    env.ok(&["forget", "--keep-last", "1", "--source", "web"]);
    let left: Vec<String> = env
        .json(&["snapshots", "--source", "web"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&v2) && !left.contains(&v1), "{left:?}");

    // Withdrawn, there is no good snapshot left to go back to.
    env.ok(&["mark-good", "--remove", &v2[..12]]);
    env.fails(
        &["--config", &config, "rollback", "web", "--to", "last-good", "--force"],
        12,
        "NO_GOOD_SNAPSHOT",
    );
}

#[test]
fn a_failing_health_check_rolls_back_to_the_previous_good_release() {
    let (env, config, release) =
        setup(|release| format!("health_check = \"test -f '{}/healthy'\"\n", release.display()));
    let v1 = deploy(&env, &config, &release, 1, true);
    env.ok(&["mark-good", &v1[..12]]);
    let good = contents(&release);
    let v2 = deploy(&env, &config, &release, 2, false);
    deploy(&env, &config, &release, 3, true);

    // Back to v2, which fails its health check: the fallback is v1.
    let stderr = env.fails(
        &["--config", &config, "rollback", "web", "--to", &v2[..12]],
        15,
        "HEALTH_CHECK_FAILED",
    );
    assert!(stderr.contains(&v1[..8]), "{stderr}");
    assert_eq!(contents(&release), good);

    // deploy-check on the live files (v1, healthy) passes and marks nothing
    // new; a broken deploy without a snapshot falls back to v1 as well.
    env.ok(&["--config", &config, "deploy-check", "web"]);
    std::fs::remove_file(release.join("healthy")).unwrap();
    std::fs::write(release.join("app.bin"), "broken build\n").unwrap();
    env.fails(&["--config", &config, "deploy-check", "web"], 15, "HEALTH_CHECK_FAILED");
    assert_eq!(contents(&release), good);
}

#[test]
fn a_health_check_past_its_timeout_fails_and_with_no_good_release_says_so() {
    let (env, config, release) = setup(|_| "health_check = \"sleep 30\"\nhealth_timeout = 1\n".into());
    deploy(&env, &config, &release, 1, true);
    let v2 = deploy(&env, &config, &release, 2, true);
    let before = contents(&release);
    let started = Instant::now();
    let stderr = env.fails(&["--config", &config, "deploy-check", "web"], 15, "NO_GOOD_SNAPSHOT");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the check was not killed at its timeout"
    );
    assert!(stderr.contains("within 1 s"), "{stderr}");
    assert_eq!(contents(&release), before, "files changed with nothing to fall back to");
    // --mark-good marks the latest snapshot only when the check passes.
    std::fs::write(
        &config,
        format!(
            "[sources.web]\nkind = \"artifact\"\npaths = [\"{}\"]\nhealth_check = \"true\"\n",
            release.display()
        ),
    )
    .unwrap();
    let out = env.ok(&["--config", &config, "deploy-check", "web", "--mark-good"]);
    assert!(
        out.contains(&format!("snapshot {} of web is marked good", &v2[..8])),
        "{out}"
    );
}

#[test]
fn an_analytics_export_is_stored_under_the_analytics_class() {
    let env = Env::new();
    env.init();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        "[sources.metrics]\nkind = \"analytics\"\n\
         command = [\"sh\", \"-c\", \"printf 'day,hits\\\\n2026-12-01,42\\\\n'\"]\n\
         output = \"metrics.csv\"\n\n\
         [sources.broken]\nkind = \"analytics\"\ncommand = [\"sh\", \"-c\", \"echo partial; exit 3\"]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let out = env.json(&["--config", &config, "snapshot", "--source", "metrics"]);
    let id = out["snapshot_id"].as_str().unwrap().to_owned();
    let snapshots = env.json(&["snapshots", "--source", "metrics"]);
    assert_eq!(snapshots[0]["source_kind"], "analytics");
    assert!(
        snapshots[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "retention=analytics"),
        "{snapshots}"
    );
    let csv = env.ok(&["cat", &format!("{}:metrics.csv", &id[..12])]);
    assert_eq!(csv, "day,hits\n2026-12-01,42\n");
    // A failed export commits nothing.
    env.fails(
        &["--config", &config, "snapshot", "--source", "broken"],
        10,
        "BACKUP_FAILED",
    );
    assert_eq!(env.snapshot_count(), 1);
    // Rollback is for file trees, not exports.
    env.fails(&["--config", &config, "rollback", "metrics"], 15, "WRONG_SOURCE_KIND");
}
