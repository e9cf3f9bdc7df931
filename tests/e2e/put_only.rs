//! Put-only backup credentials (issue 12, item 2; format-spec/put-only.md):
//! `key add --put-only` writes a credential file; with it a host backs up
//! paths, stdin, commands and every configured source kind; every read or
//! delete command is refused and logged; nothing in the file opens a pack
//! the host wrote; the host skips unchanged files by its own record; and
//! the password holder restores it all byte for byte.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nfrepo_format::{Aad, PutOnlyCredential, SealedKind, Sealer, read_pack_sealing, trailer_len};

use crate::harness::{Env, assert_same_tree, describe, run_with_stdin};

#[test]
fn put_only_host_backs_up_reads_nothing_and_the_password_holder_restores() {
    let env = Env::new();
    env.init();
    let (credential, id) = issue(&env, "web-1");
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
    let out = env
        .put_only(&credential)
        .args(["--json", "snapshot", src.to_str().unwrap(), "--source", "site"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let dump = crate::harness::sql_dump(20_000, 3);
    let mut cmd = env.put_only(&credential);
    cmd.args(["--json", "snapshot", "--stdin", "--name", "db.sql", "--source", "db"]);
    let out = run_with_stdin(cmd, &dump);
    assert!(out.status.success(), "{}", describe(&out));
    let out = env
        .put_only(&credential)
        .args([
            "snapshot",
            "--command",
            "--name",
            "v.txt",
            "--source",
            "cmd",
            "--",
            "sh",
            "-c",
            "echo put-only",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));

    assert_refused_and_logged(&env, || env.put_only(&credential), "web-1");
    assert_no_key_of_the_credential_opens_a_pack(&env, &credential);

    // The password holder sees both snapshots, checks every pack, and restores byte for byte.
    let listed = env.json(&["snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    env.ok(&["check", "--read-data"]);
    let target = env.path("restored");
    env.ok(&["restore", "site@latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target.join("site"));
    let restored = env.cmd().args(["cat", "db@latest:db.sql"]).output().unwrap();
    assert!(restored.status.success(), "{}", describe(&restored));
    assert_eq!(restored.stdout, dump);
    assert_eq!(env.ok(&["cat", "cmd@latest:v.txt"]), "put-only\n");

    // Removing the credential's slot revokes it.
    env.ok(&["key", "remove", &id[..12]]);
    let out = env
        .put_only(&credential)
        .args(["snapshot", src.to_str().unwrap(), "--source", "site"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REVOKED_CREDENTIAL"),
        "{}",
        describe(&out)
    );
    // The attempt is logged, without a key: the slot is gone.
    let log = env.json(&["audit", "log"]);
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["detail"].as_str(),
            last["credential"].is_null(),
            last["authenticated"].as_bool()
        ),
        (Some("REVOKED_CREDENTIAL"), true, Some(false)),
        "{last}"
    );
    env.ok(&["audit", "verify"]);
}

/// Every command that reads or removes data, as a backup host would try it.
const READS_AND_DELETES: &[&[&str]] = &[
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
    &["key", "remove", "0000"],
    &["audit", "log"],
];

/// Each of [`READS_AND_DELETES`] run by `host` exits `PERMISSION_DENIED` /
/// `PUT_ONLY`, and the password holder finds each attempt in the audit log
/// under the credential `label`, in a chain `audit verify` accepts.
fn assert_refused_and_logged(env: &Env, host: impl Fn() -> std::process::Command, label: &str) {
    let logged = |detail: &str| {
        env.json(&["audit", "log"])["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["credential"]["label"] == label && e["detail"] == detail)
            .count()
    };
    let before = logged("PUT_ONLY");
    for args in READS_AND_DELETES {
        let out = host().args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(16), "{args:?}: {}", describe(&out));
        assert!(stderr.contains("PERMISSION_DENIED/PUT_ONLY"), "{args:?}: {stderr}");
    }
    assert_eq!(logged("PUT_ONLY") - before, READS_AND_DELETES.len());
    let entries = env.json(&["audit", "log"])["entries"].as_array().unwrap().clone();
    let refusals: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["credential"]["label"] == label && e["detail"] == "PUT_ONLY")
        .collect();
    for entry in &refusals {
        assert_eq!(entry["code"], "PERMISSION_DENIED", "{entry}");
        assert_eq!(entry["authenticated"], false, "{entry}");
        assert!(entry["key_slot"].is_null(), "{entry}");
    }
    let operations: Vec<&str> = refusals.iter().map(|e| e["operation"].as_str().unwrap()).collect();
    for op in [
        "restore",
        "cat",
        "ls",
        "diff",
        "forget",
        "gc",
        "repair index",
        "key list",
        "key remove",
    ] {
        assert!(operations.contains(&op), "no refusal of {op} logged: {operations:?}");
    }
    // Its snapshots are logged too, under the credential.
    assert!(
        entries
            .iter()
            .any(|e| e["credential"]["label"] == label && e["operation"] == "snapshot" && e["code"] == ""),
        "no snapshot of {label} logged"
    );
    env.ok(&["audit", "verify"]);
}

/// Nothing in the credential file opens a pack: every key it holds, tried
/// on every trailer.
fn assert_no_key_of_the_credential_opens_a_pack(env: &Env, credential: &Path) {
    let file = PutOnlyCredential::decode(&std::fs::read(credential).unwrap()).unwrap();
    let keys = [
        Sealer::new(file.cipher, file.id_key.clone()),
        Sealer::new(file.cipher, file.index_key.clone()),
        file.index_sealer(),
    ];
    let mut packs = env.objects("data");
    packs.extend(env.objects("tree"));
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
}

/// Issues a put-only credential for `label`; its file and slot id.
fn issue(env: &Env, label: &str) -> (PathBuf, String) {
    let credential = env.path(&format!("{label}.credential"));
    let added = env.json(&[
        "key",
        "add",
        "--put-only",
        "--label",
        label,
        "--output",
        credential.to_str().unwrap(),
    ]);
    (credential, added["key"].as_str().unwrap().to_owned())
}

/// The data of every source kind the dev servers provide, and the
/// `nfrepo.toml` of a backup host that backs them up with `credential`
/// (`[repository] credential_file`, no password).
struct Sources {
    config: PathBuf,
    files: PathBuf,
    mysql_db: String,
    pg_db: String,
    redis_keys: Vec<String>,
    bucket: crate::bucket::Bucket,
}

impl Sources {
    fn create(env: &Env, credential: &Path) -> Self {
        use crate::servers::{
            mysql, mysql_url, postgres_url, psql, redis_cli_at, redis_dir, redis_port, redis_url, unique,
        };
        let files = env.path("site");
        nfrepo_testing::write_tree(
            &files,
            &[("index.html", "<h1>hello</h1>\n"), ("static/app.css", "body {}\n")],
        )
        .unwrap();
        std::fs::write(files.join("static/app.bin"), crate::harness::pseudo_random(300_000, 12)).unwrap();
        let mysql_db = unique("nf_po");
        mysql(&format!(
            "CREATE DATABASE `{mysql_db}`; CREATE TABLE `{mysql_db}`.t (id INT PRIMARY KEY, v VARCHAR(200)); \
             USE `{mysql_db}`; INSERT INTO t SELECT seq, REPEAT(MD5(seq), 3) FROM seq_1_to_5000;"
        ));
        let pg_db = unique("nf_po");
        psql("postgres", &format!("CREATE DATABASE \"{pg_db}\""));
        psql(
            &pg_db,
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 5000) g",
        );
        let prefix = unique("nfpo");
        let redis_keys: Vec<String> = (0..200).map(|i| format!("{prefix}:{i}")).collect();
        let mut mset = vec!["MSET".to_owned()];
        for key in &redis_keys {
            mset.extend([key.clone(), format!("value-of-{key}")]);
        }
        redis_cli_at(&redis_port(), &mset.iter().map(String::as_str).collect::<Vec<_>>());
        let bucket = crate::bucket::Bucket::new();
        bucket.put("src", "uploads/a.txt", "text/plain", b"object a\n".to_vec());
        bucket.put(
            "src",
            "uploads/b.bin",
            "application/octet-stream",
            crate::harness::pseudo_random(70_000, 13),
        );
        let config = env.path("host.toml");
        std::fs::write(
            &config,
            format!(
                "[repository]\nurl = \"{repo}\"\ncredential_file = \"{credential}\"\n\n\
                 [sources.site]\nkind = \"files\"\npaths = [\"{files}\"]\n\n\
                 [sources.db]\nkind = \"mysql\"\nconnection = \"{mysql}/{mysql_db}\"\nsha256 = true\n\n\
                 [sources.pg]\nkind = \"postgres\"\nconnection = \"{postgres}/{pg_db}\"\nsha256 = true\n\n\
                 [sources.cache]\nkind = \"redis\"\nconnection = \"{redis}\"\naof_dir = \"{redis_dir}/appendonlydir\"\nsha256 = true\n\n\
                 [sources.uploads]\nkind = \"bucket\"\nconnection = \"{bucket}\"\n\n\
                 [sources.metrics]\nkind = \"analytics\"\ncommand = [\"sh\", \"-c\", \"seq 1 20000\"]\noutput = \"metrics.csv\"\n",
                repo = env.repo,
                credential = credential.display(),
                files = files.display(),
                mysql = mysql_url(),
                postgres = postgres_url(),
                redis = redis_url(),
                redis_dir = redis_dir(),
                bucket = bucket.url("src"),
            ),
        )
        .unwrap();
        Self {
            config,
            files,
            mysql_db,
            pg_db,
            redis_keys,
            bucket,
        }
    }

    /// A command of the backup host: the configuration file names the
    /// repository and the credential; no password anywhere.
    fn host(&self, env: &Env) -> std::process::Command {
        let mut cmd = env.cmd();
        cmd.env_remove("NFREPO_PASSWORD")
            .env_remove("NFREPO_REPOSITORY")
            .env("NFREPO_CONFIG", &self.config);
        crate::bucket::with_s3(env, &mut cmd);
        cmd
    }

    /// The password holder restores every source and finds what the host read.
    fn assert_restored(&self, env: &Env) {
        use crate::servers::{mysql, mysql_url, postgres_url, psql, redis_cli_at, redis_port, sha256_hex, unique};
        let target = env.path("restored");
        env.ok(&["restore", "site@latest", "--target", target.to_str().unwrap()]);
        assert_same_tree(&self.files, &target.join("site"));
        // Every dump is the bytes the host read (their SHA-256 recorded at
        // backup: the database sources ask for it with `sha256 = true`).
        let mut compared = 0;
        for snapshot in env.json(&["snapshots"]).as_array().unwrap() {
            let source = snapshot["source"].as_str().unwrap();
            for (key, value) in snapshot["extra"].as_object().unwrap() {
                let Some(name) = key.strip_prefix("dump.").and_then(|k| k.strip_suffix(".sha256")) else {
                    continue;
                };
                let out = env
                    .cmd()
                    .args(["cat", &format!("{source}@latest:{name}")])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", describe(&out));
                assert_eq!(&sha256_hex(&out.stdout), value, "{source}:{name}");
                compared += 1;
            }
        }
        assert!(compared >= 3, "only {compared} dumps carried a SHA-256");
        let digest = |db: &str| {
            mysql(&format!(
                "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', id, v))) FROM `{db}`.t"
            ))
        };
        let fresh = unique("nf_po_dst");
        env.ok(&["restore", "db@latest", "--into", &format!("{}/{fresh}", mysql_url())]);
        assert_eq!(digest(&fresh), digest(&self.mysql_db));
        let digest = |db: &str| {
            psql(
                db,
                "SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t",
            )
        };
        let fresh = unique("nf_po_dst");
        env.ok(&["restore", "pg@latest", "--into", &format!("{}/{fresh}", postgres_url())]);
        assert_eq!(digest(&fresh), digest(&self.pg_db));
        let rdb = env.path("redis-restored");
        env.ok(&["restore", "cache@latest", "--target", rdb.to_str().unwrap()]);
        assert!(rdb.join("dump.rdb").is_file());
        let mut del = vec!["DEL"];
        del.extend(self.redis_keys.iter().map(String::as_str));
        redis_cli_at(&redis_port(), &del);
        let mut cmd = env.cmd();
        crate::bucket::with_s3(env, &mut cmd);
        let out = cmd
            .args(["restore", "uploads@latest", "--into", &self.bucket.url("copy")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert_eq!(self.bucket.objects("copy"), self.bucket.objects("src"));
        let csv = env.ok(&["cat", "metrics@latest:metrics.csv"]);
        let expected: String = (1..=20_000).map(|i| format!("{i}\n")).collect();
        assert_eq!(csv, expected);
    }
}

// Issue 12, item 2: `credential_file` in nfrepo.toml; every configured
// source kind the dev servers provide backed up through a put-only
// session; every read or delete refused and logged; nothing in the
// credential opens a pack; the password holder restores it all.
#[test]
fn a_backup_host_runs_every_configured_source_with_its_credential_file() {
    let env = Env::new();
    env.init();
    let (credential, _) = issue(&env, "db-host");
    let sources = Sources::create(&env, &credential);
    let out = sources
        .host(&env)
        .args(["--json", "snapshot", "--all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ran: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ran["sources"].as_array().unwrap().len(), 6, "{ran}");
    assert!(ran["error"].is_null(), "{ran}");
    // The host reads and removes nothing, even with its configuration
    // file, every attempt is logged, and its file opens no pack.
    assert_refused_and_logged(&env, || sources.host(&env), "db-host");
    assert_no_key_of_the_credential_opens_a_pack(&env, &credential);

    let listed = env.json(&["snapshots"]);
    let mut kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source_kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["analytics", "bucket", "files", "mysql", "postgres", "redis"]);
    env.ok(&["check", "--read-data"]);
    sources.assert_restored(&env);
}

// Issue 12, item 2: a put-only host cannot read its parent's trees; its own
// record of the files it stored skips the unchanged ones, and an entry whose
// blobs are gone from the repository costs a re-read, never a wrong snapshot.
#[test]
fn a_put_only_host_skips_unchanged_files_by_its_own_record() {
    let env = Env::new();
    env.init();
    let (credential, _) = issue(&env, "web-2");
    let src = env.path("www");
    for i in 0..40u64 {
        std::fs::create_dir_all(src.join(format!("d{}", i % 4))).unwrap();
        std::fs::write(
            src.join(format!("d{}/f{i}.bin", i % 4)),
            crate::harness::pseudo_random(20_000 + i as usize * 97, 100 + i),
        )
        .unwrap();
    }
    let snap = || {
        let out = env
            .put_only(&credential)
            .args(["--json", "snapshot", src.to_str().unwrap(), "--source", "www"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        value["summary"].clone()
    };
    let first = snap();
    assert_eq!(
        (first["files"].as_u64(), first["files_unchanged"].as_u64()),
        (Some(40), Some(0))
    );
    let total = first["bytes_read"].as_u64().unwrap();
    assert_eq!(first["bytes"].as_u64(), Some(total));

    // Nothing changed: nothing is read.
    let second = snap();
    assert_eq!(second["files_unchanged"].as_u64(), Some(40), "{second}");
    assert_eq!(second["bytes_read"].as_u64(), Some(0), "{second}");
    assert_eq!(second["blobs_added"].as_u64(), Some(0), "{second}");

    // One file rewritten: only it is read.
    let changed = crate::harness::pseudo_random(33_333, 999);
    std::fs::write(src.join("d1/f5.bin"), &changed).unwrap();
    let third = snap();
    assert_eq!(third["files_unchanged"].as_u64(), Some(39), "{third}");
    assert_eq!(third["bytes_read"].as_u64(), Some(changed.len() as u64), "{third}");

    // The record is the host's alone: mode 0600, beside the other caches.
    let record: Vec<PathBuf> = crate::harness::entries_under(&env.path("cache"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".known-files.sqlite"))
        .collect();
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!(
        std::fs::metadata(&record[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The password holder forgets every snapshot and collects their packs:
    // the host's record now names blobs that are gone, so it reads again.
    env.ok(&["forget", "--keep-tag", "kept", "--source", "www"]);
    env.ok(&["gc", "--grace", "0s"]);
    env.ok(&["gc", "--grace", "0s"]);
    assert_eq!(env.snapshot_count(), 0);
    let fourth = snap();
    assert_eq!(fourth["files_unchanged"].as_u64(), Some(0), "{fourth}");
    assert_eq!(
        fourth["bytes_read"].as_u64(),
        Some(total - 20_000 - 5 * 97 + changed.len() as u64),
        "{fourth}"
    );
    let fifth = snap();
    assert_eq!(fifth["files_unchanged"].as_u64(), Some(40), "{fifth}");
    env.ok(&["check", "--read-data"]);
    let target = env.path("restored");
    env.ok(&["restore", "www@latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target.join("www"));
}
