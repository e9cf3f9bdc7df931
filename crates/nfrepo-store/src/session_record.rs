//! This host's record of its backup sessions and of its last full listing
//! of the packs, so that a backup lists every pack only when that can find
//! something.
//!
//! Why: a backup used to list every pack at its start, for two things. It
//! adopts packs no index names (left by an interrupted run of its own), and
//! it notices indexed packs that are gone (issue 17) so that it stores
//! their data again instead of deduplicating against them. With a history of
//! thousands of 5-minute snapshots that listing is most of a tiny backup's
//! cost (two packs per snapshot), and on a healthy repository it finds
//! nothing. The record says when it can find something:
//!
//! - a session of this host that did not commit (aborted or failed, or a
//!   process that is gone: killed) may have left packs to adopt;
//! - this host's last listing that found every indexed pack present is
//!   older than the engine's interval, or there is none.
//!
//! It also records this host's last full listing of the index deltas and
//! the GC plans seen just before it, so that a backup lists the deltas only
//! when GC may have changed the index since (the engine's
//! `backup::listing` module says when, and why that is safe).
//!
//! Whether a pack a backup deduplicated against is still stored is checked
//! by every backup just before its commit point, whatever this record says;
//! the record only decides when the whole listing is worth its cost.
//!
//! Like every local cache it only saves work: a lost or damaged file means
//! one full listing. The database lives at `<dir>/<repository id>.sessions.sqlite`
//! (mode `0600`, WAL, one transaction per change), shared by every process
//! of the host. It holds session names (random ids), process stamps and
//! times: nothing about the repository's content.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use crate::ProcessStamp;
use crate::cache::{connect_wal, database_path, open_replacing_damaged};
use crate::error::{Error, ErrorKind, Result};

/// How long a statement waits for another process's write transaction.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A backup session of this host that has not committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSession {
    /// Its name (the session marker's).
    pub name: String,
    /// The process running it, when `/proc` told.
    pub process: Option<ProcessStamp>,
    /// Ended without committing (aborted or failed).
    pub abandoned: bool,
}

impl OpenSession {
    /// Whether its uploads may be left unindexed for good: it ended without
    /// committing, or its process is gone. A running session (or one whose
    /// process cannot be judged) indexes its own packs.
    #[must_use]
    pub fn left_packs(&self) -> bool {
        self.abandoned || self.process.as_ref().is_some_and(ProcessStamp::is_gone)
    }
}

/// One repository's record on this host. Safe to share between threads;
/// calls are short local I/O and run on the caller's thread.
#[derive(Debug)]
pub struct SessionRecord {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Other, format!("session record {}: {e}", path.display())).with_source(e)
}

