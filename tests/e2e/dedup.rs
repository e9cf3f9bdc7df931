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
