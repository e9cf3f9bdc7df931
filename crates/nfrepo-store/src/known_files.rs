//! The files a put-only backup host stored: its local change detection.
//!
//! A host that backs up with a put-only credential cannot read the trees of
//! its earlier snapshots, so it cannot compare a file with its parent
//! snapshot's node. Instead it remembers, on this machine only, what it
//! already knew when it stored each file: the path, the file's size, times,
//! inode, device and mode, and what it wrote for it (an opaque value the
//! engine encodes: the file's content list and the ids of every blob it
//! references). Nothing in it comes from the repository, so it reveals
//! nothing the host did not have.
//!
//! Entries are keyed by a **scope** (the caller's: the credential and the
//! source) and the path. The database lives at
//! `<dir>/<repository id>.known-files.sqlite` (mode `0600`, directory
//! `0700`), apart from [`crate::Cache`] and [`crate::IndexCache`]: it can be
//! deleted at any time, and the next run reads every file again.
//!
//! An entry is a claim, never a fact: the engine trusts one only when every
//! blob it names is still in the repository's index. A stale or damaged
//! entry therefore costs a re-read, never a wrong snapshot; a damaged
//! database is deleted and started afresh, as the other per-repository
//! databases are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use crate::cache::{connect_wal, database_path, open_replacing_damaged};
use crate::error::{Error, ErrorKind, Result};

/// Rows written in one transaction.
const BATCH: usize = 2048;

/// What identifies the version of a file the host stored: an entry is used
/// only while all of it is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix nanoseconds.
    pub mtime_ns: i64,
    /// Status change time, Unix nanoseconds.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Device number.
    pub device: u64,
    /// File mode bits.
    pub mode: u32,
}

/// Rows not yet written: path → (stamp, value).
type Pending = HashMap<Vec<u8>, (FileStamp, Vec<u8>)>;

/// One put-only host's record of the files it stored, for one scope.
/// Safe to share between threads.
#[derive(Debug)]
pub struct KnownFiles {
    path: PathBuf,
    scope: Vec<u8>,
    conn: Mutex<Connection>,
    pending: Mutex<Pending>,
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Other, format!("known-files cache {}: {e}", path.display())).with_source(e)
}

// SQLite integers are signed: unsigned fields are stored bit for bit.
#[expect(
    clippy::cast_possible_wrap,
    reason = "stored bit for bit, compared for equality only"
)]
const fn signed(v: u64) -> i64 {
    v as i64
}

#[expect(clippy::cast_sign_loss, reason = "read back bit for bit")]
const fn unsigned(v: i64) -> u64 {
    v as u64
}

