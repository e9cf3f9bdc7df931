//! Issue 12, item 5: no password, S3 secret key or database password ever
//! shows up where someone other than nfrepo could read it: logs at every
//! verbosity, `--json` output, snapshot metadata, the local cache, the
//! command lines of nfrepo and of every child it starts, and the
//! children's environments. Each database tool is replaced, first in
//! `PATH`, by a wrapper that records its `/proc/PID/cmdline` and
//! `/proc/PID/environ` (what `ps` and any local user see) and the modes of
//! the password files it is handed, then runs the real tool, so the
//! backups and restores really authenticate.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{Env, PASSWORD, describe};
use crate::servers::{mysql, mysql_url, pg_tool, postgres_url, psql, redis_cli_at, redis_port, unique};

/// The tools a wrapper stands in for.
const TOOLS: &[&str] = &[
    "mysql",
    "mysqldump",
    "mariadb",
    "mariadb-dump",
    "psql",
    "pg_dump",
    "pg_dumpall",
    "redis-cli",
];

/// The absolute path of the real `name` (never a bare name: the wrapper
/// would find itself first in `PATH`).
fn real_tool(name: &str) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .or_else(|| Some(pg_tool(name)).filter(|p| Path::new(p).is_absolute() && Path::new(p).is_file()))
}

