//! `nfrepo rollback` of a config source: back to the previous snapshot or a
//! named one, refusing to overwrite live edits, and leaving the files as
//! they were when it fails.

use std::path::Path;

use crate::harness::{Env, snapshot_of_tree};

fn setup() -> (Env, String, std::path::PathBuf) {
    let env = Env::new();
    env.init();
    let app = env.path("etc/app");
    std::fs::create_dir_all(app.join("conf.d")).unwrap();
    std::fs::write(app.join("main.conf"), "version = 1\n").unwrap();
    std::fs::write(app.join("conf.d/a.conf"), "a\n").unwrap();
    std::fs::write(app.join("local.bak"), "not backed up\n").unwrap();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.app]\nkind = \"config\"\npaths = [\"{}\"]\nexclude = [\"*.bak\"]\n",
            app.display()
        ),
    )
    .unwrap();
    (env, config.display().to_string(), app)
}

fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot_of_tree(dir)
        .into_iter()
        .map(|(path, entry)| (path, entry.content))
        .collect()
}

#[test]
fn rollback_restores_the_previous_version_and_reports_the_diff() {
    let (env, config, app) = setup();
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    let good = contents(&app);
    // A bad deploy: an edited file, a removed one, a new directory.
    std::fs::write(app.join("main.conf"), "version = 2 (broken)\n").unwrap();
    std::fs::remove_file(app.join("conf.d/a.conf")).unwrap();
    std::fs::create_dir(app.join("extra")).unwrap();
    std::fs::write(app.join("extra/x.conf"), "x\n").unwrap();
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    let bad = contents(&app);

    let out = env.ok(&["rollback", "app"]);
    assert!(out.contains("M app/main.conf"), "{out}");
    assert!(out.contains("+ app/conf.d/a.conf"), "{out}");
    assert!(out.contains("- app/extra/x.conf"), "{out}");
    assert_eq!(contents(&app), good);
    assert_eq!(
        std::fs::read_to_string(app.join("local.bak")).unwrap(),
        "not backed up\n",
        "a file outside the snapshots was touched"
    );

    // Live files now differ from the latest snapshot (the bad one): refused.
    let stderr = env.fails(&["rollback", "app"], 14, "RESTORE_CONFLICT");
    assert!(stderr.contains("main.conf"), "{stderr}");
    assert_eq!(contents(&app), good);

    // Snapshot the good state, then go forward again to a named snapshot.
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    let snapshots = env.json(&["snapshots", "--source", "app"]);
    let bad_id = snapshots[1]["id"].as_str().unwrap().to_owned();
    env.ok(&["rollback", "app", "--to", &bad_id[..12]]);
    assert_eq!(contents(&app), bad);

    // A live edit since then is overwritten only with --force.
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    std::fs::write(app.join("main.conf"), "hand edit\n").unwrap();
    env.fails(&["rollback", "app"], 14, "RESTORE_CONFLICT");
    assert_eq!(std::fs::read_to_string(app.join("main.conf")).unwrap(), "hand edit\n");
    env.ok(&["rollback", "app", "--force"]);
    assert_eq!(contents(&app), good);
}

