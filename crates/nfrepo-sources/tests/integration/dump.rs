//! Dump sources: plans built by asking a server, here a fake one (shell
//! scripts standing in for `mysql`, `mysqldump`, `psql`, `pg_dump`,
//! `pg_dumpall` and `redis-cli` in the source's `bin_dir`), then run by the
//! driver. The real servers are exercised by the CLI's end-to-end tests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nfrepo_sources::{
    Connection, DumpCommand, DumpOutput, DumpPlan, DumpSource, Error, MysqlSource, PostgresSource, RedisSource,
};

use super::fixture::{assert_nothing_committed, fact, file_content, repo, root_nodes, run};

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A MariaDB with binary logging on and databases `app` and `shop`; its
/// `mysqldump --databases` prints what MariaDB's does, and fails after
/// `app` when `fail-shop` exists beside it.
fn fake_mysql() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "mysql",
        r#"for a in "$@"; do last="$a"; done
case "$last" in
  "SELECT VERSION()") echo "10.11.6-MariaDB" ;;
  "SHOW MASTER STATUS") printf 'mysql-bin.000003\t1234\t\t\n' ;;
  "SHOW DATABASES") printf 'information_schema\napp\nshop\nmysql\n' ;;
  *) echo "unexpected query: $last" >&2; exit 1 ;;
esac"#,
    );
    script(
        dir.path(),
        "mysqldump",
        r#"if [ "$1" = "--version" ]; then echo "mysqldump  Ver 10.19 Distrib 10.11.6-MariaDB"; exit 0; fi
while [ "$1" != --databases ]; do shift; done; shift
echo "/*!40101 SET NAMES utf8mb4 */;"
echo "-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;"
for db in "$@"; do
  if [ "$db" = shop ] && [ -e "$(dirname "$0")/fail-shop" ]; then echo "mysqldump: lost connection" >&2; exit 5; fi
  printf -- '\n--\n-- Current Database: `%s`\n--\n\nUSE `%s`;\n-- dump of %s\n' "$db" "$db" "$db"
  printf -- '\n--\n-- Dumping data for table `t`\n--\n\nINSERT INTO `t` VALUES (1,'"'"'a'"'"'),(2,NULL);\n'
done
printf -- "\n-- SET GLOBAL gtid_slave_pos='0-1-42';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"
exit 0"#,
    );
    dir
}

fn mysql_source(bin: &Path) -> MysqlSource {
    MysqlSource {
        connection: Connection::parse("mysql://backup@127.0.0.1:3306").unwrap(),
        databases: Vec::new(),
        bin_dir: Some(bin.to_path_buf()),
    }
}

