//! Issue 13, items 5 and 6: a dump of a MariaDB or PostgreSQL snapshot
//! restored through the panel into a configured database server, approved
//! with a fresh TOTP code, staged, shown with its progress and audited with
//! who approved it.
//!
//! Needs `NFREPO_TEST_MYSQL_URL` and `NFREPO_TEST_POSTGRES_URL` (set by
//! `scripts/test.sh`); fails, never skips, without them.

use std::collections::BTreeMap;
use std::process::Command;

use nfrepo_sources::{Connection, DatabaseTarget, DumpSource, MysqlSource, PostgresSource, RunOptions};
use nfrepo_testing::unique_name as unique;
use reqwest::StatusCode;

use super::harness::{Client, Fixture, Reply, Setup};

fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: these tests need the servers scripts/test.sh starts"))
        .trim_end_matches('/')
        .to_owned()
}

fn output(mut cmd: Command) -> String {
    let out = cmd.output().expect("client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn mysql(sql: &str) -> String {
    let c = Connection::parse(&var("NFREPO_TEST_MYSQL_URL")).unwrap();
    let mut cmd = Command::new("mysql");
    cmd.args(["--no-defaults", "--protocol=TCP", "--batch", "--skip-column-names"])
        .arg(format!("--host={}", c.host))
        .arg(format!("--port={}", c.port.unwrap_or(3306)))
        .arg(format!("--user={}", c.user.unwrap_or_default()))
        .args(["-e", sql]);
    output(cmd)
}

fn psql(db: &str, sql: &str) -> String {
    let c = Connection::parse(&var("NFREPO_TEST_POSTGRES_URL")).unwrap();
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "--tuples-only", "--no-align", "--set=ON_ERROR_STOP=1"])
        .arg(format!("--host={}", c.host))
        .arg(format!("--port={}", c.port.unwrap_or(5432)))
        .arg(format!("--username={}", c.user.unwrap_or_default()))
        .args([format!("--dbname={db}"), "-c".to_owned(), sql.to_owned()]);
    output(cmd)
}

/// The panel with `name` as a database target on the server of `url_var`.
async fn fixture(name: &str, url_var: &str) -> Fixture {
    let connection = Connection::parse(&var(url_var)).unwrap();
    let target = DatabaseTarget::for_connection(connection).unwrap();
    Fixture::start_with(Setup::default(), BTreeMap::from([(name.to_owned(), target)])).await
}

async fn backup(fx: &Fixture, source: &str, dump: DumpSource) -> String {
    let report = nfrepo_sources::run_backup(&fx.repo, Box::new(dump), &RunOptions::new(source), &mut |_| {})
        .await
        .unwrap();
    report.id.to_hex()
}

async fn web_snapshot(fx: &Fixture) -> String {
    let all = fx.repo.readable_snapshots().await.unwrap();
    all.iter().find(|s| s.snapshot.source == "web").unwrap().id.to_hex()
}

async fn restore_entries(fx: &Fixture) -> Vec<nfrepo_format::AuditRecord> {
    let audit = nfrepo_engine::read_audit(&fx.repo, None).await.unwrap();
    audit
        .entries
        .into_iter()
        .filter(|e| e.record.operation == "serve restore")
        .map(|e| e.record)
        .collect()
}

