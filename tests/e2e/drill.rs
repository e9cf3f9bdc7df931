//! Issue 11, item 5: `nfrepo drill` restores a source's latest backup into
//! a throwaway server (MariaDB, PostgreSQL, redis-server) or directory,
//! checks it, times it and records the outcome; it fails with the right
//! code, naming the check, when a pack of the backup is damaged or a
//! configured query returns false; `drill --history --json` lists them.

use std::process::{Child, Command, Stdio};

use crate::harness::Env;
use crate::servers::{mysql, mysql_url, postgres_url, psql, unique};

/// A config with source `db` of `kind` at `url` and drill `queries`.
fn write_config(env: &Env, kind: &str, url: &str, queries: &[&str]) -> String {
    let config = env.path("nfrepo.toml");
    let queries: Vec<String> = queries.iter().map(|q| format!("{q:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "[sources.db]\nkind = \"{kind}\"\nconnection = \"{url}\"\n\n[sources.db.drill]\nqueries = [{}]\n",
            queries.join(", ")
        ),
    )
    .unwrap();
    config.display().to_string()
}

/// Flips a byte in every 16 of the blobs of every data pack (so every blob
/// the drill restores is hit; the trailer stays readable).
fn damage_data_packs(env: &Env) {
    let mut flipped = 0;
    for prefix in std::fs::read_dir(env.repo_dir().join("data")).unwrap() {
        for pack in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let path = pack.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let trailer = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
            let blobs_end = bytes.len() - 4 - trailer;
            for i in (8..blobs_end).step_by(16) {
                bytes[i] ^= 0x5a;
            }
            std::fs::write(&path, bytes).unwrap();
            flipped += 1;
        }
    }
    assert!(flipped > 0, "the backup has data packs");
}

/// Runs `drill` with its temporary files in a directory of its own (under
/// /tmp, traversable by the `postgres` user), and asserts that the drill
/// left nothing there: the throwaway server and its files are gone.
fn drill(env: &Env, args: &[&str]) -> std::process::Output {
    let tmp = tempfile::Builder::new()
        .prefix("nfrepo-e2e-drill")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = env.cmd().env("TMPDIR", tmp.path()).args(args).output().unwrap();
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the drill left {left:?}");
    out
}

