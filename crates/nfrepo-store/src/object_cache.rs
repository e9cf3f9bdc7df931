//! The local copy of small immutable repository objects (snapshot roots),
//! so that a run lists them once and fetches only the names it has not seen.
//!
//! Why: every backup and `nfrepo snapshots` needs every snapshot's header
//! (source, time, root). Fetching each one on every run made the cost of a
//! tiny backup grow with the history (about 1 s at 600 snapshots on a local
//! directory, one request per snapshot on S3). A snapshot object is written
//! once and named by the BLAKE3 of its stored bytes, so a copy of those bytes
//! kept under its name never goes stale: it can only be removed (forget).
//!
//! What is kept: the object's **stored bytes, still sealed**, keyed by its
//! kind and name. The engine opens them exactly as it opens bytes fetched
//! from the repository (which authenticates them and checks them against
//! the name), so a damaged or altered entry is detected at use and fetched
//! again. Snapshots are kept in a second layout (`snapshot_headers_v2`,
//! module `snapshots`): the sealed bytes and, beside them, the decoded
//! header with its source, profile and time, for display and for picking a
//! backup's parent; what those may be trusted for is said there. The first
//! layout (`cached_objects_v1`) is only read now, and its rows moved to the
//! second as the engine opens them.
//!
//! Like every local cache it is never the only copy of anything. The
//! database lives at `<dir>/<repository id>.objects.sqlite` (mode `0600`,
//! directory `0700`), apart from [`crate::Cache`] and [`crate::IndexCache`].
//! Several processes of one host share it: every change is one transaction
//! (WAL mode, `synchronous = NORMAL`, so a crash never corrupts it), entries
//! are immutable (a concurrent writer of the same name writes the same
//! bytes), and removing an entry another process still wanted only costs
//! that process one fetch. A file that does not open as a database is
//! deleted and started afresh.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, params};

pub use self::snapshots::{CachedSnapshot, SnapshotRow};
use crate::ObjectKind;
use crate::cache::{connect_wal, database_path, open_replacing_damaged};
use crate::error::{Error, ErrorKind, Result};

mod snapshots;

/// How long a statement waits for another process's write transaction.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One repository's cached objects. Safe to share between threads; calls
/// are short local I/O and run on the caller's thread.
#[derive(Debug)]
pub struct ObjectCache {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Other, format!("object cache {}: {e}", path.display())).with_source(e)
}

impl ObjectCache {
    /// Opens (creating if needed) the object cache of repository `repo_id`
    /// (hex) under `dir`. A file that is not a database, or a damaged one,
    /// is deleted and created again.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] for a malformed id; [`ErrorKind::Other`] if
    /// the directory or the database cannot be created.
    pub fn open(dir: &Path, repo_id: &str) -> Result<Self> {
        let sqlite = database_path(dir, repo_id)?;
        let path = sqlite.with_file_name(format!("{repo_id}.objects.sqlite"));
        let conn = open_replacing_damaged(&path, "object cache", Self::connect)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Removes the database at `path` and its WAL files (other processes
    /// keep the file they have open).
    fn connect(path: &Path) -> Result<Connection> {
        connect_wal(
            path,
            BUSY_TIMEOUT,
            &format!(
                "CREATE TABLE IF NOT EXISTS cached_objects_v1 (
                     kind TEXT NOT NULL,
                     name TEXT NOT NULL,
                     bytes BLOB NOT NULL,
                     PRIMARY KEY (kind, name)
                 ) WITHOUT ROWID;
                 {}",
                snapshots::SCHEMA
            ),
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

    /// Every cached object of `kind`: its name and stored bytes, in name order.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn load(&self, kind: ObjectKind) -> Result<Vec<(String, Vec<u8>)>> {
        let err = |e| sql_error(&self.path, e);
        let conn = self.conn();
        let mut select = conn
            .prepare_cached("SELECT name, bytes FROM cached_objects_v1 WHERE kind = ?1 ORDER BY name")
            .map_err(err)?;
        let rows = select
            .query_map(params![kind.prefix()], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(err)?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(err)
    }

    /// Adds (or replaces) the objects `put` and removes those named in
    /// `remove`, all of `kind`, in one transaction, in the first layout.
    /// The engine no longer writes it (snapshots go to
    /// [`Self::update_snapshots`]); tests use it to plant rows of that layout.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`]; nothing was changed.
    pub fn update(&self, kind: ObjectKind, put: &[(String, &[u8])], remove: &[String]) -> Result<()> {
        if put.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let err = |e| sql_error(&self.path, e);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(err)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM cached_objects_v1 WHERE kind = ?1 AND name = ?2")
                .map_err(err)?;
            for name in remove {
                delete.execute(params![kind.prefix(), name]).map_err(err)?;
            }
            let mut insert = tx
                .prepare_cached("INSERT OR REPLACE INTO cached_objects_v1 (kind, name, bytes) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for (name, bytes) in put {
                insert.execute(params![kind.prefix(), name, bytes]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn entries_round_trip_per_kind_and_are_shared_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let one = ObjectCache::open(dir.path(), "ab12").unwrap();
        let two = ObjectCache::open(dir.path(), "ab12").unwrap();
        one.update(
            ObjectKind::Snapshot,
            &[("b".to_owned(), b"bee"), ("a".to_owned(), b"ay")],
            &[],
        )
        .unwrap();
        one.update(ObjectKind::Index, &[("a".to_owned(), b"index")], &[])
            .unwrap();
        assert_eq!(
            two.load(ObjectKind::Snapshot).unwrap(),
            vec![("a".to_owned(), b"ay".to_vec()), ("b".to_owned(), b"bee".to_vec())]
        );
        two.update(ObjectKind::Snapshot, &[("c".to_owned(), b"sea")], &["a".to_owned()])
            .unwrap();
        let names: Vec<String> = one
            .load(ObjectKind::Snapshot)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(one.load(ObjectKind::Index).unwrap().len(), 1);
        // Another repository's cache is another file.
        assert!(
            ObjectCache::open(dir.path(), "cd34")
                .unwrap()
                .load(ObjectKind::Snapshot)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_file_is_owner_only_and_a_damaged_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        let cache = ObjectCache::open(dir.path(), "ab12").unwrap();
        nix::sys::stat::umask(old);
        assert_eq!(
            std::fs::metadata(cache.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let path = cache.path().to_path_buf();
        drop(cache);
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
        let cache = ObjectCache::open(dir.path(), "ab12").unwrap();
        assert!(cache.load(ObjectKind::Snapshot).unwrap().is_empty());
        cache
            .update(ObjectKind::Snapshot, &[("a".to_owned(), b"ay")], &[])
            .unwrap();
        assert_eq!(cache.load(ObjectKind::Snapshot).unwrap().len(), 1);
    }
}
