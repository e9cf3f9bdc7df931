//! Key slots: add, list, remove, change the password.

use crate::harness::Env;

#[test]
fn key_lifecycle() {
    let env = Env::new();
    env.init();
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["current"], true);

    let added = env
        .cmd()
        .env("NFREPO_NEW_PASSWORD", "second password")
        .args([
            "--json",
            "key",
            "add",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
        ])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", crate::harness::describe(&added));
    let added: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    let second_id = added["key"].as_str().unwrap().to_owned();
    let with_second = env
        .cmd()
        .env("NFREPO_PASSWORD", "second password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(with_second.status.success());

    // The slot in use cannot be removed; another one can.
    let first_id = env
        .json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.fails(&["key", "remove", &first_id[..12]], 10, "BACKUP_FAILED");
    env.ok(&["key", "remove", &second_id[..12]]);
    let gone = env
        .cmd()
        .env("NFREPO_PASSWORD", "second password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(16));

    // passwd: the old password stops working, the new one works.
    let changed = env
        .cmd()
        .env("NFREPO_NEW_PASSWORD", "third password")
        .args(["key", "passwd", "--kdf-memory-kib", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert!(changed.status.success(), "{}", crate::harness::describe(&changed));
    assert_eq!(env.run(&["snapshots"]).status.code(), Some(16));
    let with_third = env
        .cmd()
        .env("NFREPO_PASSWORD", "third password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(with_third.status.success());
}

#[test]
fn aes_gcm_repository_round_trip() {
    let env = Env::new();
    env.ok(&[
        "init",
        "--cipher",
        "aes256gcm",
        "--kdf-memory-kib",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), crate::harness::pseudo_random(2_000_000, 1)).unwrap();
    env.ok(&["snapshot", src.to_str().unwrap()]);
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap(), "--verify"]);
    assert_eq!(
        std::fs::read(out.join("data/f")).unwrap(),
        std::fs::read(src.join("f")).unwrap()
    );
}