impl KnownFiles {
    /// Opens (creating if needed) the record of repository `repo_id` (hex)
    /// under `dir`, for `scope`. A file that is not a database, or a damaged
    /// one, is deleted and created again; one that fails to open otherwise
    /// (busy in another process past the timeout, not readable) is left as
    /// it is and its error returned.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] for a malformed id; [`ErrorKind::Other`] if
    /// the directory or the database cannot be created or opened.
    pub fn open(dir: &Path, repo_id: &str, scope: &[u8]) -> Result<Self> {
        let sqlite = database_path(dir, repo_id)?;
        let path = sqlite.with_file_name(format!("{repo_id}.known-files.sqlite"));
        let conn = open_replacing_damaged(&path, "known-files cache", Self::connect)?;
        Ok(Self {
            path,
            scope: scope.to_vec(),
            conn: Mutex::new(conn),
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn connect(path: &Path) -> Result<Connection> {
        connect_wal(
            path,
            std::time::Duration::from_secs(30),
            "CREATE TABLE IF NOT EXISTS known_files_v1 (
                 scope BLOB NOT NULL,
                 path BLOB NOT NULL,
                 size INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL,
                 ctime_ns INTEGER NOT NULL,
                 inode INTEGER NOT NULL,
                 device INTEGER NOT NULL,
                 mode INTEGER NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (scope, path)
             ) WITHOUT ROWID",
        )
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What was stored for `path`, if it was stored with `stamp`. An entry
    /// recorded but not yet flushed is found too.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn get(&self, path: &[u8], stamp: &FileStamp) -> Result<Option<Vec<u8>>> {
        if let Some((at, value)) = self.pending.lock().unwrap_or_else(PoisonError::into_inner).get(path) {
            return Ok((at == stamp).then(|| value.clone()));
        }
        let err = |e| sql_error(&self.path, e);
        let conn = self.conn();
        let mut select = conn
            .prepare_cached(
                "SELECT size, mtime_ns, ctime_ns, inode, device, mode, value FROM known_files_v1
                 WHERE scope = ?1 AND path = ?2",
            )
            .map_err(err)?;
        let row = select
            .query_row(params![self.scope, path], |row| {
                let at = FileStamp {
                    size: unsigned(row.get(0)?),
                    mtime_ns: row.get(1)?,
                    ctime_ns: row.get(2)?,
                    inode: unsigned(row.get(3)?),
                    device: unsigned(row.get(4)?),
                    mode: row.get(5)?,
                };
                Ok((at, row.get::<_, Vec<u8>>(6)?))
            })
            .optional()
            .map_err(err)?;
        Ok(row.and_then(|(at, value)| (at == *stamp).then_some(value)))
    }

    /// Records that `path`, as `stamp` says, was stored as `value`. Rows are
    /// written in batches; [`Self::flush`] writes the rest.
    ///
    /// # Errors
    /// SQLite failures of a batch, as [`ErrorKind::Other`].
    pub fn put(&self, path: &[u8], stamp: FileStamp, value: Vec<u8>) -> Result<()> {
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.insert(path.to_vec(), (stamp, value));
            pending.len() >= BATCH
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Writes every recorded row, in one transaction.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn flush(&self) -> Result<()> {
        let rows = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if rows.is_empty() {
            return Ok(());
        }
        let err = |e| sql_error(&self.path, e);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO known_files_v1
                     (scope, path, size, mtime_ns, ctime_ns, inode, device, mode, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(err)?;
            for (path, (at, value)) in &rows {
                insert
                    .execute(params![
                        self.scope,
                        path,
                        signed(at.size),
                        at.mtime_ns,
                        at.ctime_ns,
                        signed(at.inode),
                        signed(at.device),
                        at.mode,
                        value
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Where the database file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn stamp(size: u64) -> FileStamp {
        FileStamp {
            size,
            mtime_ns: -5,
            ctime_ns: 7,
            inode: u64::MAX,
            device: 3,
            mode: 0o100_644,
        }
    }

    #[test]
    fn entries_round_trip_per_scope_and_only_for_their_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownFiles::open(dir.path(), "ab12", b"cred\0site").unwrap();
        known.put(b"/srv/a", stamp(10), b"value a".to_vec()).unwrap();
        // Found before and after the flush.
        assert_eq!(
            known.get(b"/srv/a", &stamp(10)).unwrap().as_deref(),
            Some(&b"value a"[..])
        );
        known.flush().unwrap();
        drop(known);
        let known = KnownFiles::open(dir.path(), "ab12", b"cred\0site").unwrap();
        assert_eq!(
            known.get(b"/srv/a", &stamp(10)).unwrap().as_deref(),
            Some(&b"value a"[..])
        );
        // Another size, inode or time: not this entry.
        assert_eq!(known.get(b"/srv/a", &stamp(11)).unwrap(), None);
        let mut moved = stamp(10);
        moved.inode = 1;
        assert_eq!(known.get(b"/srv/a", &moved).unwrap(), None);
        assert_eq!(known.get(b"/srv/b", &stamp(10)).unwrap(), None);
        let other = KnownFiles::open(dir.path(), "ab12", b"cred\0other").unwrap();
        assert_eq!(other.get(b"/srv/a", &stamp(10)).unwrap(), None);
        let mode = std::fs::metadata(known.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_database_is_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownFiles::open(dir.path(), "ab12", b"s").unwrap();
        known.put(b"/a", stamp(1), vec![1]).unwrap();
        known.flush().unwrap();
        let path = known.path().to_owned();
        drop(known);
        std::fs::write(&path, b"not a database at all, just bytes that are long enough").unwrap();
        let known = KnownFiles::open(dir.path(), "ab12", b"s").unwrap();
        assert_eq!(known.get(b"/a", &stamp(1)).unwrap(), None);
        known.put(b"/a", stamp(1), vec![2]).unwrap();
        known.flush().unwrap();
        assert_eq!(known.get(b"/a", &stamp(1)).unwrap(), Some(vec![2]));
    }
}