async fn finished(client: &mut Client, id: u64) -> serde_json::Value {
    loop {
        let job = client.get(&format!("/api/restores/{id}")).await.json();
        if !job["outcome"].is_null() {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn assert_refused(reply: &Reply, status: StatusCode, code: &str, detail: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.headers["nfrepo-error"], code, "{}", reply.body);
    assert_eq!(reply.headers["nfrepo-error-detail"], detail, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_dump_is_restored_through_the_panel_into_a_configured_server() {
    let (src, dst) = (unique("nfp_src"), unique("nfp_dst"));
    mysql(&format!(
        "CREATE DATABASE {src}; USE {src}; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_500;"
    ));
    let fx = fixture("staging-db", "NFREPO_TEST_MYSQL_URL").await;
    let mut connection = Connection::parse(&var("NFREPO_TEST_MYSQL_URL")).unwrap();
    connection.database = None;
    let source = MysqlSource {
        connection,
        databases: vec![src.clone()],
        bin_dir: None,
    };
    let snapshot = backup(&fx, "shop", DumpSource::from(source)).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;

    // The snapshot's page offers the dump and the server, by name and URL without password.
    let page = client.get(&format!("/snapshots/{snapshot}")).await;
    assert!(page.body.contains("id=\"restore-db\""), "{}", page.body);
    assert!(
        page.body.contains(&format!("<option value=\"{src}\">{src}</option>")),
        "{}",
        page.body
    );
    let shown = format!("staging-db ({})", var("NFREPO_TEST_MYSQL_URL"));
    assert!(page.body.contains(&shown), "{}", page.body);

    let web = web_snapshot(&fx).await;
    let (dst_ref, csrf_ref) = (dst.as_str(), csrf.as_str());
    macro_rules! post {
        ($snapshot:expr, $database:expr, $code:expr) => {{
            let (snapshot, database): (&str, &str) = ($snapshot, $database);
            let code: &str = $code;
            let fields = [
                ("snapshot", snapshot),
                ("target", "staging-db"),
                ("database", database),
                ("into", dst_ref),
                ("code", code),
                ("csrf", csrf_ref),
            ];
            client.post_form("/restore", &fields).await
        }};
    }
    // A files snapshot into a database server: refused with its code.
    let reply = post!(&web, "", &fx.fresh_code());
    assert_refused(&reply, StatusCode::BAD_REQUEST, "RESTORE_FAILED", "WRONG_SOURCE_KIND");
    // A dump the snapshot does not hold.
    let reply = post!(&snapshot, "nfp_no_such_db", &fx.fresh_code());
    assert_refused(&reply, StatusCode::NOT_FOUND, "BACKUP_NOT_FOUND", "NO_SUCH_DATABASE");
    assert!(reply.body.contains(&format!("it has: {src}")), "{}", reply.body);

    let code = fx.fresh_code();
    let reply = post!(&snapshot, &src, &code);
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    // The same code never approves a second restore.
    let reply = post!(&snapshot, &src, &code);
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert!(reply.body.contains("already used"), "{}", reply.body);

    let job = finished(&mut client, 1).await;
    assert_eq!(job["outcome"]["ok"], true, "{job}");
    assert_eq!(job["approved_by"], "alice");
    assert_eq!(job["database"], src.as_str());
    assert_eq!(job["into"], format!("{}/{dst}", var("NFREPO_TEST_MYSQL_URL")));
    assert_eq!(job["outcome"]["files"], 1, "{job}");
    assert!(job["outcome"]["bytes"].as_u64().unwrap() > 500 * 10, "{job}");
    assert_eq!(job["phase"], "switching", "{job}");
    assert_eq!(mysql(&format!("SELECT COUNT(*), MAX(v) FROM {dst}.t")), "500\trow 99");
    // No staging copy is left behind.
    assert_eq!(mysql(&format!("SHOW DATABASES LIKE '{dst}\\_\\_nfrepo%'")), "");

    let entries = restore_entries(&fx).await;
    assert_eq!(entries.len(), 1, "only the approved restore ran");
    assert_eq!(entries[0].code, "");
    assert_eq!(entries[0].sources, ["shop"]);
    assert!(
        entries[0].message.contains("approved by alice with a fresh TOTP code"),
        "{}",
        entries[0].message
    );
    assert!(
        entries[0]
            .command
            .ends_with(&["--into".to_owned(), format!("{}/{dst}", var("NFREPO_TEST_MYSQL_URL"))]),
        "{:?}",
        entries[0].command
    );
    // The restores page shows it with its target.
    let page = client.get("/restores").await;
    assert!(page.body.contains(&format!("restored database {dst}")), "{}", page.body);

    // Again into the same database: it holds data, so without `force` the job fails with a conflict…
    let reply = post!(&snapshot, &src, &fx.fresh_code());
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let job = finished(&mut client, 2).await;
    assert_eq!(job["outcome"]["code"], "RESTORE_CONFLICT", "{job}");
    assert_eq!(restore_entries(&fx).await[1].code, "RESTORE_CONFLICT");
    assert_eq!(mysql(&format!("SELECT COUNT(*) FROM {dst}.t")), "500");
    fx.stop().await;
    mysql(&format!("DROP DATABASE {src}; DROP DATABASE {dst};"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_dump_is_restored_through_the_api_into_a_configured_server() {
    let (src, dst) = (unique("nfp_src"), unique("nfp_dst"));
    psql("postgres", &format!("CREATE DATABASE {src}"));
    psql(
        &src,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 300) g",
    );
    let fx = fixture("reports", "NFREPO_TEST_POSTGRES_URL").await;
    let source = PostgresSource {
        connection: Connection::parse(&var("NFREPO_TEST_POSTGRES_URL")).unwrap(),
        databases: vec![src.clone()],
        bin_dir: None,
    };
    let snapshot = backup(&fx, "pg", DumpSource::from(source)).await;
    let mut client = fx.logged_in().await;
    let csrf = client.csrf().await;
    let body = |code: &str| serde_json::json!({ "snapshot": snapshot, "target": "reports", "database": src, "into": dst, "code": code });
    let code = fx.fresh_code();
    let reply = client
        .post_json("/api/restores", &body(&code), ("x-csrf-token", &csrf))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.json()["id"].as_u64().unwrap();
    let reply = client
        .post_json("/api/restores", &body(&code), ("x-csrf-token", &csrf))
        .await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "PERMISSION_DENIED", "TOTP_REUSED");
    let job = finished(&mut client, id).await;
    assert_eq!(job["outcome"]["ok"], true, "{job}");
    assert_eq!(job["approved_by"], "alice");
    assert_eq!(psql(&dst, "SELECT count(*), max(id) FROM t"), "300|300");
    let entries = restore_entries(&fx).await;
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].message.contains("approved by alice"),
        "{}",
        entries[0].message
    );
    assert_eq!(entries[0].sources, ["pg"]);
    // The JSON API lists it among the restores.
    let jobs = client.get("/api/restores").await.json();
    assert_eq!(
        jobs[0]["into"],
        format!("{}/{dst}", var("NFREPO_TEST_POSTGRES_URL")),
        "{jobs}"
    );
    fx.stop().await;
    psql("postgres", &format!("DROP DATABASE {src}"));
    psql("postgres", &format!("DROP DATABASE {dst}"));
}
