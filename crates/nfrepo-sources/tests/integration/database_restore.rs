//! The staged database restore against the real test servers (issue 10):
//! the row counts a dump recorded (`dump.<stream>.rows.<table>`, the
//! dump side's contract) are compared with the staged copy before the
//! switch. The snapshots here carry facts built by hand, so the check is
//! tested whatever the dump side records.
//!
//! Needs `NFREPO_TEST_MYSQL_URL` and `NFREPO_TEST_POSTGRES_URL` (set by
//! `scripts/test.sh`); fails, never skips, without them.

use std::process::Command;

use nfrepo_sources::{
    Connection, DatabaseRestoreItem, DatabaseRestoreOptions, DatabaseTarget, DumpCommand, DumpOutput, DumpPlan,
    DumpSource, Error, MysqlTarget, PostgresTarget, RestoreStage, expected_rows, plan_database_restore,
    restore_databases,
};

use nfrepo_testing::unique_name as unique;

use super::fixture::{repo, run};

fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: these tests need the servers scripts/test.sh starts"))
        .trim_end_matches('/')
        .to_owned()
}

/// `user`, `host`, `port` of `scheme://user@host:port`.
fn parts(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (user, hostport) = rest.split_once('@').unwrap_or(("", rest));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, ""));
    (user.to_owned(), host.to_owned(), port.to_owned())
}

fn output(mut cmd: Command) -> String {
    let out = cmd.output().expect("client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn mysql(sql: &str) -> String {
    let (user, host, port) = parts(&var("NFREPO_TEST_MYSQL_URL"));
    let mut cmd = Command::new("mysql");
    cmd.args(["--no-defaults", "--protocol=TCP", "--batch", "--skip-column-names"])
        .args([
            format!("--host={host}"),
            format!("--port={port}"),
            format!("--user={user}"),
        ])
        .args(["-e", sql]);
    output(cmd)
}

fn psql(db: &str, sql: &str) -> String {
    let (user, host, port) = parts(&var("NFREPO_TEST_POSTGRES_URL"));
    let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("psql").is_file()));
    let mut cmd = Command::new(if on_path {
        "psql"
    } else {
        "/usr/lib/postgresql/15/bin/psql"
    });
    cmd.args(["-X", "--tuples-only", "--no-align", "--set=ON_ERROR_STOP=1"])
        .args([
            format!("--host={host}"),
            format!("--port={port}"),
            format!("--username={user}"),
        ])
        .args([format!("--dbname={db}"), "-c".to_owned(), sql.to_owned()]);
    output(cmd)
}

/// Stores `sql` as stream `app.sql` with the fact `dump.app.sql.rows.<table>` = `recorded`,
/// then restores it (forced, old copy dropped) into `live`.
async fn restore_with_recorded_rows(
    target: DatabaseTarget,
    live: &str,
    sql: &str,
    table: &str,
    recorded: u64,
) -> nfrepo_sources::Result<usize> {
    let repo = repo().await;
    let plan = DumpPlan {
        commands: vec![DumpCommand {
            argv: vec!["printf".into(), "%s".into(), sql.into()],
            auth: nfrepo_sources::ChildAuth::none(),
            output: DumpOutput::Raw("app.sql".into()),
        }],
        facts: vec![(format!("dump.app.sql.rows.{table}"), recorded.to_string())],
        paths: Vec::new(),
    };
    let kind = match target {
        DatabaseTarget::Mysql(_) => "mysql",
        _ => "postgres",
    };
    let report = run(&repo, "db", DumpSource::from_plan(kind, plan)).await.unwrap();
    let reader = repo.reader().await.unwrap();
    let root = reader.tree(&report.snapshot.root).await.unwrap();
    let item = DatabaseRestoreItem {
        node: root.find(b"app.sql").unwrap().clone(),
        stream: "app.sql".into(),
        database: live.to_owned(),
        expected_rows: expected_rows(&report.snapshot.extra, "app.sql").unwrap(),
    };
    assert_eq!(item.expected_rows.len(), 1);
    let mut options = DatabaseRestoreOptions::default();
    options.force = true;
    options.drop_old = true;
    // MySQL loads over three connections (PostgreSQL always over one).
    options.jobs = 3;
    let plan = plan_database_restore(&target, vec![item], &options)?;
    let reports = restore_databases(&reader, &plan).await?;
    Ok(reports[0].tables_verified)
}

