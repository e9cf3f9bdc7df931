//! Issue 10, items 1–3 and 11: `restore --into mysql://…` and
//! `postgres://…` never leave the live database worse. Faults are injected
//! as they happen in production — a statement rejected halfway, an
//! oversized row, `kill -9` of nfrepo during the load, the server killing
//! the loading connection, sessions holding the database — and after each
//! the live database holds exactly its rows from before, the command says
//! what happened, and no staging copy is left (or the next run removes it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, describe};
use crate::servers::{mysql, mysql_url, pg_tool, postgres_url, psql, unique};

const STAGING: &str = "__nfrepo_restore_";
const BEFORE: &str = "__nfrepo_before_";

/// Every restore into the MariaDB server first finishes any switch a dead
/// process left journaled (`MysqlTarget::recover_switch`), whichever
/// database it restores. The tests that kill switches on purpose assert
/// which restore finishes them and what it reports, so they run alone
/// among this file's tests, whose restores would otherwise finish those
/// switches first (correctly: only one restore claims a switch).
static SWITCHES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn sharing_the_server() -> std::sync::RwLockReadGuard<'static, ()> {
    SWITCHES.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn killing_switches() -> std::sync::RwLockWriteGuard<'static, ()> {
    SWITCHES.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mysql_digest(db: &str) -> String {
    mysql(&format!(
        "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', id, v))) FROM `{db}`.t"
    ))
}

fn pg_digest(db: &str) -> String {
    psql(
        db,
        "SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t",
    )
}

fn mysql_databases_like(prefix: &str) -> Vec<String> {
    mysql(&format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{}%'",
        prefix.replace('_', "\\_")
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

fn pg_databases_like(prefix: &str) -> Vec<String> {
    psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE starts_with(datname, '{prefix}') ORDER BY 1"),
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// A live MariaDB database with `rows` rows in `t`.
fn mysql_live(rows: u32) -> String {
    let db = unique("nf_live");
    mysql(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(64)); \
         USE `{db}`; INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_{rows};"
    ));
    db
}

/// A live PostgreSQL database with `rows` rows in `t`.
fn pg_live(rows: u32) -> String {
    let db = unique("nf_live");
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(
        &db,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"
        ),
    );
    db
}

/// One of the two servers, for tests that run against both.
#[derive(Clone, Copy)]
enum Server {
    Mysql,
    Postgres,
}

impl Server {
    const BOTH: [Self; 2] = [Self::Mysql, Self::Postgres];

    fn kind(self) -> &'static str {
        match self {
            Self::Mysql => "mysql",
            Self::Postgres => "postgres",
        }
    }

    fn url(self) -> String {
        match self {
            Self::Mysql => mysql_url(),
            Self::Postgres => postgres_url(),
        }
    }

    fn live(self, rows: u32) -> String {
        match self {
            Self::Mysql => mysql_live(rows),
            Self::Postgres => pg_live(rows),
        }
    }

    fn digest(self, db: &str) -> String {
        match self {
            Self::Mysql => mysql_digest(db),
            Self::Postgres => pg_digest(db),
        }
    }

    fn databases_like(self, prefix: &str) -> Vec<String> {
        match self {
            Self::Mysql => mysql_databases_like(prefix),
            Self::Postgres => pg_databases_like(prefix),
        }
    }

    fn sleep(self, secs: u32) -> String {
        match self {
            Self::Mysql => format!("SELECT SLEEP({secs});"),
            Self::Postgres => format!("SELECT pg_sleep({secs});"),
        }
    }

    fn drop(self, db: &str) {
        match self {
            Self::Mysql => drop(mysql(&format!("DROP DATABASE `{db}`"))),
            Self::Postgres => drop(psql("postgres", &format!("DROP DATABASE \"{db}\""))),
        }
    }
}

/// A repository with a configured source `db` of `kind` on the test server.
fn env_with_source(kind: &str, url: &str) -> (Env, String) {
    env_with_source_lines(kind, url, "")
}

/// [`env_with_source`] with more lines in the source's section.
fn env_with_source_lines(kind: &str, url: &str, lines: &str) -> (Env, String) {
    let env = Env::new();
    env.init();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!("[sources.db]\nkind = \"{kind}\"\nconnection = \"{url}\"\n{lines}"),
    )
    .unwrap();
    (env, config.display().to_string())
}

