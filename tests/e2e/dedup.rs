//! Deduplication: repeated and lightly changed data costs only the change.

use crate::harness::{Env, pseudo_random, sql_dump};

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn second_snapshot_stores_only_the_change() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    let mut big = pseudo_random(24 * 1024 * 1024, 3);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("small-{i}.txt")), format!("file {i}\n")).unwrap();
    }
    let first = env.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(first["summary"]["files_unchanged"], 0);
    let size_after_first = dir_size(&env.repo_dir());

    // Nothing changed: every file is skipped by metadata and nothing is stored but a tree or two.
    let second = env.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(second["summary"]["files_unchanged"], 51);
    assert_eq!(second["summary"]["bytes_read"], 0);
    assert!(
        second["summary"]["bytes_added_stored"].as_u64().unwrap() < 4096,
        "{second}"
    );

    // Change 100 bytes in the middle of the big file.
    big[12_000_000..12_000_100].fill(0xAB);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let third = env.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(third["summary"]["files_unchanged"], 50);
    let added = third["summary"]["bytes_added_stored"].as_u64().unwrap();
    // One or two 1 MiB-average chunks (at most 4 MiB each) around the change.
    assert!(added < 9 * 1024 * 1024, "added {added}");
    let growth = dir_size(&env.repo_dir()) - size_after_first;
    assert!(growth < added + 64 * 1024, "repository grew {growth} for {added} added");
}

#[test]
fn dump_profile_keeps_incrementals_small() {
    let env = Env::new();
    env.init();
    let dump1 = sql_dump(200_000, 11);
    let path = env.path("dump.sql");
    std::fs::write(&path, &dump1).unwrap();
    let stdin = std::fs::File::open(&path).unwrap();
    let first = env
        .cmd()
        .args(["--json", "snapshot", "--stdin", "--name", "dump.sql"])
        .stdin(stdin)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", crate::harness::describe(&first));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let stored_first = first["summary"]["bytes_added_stored"].as_u64().unwrap();
    assert!(
        stored_first < dump1.len() as u64 / 2,
        "a SQL dump compresses: {stored_first}"
    );

    // Rewrite 20 scattered rows, as a minute of writes would.
    let mut text = String::from_utf8(dump1).unwrap();
    for row in (0..20).map(|i| 5_000 + i * 9_000) {
        let needle = format!("VALUES ({row},");
        let at = text.find(&needle).unwrap();
        text.replace_range(at + needle.len()..at + needle.len() + 5, "99999");
    }
    std::fs::write(&path, &text).unwrap();
    let stdin = std::fs::File::open(&path).unwrap();
    let second = env
        .cmd()
        .args(["--json", "snapshot", "--stdin", "--name", "dump.sql"])
        .stdin(stdin)
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", crate::harness::describe(&second));
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let added = second["summary"]["bytes_added_stored"].as_u64().unwrap();
    // 20 rows touch at most 40 chunks of the 16 KiB-average dump profile (64 KiB max each).
    assert!(added < 40 * 64 * 1024, "incremental stored {added} of {}", text.len());
    assert!(added * 10 < stored_first, "incremental {added} vs first {stored_first}");
    let restored = env.ok(&["cat", "latest:dump.sql"]);
    assert_eq!(restored, text);
}

/// Stores `data` from standard input as `dump.sql` of `source`; returns the
/// summary and standard error.
fn stdin_snapshot(env: &Env, source: &str, data: &[u8], verbose: bool) -> (serde_json::Value, String) {
    let mut cmd = env.cmd();
    if verbose {
        cmd.arg("-vv");
    }
    cmd.args([
        "--json",
        "snapshot",
        "--stdin",
        "--name",
        "dump.sql",
        "--profile",
        "rows",
    ])
    .args(["--source", source]);
    let out = crate::harness::run_with_stdin(cmd, data);
    assert!(out.status.success(), "{}", crate::harness::describe(&out));
    let summary = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["summary"].clone();
    (summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A stream's incremental is cut guided by the parent's chunks (each
/// known chunk named and compared, not searched for), and the chunks are
/// exactly those of an unguided backup of the same bytes: the same dump
/// backed up as another source, with no parent, adds no chunk and no
/// chunk list, only its root tree.
#[test]
fn a_guided_incremental_cuts_the_same_chunks_as_a_search() {
    let env = Env::new();
    env.init();
    let dump1 = sql_dump(60_000, 5);
    let mut dump2 = dump1.clone();
    // Rows changed in place, one inserted, one removed, and more at the end.
    for at in [100_000, 700_000, 1_300_000] {
        dump2[at..at + 7].copy_from_slice(b"CHANGED");
    }
    dump2.splice(400_000..400_000, b"INSERT INTO t VALUES (0,'new');\n".iter().copied());
    dump2.drain(1_000_000..1_000_300);
    dump2.extend_from_slice(&sql_dump(500, 6));

    stdin_snapshot(&env, "db", &dump1, false);
    let (guided, log) = stdin_snapshot(&env, "db", &dump2, true);
    let line = log
        .lines()
        .find(|l| l.contains("guided by the parent snapshot's chunks"))
        .unwrap_or_else(|| panic!("no guided cut in the log:\n{log}"));
    let count = |key: &str| -> u64 {
        let rest = &line[line.find(&format!("{key}=")).unwrap() + key.len() + 1..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (cut, guessed) = (count("cut"), count("guessed"));
    assert!(guessed * 10 > cut * 8, "{guessed} of {cut} chunks guessed: {line}");
    assert!(guided["blobs_added"].as_u64().unwrap() > 1, "{guided}");

    let (searched, _) = stdin_snapshot(&env, "other", &dump2, false);
    assert_eq!(searched["blobs_added"], 1, "{searched}");
    assert_eq!(env.ok(&["cat", "db@latest:dump.sql"]).into_bytes(), dump2);
}
