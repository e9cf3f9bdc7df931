//! Issue 9, one verified file reader: a file whose recorded size or BLAKE3
//! disagrees with its chunks is refused by `cat`, `restore` and `verify`
//! with BACKUP_CORRUPTED, and its end is never written.

use nfrepo_engine::Repository;
use nfrepo_format::NodeKind;

use crate::harness::{Env, PASSWORD, pseudo_random};

/// Commits, through the engine, a snapshot of one file `f` holding `data`
/// whose node is altered by `alter`; returns the snapshot id.
fn commit_crafted(env: &Env, data: Vec<u8>, alter: fn(&mut NodeKind)) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = nfrepo_store::StoreUrl::parse(&env.repo).unwrap();
        let store = nfrepo_store::open(
            &url,
            &nfrepo_store::Credentials::default(),
            &nfrepo_store::OpenOptions::default(),
        )
        .unwrap();
        let repo = Repository::open(store, PASSWORD.as_bytes()).await.unwrap();
        nfrepo_testing::crafted::commit_altered_file(&repo, data, alter)
            .await
            .to_hex()
    })
}

/// `restore ID --target TARGET`, with `--verify` if `verify`.
fn restore_args<'a>(id: &'a str, target: &'a std::path::Path, verify: bool) -> Vec<&'a str> {
    let mut args = vec!["restore", id, "--target", target.to_str().unwrap()];
    if verify {
        args.push("--verify");
    }
    args
}

/// Restores snapshot `id`, whose file `f` disagrees with its node, into
/// `target`: refused with BACKUP_CORRUPTED, and nothing is left there
/// (neither the file nor its temporary name).
fn restore_is_refused(env: &Env, id: &str, target: &std::path::Path, verify: bool) {
    env.fails(&restore_args(id, target, verify), 11, "BACKUP_CORRUPTED");
    assert!(
        !target.join("f").exists(),
        "a wrong file was put in place (--verify: {verify})"
    );
    assert_eq!(
        std::fs::read_dir(target).map(Iterator::count).unwrap_or(0),
        0,
        "the temporary file was left behind (--verify: {verify})"
    );
}

#[test]
fn issue9_cat_restore_and_verify_refuse_content_that_disagrees_with_its_node() {
    let env = Env::new();
    env.init();
    let data = pseudo_random(300_000, 9);
    let wrong_hash = commit_crafted(&env, data.clone(), |kind| {
        if let NodeKind::File { blake3, .. } = kind {
            blake3[0] ^= 1;
        }
    });
    let wrong_size = commit_crafted(&env, data.clone(), |kind| {
        if let NodeKind::File { size, .. } = kind {
            *size -= 1;
        }
    });
    // verify also proves the tree: a node whose size disagrees with its
    // content list is a structural fault (SNAPSHOT_INVALID, the worse code).
    for (id, verify_code, verify_error) in [
        (&wrong_hash, 11, "BACKUP_CORRUPTED"),
        (&wrong_size, 17, "SNAPSHOT_INVALID"),
    ] {
        let spec = format!("{id}:f");
        let out = env.run(&["cat", &spec]);
        assert_eq!(out.status.code(), Some(11), "cat {spec}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("BACKUP_CORRUPTED"));
        assert!(
            out.stdout.len() < data.len(),
            "cat wrote the unverified end of the file"
        );

        // With --verify the file is read back from the device on the
        // threads that check a step's small files: refused the same way.
        for verify in [false, true] {
            restore_is_refused(&env, id, &env.path(&format!("restored-{id}-{verify}")), verify);
        }

        let stderr = env.fails(&["verify", id, "--read-data"], verify_code, verify_error);
        let out = env.run(&["verify", id, "--read-data"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("BACKUP_CORRUPTED f:"),
            "verify names the file whose content does not match: {stderr}"
        );
    }
}

/// A large file is read back and hashed while it is still being restored
/// (`restore/digest.rs`): the node's BLAKE3 is still what decides, with
/// and without `--verify`, and a good file comes back whole either way.
#[test]
fn issue14_a_large_file_hashed_while_it_is_written_is_still_checked_against_its_node() {
    let env = Env::new();
    env.init();
    // Larger than twice the digest's 16 MiB step, and not a multiple of it.
    let data = pseudo_random((40 << 20) + 4321, 14);
    let good = commit_crafted(&env, data.clone(), |_| {});
    let wrong_hash = commit_crafted(&env, data.clone(), |kind| {
        if let NodeKind::File { blake3, .. } = kind {
            blake3[31] ^= 1;
        }
    });
    for verify in [false, true] {
        restore_is_refused(&env, &wrong_hash, &env.path(&format!("wrong-{verify}")), verify);

        let target = env.path(&format!("good-{verify}"));
        let out = env.run(&restore_args(&good, &target, verify));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            std::fs::read(target.join("f")).unwrap() == data,
            "restored bytes differ (--verify: {verify})"
        );
    }
}