/// Stores `sql` as the dump `app.sql` of source `db` (so of its kind).
fn store_dump(env: &Env, config: &str, sql: &[u8]) {
    let mut child = env
        .cmd()
        .args([
            "--config", config, "snapshot", "--stdin", "--name", "app.sql", "--source", "db",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sql).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// `CREATE TABLE t` and `rows` rows, in MariaDB's or PostgreSQL's syntax.
fn table_sql(rows: u32, offset: u32) -> String {
    let values: Vec<String> = (1..=rows).map(|i| format!("({i}, 'new-{}')", i + offset)).collect();
    format!(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64));\nINSERT INTO t VALUES {};\n",
        values.join(", ")
    )
}

fn restore(env: &Env, config: &str, into: &str, extra: &[&str]) -> Command {
    let mut cmd = env.cmd();
    cmd.args(["--config", config, "restore", "db@latest", "--into", into])
        .args(extra);
    cmd
}

/// Asserts exit `exit`, the codes in `codes` and a statement that the live database is unchanged.
fn assert_failed(out: &std::process::Output, exit: i32, codes: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(exit), "{}", describe(out));
    for code in codes {
        assert!(stderr.contains(code), "stderr lacks {code}:\n{stderr}");
    }
    assert!(
        stderr.contains("the live database is unchanged"),
        "the error does not say what became of the live database:\n{stderr}"
    );
    stderr
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_9(child: &mut Child) {
    // By the child's own pid: the process this test started.
    let status = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
}

// Issue 10, item 1: a statement rejected halfway dropped the live database.
#[test]
fn mysql_a_statement_failing_halfway_leaves_the_live_database_as_it_was() {
    let _server = sharing_the_server();
    let live = mysql_live(500);
    let before = mysql_digest(&live);
    let (env, config) = env_with_source("mysql", &mysql_url());
    let mut sql = table_sql(200, 0);
    sql.push_str("INSERT INTO no_such_table VALUES (1);\n");
    sql.push_str("INSERT INTO t VALUES (9999, 'after the error');\n");
    store_dump(&env, &config, sql.as_bytes());
    let out = restore(&env, &config, &format!("{}/{live}", mysql_url()), &["--force"])
        .output()
        .unwrap();
    let stderr = assert_failed(&out, 13, &["RESTORE_FAILED/LOAD_FAILED", "no_such_table"]);
    assert!(stderr.contains(&format!("{live}{STAGING}")), "{stderr}");
    assert_eq!(mysql_digest(&live), before, "the live database changed");
    assert!(
        mysql_databases_like(&format!("{live}{STAGING}")).is_empty(),
        "staging copy left"
    );
    assert!(mysql_databases_like(&format!("{live}{BEFORE}")).is_empty());
    mysql(&format!("DROP DATABASE `{live}`"));
}

// Issue 10, item 1: a row larger than the server's max_allowed_packet.
#[test]
fn mysql_an_oversized_row_leaves_the_live_database_as_it_was() {
    let _server = sharing_the_server();
    let live = mysql_live(300);
    let before = mysql_digest(&live);
    let packet: usize = mysql("SELECT @@global.max_allowed_packet").parse().unwrap();
    let (env, config) = env_with_source("mysql", &mysql_url());
    let mut sql = table_sql(100, 0).into_bytes();
    sql.extend_from_slice(b"CREATE TABLE big (id INT, b LONGTEXT);\nINSERT INTO big VALUES (1, '");
    sql.resize(sql.len() + packet + 1024, b'x');
    sql.extend_from_slice(b"');\n");
    store_dump(&env, &config, &sql);
    let out = restore(&env, &config, &format!("{}/{live}", mysql_url()), &["--force"])
        .output()
        .unwrap();
    assert_failed(&out, 13, &["RESTORE_FAILED/LOAD_FAILED"]);
    assert_eq!(mysql_digest(&live), before, "the live database changed");
    assert!(
        mysql_databases_like(&format!("{live}{STAGING}")).is_empty(),
        "staging copy left"
    );
    mysql(&format!("DROP DATABASE `{live}`"));
}

// Issue 10, item 2.
#[test]
fn postgres_a_statement_failing_halfway_leaves_the_live_database_as_it_was() {
    let _server = sharing_the_server();
    let live = pg_live(400);
    let before = pg_digest(&live);
    let (env, config) = env_with_source("postgres", &postgres_url());
    let mut sql = table_sql(200, 0);
    sql.push_str("INSERT INTO no_such_table VALUES (1);\n");
    store_dump(&env, &config, sql.as_bytes());
    let out = restore(&env, &config, &format!("{}/{live}", postgres_url()), &["--force"])
        .output()
        .unwrap();
    assert_failed(&out, 13, &["RESTORE_FAILED/LOAD_FAILED", "no_such_table"]);
    assert_eq!(pg_digest(&live), before, "the live database changed");
    assert!(
        pg_databases_like(&format!("{live}{STAGING}")).is_empty(),
        "staging copy left"
    );
    assert!(pg_databases_like(&format!("{live}{BEFORE}")).is_empty());
    psql("postgres", &format!("DROP DATABASE \"{live}\""));
}

