//! `forget`, `protect` and `gc` through the binary, and gc running while
//! several backup processes write overlapping data.

use std::io::Write;
use std::process::{Child, Stdio};

use crate::harness::{Env, pseudo_random};

/// Backs up `data` from stdin as `f` of `source` with a tag; returns the snapshot id.
fn backup(env: &Env, source: &str, tag: &str, data: &[u8]) -> String {
    let mut child = spawn_backup(env, source, tag);
    // A failing backup may exit before reading everything; its output says why.
    let _ = child.stdin.take().unwrap().write_all(data);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", crate::harness::describe(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value["snapshot_id"].as_str().unwrap().to_owned()
}

fn spawn_backup(env: &Env, source: &str, tag: &str) -> Child {
    env.cmd()
        .args([
            "--json", "snapshot", "--stdin", "--name", "f", "--source", source, "--tag", tag,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn restore(env: &Env, id: &str, into: &str) -> Vec<u8> {
    let target = env.path(into);
    env.ok(&["restore", id, "--target", target.to_str().unwrap(), "--verify"]);
    std::fs::read(target.join("f")).unwrap()
}

#[test]
fn forget_dry_run_protect_and_two_phase_gc() {
    let env = Env::new();
    env.init();
    let mut ids = Vec::new();
    for i in 0..4u64 {
        ids.push(backup(
            &env,
            "db",
            &format!("i={i}"),
            &pseudo_random(3 << 20, 2 * i + 1),
        ));
    }
    env.ok(&["protect", &ids[0][..12], "--note", "audit"]);

    let dry = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(dry["removed"], 2, "{dry}");
    let decisions = dry["groups"][0]["snapshots"].as_array().unwrap();
    let why: Vec<_> = decisions.iter().map(|d| d["reasons"].clone()).collect();
    assert_eq!(why[0], serde_json::json!(["protected"]));
    assert_eq!(why[1], serde_json::json!([]));
    assert_eq!(why[3], serde_json::json!(["last"]));
    assert_eq!(env.snapshot_count(), 4);
    let human = env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(human.matches("no rule keeps it").count(), 2, "{human}");
    assert!(human.contains("keep      protected"), "{human}");
    assert!(human.contains("would remove 2"), "{human}");

    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshot_count(), 2);

    let planned = env.json(&["gc", "--grace", "0s"]);
    assert_eq!(planned["deleted"]["packs"], 0, "{planned}");
    assert!(planned["planned"]["packs"].as_u64().unwrap() >= 2, "{planned}");
    let swept = env.json(&["gc", "--grace", "0s"]);
    assert_eq!(swept["deleted"], planned["planned"], "{swept}");
    assert_eq!(swept["reclaimable_later_bytes"], 0);
    assert_eq!(restore(&env, &ids[3], "r3"), pseudo_random(3 << 20, 7));
    assert_eq!(restore(&env, &ids[0], "r0"), pseudo_random(3 << 20, 1));

    env.ok(&["unprotect", &ids[0]]);
    let hot = env.json(&["forget", "--class", "hot"]);
    assert_eq!(hot["removed"], 0, "hot keeps everything from the last 24 h: {hot}");
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshot_count(), 1, "no longer protected");
}

#[test]
fn forget_and_gc_reject_bad_input() {
    let env = Env::new();
    env.init();
    // Issue 9, bug 18: bad argument values are usage errors (exit 2).
    env.fails(&["forget"], 2, "USAGE/INVALID_ARGUMENT");
    env.fails(&["forget", "--class", "tepid"], 2, "USAGE/INVALID_ARGUMENT");
    env.fails(&["forget", "--keep-within", "7x"], 2, "invalid value");
    env.fails(&["gc", "--grace", "soon"], 2, "invalid value");
    env.fails(&["gc", "--max-unused", "150%"], 2, "invalid value");
    env.fails(&["protect", "ffffffff"], 12, "BACKUP_NOT_FOUND");
}

/// Three writers back up overlapping data in separate processes while gc
/// (grace 0) and forget run over and over. Every snapshot left must restore
/// bit-identical, every blob it needs verified on the way.
#[test]
fn gc_while_backups_run_loses_nothing() {
    let env = Env::new();
    env.init();
    // Writer w, round r: a shared part (same for every writer in a round, so
    // it dedups across writers) and a part of its own.
    let data = |w: u64, r: u64| {
        let mut d = pseudo_random(2 << 20, 1000 + r % 3);
        d.extend(pseudo_random(1 << 20, w * 100 + r));
        d
    };
    let rounds = 8u64;
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let env_repo = env.repo.clone();
            let dir = env.dir.path().to_owned();
            std::thread::spawn(move || {
                let env = Env::with_repo(&env_repo, &dir);
                for r in 0..rounds {
                    backup(&env, &format!("w{w}"), &format!("round={r}"), &data(w, r));
                }
            })
        })
        .collect();
    let mut gc_runs = 0;
    while writers.iter().any(|t| !t.is_finished()) || gc_runs < 3 {
        env.ok(&["forget", "--keep-last", "2"]);
        let out = env.run(&["--json", "gc", "--grace", "0s"]);
        // Another gc never runs here, so the lease is always free.
        assert!(out.status.success(), "{}", crate::harness::describe(&out));
        gc_runs += 1;
    }
    for t in writers {
        t.join().unwrap();
    }
    env.ok(&["forget", "--keep-last", "2"]);
    env.ok(&["gc", "--grace", "0s"]);
    env.ok(&["gc", "--grace", "0s"]);
    let snapshots = env.json(&["snapshots"]);
    let list = snapshots.as_array().unwrap();
    assert_eq!(list.len(), 6, "two per writer: {snapshots}");
    for (i, s) in list.iter().enumerate() {
        let w: u64 = s["source"].as_str().unwrap()[1..].parse().unwrap();
        let r: u64 = s["tags"][0].as_str().unwrap()["round=".len()..].parse().unwrap();
        let id = s["id"].as_str().unwrap();
        assert!(
            restore(&env, id, &format!("out{i}")) == data(w, r),
            "snapshot {id} of w{w} round {r}"
        );
    }
}

