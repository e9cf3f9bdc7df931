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