#[test]
fn a_mysql_plan_dumps_every_user_database_in_one_command_with_the_binlog_position() {
    let bin = fake_mysql();
    let plan = mysql_source(bin.path()).plan().unwrap();
    assert_eq!(plan.stream_names(), ["app.sql", "shop.sql"]);
    assert_eq!(plan.commands.len(), 1);
    let argv = &plan.commands[0].argv;
    assert!(
        argv.ends_with(&[
            "--master-data=2".into(),
            "--gtid".into(),
            "--databases".into(),
            "app".into(),
            "shop".into()
        ]),
        "{argv:?}"
    );
    assert!(argv.contains(&"--single-transaction".to_owned()), "{argv:?}");
    assert!(argv.contains(&"--user=backup".to_owned()), "{argv:?}");
    assert!(
        plan.facts.contains(&("mysql.binlog".into(), "on".into())),
        "{:?}",
        plan.facts
    );
    assert!(
        plan.facts
            .contains(&("mysql.server_version".into(), "10.11.6-MariaDB".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_source_is_one_snapshot_of_every_dump_with_its_facts() {
    let repo = repo().await;
    let bin = fake_mysql();
    let report = run(&repo, "db", DumpSource::from(mysql_source(bin.path())))
        .await
        .unwrap();
    assert_eq!(report.snapshot.source_kind, "mysql");
    // MariaDB/MySQL dumps change rows in place: the 8 KiB `rows` profile.
    assert_eq!(report.snapshot.profile, "rows");
    assert_eq!(report.snapshot.paths, ["app.sql", "shop.sql"]);
    assert_eq!(report.snapshot.summary.files, 2);
    assert_eq!(fact(&report, "dump.app.sql.exit_status"), Some("0"));
    assert_eq!(fact(&report, "dump.shop.sql.exit_status"), Some("0"));
    assert_eq!(fact(&report, "mysql.binlog_file"), Some("mysql-bin.000003"));
    assert_eq!(fact(&report, "mysql.binlog_position"), Some("1234"));
    assert_eq!(fact(&report, "mysql.gtid"), Some("0-1-42"));
    assert_eq!(fact(&report, "mysql.consistency"), Some("one-transaction"));
    assert_eq!(fact(&report, "dump.app.sql.rows.t"), Some("2"));
    assert_eq!(fact(&report, "dump.shop.sql.rows.t"), Some("2"));
    let positions = report
        .snapshot
        .extra
        .iter()
        .filter(|(k, _)| k.contains("binlog_file"))
        .count();
    assert_eq!(positions, 1, "{:?}", report.snapshot.extra);
    assert_eq!(
        fact(&report, "tool.mysqldump"),
        Some("mysqldump  Ver 10.19 Distrib 10.11.6-MariaDB")
    );
    let shop = String::from_utf8(file_content(&repo, &report, "shop.sql").await).unwrap();
    assert_eq!(
        shop,
        "/*!40101 SET NAMES utf8mb4 */;\n\
         -- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;\n\
         \n--\n-- Current Database: `shop`\n--\n\n-- dump of shop\n\
         \n--\n-- Dumping data for table `t`\n--\n\nINSERT INTO `t` VALUES (1,'a'),(2,NULL);\n\
         \n-- SET GLOBAL gtid_slave_pos='0-1-42';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_dump_fails_the_whole_source_and_commits_nothing() {
    let repo = repo().await;
    let bin = fake_mysql();
    std::fs::write(bin.path().join("fail-shop"), b"").unwrap();
    let err = run(&repo, "db", DumpSource::from(mysql_source(bin.path())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CommandFailed(m) if m.contains("dump of app.sql, shop.sql failed")
            && m.contains("exited with status 5") && m.contains("lost connection")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_answer_fails_before_a_session_starts() {
    let repo = repo().await;
    let bin = tempfile::tempdir().unwrap();
    script(bin.path(), "mysql", "echo \"ERROR 2002: Can't connect\" >&2; exit 1");
    let err = run(&repo, "db", DumpSource::from(mysql_source(bin.path())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CommandFailed(m) if m.contains("Can't connect")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}

#[test]
fn a_postgres_plan_dumps_globals_then_each_database() {
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "psql",
        r#"for a in "$@"; do last="$a"; done
case "$last" in
  "SHOW server_version") echo "15.8" ;;
  "SELECT pg_current_wal_lsn()") echo "0/1A2B3C4" ;;
  SELECT*) printf 'app\npostgres\n' ;;
  *) exit 1 ;;
esac"#,
    );
    script(bin.path(), "pg_dump", "echo 'pg_dump (PostgreSQL) 15.8'");
    script(bin.path(), "pg_dumpall", "echo 'pg_dumpall (PostgreSQL) 15.8'");
    let source = PostgresSource {
        connection: Connection::parse("postgres://backup@127.0.0.1:5432").unwrap(),
        databases: Vec::new(),
        bin_dir: Some(bin.path().to_path_buf()),
    };
    let plan = source.plan().unwrap();
    assert_eq!(plan.stream_names(), ["globals.sql", "app.sql", "postgres.sql"]);
    assert!(plan.commands[0].argv.contains(&"--globals-only".to_owned()));
    assert!(plan.commands[1].argv.ends_with(&["--dbname=app".to_owned()]));
    assert!(plan.facts.contains(&("postgres.server_version".into(), "15.8".into())));
    assert!(
        plan.facts
            .contains(&("postgres.consistency".into(), "per-database".into()))
    );
    assert!(
        plan.facts
            .contains(&("postgres.wal_lsn_before_dump".into(), "0/1A2B3C4".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_source_stores_the_rdb_and_the_aof_directory() {
    let repo = repo().await;
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "redis-cli",
        r#"case "$*" in
  *"INFO server"*) printf 'redis_version:7.2.4\r\n' ;;
  *"INFO keyspace"*) printf '# Keyspace\r\ndb0:keys=12,expires=0,avg_ttl=0\r\ndb3:keys=5,expires=1,avg_ttl=9\r\n' ;;
  *"--rdb -"*) printf 'REDIS0011fake' ;;
  *--version*) echo "redis-cli 7.2.4" ;;
  *) exit 1 ;;
esac"#,
    );
    let aof = tempfile::tempdir().unwrap();
    std::fs::create_dir(aof.path().join("appendonlydir")).unwrap();
    std::fs::write(aof.path().join("appendonlydir/appendonly.aof.1.incr.aof"), b"*1\r\n").unwrap();
    let source = RedisSource {
        connection: Connection::parse("redis://127.0.0.1:6379").unwrap(),
        aof_dir: Some(aof.path().join("appendonlydir")),
        bin_dir: Some(bin.path().to_path_buf()),
    };
    let report = run(&repo, "cache", DumpSource::from(source)).await.unwrap();
    assert_eq!(report.snapshot.source_kind, "redis");
    assert_eq!(fact(&report, "redis.server_version"), Some("7.2.4"));
    // The key count a drill compares with (issue 11): all databases.
    assert_eq!(fact(&report, nfrepo_sources::REDIS_KEYS_FACT), Some("17"));
    assert_eq!(
        file_content(&repo, &report, nfrepo_sources::RDB_STREAM).await,
        b"REDIS0011fake"
    );
    let names: Vec<Vec<u8>> = root_nodes(&repo, &report).await.into_iter().map(|n| n.name).collect();
    assert_eq!(
        names,
        [
            b"appendonlydir".to_vec(),
            nfrepo_sources::RDB_STREAM.as_bytes().to_vec()
        ]
    );
}

fn command(name: &str, shell: &str) -> DumpCommand {
    DumpCommand {
        argv: ["sh", "-c", shell].map(String::from).to_vec(),
        auth: nfrepo_sources::ChildAuth::none(),
        output: DumpOutput::Raw(name.to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_of_one_name_are_refused() {
    let repo = repo().await;
    let plan = DumpPlan {
        commands: vec![command("a.sql", "echo 1"), command("a.sql", "echo 2")],
        ..DumpPlan::default()
    };
    let err = run(&repo, "x", DumpSource::from_plan("mysql", plan)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("two streams are named")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_plan_is_refused() {
    let repo = repo().await;
    let source = DumpSource::from_plan("mysql", DumpPlan::default());
    let err = run(&repo, "x", source).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("nothing to dump")),
        "{err}"
    );
    assert_nothing_committed(&repo).await;
}

fn mysqldump_of(databases: &[&str], shell: &str) -> DumpPlan {
    DumpPlan {
        commands: vec![DumpCommand {
            argv: ["sh", "-c", shell].map(String::from).to_vec(),
            auth: nfrepo_sources::ChildAuth::none(),
            output: DumpOutput::Mysqldump(databases.iter().map(|d| (*d).to_owned()).collect()),
        }],
        ..DumpPlan::default()
    }
}

/// Runs `plan`, asserts that it failed with a command error holding
/// `expected` and committed nothing.
async fn refused(kind: &str, plan: DumpPlan, expected: &str) {
    let repo = repo().await;
    let err = run(&repo, "db", DumpSource::from_plan(kind, plan)).await.unwrap_err();
    assert!(matches!(&err, Error::CommandFailed(m) if m.contains(expected)), "{err}");
    assert_nothing_committed(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_that_exits_0_inside_its_data_commits_nothing() {
    let shell =
        r"printf -- '-- Current Database: `app`\n-- Dumping data for table `t`\nINSERT INTO `t` VALUES (1,'\''a;'";
    refused(
        "mysql",
        mysqldump_of(&["app"], shell),
        "ended inside the data of table \"t\"",
    )
    .await;
    let plan = DumpPlan {
        commands: vec![DumpCommand {
            argv: ["sh", "-c", r"printf -- '-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: x\nCOPY public.t (a) FROM stdin;\n1\n'"]
                .map(String::from)
                .to_vec(),
            auth: nfrepo_sources::ChildAuth::none(),
            output: DumpOutput::PgDump("app.sql".into()),
        }],
        ..DumpPlan::default()
    };
    refused("postgres", plan, "ended inside the data of public.t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_a_database_not_asked_for_commits_nothing() {
    let shell = r"printf -- '-- Current Database: `app`\nUSE `other`;\n'";
    refused(
        "mysql",
        mysqldump_of(&["app"], shell),
        "database \"other\", which was not asked for",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_split_dump_keeps_every_byte_in_its_database_file() {
    let repo = repo().await;
    // Two databases of a few MiB each, interleaved twice, as the view pass does.
    let shell = r#"
        rows() { i=0; while [ $i -lt 3000 ]; do printf "(%d,'%s'),\n" $i "$1 (,) it\\'s $i"; i=$((i+1)); done; }
        printf -- '/*!40101 SET NAMES utf8mb4 */;\n'
        for db in a b a; do
          printf -- '\n--\n-- Current Database: `%s`\n--\n\nUSE `%s`;\n\n--\n-- Dumping data for table `t_%s`\n--\n\nINSERT INTO `t_%s` VALUES\n' $db $db $db $db
          rows $db; printf "(-1,NULL);\n"
        done
        printf -- '/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n'
    "#;
    let report = run(
        &repo,
        "db",
        DumpSource::from_plan("mysql", mysqldump_of(&["a", "b"], shell)),
    )
    .await
    .unwrap();
    assert_eq!(fact(&report, "dump.a.sql.rows.t_a"), Some("6002"));
    assert_eq!(fact(&report, "dump.b.sql.rows.t_b"), Some("3001"));
    for db in ["a", "b"] {
        let text = String::from_utf8(file_content(&repo, &report, &format!("{db}.sql")).await).unwrap();
        let other = if db == "a" { "b" } else { "a" };
        assert!(text.starts_with("/*!40101 SET NAMES utf8mb4 */;\n"));
        assert!(text.ends_with("/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"));
        assert!(!text.contains(&format!("t_{other}")), "{db}.sql holds {other}'s data");
        assert!(!text.contains("USE `"));
        let size: usize = fact(&report, &format!("dump.{db}.sql.bytes")).unwrap().parse().unwrap();
        assert_eq!(size, text.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_without_the_position_it_was_asked_for_says_so() {
    let repo = repo().await;
    let mut plan = mysqldump_of(&["app"], "printf -- '-- Current Database: `app`\\n' # --gtid");
    plan.commands[0].argv.push("--gtid".into());
    plan.facts.push(("mysql.binlog".into(), "on".into()));
    let report = run(&repo, "db", DumpSource::from_plan("mysql", plan)).await.unwrap();
    assert_eq!(
        fact(&report, "mysql.position_note"),
        Some(
            "the binary log is on, but mysqldump printed no binlog position and no GTID: no point to replay the binlog from"
        )
    );
    assert_eq!(fact(&report, "mysql.binlog_file"), None);
}