fn assert_row_count_mismatch(result: nfrepo_sources::Result<usize>) {
    let err = result.unwrap_err();
    match &err {
        Error::DatabaseRestore {
            stage, source, live, ..
        } => {
            assert_eq!(*stage, RestoreStage::Verify, "{err}");
            assert!(
                matches!(source.as_ref(), Error::RowCountMismatch(m) if m.len() == 1 && m[0].ends_with("5 rows loaded, 6 dumped")),
                "{err}: {source}"
            );
            assert!(live.contains("the live database is unchanged"), "{err}");
        }
        other => panic!("expected a verification failure, got {other}"),
    }
    assert_eq!(err.detail_code(), Some("ROW_COUNT_MISMATCH"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_row_counts_recorded_at_dump_time_are_checked_before_the_switch() {
    let url = var("NFREPO_TEST_MYSQL_URL");
    let live = unique("nf_rows");
    mysql(&format!(
        "CREATE DATABASE `{live}`; CREATE TABLE `{live}`.t (id INT); INSERT INTO `{live}`.t VALUES (1), (2), (3);"
    ));
    let target = DatabaseTarget::Mysql(MysqlTarget {
        connection: Connection::parse(&format!("{url}/{live}")).unwrap(),
        bin_dir: None,
    });
    let sql = "CREATE TABLE t (id INT);\nINSERT INTO t VALUES (10), (20), (30), (40), (50);\n";
    let count = || mysql(&format!("SELECT COUNT(*) FROM `{live}`.t"));
    let staging = || {
        mysql(&format!(
            "SHOW DATABASES LIKE '{}\\_\\_nfrepo\\_restore\\_%'",
            live.replace('_', "\\_")
        ))
    };
    assert_row_count_mismatch(restore_with_recorded_rows(target.clone(), &live, sql, "t", 6).await);
    assert_eq!(count(), "3", "a copy that failed verification was switched in");
    assert_eq!(staging(), "", "the staging copy was left");
    assert_eq!(restore_with_recorded_rows(target, &live, sql, "t", 5).await.unwrap(), 1);
    assert_eq!(count(), "5");
    mysql(&format!("DROP DATABASE `{live}`"));
}

// One connection of a parallel load stops at a failing statement: the load
// fails naming that connection and the server's error, the staging copy is
// dropped and the live database is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_failing_on_one_load_connection_fails_the_load_and_leaves_the_live_database() {
    let url = var("NFREPO_TEST_MYSQL_URL");
    let live = unique("nf_par_fail");
    mysql(&format!(
        "CREATE DATABASE `{live}`; CREATE TABLE `{live}`.t (id INT); INSERT INTO `{live}`.t VALUES (1), (2), (3);"
    ));
    let target = DatabaseTarget::Mysql(MysqlTarget {
        connection: Connection::parse(&format!("{url}/{live}")).unwrap(),
        bin_dir: None,
    });
    let sql = "--\n-- Dumping data for table `t`\n--\nCREATE TABLE t (id INT PRIMARY KEY);\n\
               INSERT INTO `t` VALUES (10),(20);\nINSERT INTO `t` VALUES (20);\nCREATE VIEW v AS SELECT 1;\n";
    let err = restore_with_recorded_rows(target, &live, sql, "t", 2)
        .await
        .unwrap_err();
    match &err {
        Error::DatabaseRestore {
            stage, source, live, ..
        } => {
            assert_eq!(*stage, RestoreStage::Load, "{err}");
            assert!(
                matches!(source.as_ref(), Error::RestoreCommandFailed(m)
                    if m.contains("of 3)") && m.contains("Duplicate entry '20'")),
                "{err}: {source}"
            );
            assert!(live.contains("the live database is unchanged"), "{err}");
        }
        other => panic!("expected a load failure, got {other}"),
    }
    assert_eq!(mysql(&format!("SELECT COUNT(*) FROM `{live}`.t")), "3");
    assert_eq!(
        mysql(&format!(
            "SHOW DATABASES LIKE '{}\\_\\_nfrepo\\_restore\\_%'",
            live.replace('_', "\\_")
        )),
        ""
    );
    mysql(&format!("DROP DATABASE `{live}`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_row_counts_recorded_at_dump_time_are_checked_before_the_switch() {
    let url = var("NFREPO_TEST_POSTGRES_URL");
    let live = unique("nf_rows");
    psql("postgres", &format!("CREATE DATABASE \"{live}\""));
    psql(&live, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)");
    let target = DatabaseTarget::Postgres(PostgresTarget {
        connection: Connection::parse(&format!("{url}/{live}")).unwrap(),
        bin_dir: None,
    });
    let sql = "CREATE TABLE public.t (id int);\nCOPY public.t (id) FROM stdin;\n10\n20\n30\n40\n50\n\\.\n";
    let count = || psql(&live, "SELECT count(*) FROM t");
    let staging = || {
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE starts_with(datname, '{live}__nfrepo_restore_')"),
        )
    };
    assert_row_count_mismatch(restore_with_recorded_rows(target.clone(), &live, sql, "public.t", 6).await);
    assert_eq!(count(), "3", "a copy that failed verification was switched in");
    assert_eq!(staging(), "0", "the staging copy was left");
    assert_eq!(
        restore_with_recorded_rows(target, &live, sql, "public.t", 5)
            .await
            .unwrap(),
        1
    );
    assert_eq!(count(), "5");
    psql("postgres", &format!("DROP DATABASE \"{live}\""));
}