// Issue 10, item 3: kill -9 of nfrepo during the load; the next restore
// removes the staging copy it left, and never switches it in.
#[test]
fn kill_9_during_the_load_never_touches_the_live_database() {
    let _server = sharing_the_server();
    for server in Server::BOTH {
        let (kind, url, live) = (server.kind(), server.url(), server.live(500));
        let before = server.digest(&live);
        let (env, config) = env_with_source(kind, &url);
        let sleep = server.sleep(3);
        // The client sleeps while the rest of the dump (more than a pipe
        // holds) waits: nfrepo is killed before it has sent the end.
        let mut sql = format!("{}{sleep}\n", table_sql(100, 0));
        for block in 0..40 {
            let values: Vec<String> = (0..1000)
                .map(|i| format!("({}, 'late-{i}')", 1000 + block * 1000 + i))
                .collect();
            sql.push_str(&format!("INSERT INTO t VALUES {};\n", values.join(", ")));
        }
        assert!(sql.len() > 500_000);
        store_dump(&env, &config, sql.as_bytes());
        let into = format!("{url}/{live}");
        let mut child = restore(&env, &config, &into, &["--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let staging = format!("{live}{STAGING}");
        wait_until("the staging database", || !server.databases_like(&staging).is_empty());
        std::thread::sleep(Duration::from_millis(500));
        kill_9(&mut child);
        // The client sees the end of its input; whatever it does with it,
        // nothing reaches the live database.
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(server.digest(&live), before, "{kind}: the live database changed");
        let left = server.databases_like(&staging);
        assert_eq!(left.len(), 1, "{kind}: the staging copy is expected until the next run");
        if let Server::Postgres = server {
            // psql read the end of input inside nfrepo's transaction: nothing committed.
            let tables = psql(&left[0], "SELECT count(*) FROM pg_tables WHERE tablename = 't'");
            assert_eq!(tables, "0", "a partial load was committed in {}", left[0]);
        }
        // The next restore removes it (its creator is gone) and says so.
        let out = restore(&env, &config, &into, &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}: staging database left by an interrupted restore", left[0]))
                && stderr.contains("gone): removed"),
            "{stderr}"
        );
        assert!(
            server.databases_like(&staging).is_empty(),
            "{kind}: the leftover staging copy was not removed"
        );
        assert_eq!(server.digest(&live), before);
        server.drop(&live);
    }
}

// Issue 10, items 1–3: the server kills the loading connection.
#[test]
fn a_connection_killed_by_the_server_leaves_the_live_database_as_it_was() {
    let _server = sharing_the_server();
    for server in Server::BOTH {
        let (kind, url, live) = (server.kind(), server.url(), server.live(500));
        let before = server.digest(&live);
        let (env, config) = env_with_source(kind, &url);
        let sql = format!("{}{}\n", table_sql(100, 0), server.sleep(30));
        store_dump(&env, &config, sql.as_bytes());
        let child = restore(&env, &config, &format!("{url}/{live}"), &["--force"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let staging = format!("{live}{STAGING}");
        if let Server::Mysql = server {
            let find = format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB LIKE '{}%' AND INFO LIKE 'SELECT SLEEP%'",
                staging.replace('_', "\\_")
            );
            wait_until("the loading session", || !mysql(&find).is_empty());
            mysql(&format!("KILL {}", mysql(&find)));
        } else {
            let find = format!(
                "SELECT pid FROM pg_stat_activity WHERE starts_with(datname, '{staging}') AND query LIKE 'SELECT pg_sleep%'"
            );
            wait_until("the loading session", || !psql("postgres", &find).is_empty());
            psql("postgres", &format!("SELECT pg_terminate_backend(({find}))"));
        }
        let out = child.wait_with_output().unwrap();
        assert_failed(&out, 13, &["RESTORE_FAILED/LOAD_FAILED"]);
        assert_eq!(server.digest(&live), before, "{kind}: the live database changed");
        assert!(server.databases_like(&staging).is_empty(), "{kind}: staging copy left");
        server.drop(&live);
    }
}

// Issue 10, item 1: a forced restore replaces the content after
// verification, with views, routines and triggers, and keeps the old
// database aside (or drops it with --drop-old).
#[test]
fn mysql_a_forced_restore_switches_in_the_dump_and_keeps_the_old_database() {
    let _server = sharing_the_server();
    let src = unique("nf_src");
    mysql(&format!(
        "CREATE DATABASE `{src}`; CREATE TABLE `{src}`.t (id INT PRIMARY KEY, v VARCHAR(64)); \
         USE `{src}`; INSERT INTO t SELECT seq, CONCAT('new-', seq) FROM seq_1_to_50; \
         CREATE TABLE `{src}`.audit (id INT); \
         CREATE VIEW `{src}`.first_ten AS SELECT id FROM `{src}`.t WHERE id <= 10; \
         CREATE VIEW `{src}`.first_five AS SELECT id FROM `{src}`.first_ten WHERE id <= 5; \
         CREATE TRIGGER t_audit AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id); \
         CREATE FUNCTION `{src}`.twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;"
    ));
    let (env, config) = env_with_source("mysql", &format!("{}/{src}", mysql_url()));
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    let expected = mysql_digest(&src);

    let live = mysql_live(80);
    // A live view with the name of a table of the dump.
    mysql(&format!("CREATE VIEW `{live}`.audit AS SELECT id FROM `{live}`.t"));
    let old = mysql_digest(&live);
    let into = format!("{}/{live}", mysql_url());
    // Without --force: refused, nothing changed.
    let out = restore(&env, &config, &into, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    assert_eq!(mysql_digest(&live), old);

    let out = restore(&env, &config, &into, &["--force"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{live}{STAGING}")),
        "the plan was not printed:\n{stderr}"
    );
    assert_eq!(mysql_digest(&live), expected, "the live database is not the dump");
    assert_eq!(mysql(&format!("SELECT COUNT(*) FROM `{live}`.first_five")), "5");
    assert_eq!(mysql(&format!("SELECT `{live}`.twice(21)")), "42");
    mysql(&format!("INSERT INTO `{live}`.t VALUES (1000, 'x')"));
    assert_eq!(
        mysql(&format!("SELECT COUNT(*) FROM `{live}`.audit WHERE id = 1000")),
        "1"
    );
    assert_eq!(
        mysql(&format!(
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{live}' AND TABLE_NAME = 'audit'"
        )),
        "BASE TABLE"
    );
    let kept = mysql_databases_like(&format!("{live}{BEFORE}"));
    assert_eq!(kept.len(), 1, "the old database is not kept aside: {kept:?}");
    assert_eq!(mysql_digest(&kept[0]), old, "the kept copy is not the old database");
    assert_eq!(mysql(&format!("SELECT COUNT(*) FROM `{}`.audit", kept[0])), "80");
    assert!(mysql_databases_like(&format!("{live}{STAGING}")).is_empty());

    // --drop-old: the next forced restore leaves no second copy behind.
    let out = restore(&env, &config, &into, &["--force", "--drop-old"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(mysql_digest(&live), expected);
    assert_eq!(mysql_databases_like(&format!("{live}{BEFORE}")), kept);
    mysql(&format!(
        "DROP DATABASE `{src}`; DROP DATABASE `{live}`; DROP DATABASE `{}`",
        kept[0]
    ));
}

// Issue 10, item 2: sessions block the switch unless --terminate-sessions;
// the old database is kept as DB__nfrepo_before_<time>.
#[test]
fn postgres_a_forced_restore_waits_for_sessions_and_keeps_the_old_database() {
    let _server = sharing_the_server();
    let src = pg_live(60);
    let (env, config) = env_with_source("postgres", &format!("{}/{src}", postgres_url()));
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    let expected = pg_digest(&src);
    let live = pg_live(90);
    let old = pg_digest(&live);
    let into = format!("{}/{live}", postgres_url());
    // Database-level grants and settings, which a per-database dump lacks.
    let reader = unique("nf_reader");
    psql(
        "postgres",
        &format!(
            "CREATE ROLE {reader}; GRANT CONNECT ON DATABASE \"{live}\" TO {reader}; \
             REVOKE CONNECT ON DATABASE \"{live}\" FROM PUBLIC; ALTER DATABASE \"{live}\" SET work_mem = '7MB'"
        ),
    );

    // A session on the live database.
    let url = postgres_url();
    let (user, hostport) = url.trim_start_matches("postgres://").split_once('@').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let mut session = Command::new(pg_tool("psql"))
        .args([
            "-X",
            "-h",
            host,
            "-p",
            port,
            "-U",
            user,
            "-d",
            &live,
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the session", || {
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{live}'"),
        ) != "0"
    });
    let out = restore(&env, &config, &into, &["--force"]).output().unwrap();
    let stderr = assert_failed(
        &out,
        14,
        &["RESTORE_CONFLICT/SESSIONS_BLOCKING", "application \"psql\"", "pid "],
    );
    assert!(stderr.contains("--terminate-sessions"), "{stderr}");
    assert_eq!(pg_digest(&live), old);
    assert!(pg_databases_like(&format!("{live}{STAGING}")).is_empty());
    assert!(
        session.try_wait().unwrap().is_none(),
        "the session was killed without --terminate-sessions"
    );

    let out = restore(&env, &config, &into, &["--force", "--terminate-sessions"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let _ = session.wait();
    assert_eq!(pg_digest(&live), expected);
    let kept = pg_databases_like(&format!("{live}{BEFORE}"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(pg_digest(&kept[0]), old);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&kept[0]));
    // Both accept connections: the settings were given back.
    assert_eq!(
        psql(
            "postgres",
            &format!(
                "SELECT bool_and(datallowconn) FROM pg_database WHERE datname IN ('{live}', '{}')",
                kept[0]
            )
        ),
        "t"
    );
    assert_eq!(
        psql(
            "postgres",
            &format!(
                "SELECT has_database_privilege('{reader}', '{live}', 'CONNECT')::text || ' ' || \
                 (SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s JOIN pg_database d \
                  ON d.oid = s.setdatabase WHERE d.datname = '{live}' AND s.setrole = 0) || ' ' || \
                 (SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a \
                  WHERE d.datname = '{live}' AND a.grantee = 0 AND a.privilege_type = 'CONNECT')"
            )
        ),
        "true work_mem=7MB 0",
        "the new database lacks the old one's grants or settings"
    );
    for db in [&src, &live, &kept[0]] {
        psql("postgres", &format!("DROP DATABASE \"{db}\""));
    }
    psql("postgres", &format!("DROP ROLE {reader}"));
}

// Issue 10, item 11: the server's own databases are never replaced.
#[test]
fn maintenance_databases_are_never_replaced() {
    let _server = sharing_the_server();
    let (env, config) = env_with_source("postgres", &postgres_url());
    store_dump(&env, &config, table_sql(3, 0).as_bytes());
    for db in ["postgres", "template1"] {
        let out = restore(&env, &config, &format!("{}/{db}", postgres_url()), &["--force"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(13), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("RESTORE_FAILED/PROTECTED_DATABASE"));
    }
    assert!(pg_databases_like(&format!("postgres{STAGING}")).is_empty());
    // The report's case: a snapshot holding `postgres.sql`, restored with no
    // database in the URL, so every dump into its own name.
    let app = pg_live(20);
    let before = pg_digest(&app);
    let (env, config) = env_with_source_lines(
        "postgres",
        &postgres_url(),
        &format!("databases = [\"postgres\", \"{app}\"]\n"),
    );
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    let out = restore(&env, &config, &postgres_url(), &["--force"]).output().unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RESTORE_FAILED/PROTECTED_DATABASE")
            && stderr.contains("postgres is the server's own database"),
        "{stderr}"
    );
    assert_eq!(pg_digest(&app), before);
    assert!(pg_databases_like(&format!("{app}{STAGING}")).is_empty());
    psql("postgres", &format!("DROP DATABASE \"{app}\""));
    let (env, config) = env_with_source("mysql", &mysql_url());
    store_dump(&env, &config, table_sql(3, 0).as_bytes());
    let out = restore(&env, &config, &format!("{}/mysql", mysql_url()), &["--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RESTORE_FAILED/PROTECTED_DATABASE"));
    assert!(mysql_databases_like(&format!("mysql{STAGING}")).is_empty());
}

/// The password variable of the sources [`mysql_user_source`] writes.
const PW_VAR: &str = "NF_E2E_DB_PW";

/// A MariaDB user with a password and `grants` (`USER` stands for it), and a
/// repository whose source `db` connects as that user with `password_env`.
/// Returns the user, its password, the server URL with the user, the
/// repository and the configuration file.
fn mysql_user_source(grants: &str) -> (String, String, String, Env, String) {
    let user = unique("nfu");
    let password = format!("pw-{}", unique("x"));
    mysql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; {}",
        grants.replace("USER", &format!("'{user}'@'%'"))
    ));
    let server = mysql_url().replace("root@", &format!("{user}@"));
    let (env, config) = env_with_source_lines("mysql", &server, &format!("password_env = \"{PW_VAR}\"\n"));
    (user, password, server, env, config)
}

// Issue 10, "Also": the restore uses the configured source's password.
#[test]
fn a_restore_into_a_configured_server_uses_that_sources_password() {
    let _server = sharing_the_server();
    let (user, password, server, env, config) = mysql_user_source("GRANT ALL ON *.* TO USER;");
    store_dump(&env, &config, table_sql(7, 0).as_bytes());
    let fresh = unique("nf_cred");
    let out = restore(&env, &config, &format!("{server}/{fresh}"), &[])
        .env(PW_VAR, &password)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the credentials of source db"));
    assert_eq!(mysql(&format!("SELECT COUNT(*) FROM `{fresh}`.t")), "7");
    mysql(&format!("DROP DATABASE `{fresh}`; DROP USER '{user}'@'%';"));
}

// Issue 10, item 1: a switch that fails after the RENAME TABLE (here: the
// restoring user may not create views in the live database) is undone, and
// the live database is exactly as it was.
#[test]
fn mysql_a_switch_failing_after_the_rename_is_undone() {
    let _server = sharing_the_server();
    let live = mysql_live(500);
    let before = mysql_digest(&live);
    let own = format!("{}\\_\\_nfrepo\\_%", live.replace('_', "\\_"));
    let (user, password, server, env, config) = mysql_user_source(&format!(
        "GRANT ALL PRIVILEGES ON `{own}`.* TO USER; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, TRIGGER, \
         CREATE ROUTINE, ALTER ROUTINE, EVENT ON `{live}`.* TO USER;"
    ));
    let sql = format!("{}CREATE VIEW v AS SELECT id FROM t;\n", table_sql(50, 0));
    store_dump(&env, &config, sql.as_bytes());
    let out = restore(&env, &config, &format!("{server}/{live}"), &["--force"])
        .env(PW_VAR, &password)
        .output()
        .unwrap();
    assert_failed(
        &out,
        13,
        &["RESTORE_FAILED/SWITCH_FAILED", "CREATE VIEW command denied"],
    );
    assert_eq!(mysql_digest(&live), before, "the live database changed");
    assert_eq!(
        mysql(&format!(
            "SELECT GROUP_CONCAT(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{live}'"
        )),
        "t"
    );
    assert!(
        mysql_databases_like(&format!("{live}{STAGING}")).is_empty(),
        "staging copy left"
    );
    assert!(
        mysql_databases_like(&format!("{live}{BEFORE}")).is_empty(),
        "empty kept copy left"
    );
    mysql(&format!("DROP DATABASE `{live}`; DROP USER '{user}'@'%';"));
}

// Every dump of a multi-database snapshot is staged and verified before the
// first switch; then each database is replaced and its old copy kept.
#[test]
fn mysql_a_multi_database_restore_replaces_every_database() {
    let _server = sharing_the_server();
    let (a, b) = (mysql_live(30), mysql_live(40));
    let (digest_a, digest_b) = (mysql_digest(&a), mysql_digest(&b));
    let (env, config) = env_with_source_lines("mysql", &mysql_url(), &format!("databases = [\"{a}\", \"{b}\"]\n"));
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    mysql(&format!(
        "DELETE FROM `{a}`.t WHERE id > 10; DELETE FROM `{b}`.t WHERE id > 5"
    ));
    let out = restore(&env, &config, &mysql_url(), &["--force", "--drop-old"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for db in [&a, &b] {
        assert!(
            stderr.contains(&format!("{db}: load {db}.sql into new database {db}{STAGING}")),
            "{stderr}"
        );
        assert!(
            mysql_databases_like(&format!("{db}{BEFORE}")).is_empty(),
            "--drop-old kept {db}'s copy"
        );
        assert!(mysql_databases_like(&format!("{db}{STAGING}")).is_empty());
    }
    assert_eq!((mysql_digest(&a), mysql_digest(&b)), (digest_a, digest_b));
    mysql(&format!("DROP DATABASE `{a}`; DROP DATABASE `{b}`"));
}

/// The live database of the switch crash test: 80 rows in `t`, a table
/// `audit` its trigger fills, a view and a function.
fn mysql_live_with_objects() -> String {
    let live = mysql_live(80);
    mysql(&format!(
        "CREATE TABLE `{live}`.audit (id INT); \
         CREATE VIEW `{live}`.old_view AS SELECT id FROM `{live}`.t WHERE id <= 3; \
         USE `{live}`; \
         CREATE TRIGGER old_trigger AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id); \
         CREATE FUNCTION `{live}`.old_fn() RETURNS INT DETERMINISTIC RETURN 7;"
    ));
    live
}

/// Whether `db`'s trigger on `t` fills `audit` (one probe row, removed after).
fn mysql_trigger_fires(db: &str) -> bool {
    mysql(&format!("INSERT INTO `{db}`.t VALUES (100000, 'probe')"));
    let fired = mysql(&format!("SELECT COUNT(*) FROM `{db}`.audit WHERE id = 100000")) == "1";
    mysql(&format!(
        "DELETE FROM `{db}`.t WHERE id = 100000; DELETE FROM `{db}`.audit WHERE id = 100000"
    ));
    fired
}

// kill -9 at every step of the MariaDB switch: the live database's views
// and triggers are dropped before the RENAME TABLE and recreated after, so
// a crash in between used to lose them. The switch journal lets the next
// restore (into any database of the server) finish the switch: back to the
// live database as it was before the rename, forward to the restored one
// with a complete kept copy after it.
#[test]
fn mysql_kill_9_at_every_switch_step_is_finished_by_the_next_restore() {
    let _alone = killing_switches();
    let (src, env, config) = mysql_source_with_objects();
    let expected = mysql_digest(&src);
    for step in 1..=5 {
        let live = mysql_live_with_objects();
        let old = mysql_digest(&live);
        let into = format!("{}/{live}", mysql_url());
        let out = restore(&env, &config, &into, &["--force"])
            .env("NFREPO_FAILPOINT_MYSQL_SWITCH", format!("kill-after:{step}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), None, "step {step}: not killed: {}", describe(&out));
        assert_eq!(
            mysql_databases_like(&format!("{live}{STAGING}")).len(),
            1,
            "step {step}"
        );

        // The next restore, into another database of the server, finishes it.
        let other = unique("nf_other");
        let out = restore(&env, &config, &format!("{}/{other}", mysql_url()), &[])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "step {step}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("a switch into {live} was interrupted")),
            "step {step}: the recovery is not reported:\n{stderr}"
        );
        assert!(
            mysql_databases_like(&format!("{live}{STAGING}")).is_empty(),
            "step {step}: staging copy left"
        );
        let kept = mysql_databases_like(&format!("{live}{BEFORE}"));
        if step <= 2 {
            // Before the rename: the live database as it was, whole.
            assert!(stderr.contains("before its rename"), "step {step}:\n{stderr}");
            assert_eq!(mysql_digest(&live), old, "step {step}");
            assert_eq!(mysql(&format!("SELECT COUNT(*) FROM `{live}`.old_view")), "3");
            assert_eq!(mysql(&format!("SELECT `{live}`.old_fn()")), "7");
            assert!(mysql_trigger_fires(&live), "step {step}: the old trigger is lost");
            for db in &kept {
                mysql(&format!("DROP DATABASE `{db}`"));
            }
        } else {
            // After it: the restored database, whole, and a complete kept copy.
            assert!(stderr.contains("after its rename: completed"), "step {step}:\n{stderr}");
            assert_restored_with_kept_copy(&live, &expected, &old, &format!("step {step}"));
        }
        mysql(&format!("DROP DATABASE `{live}`; DROP DATABASE `{other}`"));
    }
    mysql(&format!("DROP DATABASE `{src}`"));
}

/// The live database `live` after a switch completed past its rename: the
/// restored rows (`expected`) with their view, function and trigger, and
/// one kept-aside copy holding `old` with the old objects (dropped here).
fn assert_restored_with_kept_copy(live: &str, expected: &str, old: &str, what: &str) {
    assert_eq!(mysql_digest(live), expected, "{what}");
    assert_eq!(mysql(&format!("SELECT COUNT(*) FROM `{live}`.new_view")), "5");
    assert_eq!(mysql(&format!("SELECT `{live}`.new_fn()")), "9");
    assert!(mysql_trigger_fires(live), "{what}: the restored trigger is lost");
    assert_eq!(
        mysql(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{live}' AND TABLE_NAME = 'old_view'"
        )),
        "0",
        "{what}: the old view is still live"
    );
    let kept = mysql_databases_like(&format!("{live}{BEFORE}"));
    assert_eq!(kept.len(), 1, "{what}: {kept:?}");
    let before = &kept[0];
    assert_eq!(mysql_digest(before), old, "{what}");
    assert_eq!(mysql(&format!("SELECT COUNT(*) FROM `{before}`.old_view")), "3");
    assert_eq!(mysql(&format!("SELECT `{before}`.old_fn()")), "7");
    assert!(mysql_trigger_fires(before), "{what}: the kept trigger is lost");
    mysql(&format!("DROP DATABASE `{before}`"));
}

/// Several restores find one dead switch at once (a crash, then restores
/// into several databases of the server): the one that claims it finishes
/// it, the others leave it alone, and a restore into that very database is
/// refused until it is finished; a claimant killed in turn is replaced by
/// the next restore. Used to fail with `FUNCTION new_fn already exists`
/// when two restores replayed the same journal.
#[test]
fn mysql_a_dead_switch_is_finished_by_one_restore_even_when_several_find_it() {
    let _alone = killing_switches();
    let (src, env, config) = mysql_source_with_objects();
    let expected = mysql_digest(&src);
    let live = mysql_live_with_objects();
    let old = mysql_digest(&live);
    let into = format!("{}/{live}", mysql_url());
    let out = restore(&env, &config, &into, &["--force"])
        .env("NFREPO_FAILPOINT_MYSQL_SWITCH", "kill-after:4")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "not killed: {}", describe(&out));

    // The first restore claims the switch and stops there.
    let first_into = unique("nf_other");
    let mut first = Parked(
        restore(&env, &config, &format!("{}/{first_into}", mysql_url()), &[])
            .env("NFREPO_FAILPOINT_MYSQL_RECOVER", "pause-after:1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = first.0.stderr.take().unwrap();
    let paused = BufReader::new(stderr)
        .lines()
        .map_while(std::result::Result::ok)
        .any(|line| line.contains("nfrepo failpoint: mysql recover paused after 1 steps"));
    assert!(paused, "the first restore did not reach the claimed switch");
    let claimant = format!("nfrepo process {}", first.0.id());

    // A restore into another database leaves the claimed switch alone.
    let second_into = unique("nf_other");
    let out = restore(&env, &config, &format!("{}/{second_into}", mysql_url()), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&claimant), "the claimant is not named:\n{stderr}");
    assert!(!stderr.contains("was interrupted"), "finished twice:\n{stderr}");
    assert_eq!(mysql_digest(&second_into), expected);
    assert_eq!(mysql_databases_like(&format!("{live}{STAGING}")).len(), 1);

    // A restore into the database being switched is refused, nothing changed.
    let out = restore(&env, &config, &into, &["--force"]).output().unwrap();
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RESTORE_CONFLICT"), "{stderr}");
    assert!(stderr.contains(&claimant), "{stderr}");
    assert_eq!(mysql_databases_like(&format!("{live}{STAGING}")).len(), 1);

    // The claimant dies: the next restore takes the switch over and finishes it.
    kill_9(&mut first.0);
    let third_into = unique("nf_other");
    let out = restore(&env, &config, &format!("{}/{third_into}", mysql_url()), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "a switch into {live} was interrupted after its rename: completed"
        )),
        "{stderr}"
    );
    assert!(mysql_databases_like(&format!("{live}{STAGING}")).is_empty());
    assert_restored_with_kept_copy(&live, &expected, &old, "after the takeover");
    mysql(&format!(
        "DROP DATABASE `{live}`; DROP DATABASE `{second_into}`; DROP DATABASE `{third_into}`; \
         DROP DATABASE IF EXISTS `{first_into}`; DROP DATABASE `{src}`"
    ));
}

/// Kills a restore parked at a failpoint however the test ends.
struct Parked(Child);

impl Drop for Parked {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A source database with rows, a view, a trigger and a function, snapshotted
/// as source `db`: its name, the environment and the config.
fn mysql_source_with_objects() -> (String, Env, String) {
    let src = unique("nf_src");
    mysql(&format!(
        "CREATE DATABASE `{src}`; CREATE TABLE `{src}`.t (id INT PRIMARY KEY, v VARCHAR(64)); \
         USE `{src}`; INSERT INTO t SELECT seq, CONCAT('new-', seq) FROM seq_1_to_50; \
         CREATE TABLE `{src}`.audit (id INT); \
         CREATE VIEW `{src}`.new_view AS SELECT id FROM `{src}`.t WHERE id <= 5; \
         CREATE TRIGGER new_trigger AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id); \
         CREATE FUNCTION `{src}`.new_fn() RETURNS INT DETERMINISTIC RETURN 9;"
    ));
    let (env, config) = env_with_source("mysql", &format!("{}/{src}", mysql_url()));
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    (src, env, config)
}