#[test]
fn a_failed_rollback_leaves_the_files_as_they_were() {
    let (env, config, app) = setup();
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    std::fs::write(app.join("main.conf"), "version = 2\n".repeat(1000)).unwrap();
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    let before = contents(&app);
    // Damage every data pack: the old version cannot be read back.
    let data = env.repo_dir().join("data");
    let mut damaged = 0;
    for dir in std::fs::read_dir(&data).unwrap() {
        for pack in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = pack.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            for b in bytes.iter_mut().skip(40).step_by(7) {
                *b ^= 0x55;
            }
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let stderr = env.fails(&["rollback", "app"], 15, "ROLLBACK_FAILED");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    assert_eq!(contents(&app), before);
    let leftovers: Vec<_> = std::fs::read_dir(env.path("etc"))
        .unwrap()
        .chain(std::fs::read_dir(&app).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("nfrepo-rollback"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn rollback_refuses_database_sources_and_missing_history() {
    let (env, config, _) = setup();
    env.fails(&["rollback", "app"], 12, "BACKUP_NOT_FOUND");
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    env.fails(&["rollback", "app"], 12, "BACKUP_NOT_FOUND");
    let mut cmd = env.cmd();
    cmd.args(["snapshot", "--stdin", "--name", "db.sql", "--source", "db"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    env.fails(&["rollback", "db"], 15, "ROLLBACK_FAILED");
}

/// Issue 9, bug 9: `rollback --force` deleted files it never backed up (an
/// excluded `conf/notes.bak`, and `other/data.txt` of a snapshot taken with
/// `snapshot --source cfg other/`).
#[test]
fn issue9_bug9_rollback_never_touches_files_outside_the_source() {
    let env = Env::new();
    env.init();
    let conf = env.path("conf");
    let other = env.path("other");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(conf.join("app.conf"), "v1\n").unwrap();
    std::fs::write(conf.join("notes.bak"), "my notes, never backed up\n").unwrap();
    std::fs::write(other.join("data.txt"), "not part of cfg\n").unwrap();
    let config = env.path("nfrepo.toml");
    let write_config = |paths: &[&std::path::Path]| {
        let list: Vec<String> = paths.iter().map(|p| format!("\"{}\"", p.display())).collect();
        std::fs::write(
            &config,
            format!(
                "[sources.cfg]\nkind = \"config\"\npaths = [{}]\nexclude = [\"*.bak\"]\n",
                list.join(", ")
            ),
        )
        .unwrap();
    };
    write_config(&[&conf]);
    let config = config.display().to_string();
    env.ok(&["--config", &config, "snapshot", "--source", "cfg"]);

    // Paths on the command line under a configured source name: refused.
    let other_arg = other.display().to_string();
    let stderr = env.fails(
        &["--config", &config, "snapshot", "--source", "cfg", &other_arg],
        2,
        "USAGE",
    );
    assert!(stderr.contains("paths given on the command line differ"), "{stderr}");
    assert_eq!(env.snapshot_count(), 1, "the refused snapshot was committed");

    std::fs::write(conf.join("app.conf"), "v2\n").unwrap();
    std::fs::write(conf.join("added.conf"), "new\n").unwrap();
    env.ok(&["--config", &config, "snapshot", "--source", "cfg"]);
    std::fs::write(conf.join("app.conf"), "hand edit\n").unwrap();
    let out = env.ok(&["--config", &config, "rollback", "cfg", "--force"]);
    assert!(out.contains("M conf/app.conf"), "{out}");
    assert!(out.contains("- conf/added.conf"), "{out}");
    assert_eq!(std::fs::read_to_string(conf.join("app.conf")).unwrap(), "v1\n");
    assert!(!conf.join("added.conf").exists());
    assert_eq!(
        std::fs::read_to_string(conf.join("notes.bak")).unwrap(),
        "my notes, never backed up\n"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("data.txt")).unwrap(),
        "not part of cfg\n"
    );

    // Snapshots that hold a path the source no longer names (the
    // configuration changed): that path is left alone too.
    write_config(&[&conf, &other]);
    env.ok(&["--config", &config, "snapshot", "--source", "cfg"]);
    std::fs::write(other.join("data.txt"), "changed\n").unwrap();
    std::fs::write(conf.join("app.conf"), "v3\n").unwrap();
    env.ok(&["--config", &config, "snapshot", "--source", "cfg"]);
    write_config(&[&conf]);
    std::fs::write(other.join("late.txt"), "never backed up\n").unwrap();
    let out = env.ok(&["--config", &config, "rollback", "cfg", "--force"]);
    assert!(out.contains("M conf/app.conf"), "{out}");
    assert!(!out.contains("other"), "{out}");
    assert_eq!(std::fs::read_to_string(conf.join("app.conf")).unwrap(), "v1\n");
    assert_eq!(std::fs::read_to_string(other.join("data.txt")).unwrap(), "changed\n");
    assert!(other.join("late.txt").exists());
    assert!(conf.join("notes.bak").exists());
}

/// Issue 9, bug 10: a forced rollback applied only the diff between the
/// latest and the target snapshot and reported drifted files it left alone.
#[test]
fn issue9_bug10_forced_rollback_makes_every_file_equal_the_target() {
    let (env, config, app) = setup();
    std::fs::write(app.join("conf.d/b.conf"), "b\n").unwrap();
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    let good = contents(&app);
    std::fs::write(app.join("main.conf"), "version = 2\n").unwrap();
    env.ok(&["--config", &config, "snapshot", "--source", "app"]);
    // Drift since the latest snapshot, in files the two snapshots share.
    std::fs::write(app.join("conf.d/a.conf"), "edited by hand\n").unwrap();
    std::fs::remove_file(app.join("conf.d/b.conf")).unwrap();
    std::fs::write(app.join("conf.d/new.conf"), "never backed up\n").unwrap();

    let stderr = env.fails(&["--config", &config, "rollback", "app"], 14, "RESTORE_CONFLICT");
    assert!(stderr.contains("a.conf") && stderr.contains("new.conf"), "{stderr}");
    let out = env.ok(&["--config", &config, "--json", "rollback", "app", "--force"]);
    assert_eq!(
        contents(&app),
        good,
        "a file differs from the target after the rollback"
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut changes: Vec<String> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["change"].as_str().unwrap(), c["path"].as_str().unwrap()))
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            "+ app/conf.d/b.conf",
            "- app/conf.d/new.conf",
            "M app/conf.d/a.conf",
            "M app/main.conf"
        ],
        "exactly what was changed"
    );
    assert_eq!(report["overridden_drift"].as_array().unwrap().len(), 3, "{report}");
    // Nothing left to do: the live files are the target now.
    let snapshots = env.json(&["snapshots", "--source", "app"]);
    let first = snapshots[0]["id"].as_str().unwrap().to_owned();
    let out = env.ok(&["--config", &config, "rollback", "app", "--force", "--to", &first[..12]]);
    assert!(out.contains(": 0 changes"), "{out}");
}
