//! MariaDB end to end: configured source, incremental growth, restore into a
//! fresh database, conflicts, a dump failing mid-source, secrets.

use crate::harness::Env;
use crate::servers::{mysql, mysql_url, sha256_hex, unique};

/// Row count and an order-independent checksum of every row of `db.t`.
fn table_digest(db: &str) -> String {
    mysql(&format!(
        "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', id, v, n))) FROM `{db}`.t"
    ))
}

fn write_config(env: &Env, body: &str) -> String {
    let path = env.path("nfrepo.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn mysql_source_snapshots_incrementally_and_restores_into_a_fresh_database() {
    let env = Env::new();
    env.init();
    let db = unique("nf_src");
    let user = unique("nfbk");
    let password = format!("pw-{}", unique("s3cret"));
    mysql(&format!(
        "CREATE DATABASE `{db}`; \
         CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(200), n BIGINT); \
         USE `{db}`; INSERT INTO t SELECT seq, REPEAT(MD5(seq), 4), seq * 7 FROM seq_1_to_40000; \
         CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; \
         GRANT ALL ON *.* TO '{user}'@'%';"
    ));
    let server = mysql_url().replace("root@", &format!("{user}@"));
    let config = write_config(
        &env,
        &format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"{server}/{db}\"\npassword_env = \"NF_TEST_MYSQL_PW\"\nsha256 = true\n\
             env = \"prod\"\ntype = \"database\"\nretention = \"db-incremental\"\n"
        ),
    );
    let snap = |extra: &[&str]| {
        let mut cmd = env.cmd();
        cmd.env("NF_TEST_MYSQL_PW", &password)
            .args(["--json", "--config", &config, "snapshot", "--source", "db"])
            .args(extra);
        cmd.output().unwrap()
    };

    let first = snap(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", crate::harness::describe(&first));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let dump_bytes = first["summary"]["bytes"].as_u64().unwrap();
    assert!(dump_bytes > 5_000_000, "dump of 40k rows is {dump_bytes} bytes");
    let extra = &first["extra"];
    let sql = format!("dump.{db}.sql");
    assert_eq!(extra[format!("{sql}.exit_status")], "0");
    assert!(extra["mysql.server_version"].as_str().unwrap().contains("MariaDB"));
    assert!(extra["tool.mysqldump"].as_str().unwrap().contains("mysqldump"));
    assert!(extra["mysql.binlog_file"].as_str().is_some(), "{extra}");
    assert!(extra["mysql.binlog_position"].as_str().is_some(), "{extra}");

    // The recorded SHA-256 (`sha256 = true`) is the SHA-256 of the dump as restored by `cat`.
    let dumped = env
        .cmd()
        .args(["cat", &format!("db@latest:{db}.sql")])
        .output()
        .unwrap();
    assert!(dumped.status.success());
    assert_eq!(extra[format!("{sql}.sha256")], sha256_hex(&dumped.stdout));

    // About 1 % of the rows change, in one stretch: the repository grows by
    // about that, not by the dump.
    mysql(&format!(
        "UPDATE `{db}`.t SET v = REPEAT(SHA1(id), 3) WHERE id BETWEEN 20000 AND 20400"
    ));
    let second = snap(&[]);
    assert_eq!(second.status.code(), Some(0), "{}", crate::harness::describe(&second));
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let added = second["summary"]["bytes_added_raw"].as_u64().unwrap();
    assert!(
        added < dump_bytes / 10,
        "incremental added {added} bytes of a {dump_bytes}-byte dump"
    );
    assert_eq!(second["parent"], first["snapshot_id"]);
    // A MariaDB dump changes rows in place: the 8 KiB `rows` profile.
    assert_eq!(crate::harness::profiles(&env, "db"), ["rows", "rows"]);

    // Secrets appear nowhere in the snapshot records.
    let listed = env.ok(&["--json", "snapshots"]);
    assert!(!listed.contains(&password), "password leaked into snapshot metadata");
    assert!(listed.contains("\"env=prod\"") && listed.contains("\"retention=db-incremental\""));

    // Restore into a fresh database and compare every row.
    let expected = table_digest(&db);
    let fresh = unique("nf_dst");
    let into = format!("{}/{fresh}", mysql_url());
    env.ok(&["restore", "db@latest", "--into", &into]);
    assert_eq!(table_digest(&fresh), expected);

    // A database that is not empty is refused, then replaced with --force.
    mysql(&format!("DELETE FROM `{fresh}`.t WHERE id < 100"));
    env.fails(&["restore", "db@latest", "--into", &into], 14, "RESTORE_CONFLICT");
    assert_ne!(table_digest(&fresh), expected, "a refused restore changed the database");
    env.ok(&["restore", "db@latest", "--into", &into, "--force"]);
    assert_eq!(table_digest(&fresh), expected);

    mysql(&format!(
        "DROP DATABASE `{db}`; DROP DATABASE `{fresh}`; DROP USER '{user}'@'%';"
    ));
}

#[test]
fn a_failing_dump_commits_nothing_and_leaks_no_secret() {
    let env = Env::new();
    env.init();
    let db = unique("nf_one");
    mysql(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY); INSERT INTO `{db}`.t VALUES (1), (2);"
    ));
    let missing = unique("nf_missing");
    let password = "never-print-me-42";
    let config = write_config(
        &env,
        &format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"{}\"\ndatabases = [\"{db}\", \"{missing}\"]\n\
             password_env = \"NF_TEST_MYSQL_PW\"\n",
            mysql_url()
        ),
    );
    // The first database dumps fine, the second does not exist: the source
    // fails as a whole and no snapshot is committed.
    let out = env
        .cmd()
        .env("NF_TEST_MYSQL_PW", "")
        .args(["--config", &config, "snapshot", "--source", "db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", crate::harness::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BACKUP_FAILED"), "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");
    assert_eq!(env.snapshot_count(), 0);

    // A wrong password fails with the server's error, never the password.
    let config = write_config(
        &env,
        &format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"{}\"\npassword_env = \"NF_TEST_MYSQL_PW\"\n",
            mysql_url().replace("root@", "nobody_nf@")
        ),
    );
    let out = env
        .cmd()
        .env("NF_TEST_MYSQL_PW", password)
        .args(["-vv", "--config", &config, "snapshot", "--source", "db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", crate::harness::describe(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("Access denied"), "{all}");
    assert!(!all.contains(password), "password leaked: {all}");
    assert_eq!(env.snapshot_count(), 0);
    mysql(&format!("DROP DATABASE `{db}`"));
}

/// Row count and an order-independent checksum of `db.table`'s rows.
fn rows_digest(db: &str, table: &str) -> String {
    mysql(&format!(
        "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', id, v))) FROM `{db}`.`{table}`"
    ))
}

// A dump loaded over several connections (`restore --load-jobs`) gives
// the database one connection gives: the rows of every table, and the
// trigger, view and routine, each created once in dump order (the trigger
// after the rows, so it fires for none of them; the routine's INSERT, in a
// DELIMITER block, is not taken for data).
#[test]
fn a_dump_loaded_over_several_connections_equals_one_loaded_over_one() {
    let env = Env::new();
    env.init();
    let db = unique("nf_par");
    mysql(&format!(
        "CREATE DATABASE `{db}`; USE `{db}`; \
         CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(200), KEY (v(20))); \
         CREATE TABLE b (id INT PRIMARY KEY, v VARCHAR(200)); \
         CREATE TABLE log (id INT PRIMARY KEY, v VARCHAR(200)); \
         INSERT INTO a SELECT seq, CONCAT(REPEAT(MD5(seq), 5), ';\\n''),(') FROM seq_1_to_30000; \
         INSERT INTO b SELECT seq, REPEAT(SHA1(seq), 4) FROM seq_1_to_20000; \
         INSERT INTO log VALUES (1, 'before'); \
         CREATE TRIGGER a_log AFTER INSERT ON a FOR EACH ROW INSERT INTO log VALUES (NEW.id + 100000, NEW.v); \
         CREATE VIEW both_v AS SELECT a.id, b.v FROM a JOIN b USING (id); \
         CREATE PROCEDURE p() INSERT INTO log VALUES (7, 'p');"
    ));
    let config = write_config(
        &env,
        &format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"{}/{db}\"\n",
            mysql_url()
        ),
    );
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    let expected: Vec<String> = ["a", "b", "log", "both_v"]
        .iter()
        .map(|t| rows_digest(&db, t))
        .collect();
    assert!(expected[0].starts_with("30000\t"), "{expected:?}");

    for jobs in ["1", "3"] {
        let fresh = unique("nf_par_dst");
        let into = format!("{}/{fresh}", mysql_url());
        env.ok(&["restore", "db@latest", "--into", &into, "--load-jobs", jobs]);
        let got: Vec<String> = ["a", "b", "log", "both_v"]
            .iter()
            .map(|t| rows_digest(&fresh, t))
            .collect();
        assert_eq!(got, expected, "loaded over {jobs} connection(s)");
        assert_eq!(
            mysql(&format!(
                "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{fresh}'; \
                 SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{fresh}'"
            )),
            "1\n1"
        );
        // No staging database is left behind.
        assert_eq!(
            mysql(&format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{fresh}\\_\\_nfrepo%'"
            )),
            "0"
        );
        mysql(&format!("DROP DATABASE `{fresh}`"));
    }
    mysql(&format!("DROP DATABASE `{db}`"));
}
