//! Opening the index cache: schema, pragmas, and the integrity check after
//! an unclean close.
//!
//! Every open handle registers itself in `index_handles` with the
//! [`ProcessStamp`] of its process and removes its row when dropped. A row
//! whose process is certainly gone means a handle was not closed cleanly
//! (a crash, `kill -9`, a power cut): the next open then runs SQLite's
//! `PRAGMA quick_check` before trusting the file, and a file that fails it
//! is deleted and created again (the cache is rebuilt from the repository).

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use super::{Inconsistent, SCHEMA_KEY, SCHEMA_VERSION, VERSION_KEY, sql_error};
use crate::cache::ProcessStamp;
use crate::error::{Error, Result};

/// SQLite's page cache for one connection, in KiB: the cache's whole share
/// of memory. The operating system's page cache keeps the rest of the file
/// close at hand without counting against the process.
const PAGE_CACHE_KIB: i64 = 4 * 1024;

/// How long a statement waits for another process's write transaction. A
/// full rebuild of a large cache is one transaction of several seconds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// An open connection and the `index_handles` row it registered.
pub(super) struct Opened {
    pub(super) conn: Connection,
    pub(super) handle: Option<i64>,
}

/// Opens `path`, creating or migrating the tables, registering a handle and
/// checking integrity after an unclean close.
pub(super) fn open(path: &Path) -> Result<Opened> {
    let err = |e| sql_error(path, e);
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    crate::cache::enable_wal(&conn, BUSY_TIMEOUT).map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB).map_err(err)?;
    migrate(&mut conn).map_err(err)?;
    let stamp = ProcessStamp::current();
    let unclean = match &stamp {
        Some(_) => reap_handles(&conn).map_err(err)?,
        None => false,
    };
    if unclean {
        tracing::info!(cache = %path.display(), "the index cache was not closed cleanly; checking its integrity");
        let verdict: String = conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(err)?;
        if verdict != "ok" {
            return Err(Error::new(
                crate::ErrorKind::Other,
                format!(
                    "local index cache {}: integrity check failed: {verdict}",
                    path.display()
                ),
            )
            .with_source(Inconsistent));
        }
    }
    let handle = match stamp {
        Some(stamp) => {
            conn.execute(
                "INSERT INTO index_handles (boot, namespace, pid, start) VALUES (?1, ?2, ?3, ?4)",
                params![
                    stamp.boot_id,
                    i64::try_from(stamp.pid_namespace).unwrap_or(i64::MAX),
                    stamp.pid,
                    i64::try_from(stamp.start_ticks).unwrap_or(i64::MAX)
                ],
            )
            .map_err(err)?;
            Some(conn.last_insert_rowid())
        }
        None => None,
    };
    // Fail now, not at the first lookup, if the file is not a database.
    conn.query_row("SELECT count(*) FROM index_deltas", [], |row| row.get::<_, i64>(0))
        .map_err(err)?;
    Ok(Opened { conn, handle })
}

/// Creates the tables, or drops and recreates them when their schema is not
/// this build's; one transaction, so concurrent openers do not interleave.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")?;
    let version: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", params![SCHEMA_KEY], |row| {
            row.get(0)
        })
        .optional()?;
    if version != Some(SCHEMA_VERSION) {
        tx.execute_batch(
            "DROP TABLE IF EXISTS index_blobs;
             DROP TABLE IF EXISTS index_packs;
             DROP TABLE IF EXISTS index_deltas;
             DROP TABLE IF EXISTS index_handles;
             CREATE TABLE index_deltas (id BLOB PRIMARY KEY, ingested INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE index_packs (
                 number INTEGER PRIMARY KEY AUTOINCREMENT,
                 id BLOB NOT NULL UNIQUE,
                 kind INTEGER NOT NULL,
                 size INTEGER NOT NULL
             );
             CREATE TABLE index_blobs (
                 id BLOB NOT NULL,
                 pack INTEGER NOT NULL,
                 kind INTEGER NOT NULL,
                 offset INTEGER NOT NULL,
                 sealed_len INTEGER NOT NULL,
                 raw_len INTEGER NOT NULL,
                 tag INTEGER NOT NULL,
                 PRIMARY KEY (id, pack)
             ) WITHOUT ROWID;
             CREATE TABLE index_handles (
                 boot TEXT NOT NULL,
                 namespace INTEGER NOT NULL,
                 pid INTEGER NOT NULL,
                 start INTEGER NOT NULL
             );",
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![SCHEMA_KEY, SCHEMA_VERSION],
        )?;
        // The version keeps counting across schema changes: a reader never
        // sees the same version for two different contents.
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, 1)
             ON CONFLICT (key) DO UPDATE SET value = value + 1",
            params![VERSION_KEY],
        )?;
    }
    tx.commit()
}

/// Removes the rows of handles whose process is gone; returns whether there were any.
fn reap_handles(conn: &Connection) -> rusqlite::Result<bool> {
    let mut statement = conn.prepare("SELECT rowid, boot, namespace, pid, start FROM index_handles")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            ProcessStamp {
                boot_id: row.get(1)?,
                pid_namespace: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                pid: row.get(3)?,
                start_ticks: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
            },
        ))
    })?;
    let mut gone = Vec::new();
    for row in rows {
        let (rowid, stamp) = row?;
        if stamp.is_gone() {
            gone.push(rowid);
        }
    }
    for rowid in &gone {
        conn.execute("DELETE FROM index_handles WHERE rowid = ?1", params![rowid])?;
    }
    Ok(!gone.is_empty())
}

/// Whether an open failure means the file itself is damaged (so deleting
/// and recreating it is the fix), as opposed to, say, a lock held too long.
pub(super) fn is_damaged_file(error: &Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<Inconsistent>() {
            return true;
        }
        if let Some(sql) = cause.downcast_ref::<rusqlite::Error>() {
            return matches!(
                sql.sqlite_error_code(),
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
            );
        }
        source = cause.source();
    }
    false
}