impl SessionRecord {
    /// Opens (creating if needed) the record of repository `repo_id` (hex)
    /// under `dir`. A file that does not open as a database is replaced.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] for a malformed id; [`ErrorKind::Other`] if
    /// the directory or the database cannot be created.
    pub fn open(dir: &Path, repo_id: &str) -> Result<Self> {
        let sqlite = database_path(dir, repo_id)?;
        let path = sqlite.with_file_name(format!("{repo_id}.sessions.sqlite"));
        let conn = open_replacing_damaged(&path, "session record", Self::connect)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn connect(path: &Path) -> Result<Connection> {
        connect_wal(
            path,
            BUSY_TIMEOUT,
            "CREATE TABLE IF NOT EXISTS open_sessions_v1 (
                 name TEXT PRIMARY KEY,
                 boot_id TEXT,
                 pid_namespace INTEGER,
                 pid INTEGER,
                 start_ticks INTEGER,
                 abandoned INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS pack_listing_v1 (
                 one INTEGER PRIMARY KEY CHECK (one = 1),
                 complete_ns INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS index_listing_v1 (
                 one INTEGER PRIMARY KEY CHECK (one = 1),
                 listed_ns INTEGER NOT NULL,
                 plans BLOB NOT NULL
             )",
        )
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the database file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When (nanoseconds since the Unix epoch) the last full pack listing
    /// that found every indexed pack began, if one is recorded.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn packs_complete_ns(&self) -> Result<Option<i64>> {
        let conn = self.conn();
        conn.query_row("SELECT complete_ns FROM pack_listing_v1 WHERE one = 1", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(|e| sql_error(&self.path, e))
    }

    /// Records a full pack listing begun at `ns` that found every indexed
    /// pack (`Some`), or forgets the last one (`None`: the next backup lists).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn set_packs_complete_ns(&self, ns: Option<i64>) -> Result<()> {
        let conn = self.conn();
        let done = match ns {
            Some(ns) => conn.execute(
                "INSERT OR REPLACE INTO pack_listing_v1 (one, complete_ns) VALUES (1, ?1)",
                params![ns],
            ),
            None => conn.execute("DELETE FROM pack_listing_v1", []),
        };
        done.map(drop).map_err(|e| sql_error(&self.path, e))
    }

    /// The last full listing of the index deltas merged into the host's
    /// index cache by a backup: when it began (ns since the Unix epoch) and
    /// the GC plans the backup had listed just before it (32-byte ids,
    /// sorted), if one is recorded.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn index_listing(&self) -> Result<Option<(i64, Vec<[u8; 32]>)>> {
        let conn = self.conn();
        let row: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT listed_ns, plans FROM index_listing_v1 WHERE one = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| sql_error(&self.path, e))?;
        Ok(row.and_then(|(ns, plans)| {
            // A blob that is not whole ids is no record: the next backup lists.
            let (ids, rest) = plans.as_chunks::<32>();
            rest.is_empty().then(|| (ns, ids.to_vec()))
        }))
    }

