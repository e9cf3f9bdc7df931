//! The database servers `scripts/test.sh` starts, and their client tools.
//!
//! Every accessor fails (never skips) when its variable is unset.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: database tests need the servers that scripts/test.sh starts (scripts/start-mariadb.sh, start-postgres.sh, start-redis.sh)")
    })
}

/// `mysql://root@127.0.0.1:13306`
pub fn mysql_url() -> String {
    var("NFREPO_TEST_MYSQL_URL").trim_end_matches('/').to_owned()
}

/// `postgres://postgres@127.0.0.1:15432`
pub fn postgres_url() -> String {
    var("NFREPO_TEST_POSTGRES_URL").trim_end_matches('/').to_owned()
}

/// `redis://127.0.0.1:16379`
pub fn redis_url() -> String {
    var("NFREPO_TEST_REDIS_URL").trim_end_matches('/').to_owned()
}

/// The Redis server's data directory.
pub fn redis_dir() -> String {
    var("NFREPO_TEST_REDIS_DIR")
}

/// A name no other test (or earlier run) uses: `prefix_<pid>_<n>_<time>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{t}", std::process::id())
}

/// Host and port of a `scheme://user@host:port` URL.
fn host_port(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (user, hostport) = rest.split_once('@').unwrap_or(("", rest));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, ""));
    (user.to_owned(), host.to_owned(), port.to_owned())
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs SQL as the test server's admin user; returns the rows.
pub fn mysql(sql: &str) -> String {
    let (user, host, port) = host_port(&mysql_url());
    let mut cmd = Command::new("mysql");
    cmd.args(["--no-defaults", "--protocol=TCP", "--batch", "--skip-column-names"])
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .arg(format!("--user={user}"))
        .args(["-e", sql]);
    run(cmd, &format!("mysql -e {sql:?}"))
}

/// A PostgreSQL client tool: on PATH, else from the PostgreSQL 15 install.
pub fn pg_tool(name: &str) -> String {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if on_path {
        name.to_owned()
    } else {
        format!("/usr/lib/postgresql/15/bin/{name}")
    }
}

/// Runs SQL in `database`; returns the rows.
pub fn psql(database: &str, sql: &str) -> String {
    let (user, host, port) = host_port(&postgres_url());
    let mut cmd = Command::new(pg_tool("psql"));
    cmd.args(["-X", "--tuples-only", "--no-align", "--set=ON_ERROR_STOP=1"])
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .arg(format!("--username={user}"))
        .arg(format!("--dbname={database}"))
        .args(["-c", sql]);
    run(cmd, &format!("psql -c {sql:?}"))
}

/// `redis-cli` against the test server (or `port`), with `args`.
pub fn redis_cli_at(port: &str, args: &[&str]) -> String {
    let (_, host, _) = host_port(&redis_url());
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", &host, "-p", port]).args(args);
    run(cmd, &format!("redis-cli {args:?}"))
}

/// The test server's port.
pub fn redis_port() -> String {
    host_port(&redis_url()).2
}

/// SHA-256 of `bytes`, hex, through `sha256sum`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
