//! Issue 10, items 4 and 5, and the row counts recorded at dump time:
//! a multi-database MariaDB snapshot is one point in time, the GTID printed
//! at the end of a dump is recorded, and the rows counted in the dump
//! stream equal the rows in the server.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::harness::{Env, describe};
use crate::servers::{mysql, mysql_url, postgres_url, psql, unique};

/// Accounts per database; every one starts at `START` in both databases.
const ACCOUNTS: u32 = 50;
const START: i64 = 1_000;

fn write_config(env: &Env, body: &str) -> String {
    let path = env.path("nfrepo.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// A `mysql` client that commits, until `stop`, transactions moving one
/// unit from an account in `a` to the same account in `b` and counting
/// them in `a`.meta: the sum over both databases never changes. Returns
/// the number of transactions sent.
fn transfer_writer(a: &str, b: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut client = mysql_client("");
    let (a, b) = (a.to_owned(), b.to_owned());
    std::thread::spawn(move || {
        let mut stdin = client.stdin.take().unwrap();
        let mut sent = 0_u64;
        while !stop.load(Ordering::Relaxed) {
            let id = sent % u64::from(ACCOUNTS) + 1;
            writeln!(
                stdin,
                "START TRANSACTION; UPDATE `{a}`.acct SET amount = amount - 1 WHERE id = {id}; \
                 UPDATE `{b}`.acct SET amount = amount + 1 WHERE id = {id}; \
                 UPDATE `{a}`.meta SET n = n + 1; COMMIT;"
            )
            .unwrap();
            sent += 1;
            if sent.is_multiple_of(20) {
                // Let each batch commit before the next one is queued.
                writeln!(stdin, "DO SLEEP(0.002);").unwrap();
            }
        }
        drop(stdin);
        let status = client.wait().unwrap();
        assert!(status.success(), "the writer's mysql client failed: {status}");
        sent
    })
}

fn sum(db: &str) -> i64 {
    mysql(&format!("SELECT SUM(amount) FROM `{db}`.acct")).parse().unwrap()
}

fn meta(db: &str) -> u64 {
    mysql(&format!("SELECT n FROM `{db}`.meta")).parse().unwrap()
}

/// Issue 10, item 4: with one mysqldump per database, transactions that
/// wrote to both databases while the first was dumped were in the second
/// dump only (80 of them, reproduced). One `--single-transaction
/// --databases` dump sees both databases at one point in time.
#[test]
fn r10_cross_database_transactions_during_a_dump_stay_consistent() {
    let env = Env::new();
    env.init();
    let a = unique("nf_dca");
    let b = unique("nf_dcb");
    for db in [&a, &b] {
        mysql(&format!(
            "CREATE DATABASE `{db}`; USE `{db}`; \
             CREATE TABLE `{db}`.acct (id INT PRIMARY KEY, amount BIGINT NOT NULL) ENGINE=InnoDB; \
             INSERT INTO `{db}`.acct SELECT seq, {START} FROM seq_1_to_{ACCOUNTS};"
        ));
    }
    // Enough data in `a` that dumping it takes a while: with per-database
    // dumps, the writer commits between the two.
    mysql(&format!(
        "USE `{a}`; CREATE TABLE `{a}`.meta (n BIGINT NOT NULL) ENGINE=InnoDB; INSERT INTO `{a}`.meta VALUES (0); \
         CREATE TABLE `{a}`.padding (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB; \
         INSERT INTO `{a}`.padding SELECT seq, REPEAT(MD5(seq), 8) FROM seq_1_to_20000;"
    ));
    let total = 2 * i64::from(ACCOUNTS) * START;
    let config = write_config(
        &env,
        &format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"{}\"\ndatabases = [\"{a}\", \"{b}\"]\n",
            mysql_url()
        ),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = transfer_writer(&a, &b, Arc::clone(&stop));
    let wait_until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while meta(&a) < 200 {
        assert!(std::time::Instant::now() < wait_until, "the writer commits nothing");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = meta(&a);
    let out = env
        .cmd()
        .args(["--json", "--config", &config, "snapshot", "--source", "db"])
        .output()
        .unwrap();
    let after = meta(&a);
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(after > before, "no transaction committed during the dump ({before})");
    assert_eq!(sum(&a) + sum(&b), total, "the live invariant broke ({sent} transfers)");

    let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let extra = &snapshot["extra"];

    // Each file loads on its own into a database of another name.
    let restored_a = unique("nf_dcra");
    let restored_b = unique("nf_dcrb");
    for (db, into) in [(&a, &restored_a), (&b, &restored_b)] {
        let target = format!("{}/{into}", mysql_url());
        env.ok(&["restore", "db@latest", "--into", &target, "--database", db]);
    }
    let seen = meta(&restored_a);
    assert!(
        (before..=after).contains(&seen),
        "the dump saw {seen} transfers, outside [{before}, {after}]"
    );
    assert_eq!(
        sum(&restored_a) + sum(&restored_b),
        total,
        "the restored databases are not one point in time: {} in {a}, {} in {b}, after {seen} transfers",
        sum(&restored_a),
        sum(&restored_b)
    );
    assert_eq!(
        sum(&restored_a),
        i64::from(ACCOUNTS) * START - i64::try_from(seen).unwrap()
    );
    assert_eq!(
        extra[format!("dump.{a}.sql.rows.padding")],
        mysql(&format!("SELECT COUNT(*) FROM `{restored_a}`.padding"))
    );
    assert_eq!(extra["mysql.consistency"], "one-transaction", "{extra}");
    let commands: Vec<&str> = [&a, &b]
        .iter()
        .map(|db| extra[format!("dump.{db}.sql.command")].as_str().unwrap())
        .collect();
    assert_eq!(commands[0], commands[1], "both files come from one command");
    assert!(commands[0].contains(&format!("--databases {a} {b}")), "{}", commands[0]);
    for db in [&a, &b, &restored_a, &restored_b] {
        mysql(&format!("DROP DATABASE `{db}`"));
    }
}

/// `d-s-n` → `n` for domain `d` of a GTID position (`0-1-42,1-2-7`).
fn gtid_seq(position: &str, domain: &str) -> u64 {
    position
        .split(',')
        .map(str::trim)
        .find_map(|g| {
            let mut parts = g.split('-');
            (parts.next() == Some(domain)).then(|| parts.nth(1).unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no domain {domain} in {position:?}"))
}

/// Issue 10, item 5: MariaDB prints `gtid_slave_pos` at the end of the
/// dump, and only the first 64 KiB were read. Also the row-count contract:
/// the rows counted in the dump equal `COUNT(*)`, whatever the values hold.
#[test]
fn r10_a_dump_over_64_kib_records_its_gtid_and_the_real_row_counts() {
    let env = Env::new();
    env.init();
    let db = unique("nf_pos");
    let on = mysql("SELECT @@log_bin");
    assert_eq!(
        on, "1",
        "the test server must write a binary log (scripts/start-mariadb.sh)"
    );
    mysql(&format!(
        "CREATE DATABASE `{db}`; USE `{db}`; \
         CREATE TABLE t (id INT PRIMARY KEY, s TEXT, b BLOB) ENGINE=InnoDB; \
         INSERT INTO t SELECT seq, CONCAT('it''s (', seq, '),\\\\ \\'x\\'', CHAR(10), '\"; ', REPEAT('(,)', seq % 7)), \
           UNHEX(CONCAT(MD5(seq), '0A2C28')) FROM seq_1_to_3000; \
         INSERT INTO t VALUES (0, NULL, NULL); \
         CREATE TABLE `odd``name (x)` (v VARCHAR(20)) ENGINE=InnoDB; \
         INSERT INTO `odd``name (x)` VALUES ('a),('), (''), (NULL), ('\\\\'), (');'), ('\\n'), ('`'); \
         CREATE TABLE empty (id INT) ENGINE=InnoDB; \
         CREATE VIEW v AS SELECT id FROM t;"
    ));
    let config = write_config(
        &env,
        &format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"{}/{db}\"\n",
            mysql_url()
        ),
    );
    let before = mysql("SELECT @@gtid_binlog_pos");
    let snapshot = env.json(&["--config", &config, "snapshot", "--source", "db"]);
    let after = mysql("SELECT @@gtid_binlog_pos");
    let extra = &snapshot["extra"];
    let sql = format!("dump.{db}.sql");
    let bytes: u64 = extra[format!("{sql}.bytes")].as_str().unwrap().parse().unwrap();
    assert!(bytes > 4 * 65_536, "the dump is only {bytes} bytes");

    let gtid = extra["mysql.gtid"]
        .as_str()
        .unwrap_or_else(|| panic!("no GTID recorded: {extra}"));
    let domain = before.split('-').next().unwrap();
    let seq = gtid_seq(gtid, domain);
    assert!(
        (gtid_seq(&before, domain)..=gtid_seq(&after, domain)).contains(&seq),
        "GTID {gtid} outside [{before}, {after}]"
    );
    assert!(extra["mysql.binlog_file"].as_str().is_some(), "{extra}");
    let keys: Vec<&String> = extra.as_object().unwrap().keys().collect();
    let positions = keys
        .iter()
        .filter(|k| k.ends_with("binlog_file") || k.ends_with("gtid"))
        .count();
    assert_eq!(positions, 2, "one binlog file and one GTID: {keys:?}");

    for (table, quoted) in [("t", "t"), ("odd`name (x)", "`odd``name (x)`"), ("empty", "empty")] {
        let real = mysql(&format!("SELECT COUNT(*) FROM `{db}`.{quoted}"));
        assert_eq!(extra[format!("{sql}.rows.{table}")], real.as_str(), "{table}: {extra}");
    }
    assert!(extra[format!("{sql}.rows.v")].is_null(), "a view has no rows: {extra}");
    mysql(&format!("DROP DATABASE `{db}`"));
}

/// The row-count contract on PostgreSQL: the data lines of each COPY,
/// whatever the values hold, and the per-database consistency stated.
#[test]
fn r10_postgres_dumps_record_real_row_counts_and_their_consistency() {
    let env = Env::new();
    env.init();
    let db = unique("nf_pgrows");
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(
        &db,
        "CREATE SCHEMA \"My S\"; \
         CREATE TABLE \"My S\".\"T x\" (id int, v text); \
         INSERT INTO \"My S\".\"T x\" SELECT g, E'a\\tb\\nc\\\\.' || repeat('(,)', g % 5) FROM generate_series(1, 2500) g; \
         INSERT INTO \"My S\".\"T x\" VALUES (0, E'\\\\.'), (-1, NULL), (-2, ''); \
         CREATE TABLE e (); INSERT INTO e DEFAULT VALUES; INSERT INTO e DEFAULT VALUES; \
         CREATE TABLE none (id int); \
         CREATE TABLE p (id int) PARTITION BY RANGE (id); \
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100); INSERT INTO p SELECT generate_series(0, 41); \
         CREATE TABLE par (id int); CREATE TABLE chi () INHERITS (par); \
         INSERT INTO par VALUES (1); INSERT INTO chi VALUES (2), (3);",
    );
    let config = write_config(
        &env,
        &format!(
            "[sources.pg]\nkind = \"postgres\"\nconnection = \"{}/{db}\"\n",
            postgres_url()
        ),
    );
    let snapshot = env.json(&["--config", &config, "snapshot", "--source", "pg"]);
    let extra = &snapshot["extra"];
    assert_eq!(extra["postgres.consistency"], "per-database", "{extra}");
    let sql = format!("dump.{db}.sql");
    for (table, quoted) in [
        ("My S.T x", "\"My S\".\"T x\""),
        ("public.e", "e"),
        ("public.none", "none"),
        ("public.p1", "p1"),
        // An inheritance parent's COPY holds its own rows only.
        ("public.par", "ONLY par"),
        ("public.chi", "chi"),
    ] {
        let real = psql(&db, &format!("SELECT count(*) FROM {quoted}"));
        assert_eq!(extra[format!("{sql}.rows.{table}")], real.as_str(), "{table}: {extra}");
    }
    psql("postgres", &format!("DROP DATABASE \"{db}\""));
}

/// A `mysql` client reading SQL on its standard input, connected to `db`
/// (none when empty).
fn mysql_client(db: &str) -> std::process::Child {
    let url = mysql_url();
    let (host, port) = url.rsplit_once('@').unwrap().1.split_once(':').unwrap();
    Command::new("mysql")
        .args(["--no-defaults", "--protocol=TCP", "--batch", "--user=root"])
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .args((!db.is_empty()).then_some(db))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a mysql client")
}

/// Runs a script (with `DELIMITER`s) in `db` through `mysql`'s standard input.
fn mysql_script(db: &str, script: &str) {
    let mut client = mysql_client(db);
    client.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(client.wait().unwrap().success(), "mysql script failed:\n{script}");
}

/// Each file of a split dump is a standalone dump: it loads under another
/// name, with its routines, triggers, events and views, even where the
/// original database no longer exists (mysqldump names it in the character
/// set switches around routines; those now name no database).
#[test]
fn r10_each_split_file_restores_under_another_name_with_its_routines() {
    let env = Env::new();
    env.init();
    let a = unique("nf_spa");
    let b = unique("nf_spb");
    for db in [&a, &b] {
        mysql(&format!("CREATE DATABASE `{db}` CHARACTER SET latin1"));
    }
    mysql_script(
        &a,
        "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20)) ENGINE=InnoDB;\n\
         INSERT INTO t VALUES (1, 'USE `x`;'), (2, 'a\\nb');\n\
         CREATE VIEW v AS SELECT id FROM t;\n\
         DELIMITER ;;\n\
         CREATE PROCEDURE p() BEGIN\nINSERT INTO t VALUES (3, 'p');\nEND;;\n\
         CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.s = UPPER(NEW.s);;\n\
         CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1;;\n\
         DELIMITER ;\n",
    );
    mysql_script(&b, "CREATE TABLE u (id INT) ENGINE=InnoDB; INSERT INTO u VALUES (7);");
    mysql(&format!("ALTER DATABASE `{a}` CHARACTER SET utf8mb4"));
    let config = write_config(
        &env,
        &format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"{}\"\ndatabases = [\"{a}\", \"{b}\"]\n",
            mysql_url()
        ),
    );
    env.json(&["--config", &config, "snapshot", "--source", "db"]);
    let dump = env.ok(&["cat", &format!("db@latest:{a}.sql")]);
    assert!(!dump.contains(&format!("ALTER DATABASE `{a}`")), "{dump}");
    for db in [&a, &b] {
        mysql(&format!("DROP DATABASE `{db}`"));
    }

    let fresh = unique("nf_spr");
    env.ok(&[
        "restore",
        "db@latest",
        "--into",
        &format!("{}/{fresh}", mysql_url()),
        "--database",
        &a,
    ]);
    let schema = |sql: &str| mysql(&sql.replace("DB", &fresh));
    assert_eq!(schema("SELECT GROUP_CONCAT(id ORDER BY id) FROM `DB`.v"), "1,2");
    assert_eq!(
        schema("SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'DB' AND routine_name = 'p'"),
        "1"
    );
    assert_eq!(
        schema("SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'DB' AND trigger_name = 'tr'"),
        "1"
    );
    assert_eq!(
        schema("SELECT COUNT(*) FROM information_schema.events WHERE event_schema = 'DB' AND event_name = 'ev'"),
        "1"
    );
    let gone = mysql(&format!(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name IN ('{a}', '{b}')"
    ));
    assert_eq!(gone, "0", "restoring under another name recreated an original database");
    mysql(&format!("DROP DATABASE `{fresh}`"));
}