#[test]
fn forget_follows_each_sources_retention_class_from_the_config() {
    let env = Env::new();
    env.init();
    for i in 0..4u64 {
        backup(&env, "db", &format!("i={i}"), &pseudo_random(64 << 10, 10 + i));
        backup(&env, "etc", &format!("i={i}"), &pseudo_random(64 << 10, 20 + i));
        backup(&env, "adhoc", &format!("i={i}"), &pseudo_random(64 << 10, 30 + i));
    }
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        "[sources.db]\nkind = \"files\"\npaths = [\"/nonexistent\"]\nretention = \"two\"\n\n\
         [sources.etc]\nkind = \"config\"\npaths = [\"/nonexistent\"]\nretention = \"hot\"\n\n\
         [retention.two]\nkeep-last = 2\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let dry = env.json(&["--config", &config, "forget", "--dry-run"]);
    let kept_of = |source: &str| {
        dry["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["source"] == source)
            .flat_map(|g| g["snapshots"].as_array().unwrap().iter())
            .filter(|s| s["keep"] == true)
            .count()
    };
    // "two" from the file keeps two; built-in "hot" keeps everything from
    // the last day; a source without a class is left alone.
    assert_eq!(kept_of("db"), 2, "{dry}");
    assert_eq!(kept_of("etc"), 4, "{dry}");
    assert_eq!(dry["removed"], 2, "{dry}");
    env.ok(&["--config", &config, "forget"]);
    assert_eq!(env.snapshot_count(), 10);
    // A class that is neither in the file nor built in is refused.
    std::fs::write(
        &config,
        "[sources.db]\nkind = \"files\"\npaths = [\"/nonexistent\"]\nretention = \"nope\"\n",
    )
    .unwrap();
    env.fails(
        &["--config", &config, "forget", "--dry-run"],
        2,
        "USAGE/INVALID_ARGUMENT",
    );
}
