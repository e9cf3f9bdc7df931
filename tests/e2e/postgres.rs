//! PostgreSQL end to end: plain dumps per database plus globals, incremental
//! growth, restore of one database of an all-databases snapshot.

use crate::harness::Env;
use crate::servers::{postgres_url, psql, unique};

fn table_digest(db: &str) -> String {
    psql(
        db,
        "SELECT count(*) || ' ' || md5(string_agg(id || ':' || v || ':' || n, ',' ORDER BY id)) FROM t",
    )
}

#[test]
fn postgres_source_snapshots_incrementally_and_restores_one_database() {
    let env = Env::new();
    env.init();
    let db = unique("nf_src");
    let other = unique("nf_other");
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql("postgres", &format!("CREATE DATABASE \"{other}\""));
    psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text, n bigint); \
         INSERT INTO t SELECT g, repeat(md5(g::text), 4), g * 7 FROM generate_series(1, 40000) g",
    );
    psql(&other, "CREATE TABLE o (x int); INSERT INTO o VALUES (1)");
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.pg]\nkind = \"postgres\"\nconnection = \"{}\"\ndatabases = [\"{db}\", \"{other}\"]\n",
            postgres_url()
        ),
    )
    .unwrap();
    let config = config.display().to_string();

    let first = env.json(&["--config", &config, "snapshot", "--source", "pg"]);
    // A pg_dump under updates changes nearly everywhere: the 16 KiB `dump` profile.
    assert_eq!(crate::harness::profiles(&env, "pg"), ["dump"]);
    let listing = env.ok(&["ls", "pg@latest"]);
    for name in ["globals.sql", &format!("{db}.sql"), &format!("{other}.sql")] {
        assert!(listing.contains(name), "{name} missing from:\n{listing}");
    }
    let extra = &first["extra"];
    assert!(extra["tool.pg_dump"].as_str().unwrap().contains("pg_dump"));
    assert!(extra["postgres.server_version"].as_str().is_some());
    assert_eq!(extra[format!("dump.{db}.sql.exit_status")], "0");
    assert_eq!(extra[format!("dump.{db}.sql.blake3")].as_str().unwrap().len(), 64);
    // SHA-256 is opt-in (`sha256 = true`): this source does not ask for it.
    assert!(extra.get(format!("dump.{db}.sql.sha256")).is_none(), "{extra}");
    let dump_bytes = first["summary"]["bytes"].as_u64().unwrap();

    psql(
        &db,
        "UPDATE t SET v = repeat(md5((id * 3)::text), 3) WHERE id BETWEEN 20000 AND 20400",
    );
    let second = env.json(&["--config", &config, "snapshot", "--source", "pg"]);
    let added = second["summary"]["bytes_added_raw"].as_u64().unwrap();
    assert!(added < dump_bytes / 10, "incremental added {added} of {dump_bytes}");

    // Every database back under its own name: they exist and hold tables,
    // so the whole restore is refused before anything is written.
    let before = table_digest(&db);
    env.fails(
        &["restore", "pg@latest", "--into", &postgres_url()],
        14,
        "RESTORE_CONFLICT",
    );
    assert_eq!(table_digest(&db), before);

    // Several databases and a URL naming one: --database must pick.
    let fresh = unique("nf_dst");
    let into = format!("{}/{fresh}", postgres_url());
    // A missing --database is a usage error (issue 9, bug 18).
    env.fails(&["restore", "pg@latest", "--into", &into], 2, "USAGE/INVALID_ARGUMENT");
    env.ok(&["restore", "pg@latest", "--into", &into, "--database", &db]);
    assert_eq!(table_digest(&fresh), table_digest(&db));

    env.fails(
        &["restore", "pg@latest", "--into", &into, "--database", &db],
        14,
        "RESTORE_CONFLICT",
    );
    psql(&fresh, "DELETE FROM t WHERE id < 10");
    env.ok(&["restore", "pg@latest", "--into", &into, "--database", &db, "--force"]);
    assert_eq!(table_digest(&fresh), table_digest(&db));

    env.fails(
        &["restore", "pg@latest", "--into", &into, "--database", "nf_no_such_db"],
        12,
        "BACKUP_NOT_FOUND",
    );
    for name in [&db, &other, &fresh] {
        psql("postgres", &format!("DROP DATABASE \"{name}\""));
    }
}
