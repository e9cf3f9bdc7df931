//! A throwaway PostgreSQL server for a drill: `initdb` into the drill's
//! directory, then `postgres` on a free loopback port with its socket in
//! that directory, trust authentication for `postgres`. PostgreSQL refuses
//! to run as root: when nfrepo is root, both run as the `postgres` user
//! (which must exist), and the directory is handed to it. The server runs
//! with the load-friendly settings of [`super::tuning`].

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use super::server::{Throwaway, free_port, loopback};
use super::tuning::mib;
use crate::{Connection, Error, Result};

/// Where PostgreSQL's server binaries are when no `bin_dir` is configured.
const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

fn bin(bin_dir: Option<&Path>) -> PathBuf {
    bin_dir.map_or_else(|| PathBuf::from(DEFAULT_BIN), Path::to_path_buf)
}

/// The user and group to run as: `postgres` when root, else ourselves.
fn identity() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| Error::CommandFailed(format!("cannot look up user postgres: {e}")))?
        .ok_or_else(|| {
            Error::CommandFailed("PostgreSQL does not run as root and there is no user postgres to run it as".into())
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// Initialises a cluster and starts the server with `memory` bytes of
/// shared buffers; returns how to reach it.
pub(super) fn start(guard: &Throwaway, bin_dir: Option<&Path>, memory: u64) -> Result<Connection> {
    let bin = bin(bin_dir);
    let who = identity()?;
    if let Some((uid, gid)) = who {
        std::os::unix::fs::chown(guard.dir(), Some(uid), Some(gid)).map_err(|source| Error::Io {
            path: guard.dir().to_path_buf(),
            source,
        })?;
    }
    let as_user = |command: &mut std::process::Command| {
        if let Some((uid, gid)) = who {
            command.uid(uid).gid(gid);
        }
    };
    let data = guard.dir().join("data");
    let initdb = [
        bin.join("initdb").display().to_string(),
        "-D".into(),
        data.display().to_string(),
        "-A".into(),
        "trust".into(),
        "-U".into(),
        "postgres".into(),
        "--no-sync".into(),
    ];
    guard.prepare("initdb", &initdb, as_user)?;
    let port = free_port()?;
    let server = [
        bin.join("postgres").display().to_string(),
        "-D".into(),
        data.display().to_string(),
        "-p".into(),
        port.to_string(),
        "-k".into(),
        guard.dir().display().to_string(),
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
        "-c".into(),
        "fsync=off".into(),
    ];
    let mut server = server.to_vec();
    for setting in [
        "synchronous_commit=off".to_owned(),
        "full_page_writes=off".to_owned(),
        "wal_level=minimal".to_owned(),
        "max_wal_senders=0".to_owned(),
        "max_wal_size=4GB".to_owned(),
        "checkpoint_timeout=1h".to_owned(),
        "autovacuum=off".to_owned(),
        format!("shared_buffers={}MB", mib(memory)),
        format!("maintenance_work_mem={}MB", mib(memory / 4).clamp(64, 2047)),
    ] {
        server.extend(["-c".to_owned(), setting]);
    }
    guard.start(&server, as_user)?;
    let connection = loopback("postgres", "postgres", port);
    let probe = connection.clone();
    let psql_dir = bin.clone();
    guard.wait_ready(|| crate::postgres::query(&probe, Some(&psql_dir), "postgres", "SELECT 1").is_ok())?;
    Ok(connection)
}

/// Runs a sanity query in `database`; returns its answer.
pub(super) fn query(connection: &Connection, bin_dir: Option<&Path>, database: &str, sql: &str) -> Result<String> {
    crate::postgres::query(connection, Some(&bin(bin_dir)), database, sql)
}

/// Replays a `globals.sql` (roles, tablespaces: what `pg_dumpall
/// --globals-only` wrote) into the fresh server, so that the dumps' `OWNER
/// TO` and `GRANT` statements find their roles. Statements that fail
/// because the object exists (the `postgres` role) are expected; the
/// number of failed statements is returned for the check's detail, and a
/// role that could not be created makes the dump's load fail by name.
pub(super) fn replay_globals(connection: &Connection, bin_dir: Option<&Path>, file: &Path) -> Result<usize> {
    let mut argv = vec![bin(bin_dir).join("psql").display().to_string()];
    argv.extend([
        "--host=127.0.0.1".to_owned(),
        format!("--port={}", connection.port.unwrap_or(5432)),
        "--username=postgres".to_owned(),
        "--no-password".to_owned(),
        "-X".to_owned(),
        "--quiet".to_owned(),
        "--dbname=postgres".to_owned(),
        format!("--file={}", file.display()),
    ]);
    let (program, args) = argv.split_first().ok_or_else(|| Error::Invalid("no psql".into()))?;
    let out = crate::child::command(program, &crate::ChildAuth::none())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::CommandFailed(format!("cannot start psql: {e}")))?;
    if !out.status.success() {
        return Err(Error::CommandFailed(format!(
            "psql failed on globals.sql: {}",
            crate::dump::last_line(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("ERROR:"))
        .count())
}
