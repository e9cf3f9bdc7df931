//! A throwaway MariaDB/MySQL server for a drill: `mariadb-install-db` into
//! the drill's directory, then `mariadbd --no-defaults` on a free loopback
//! port with its socket and temporary files in that directory, `root`
//! without a password, with the load-friendly settings of
//! [`super::tuning`].

use std::path::Path;

use super::server::{Throwaway, free_port, loopback};
use super::tuning::mib;
use crate::{Connection, Result};

fn tool(bin_dir: Option<&Path>, name: &str) -> String {
    bin_dir.map_or_else(|| name.to_owned(), |d| d.join(name).display().to_string())
}

/// Initialises a data directory and starts the server with `memory` bytes
/// of buffer pool; returns how to reach it.
pub(super) fn start(guard: &Throwaway, bin_dir: Option<&Path>, memory: u64) -> Result<Connection> {
    let data = guard.dir().join("data");
    let install = [
        tool(bin_dir, "mariadb-install-db"),
        "--no-defaults".into(),
        format!("--datadir={}", data.display()),
        "--user=root".into(),
        "--auth-root-authentication-method=normal".into(),
        "--skip-test-db".into(),
    ];
    guard.prepare("mariadb-install-db", &install, |_| {})?;
    let port = free_port()?;
    let socket = guard.dir().join("sock");
    let server = [
        tool(bin_dir, "mariadbd"),
        "--no-defaults".into(),
        format!("--datadir={}", data.display()),
        format!("--socket={}", socket.display()),
        // Temporary tables go in the drill's directory too, so an
        // interrupted drill leaves none of them behind in `$TMPDIR`.
        format!("--tmpdir={}", guard.dir().display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--user=root".into(),
        "--skip-log-bin".into(),
        "--innodb-flush-log-at-trx-commit=0".into(),
        "--innodb-doublewrite=0".into(),
        format!("--innodb-buffer-pool-size={}M", mib(memory)),
        format!("--innodb-log-file-size={}M", mib(memory / 4).max(256)),
        "--innodb-log-buffer-size=64M".into(),
        "--skip-name-resolve".into(),
    ];
    guard.start(&server, |_| {})?;
    let connection = loopback("mysql", "root", port);
    let probe = connection.clone();
    guard.wait_ready(|| crate::mysql::query(&probe, None, "SELECT 1").is_ok())?;
    Ok(connection)
}

/// Runs a sanity query in `database`; returns its answer.
pub(super) fn query(connection: &Connection, database: &str, sql: &str) -> Result<String> {
    let sql = format!("USE `{}`; {sql}", database.replace('`', "``"));
    crate::mysql::query(connection, None, &sql)
}
