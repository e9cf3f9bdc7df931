//! Put-only backup credentials (issue 12, item 2; format-spec/put-only.md):
//! `key add --put-only` writes a credential file; with it a host backs up
//! paths and stdin, every read or delete command is refused, nothing in the
//! file opens a pack the host wrote, and the password holder restores it
//! all byte for byte.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nfrepo_format::{Aad, PutOnlyCredential, SealedKind, Sealer, read_pack_sealing, trailer_len};

use crate::harness::{Env, describe, snapshot_of_tree};

/// A command as the backup host runs it: no password, the credential file.
fn host(env: &Env, credential: &Path) -> Command {
    let mut cmd = env.cmd();
    cmd.env_remove("NFREPO_PASSWORD")
        .env("NFREPO_CREDENTIAL_FILE", credential);
    cmd
}

fn packs_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            packs_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn put_only_host_backs_up_reads_nothing_and_the_password_holder_restores() {
    let env = Env::new();
    env.init();
    let credential = env.path("web-1.credential");
    let added = env.json(&[
        "key",
        "add",
        "--put-only",
        "--label",
        "web-1",
        "--output",
        credential.to_str().unwrap(),
    ]);
    assert!(added["key"].is_string(), "{added}");
    let mode = std::fs::metadata(&credential).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the credential file is the secret");
    // Never overwritten.
    env.fails(
        &[
            "key",
            "add",
            "--put-only",
            "--label",
            "web-1",
            "--output",
            credential.to_str().unwrap(),
        ],
        2,
        "INVALID_ARGUMENT",
    );

    // The host backs up a tree and a stream with the credential alone.
    let src = env.path("site");
    std::fs::create_dir_all(src.join("static")).unwrap();
    std::fs::write(src.join("index.html"), b"<h1>hello</h1>\n".repeat(1000)).unwrap();
    let mut big = Vec::new();
    let mut rng = crate::harness::Rng(11);
    for _ in 0..400_000 {
        big.push(rng.next() as u8);
    }
    std::fs::write(src.join("static/app.bin"), &big).unwrap();
    let out = host(&env, &credential)
        .args(["--json", "snapshot", src.to_str().unwrap(), "--source", "site"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let dump = crate::harness::sql_dump(20_000, 3);
    let mut child = host(&env, &credential)
        .args(["--json", "snapshot", "--stdin", "--name", "db.sql", "--source", "db"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&dump).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));

    // Every command that reads or removes data is refused, before storage is touched.
    let refused: &[&[&str]] = &[
        &["snapshots"],
        &["restore", "latest", "--target", "/tmp/never"],
        &["cat", "db@latest:db.sql"],
        &["ls", "latest"],
        &["diff", "latest", "latest"],
        &["forget", "--keep-last", "1"],
        &["gc"],
        &["repair", "index"],
        &["check"],
        &["key", "list"],
    ];
    for args in refused {
        let out = host(&env, &credential).args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(16), "{args:?}: {}", describe(&out));
        assert!(stderr.contains("PERMISSION_DENIED"), "{args:?}: {stderr}");
        assert!(stderr.contains("PUT_ONLY"), "{args:?}: {stderr}");
    }

    // Nothing in the credential file opens a pack the host wrote: every key
    // it holds, tried on every trailer and every blob the holder can name.
    let file = PutOnlyCredential::decode(&std::fs::read(&credential).unwrap()).unwrap();
    let keys = [
        Sealer::new(file.cipher, file.id_key.clone()),
        Sealer::new(file.cipher, file.index_key.clone()),
        file.index_sealer(),
    ];
    let mut packs = Vec::new();
    packs_under(&env.repo_dir().join("data"), &mut packs);
    packs_under(&env.repo_dir().join("tree"), &mut packs);
    assert!(packs.len() >= 2, "{packs:?}");
    for pack in &packs {
        let bytes = std::fs::read(pack).unwrap();
        assert!(
            read_pack_sealing(&bytes, &file.index_sealer(), &file.repo).is_err(),
            "{} opens with the credential",
            pack.display()
        );
        let tlen = trailer_len(&bytes[bytes.len() - 4..]).unwrap();
        let trailer = &bytes[bytes.len() - 4 - tlen..bytes.len() - 4];
        for key in &keys {
            assert!(
                key.open("trailer", Aad::object(SealedKind::PackTrailer, file.repo.0), trailer)
                    .is_err(),
                "a key of the credential opens the trailer of {}",
                pack.display()
            );
        }
    }

    // The password holder sees both snapshots, checks every pack, and restores byte for byte.
    let listed = env.json(&["snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    env.ok(&["check", "--read-data"]);
    let target = env.path("restored");
    env.ok(&["restore", "site@latest", "--target", target.to_str().unwrap()]);
    let before = snapshot_of_tree(&src);
    let after = snapshot_of_tree(&target.join("site"));
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (path, entry) in &before {
        assert_eq!(Some(entry), after.get(path), "{path} differs after restore");
    }
    let restored = env.cmd().args(["cat", "db@latest:db.sql"]).output().unwrap();
    assert!(restored.status.success(), "{}", describe(&restored));
    assert_eq!(restored.stdout, dump);

    // Removing the credential's slot revokes it.
    let id = added["key"].as_str().unwrap().to_owned();
    env.ok(&["key", "remove", &id[..12]]);
    let out = host(&env, &credential)
        .args(["snapshot", src.to_str().unwrap(), "--source", "site"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REVOKED_CREDENTIAL"),
        "{}",
        describe(&out)
    );
}