    /// Records a full listing of the index deltas begun at `ns` after the
    /// GC plans `plans` were listed (`Some`), or forgets the last one
    /// (`None`: the next backup lists).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn set_index_listing(&self, listing: Option<(i64, &[[u8; 32]])>) -> Result<()> {
        let conn = self.conn();
        let done = match listing {
            Some((ns, plans)) => conn.execute(
                "INSERT OR REPLACE INTO index_listing_v1 (one, listed_ns, plans) VALUES (1, ?1, ?2)",
                params![ns, plans.as_flattened()],
            ),
            None => conn.execute("DELETE FROM index_listing_v1", []),
        };
        done.map(drop).map_err(|e| sql_error(&self.path, e))
    }

    /// Records that session `name` started in `process`.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn begin(&self, name: &str, process: Option<&ProcessStamp>) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR REPLACE INTO open_sessions_v1
                 (name, boot_id, pid_namespace, pid, start_ticks, abandoned)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![
                name,
                process.map(|p| p.boot_id.as_str()),
                process.map(|p| p.pid_namespace.cast_signed()),
                process.map(|p| p.pid),
                process.map(|p| p.start_ticks.cast_signed()),
            ],
        )
        .map(drop)
        .map_err(|e| sql_error(&self.path, e))
    }

    /// Records the end of session `name`: a committed one is forgotten, one
    /// that did not commit is kept as abandoned (its packs may need adopting).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn end(&self, name: &str, committed: bool) -> Result<()> {
        let conn = self.conn();
        let done = if committed {
            conn.execute("DELETE FROM open_sessions_v1 WHERE name = ?1", params![name])
        } else {
            conn.execute(
                "UPDATE open_sessions_v1 SET abandoned = 1 WHERE name = ?1",
                params![name],
            )
        };
        done.map(drop).map_err(|e| sql_error(&self.path, e))
    }

    /// Every recorded session that has not committed.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn open_sessions(&self) -> Result<Vec<OpenSession>> {
        let err = |e| sql_error(&self.path, e);
        let conn = self.conn();
        let mut select = conn
            .prepare_cached(
                "SELECT name, boot_id, pid_namespace, pid, start_ticks, abandoned
                 FROM open_sessions_v1 ORDER BY name",
            )
            .map_err(err)?;
        let rows = select
            .query_map([], |row| {
                let boot_id: Option<String> = row.get(1)?;
                let pid_namespace: Option<i64> = row.get(2)?;
                let pid: Option<u32> = row.get(3)?;
                let start_ticks: Option<i64> = row.get(4)?;
                let process = match (boot_id, pid_namespace, pid, start_ticks) {
                    (Some(boot_id), Some(ns), Some(pid), Some(ticks)) => Some(ProcessStamp {
                        boot_id,
                        pid_namespace: ns.cast_unsigned(),
                        pid,
                        start_ticks: ticks.cast_unsigned(),
                    }),
                    _ => None,
                };
                Ok(OpenSession {
                    name: row.get(0)?,
                    process,
                    abandoned: row.get::<_, i64>(5)? != 0,
                })
            })
            .map_err(err)?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(err)
    }

    /// Forgets the sessions `names` (their packs were adopted).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn forget(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let err = |e| sql_error(&self.path, e);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(err)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM open_sessions_v1 WHERE name = ?1")
                .map_err(err)?;
            for name in names {
                delete.execute(params![name]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn sessions_are_forgotten_on_commit_and_kept_when_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let record = SessionRecord::open(dir.path(), "ab12").unwrap();
        let me = ProcessStamp::current();
        record.begin("a", me.as_ref()).unwrap();
        record.begin("b", me.as_ref()).unwrap();
        record.begin("c", None).unwrap();
        record.end("a", true).unwrap();
        record.end("b", false).unwrap();
        // Another handle (another process of the host) sees the same.
        let other = SessionRecord::open(dir.path(), "ab12").unwrap();
        let open = other.open_sessions().unwrap();
        assert_eq!(open.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(open[0].process, me);
        assert!(open[0].left_packs(), "abandoned");
        assert!(!open[1].left_packs(), "running, or not judged");
        other.forget(&["b".to_owned()]).unwrap();
        assert_eq!(record.open_sessions().unwrap().len(), 1);
    }

    #[test]
    fn a_session_whose_process_is_gone_left_packs() {
        let Some(me) = ProcessStamp::current() else {
            return; // no /proc: nothing to tell
        };
        let dir = tempfile::tempdir().unwrap();
        let record = SessionRecord::open(dir.path(), "ab12").unwrap();
        let gone = ProcessStamp {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        record.begin("killed", Some(&gone)).unwrap();
        record.begin("running", Some(&me)).unwrap();
        let open = record.open_sessions().unwrap();
        assert!(open[0].left_packs());
        assert!(!open[1].left_packs());
    }

    #[test]
    fn the_listing_time_round_trips_and_a_damaged_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let record = SessionRecord::open(dir.path(), "ab12").unwrap();
        assert_eq!(record.packs_complete_ns().unwrap(), None);
        record.set_packs_complete_ns(Some(42)).unwrap();
        assert_eq!(record.packs_complete_ns().unwrap(), Some(42));
        record.set_packs_complete_ns(None).unwrap();
        assert_eq!(record.packs_complete_ns().unwrap(), None);
        record.set_packs_complete_ns(Some(7)).unwrap();
        assert_eq!(record.index_listing().unwrap(), None);
        let plans = [[1u8; 32], [2u8; 32]];
        record.set_index_listing(Some((9, &plans))).unwrap();
        assert_eq!(record.index_listing().unwrap(), Some((9, plans.to_vec())));
        record.set_index_listing(Some((10, &[]))).unwrap();
        assert_eq!(record.index_listing().unwrap(), Some((10, Vec::new())));
        let path = record.path().to_path_buf();
        drop(record);
        for suffix in ["-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
        std::fs::write(
            &path,
            b"not a database at all, but long enough to look like a header......",
        )
        .unwrap();
        let record = SessionRecord::open(dir.path(), "ab12").unwrap();
        assert_eq!(
            record.packs_complete_ns().unwrap(),
            None,
            "a lost record means one full listing"
        );
        assert_eq!(record.index_listing().unwrap(), None);
    }
}