/// Writes the wrappers into `bin`; each records into `records`.
fn install_wrappers(bin: &Path, records: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    std::fs::create_dir_all(records).unwrap();
    for tool in TOOLS {
        let Some(real) = real_tool(tool) else { continue };
        let script = format!(
            r#"#!/bin/sh
r="{records}/{tool}.$$"
tr '\0' '\n' < /proc/$$/cmdline > "$r.cmdline"
tr '\0' '\n' < /proc/$$/environ > "$r.environ"
tr '\0' '\n' < /proc/$PPID/cmdline > "$r.parent"
for a in "$@"; do
  case "$a" in
    --defaults-file=*)
      f="${{a#--defaults-file=}}"
      echo "$f" > "$r.optionfile-path"
      stat -c '%a' "$f" > "$r.optionfile-mode"
      stat -c '%a' "$(dirname "$f")" > "$r.optionfile-dirmode";;
  esac
done
if [ -n "$PGPASSFILE" ]; then
  echo "$PGPASSFILE" > "$r.pgpass-path"
  stat -c '%a' "$PGPASSFILE" > "$r.pgpass-mode"
  cp "$PGPASSFILE" "$r.secret-pgpass"
fi
stdin=$(readlink /proc/$$/fd/0)
case "$stdin" in
  /*) echo "$stdin" > "$r.stdin-path"; stat -c '%a' "$stdin" > "$r.stdin-mode";;
esac
exec "{real}" "$@"
"#,
            records = records.display(),
        );
        let path = bin.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// What the wrappers recorded: file name → content.
fn records(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Every file under `dir`, with its mode.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        out.push((entry.path(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn assert_absent(&self, what: &str, bytes: &[u8]) {
        for (name, secret) in &self.0 {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{what} holds the {name}:\n{}", String::from_utf8_lossy(bytes));
        }
    }
}

/// The sources' servers, with users that really need their passwords.
struct Servers {
    mysql_user: String,
    mysql_db: String,
    pg_db: String,
    redis_user: String,
}

impl Servers {
    fn create(mysql_pw_sql: &str, redis_pw: &str) -> Self {
        let mysql_user = unique("nfleak");
        let mysql_db = unique("nfleak_db");
        mysql(&format!(
            "CREATE USER '{mysql_user}'@'127.0.0.1' IDENTIFIED BY {mysql_pw_sql}; \
             CREATE DATABASE `{mysql_db}`; CREATE TABLE `{mysql_db}`.t (id INT PRIMARY KEY, v TEXT); \
             INSERT INTO `{mysql_db}`.t VALUES (1, 'one'), (2, 'two'); \
             GRANT ALL ON *.* TO '{mysql_user}'@'127.0.0.1';"
        ));
        let pg_db = unique("nfleak_pg");
        psql("postgres", &format!("CREATE DATABASE \"{pg_db}\""));
        psql(
            &pg_db,
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')",
        );
        let redis_user = unique("nfleak");
        redis_cli_at(
            &redis_port(),
            &[
                "ACL",
                "SETUSER",
                &redis_user,
                "on",
                &format!(">{redis_pw}"),
                "~*",
                "&*",
                "+@all",
            ],
        );
        Self {
            mysql_user,
            mysql_db,
            pg_db,
            redis_user,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // Cleanup must not panic (a panic while unwinding aborts), so the
        // admin clients run directly rather than through `servers`.
        let mysql_admin = mysql_url();
        let (user, server) = mysql_admin.trim_start_matches("mysql://").split_once('@').unwrap();
        let (host, port) = server.split_once(':').unwrap();
        let _ = Command::new("mysql")
            .args(["--no-defaults", "--protocol=TCP"])
            .arg(format!("--host={host}"))
            .arg(format!("--port={port}"))
            .arg(format!("--user={user}"))
            .arg("-e")
            .arg(format!(
                "DROP USER IF EXISTS '{}'@'127.0.0.1'; DROP DATABASE IF EXISTS `{}`; DROP DATABASE IF EXISTS `{}_restored`",
                self.mysql_user, self.mysql_db, self.mysql_db
            ))
            .output();
        let pg_admin = postgres_url();
        let (user, server) = pg_admin.trim_start_matches("postgres://").split_once('@').unwrap();
        let (host, port) = server.split_once(':').unwrap();
        for db in [self.pg_db.clone(), format!("{}_restored", self.pg_db)] {
            let _ = Command::new(pg_tool("psql"))
                .args(["-X", "-h", host, "-p", port, "-U", user, "-d", "postgres", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS \"{db}\""))
                .output();
        }
        let _ = Command::new("redis-cli")
            .args(["-p", &redis_port(), "ACL", "DELUSER", &self.redis_user])
            .output();
    }
}

fn host_port(url: &str) -> String {
    url.rsplit('@').next().unwrap().to_owned()
}

#[test]
fn no_secret_reaches_logs_json_metadata_cache_or_any_process() {
    let env = Env::s3("secret-leaks");
    let tag = unique("x");
    // Passwords with every character an option or password file must escape.
    let mysql_pw = format!("my-pw\"#1 :x'y\\z-{tag}");
    let mysql_pw_sql = format!("'{}'", mysql_pw.replace('\\', "\\\\").replace('\'', "\\'"));
    let pg_pw = format!("pg-pw:with\\colon-{tag}");
    let redis_pw = format!("redis-pw-{tag}");
    let s3_secret = std::env::var("NFREPO_TEST_S3_SECRET_KEY").unwrap();
    let servers = Servers::create(&mysql_pw_sql, &redis_pw);
    let secrets = Secrets(vec![
        ("repository password", PASSWORD.to_owned()),
        ("S3 secret key", s3_secret.clone()),
        ("MariaDB password", mysql_pw.clone()),
        ("PostgreSQL password", pg_pw.clone()),
        ("Redis password", redis_pw.clone()),
    ]);

    let bin = env.path("wrap");
    let recorded = env.path("records");
    install_wrappers(&bin, &recorded);
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let password_file = env.path("repo.pass");
    std::fs::write(&password_file, PASSWORD).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pg_password_file = env.path("pg.pass");
    std::fs::write(&pg_password_file, format!("{pg_pw}\n")).unwrap();
    std::fs::set_permissions(&pg_password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let bucket = crate::bucket::Bucket::new();
    bucket.put("src", "uploads/a.txt", "text/plain", b"object".to_vec());
    let config = env.path("nfrepo.toml");
    let mysql_server = host_port(&mysql_url());
    let pg_server = host_port(&postgres_url());
    std::fs::write(
        &config,
        format!(
            "[sources.db]\nkind = \"mysql\"\nconnection = \"mysql://{}@{mysql_server}/{}\"\npassword_env = \"LEAK_MYSQL_PW\"\n\n\
             [sources.pg]\nkind = \"postgres\"\nconnection = \"postgres://postgres@{pg_server}/{}\"\npassword_file = \"{}\"\n\n\
             [sources.cache]\nkind = \"redis\"\nconnection = \"redis://{}@127.0.0.1:{}\"\npassword_env = \"LEAK_REDIS_PW\"\n\n\
             [sources.uploads]\nkind = \"bucket\"\nconnection = \"{}\"\naccess_key_env = \"LEAK_BUCKET_ID\"\nsecret_key_env = \"LEAK_BUCKET_SECRET\"\n",
            servers.mysql_user,
            servers.mysql_db,
            servers.pg_db,
            pg_password_file.display(),
            servers.redis_user,
            redis_port(),
            bucket.url("src"),
        ),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let config_arg = config.to_str().unwrap().to_owned();
    // Half the runs take the repository password from NFREPO_PASSWORD, half from a file.
    let run = |args: &[&str], from_file: bool| -> Output {
        let mut cmd = env.cmd();
        cmd.env("PATH", &path)
            .env("TMPDIR", &tmp)
            .env("LEAK_MYSQL_PW", &mysql_pw)
            .env("LEAK_REDIS_PW", &redis_pw)
            .env("LEAK_BUCKET_ID", std::env::var("NFREPO_TEST_S3_ACCESS_KEY").unwrap())
            .env("LEAK_BUCKET_SECRET", &s3_secret)
            .args(["--config", &config_arg]);
        if from_file {
            cmd.env_remove("NFREPO_PASSWORD")
                .env("NFREPO_PASSWORD_FILE", &password_file);
        }
        let out = cmd.args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "nfrepo {args:?}:\n{}", describe(&out));
        out
    };

    let restored_mysql = format!("{}_restored", servers.mysql_db);
    let restored_pg = format!("{}_restored", servers.pg_db);
    let into_mysql = format!("mysql://{}@{mysql_server}/{restored_mysql}", servers.mysql_user);
    let into_pg = format!("postgres://postgres@{pg_server}/{restored_pg}");
    let target = env.path("restored");
    let target = target.to_str().unwrap();
    let mut outputs = Vec::new();
    outputs.push(run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"], true));
    for (i, args) in [
        vec!["-vvv", "--json", "snapshot", "--source", "db"],
        vec!["-vvv", "--json", "snapshot", "--source", "pg"],
        vec!["-vvv", "--json", "snapshot", "--source", "cache"],
        vec!["-vvv", "--json", "snapshot", "--source", "uploads"],
        vec!["-vvv", "--json", "snapshots"],
        vec!["-vvv", "--json", "check", "--read-data"],
        vec!["-vvv", "check"],
        vec!["-vvv", "--json", "ls", "db@latest"],
        vec!["-vvv", "restore", "db@latest", "--target", target],
        vec!["-vvv", "--json", "restore", "db@latest", "--into", &into_mysql],
        vec!["-vvv", "--json", "restore", "pg@latest", "--into", &into_pg],
        vec!["-vvv", "--json", "key", "list"],
    ]
    .iter()
    .enumerate()
    {
        outputs.push(run(args, i % 2 == 1));
    }
    for verbosity in ["-q", "-v", "-vv", "-vvv"] {
        outputs.push(run(&[verbosity, "snapshots"], false));
        outputs.push(run(&[verbosity, "--json", "snapshots"], true));
    }
    let mut trace = env.cmd();
    trace
        .env("NFREPO_LOG", "trace")
        .env("PATH", &path)
        .env("LEAK_MYSQL_PW", &mysql_pw)
        .env("LEAK_REDIS_PW", &redis_pw)
        .env("TMPDIR", &tmp)
        .args(["--config", &config_arg, "--json", "snapshot", "--source", "db"]);
    let out = trace.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        out.stderr.len() > 2000,
        "trace level logged little:\n{}",
        describe(&out)
    );
    outputs.push(out);

    // The backups and restores really authenticated with the passwords.
    assert_eq!(
        mysql(&format!("SELECT v FROM `{restored_mysql}`.t ORDER BY id")),
        "one\ntwo"
    );
    assert_eq!(psql(&restored_pg, "SELECT v FROM t"), "one");
    let list: serde_json::Value = serde_json::from_slice(&outputs[5].stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    let facts = list.to_string();
    assert!(
        facts.contains("mysql.server_version") && facts.contains("redis.server_version"),
        "{list}"
    );

    // Logs at every verbosity and every JSON document, snapshot metadata
    // (`snapshots --json` shows every fact and command line) included.
    for out in &outputs {
        secrets.assert_absent("stdout", &out.stdout);
        secrets.assert_absent("stderr", &out.stderr);
    }

    // The local cache: every file, and private.
    let mut cache = Vec::new();
    walk(&env.path("cache"), &mut cache);
    assert!(
        cache.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "sqlite")),
        "{cache:?}"
    );
    for (file, mode) in &cache {
        if file.is_dir() {
            assert_eq!(*mode, 0o700, "{}", file.display());
        } else {
            assert_eq!(*mode, 0o600, "{}", file.display());
            secrets.assert_absent(&file.display().to_string(), &std::fs::read(file).unwrap());
        }
    }

    // Every child's command line, its parent's (nfrepo's) and its environment.
    let records = records(&recorded);
    for tool in ["mysqldump", "mysql", "pg_dump", "pg_dumpall", "psql", "redis-cli"] {
        assert!(
            records
                .keys()
                .any(|k| k.starts_with(&format!("{tool}.")) && k.ends_with(".cmdline")),
            "{tool} never ran: {:?}",
            records.keys()
        );
    }
    for (name, text) in &records {
        if name.ends_with(".secret-pgpass") {
            continue;
        }
        secrets.assert_absent(name, text.as_bytes());
        if name.ends_with(".environ") {
            for line in text.lines() {
                let var = line.split('=').next().unwrap();
                assert!(
                    ![
                        "MYSQL_PWD",
                        "PGPASSWORD",
                        "REDISCLI_AUTH",
                        "NFREPO_PASSWORD",
                        "LEAK_MYSQL_PW",
                        "LEAK_REDIS_PW"
                    ]
                    .contains(&var)
                        && !var.starts_with("NFREPO_S3_"),
                    "{name} holds {var}"
                );
            }
        }
    }

    // How each tool got its password instead: private files, by path.
    let with =
        |suffix: &str| -> Vec<(&String, &String)> { records.iter().filter(|(k, _)| k.ends_with(suffix)).collect() };
    // `--version` runs (for the snapshot's record of tool versions) connect to nothing.
    let runs = |tool: &str| -> Vec<(&String, &String)> {
        records
            .iter()
            .filter(|(k, v)| {
                k.starts_with(&format!("{tool}.")) && k.ends_with(".cmdline") && !v.lines().any(|a| a == "--version")
            })
            .collect()
    };
    let mysql_runs = runs("mysql").len() + runs("mysqldump").len();
    assert!(mysql_runs >= 4, "{:?}", records.keys());
    assert_eq!(
        with(".optionfile-mode").len(),
        mysql_runs,
        "every mysql run got an option file"
    );
    for (name, mode) in with(".optionfile-mode") {
        assert_eq!(mode.trim(), "600", "{name}");
    }
    for (name, mode) in with(".optionfile-dirmode") {
        assert_eq!(mode.trim(), "700", "{name}");
    }
    assert!(!with(".pgpass-mode").is_empty());
    for (name, mode) in with(".pgpass-mode") {
        assert_eq!(mode.trim(), "600", "{name}");
    }
    let expected_pgpass = format!("*:*:*:*:{}\n", pg_pw.replace('\\', "\\\\").replace(':', "\\:"));
    for (name, content) in with(".secret-pgpass") {
        assert_eq!(content, &expected_pgpass, "{name}");
    }
    let redis_runs = runs("redis-cli");
    assert!(redis_runs.len() >= 3, "{:?}", records.keys());
    let mut files = Vec::new();
    for (name, cmdline) in &redis_runs {
        assert!(cmdline.lines().any(|a| a == "--askpass"), "{name}: {cmdline}");
        assert!(!cmdline.lines().any(|a| a == "-a"), "{name}: {cmdline}");
        let stem = name.trim_end_matches(".cmdline");
        assert_eq!(records[&format!("{stem}.stdin-mode")].trim(), "600", "{name}");
        files.push(records[&format!("{stem}.stdin-path")].trim().to_owned());
    }
    // Every password file is gone once its command is done.
    files.extend(
        with(".optionfile-path")
            .into_iter()
            .chain(with(".pgpass-path"))
            .map(|(_, p)| p.trim().to_owned()),
    );
    for path in files {
        assert!(path.starts_with(tmp.to_str().unwrap()), "{path} is outside TMPDIR");
        assert!(!Path::new(&path).exists(), "{path} was left behind");
    }
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}