fn drill_json(env: &Env, config: &str) -> serde_json::Value {
    let out = drill(env, &["--json", "--config", config, "drill", "db"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON: {e}\n{}", crate::harness::describe(&out)))
}

/// Runs a drill that must fail with `exit` and `code`; returns stderr.
fn drill_fails(env: &Env, config: &str, exit: i32, code: &str) -> String {
    let out = drill(env, &["--config", config, "drill", "db"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(exit), "{}", crate::harness::describe(&out));
    assert!(stderr.contains(code), "stderr lacks {code}:\n{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
    stderr
}

/// Good backup → passed; false query → RESTORE_FAILED naming the query;
/// damaged pack → BACKUP_CORRUPTED; then the history lists the three.
fn drill_a_database(env: &Env, kind: &str, url: &str, good_query: &str, false_query: &str) {
    let config = write_config(env, kind, url, &[good_query]);
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);

    let passed = drill_json(env, &config);
    assert_eq!(passed["result"], "passed", "{passed:#}");
    assert!(passed["rto_seconds"].as_f64().unwrap() > 0.0, "{passed:#}");
    assert!(passed["rpo_seconds"].as_f64().unwrap() >= 0.0, "{passed:#}");
    let phases: Vec<&str> = passed["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["server start", "restore", "checks"]);
    let checks = passed["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("restore ")
                && c["detail"].as_str().unwrap().contains("1 tables' row counts match")),
        "the dump-time row counts were verified: {passed:#}"
    );
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == format!("query {good_query}") && c["passed"] == true)
    );
    let config = write_config(env, kind, url, &[good_query, false_query]);
    let stderr = drill_fails(env, &config, 13, "RESTORE_FAILED");
    assert!(stderr.contains(&format!("query {false_query}")), "{stderr}");

    damage_data_packs(env);
    let stderr = drill_fails(env, &config, 11, "BACKUP_CORRUPTED");
    assert!(
        stderr.contains("DRILL_FAILED") && stderr.contains("restore"),
        "{stderr}"
    );

    let history = env.json(&["drill", "--history"]);
    let rows: Vec<(&str, &str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["result"].as_str().unwrap(),
                r["code"].as_str().unwrap_or(""),
                r["failed_check"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3, "{history:#}");
    assert_eq!(rows[0], ("passed", "", ""));
    assert_eq!(rows[1].0, "failed");
    assert_eq!(rows[1].1, "RESTORE_FAILED");
    assert_eq!(rows[1].2, format!("query {false_query}"));
    assert_eq!(rows[2].1, "BACKUP_CORRUPTED");
    assert!(rows[2].2.starts_with("restore"), "{history:#}");
    assert!(history[0]["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(history[1]["rto_seconds"].is_null(), "a failed drill has no RTO");
    assert_eq!(history[0]["snapshot_id"], history[1]["snapshot_id"]);
}

#[test]
fn drill_mariadb() {
    let env = Env::new();
    env.init();
    let db = unique("nf_drill");
    mysql(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.orders (id INT PRIMARY KEY, v VARCHAR(32)); \
         INSERT INTO `{db}`.orders VALUES (1, 'a'), (2, 'b'), (3, 'c');"
    ));
    drill_a_database(
        &env,
        "mysql",
        &format!("{}/{db}", mysql_url()),
        "SELECT count(*) = 3 FROM orders",
        "SELECT count(*) > 100 FROM orders",
    );
    mysql(&format!("DROP DATABASE `{db}`"));
}

#[test]
fn drill_postgres() {
    let env = Env::new();
    env.init();
    let db = unique("nf_drill");
    // The table belongs to a role that a fresh server lacks: the drill
    // replays the snapshot's globals.sql (roles) before the dumps.
    let owner = unique("nf_drill_owner");
    psql("postgres", &format!("CREATE ROLE \"{owner}\""));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(
        &db,
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, v text); INSERT INTO orders VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
             ALTER TABLE orders OWNER TO \"{owner}\""
        ),
    );
    drill_a_database(
        &env,
        "postgres",
        &format!("{}/{db}", postgres_url()),
        "SELECT count(*) = 3 FROM orders",
        "SELECT count(*) > 100 FROM orders",
    );
    psql("postgres", &format!("DROP DATABASE \"{db}\""));
    psql("postgres", &format!("DROP ROLE \"{owner}\""));
}

/// A private redis-server (the shared one's key count moves with other tests).
struct Redis {
    child: Child,
    port: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let server = Self { child, port, _dir: dir };
        for _ in 0..100 {
            if server.cli(&["ping"]).contains("PONG") {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("redis-server on {} did not come up", server.port);
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn drill_redis() {
    let env = Env::new();
    env.init();
    let redis = Redis::start();
    for i in 0..50 {
        assert!(redis.cli(&["SET", &format!("k{i}"), &"v".repeat(100)]).contains("OK"));
    }
    assert!(redis.cli(&["-n", "2", "SET", "other-db", "1"]).contains("OK"));
    let config = write_config(&env, "redis", &format!("redis://127.0.0.1:{}", redis.port), &[]);
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    let facts = env.json(&["snapshots"]);
    let snapshot_json = facts.to_string();
    assert!(
        snapshot_json.contains("redis.keys"),
        "the key count is a fact: {snapshot_json}"
    );

    let passed = drill_json(&env, &config);
    assert_eq!(passed["result"], "passed", "{passed:#}");
    let keys = passed["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redis keys")
        .unwrap_or_else(|| panic!("{passed:#}"));
    assert_eq!(keys["detail"], "51 keys, as at backup time");
    assert!(passed["rto_seconds"].as_f64().unwrap() > 0.0);

    damage_data_packs(&env);
    let stderr = drill_fails(&env, &config, 11, "BACKUP_CORRUPTED");
    assert!(stderr.contains("restore"), "{stderr}");
    let history = env.json(&["drill", "--history"]);
    let results: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["passed", "failed"]);
}

#[test]
fn drill_files_all_and_not_found() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), b"alpha").unwrap();
    std::fs::write(data.join("sub/b.txt"), b"beta").unwrap();
    let config = env.path("nfrepo.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.db]\nkind = \"files\"\npaths = [{0:?}]\n\n[sources.etc]\nkind = \"config\"\npaths = [{0:?}]\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    // No backup yet: nothing to drill.
    drill_fails(&env, &config, 12, "BACKUP_NOT_FOUND");
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    let passed = drill_json(&env, &config);
    assert_eq!(passed["result"], "passed", "{passed:#}");
    assert!(passed["checks"].to_string().contains("2 files"), "{passed:#}");

    // --all drills every source; the one without a backup fails the run.
    let out = drill(&env, &["--json", "--config", &config, "drill", "--all"]);
    assert_eq!(out.status.code(), Some(12), "{}", crate::harness::describe(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["source"].as_str().unwrap(), r["result"].as_str().unwrap()))
        .collect();
    assert_eq!(results, [("db", "passed"), ("etc", "failed")]);
    let history = env.json(&["drill", "--history", "etc"]);
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["failed_check"], "snapshot");
}

/// Ctrl-C during a drill: the throwaway server and its files go, and the
/// drill is recorded as interrupted.
#[test]
fn drill_interrupted_cleans_up() {
    let env = Env::new();
    env.init();
    let db = unique("nf_drill");
    mysql(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.orders (id INT PRIMARY KEY); INSERT INTO `{db}`.orders VALUES (1);"
    ));
    let config = write_config(&env, "mysql", &format!("{}/{db}", mysql_url()), &[]);
    env.ok(&["--config", &config, "snapshot", "--source", "db"]);
    mysql(&format!("DROP DATABASE `{db}`"));

    let tmp = tempfile::Builder::new()
        .prefix("nfrepo-e2e-drill")
        .tempdir_in("/tmp")
        .unwrap();
    let child = env
        .cmd()
        .env("TMPDIR", tmp.path())
        .args(["--config", &config, "drill", "db"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the drill's directory (the server starts in it), then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(tmp.path()).unwrap().next().is_none() {
        assert!(std::time::Instant::now() < deadline, "the drill made no directory");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", crate::harness::describe(&out));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the interrupted drill left {left:?}");
    let history = env.json(&["drill", "--history"]);
    assert_eq!(history[0]["failed_check"], "interrupted", "{history:#}");
    // No mariadbd of the drill survives.
    let survivors = Command::new("pgrep")
        .args(["-f", &tmp.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        survivors.stdout.is_empty(),
        "a server survived: {}",
        String::from_utf8_lossy(&survivors.stdout)
    );
}
