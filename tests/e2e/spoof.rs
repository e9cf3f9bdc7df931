//! Spoofing: an attacker who can write to the storage but holds no key
//! cannot forge a snapshot, swap blobs between files, or replay or rename
//! objects without `check` failing and `restore` refusing the bytes.
//! (In the spirit of borg's spoofed-manifest and spoofed-archive tests.)

use crate::check::{edit, files_data_pack};
use crate::harness::{Env, describe, pseudo_random};

fn two_file_repo() -> Env {
    let env = Env::new();
    env.init();
    // Same size, incompressible: their sealed blobs have the same length.
    std::fs::create_dir_all(env.path("src")).unwrap();
    std::fs::write(env.path("src/a.bin"), pseudo_random(5_000, 11)).unwrap();
    std::fs::write(env.path("src/b.bin"), pseudo_random(5_000, 12)).unwrap();
    let out = env
        .cmd()
        .current_dir(env.dir.path())
        .args(["snapshot", "src", "--source", "files"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    env
}

fn check_fails(env: &Env, args: &[&str], exit: i32) -> serde_json::Value {
    let mut all = vec!["--json", "check"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert_eq!(out.status.code(), Some(exit), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn swapping_two_files_blobs_inside_a_pack_is_detected() {
    let env = two_file_repo();
    // Stored blob layout is known to the attacker: header, then the sealed
    // blobs back to back. Swap the two equal-length blobs.
    let pack = env.objects("data").remove(0);
    let len = 1 + 5_000 + 24 + 16;
    edit(&pack, |b| {
        let (first, second) = b[8..8 + 2 * len].split_at_mut(len);
        first.swap_with_slice(second);
    });
    let report = check_fails(&env, &["--read-data"], 11);
    assert_eq!(report["findings"][0]["blobs"].as_array().unwrap().len(), 2, "{report}");
    for name in ["src/a.bin", "src/b.bin"] {
        let out = env.run(&["cat", &format!("latest:{name}")]);
        assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
        assert!(out.stdout.is_empty(), "no byte of the other file is emitted");
    }
    let target = env.path("out");
    env.fails(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        11,
        "BACKUP_CORRUPTED",
    );
    assert!(!target.join("src/a.bin").exists() && !target.join("src/b.bin").exists());
}

#[test]
fn a_renamed_or_replayed_snapshot_is_rejected() {
    let env = two_file_repo();
    let snapshot = env.objects("snapshots").remove(0);
    // Replay under another name (as if to make it look like a second backup).
    let replay = snapshot.with_file_name("ab".repeat(32));
    std::fs::copy(&snapshot, &replay).unwrap();
    let report = check_fails(&env, &[], 11);
    let finding = &report["findings"][0];
    assert!(
        finding["object"].as_str().unwrap().ends_with(&"ab".repeat(32)),
        "{finding}"
    );
    assert!(
        finding["message"].as_str().unwrap().contains("hash mismatch"),
        "{finding}"
    );
}

#[test]
fn a_forged_snapshot_named_by_its_own_hash_is_rejected() {
    let env = two_file_repo();
    let mut forged = std::fs::read(env.objects("snapshots").remove(0)).unwrap();
    // Change the sealed body and name the object by its new hash, as the
    // format's content addressing would require: the seal still fails.
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let name = blake3::hash(&forged).to_hex().to_string();
    std::fs::write(env.repo_dir().join("snapshots").join(&name), &forged).unwrap();
    let report = check_fails(&env, &[], 11);
    let finding = &report["findings"][0];
    assert!(finding["object"].as_str().unwrap().ends_with(&name), "{finding}");
    assert!(
        finding["message"].as_str().unwrap().contains("authentication failed"),
        "{finding}"
    );
}

#[test]
fn a_snapshot_from_another_repository_with_the_same_password_is_rejected() {
    let env = two_file_repo();
    let other = two_file_repo();
    let theirs = other.objects("snapshots").remove(0);
    let name = theirs.file_name().unwrap();
    std::fs::copy(&theirs, env.repo_dir().join("snapshots").join(name)).unwrap();
    let report = check_fails(&env, &[], 11);
    assert!(
        report["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{report}"
    );
}

#[test]
fn a_pack_replaced_by_another_repositorys_pack_is_detected() {
    let env = two_file_repo();
    let other = two_file_repo();
    let ours = files_data_pack(&env);
    let theirs = other.objects("data").remove(0);
    // Same layout, other keys: put their pack under our name.
    edit(&ours, |b| *b = std::fs::read(&theirs).unwrap());
    let report = check_fails(&env, &["--read-data"], 11);
    assert!(
        report["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not to its name"),
        "{report}"
    );
    env.fails(&["cat", "latest:src/a.bin"], 11, "BACKUP_CORRUPTED");
}
