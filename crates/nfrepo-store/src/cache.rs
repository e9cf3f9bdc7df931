//! The local cache: one SQLite database per repository, on this machine only.
//!
//! The cache holds facts about a repository that are slow to recompute and
//! cheap to lose: when each pack was last verified by `check --read-data`,
//! so successive partial checks cover every pack before repeating one; and,
//! in the same database, the merged index ([`crate::IndexCache`], which has
//! its own connection and tables). Nothing in it is ever the only copy of anything: deleting
//! the database (or the whole directory) loses progress, never data, and
//! the next run starts a fresh one. A database whose schema version this
//! build does not know is discarded and rebuilt, for the same reason.
//!
//! Layout: one table per purpose, each with its own small API on [`Cache`],
//! so later uses (index lookups, GC bookkeeping) add a table without
//! disturbing the others. The database lives at `<dir>/<repository id>.sqlite`,
//! where `<dir>` is [`default_cache_dir`] unless the caller picks another.
//!
//! The API is synchronous (SQLite calls are short local I/O); async callers
//! run it on a blocking thread.

mod process;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use self::process::ProcessStamp;
use crate::error::{Error, ErrorKind, Result};

/// Bumped whenever a table changes shape; an older database is rebuilt.
const SCHEMA_VERSION: i64 = 1;

/// Environment variable naming the cache directory (highest priority).
pub const NFREPO_CACHE_DIR: &str = "NFREPO_CACHE_DIR";

/// The cache directory: `$NFREPO_CACHE_DIR`, else `$XDG_CACHE_HOME/nfrepo`,
/// else `~/.cache/nfrepo`; `None` if none of them can be determined.
#[must_use]
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty(NFREPO_CACHE_DIR)
        .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| d.join("nfrepo")))
        .or_else(|| non_empty("HOME").map(|d| d.join(".cache").join("nfrepo")))
}

/// One repository's local cache. Safe to share between threads.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Other, format!("local cache {}: {e}", path.display())).with_source(e)
}

/// The cache database of repository `repo_id` (hex) under `dir`, creating
/// the directory (`0700`) and an empty database file (`0600`, whatever the
/// umask: the cache names every pack and blob of the repository). Every
/// cache table of that repository lives in this file.
///
/// # Errors
/// [`ErrorKind::InvalidKey`] for a malformed id; [`ErrorKind::Other`] if the
/// directory cannot be created.
pub(crate) fn database_path(dir: &Path, repo_id: &str) -> Result<PathBuf> {
    if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::new(
            ErrorKind::InvalidKey,
            format!("cache: {repo_id:?} is not a repository id"),
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::new(
                ErrorKind::Other,
                format!("cannot create cache directory {}", dir.display()),
            )
            .with_source(e)
        })?;
    let path = dir.join(format!("{repo_id}.sqlite"));
    create_private_file(&path)?;
    Ok(path)
}

/// Creates `path` empty with mode `0600` if it does not exist, and takes
/// group and other access away from an existing one. SQLite gives its
/// `-wal` and `-shm` files the mode of the database file, so this covers them.
///
/// # Errors
/// [`ErrorKind::Other`] if the file cannot be created or its mode changed.
pub(crate) fn create_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |e: std::io::Error| {
        Error::new(ErrorKind::Other, format!("cannot create cache file {}", path.display())).with_source(e)
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    let mode = file.metadata().map_err(failed)?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(failed)?;
    }
    Ok(())
}

/// Opens the database at `path` (created `0600` if missing) in WAL mode
/// with `synchronous = NORMAL` (a crash of this process never corrupts it)
/// and `busy` as the wait for another process's write, then runs `schema`:
/// the side databases' shared setup ([`crate::KnownFiles`], [`crate::ObjectCache`]).
///
/// # Errors
/// The file cannot be created, or an SQLite failure (returned as is, so the
/// caller can tell a damaged file from a busy one).
pub(crate) fn connect_wal(path: &Path, busy: std::time::Duration, schema: &str) -> Result<Connection> {
    let err = |e| sql_error(path, e);
    create_private_file(path)?;
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(busy).map_err(err)?;
    enable_wal(&conn, busy).map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    conn.execute_batch(schema).map_err(err)?;
    Ok(conn)
}

/// Switches `conn` to WAL mode, waiting up to `busy` for other connections.
///
/// Why a loop of its own: when several processes open a new database at
/// once, `PRAGMA journal_mode = WAL` meets another connection's lock and
/// SQLite answers `SQLITE_BUSY` at once, without calling the busy handler
/// that every other statement waits through (seen with six connections
/// racing to create one cache: about one open in a hundred failed). The
/// switch is retried with a short, growing pause until it succeeds or
/// `busy` has passed. Once a database is in WAL mode the pragma only reads
/// the mode, so the loop costs nothing after the first open.
///
/// # Errors
/// The last SQLite failure: any that is not `SQLITE_BUSY`, or `SQLITE_BUSY`
/// still after `busy`.
pub(crate) fn enable_wal(conn: &Connection, busy: std::time::Duration) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + busy;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() + pause < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

impl Cache {
    /// Opens (creating if needed) the cache of repository `repo_id` (hex) under `dir`.
    ///
    /// # Errors
    /// [`ErrorKind::Other`] if the directory cannot be created or the database opened.
    pub fn open(dir: &Path, repo_id: &str) -> Result<Self> {
        let path = database_path(dir, repo_id)?;
        let conn = Connection::open(&path).map_err(|e| sql_error(&path, e))?;
        let cache = Self {
            path,
            conn: Mutex::new(conn),
        };
        cache.migrate()?;
        Ok(cache)
    }

    /// Where the database file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates the tables, or drops and recreates them if the schema is not this build's.
    ///
    /// One transaction that takes the write lock first (`BEGIN IMMEDIATE`,
    /// waiting through the busy timeout): two processes opening a new cache
    /// at once both found no schema, and the second one's `CREATE TABLE`
    /// then failed on the first one's table ("table pack_checks already
    /// exists"). Now the second waits and finds the schema in place.
    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn();
        let err = |e| sql_error(&self.path, e);
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            .map_err(err)?;
        let version: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |row| row.get(0))
            .optional()
            .map_err(err)?;
        if version != Some(SCHEMA_VERSION) {
            tx.execute_batch(
                "DROP TABLE IF EXISTS pack_checks;
                 CREATE TABLE pack_checks (
                     pack TEXT PRIMARY KEY,
                     checked_at INTEGER NOT NULL
                 );",
            )
            .map_err(err)?;
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
                params![SCHEMA_VERSION],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Records that `pack` (hex id) verified cleanly at `checked_at` (Unix seconds).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn record_pack_checked(&self, pack: &str, checked_at: i64) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO pack_checks (pack, checked_at) VALUES (?1, ?2)",
                params![pack, checked_at],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Forgets a pack's verification (it failed, or it is gone).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn forget_pack_check(&self, pack: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM pack_checks WHERE pack = ?1", params![pack])
            .map(|_| ())
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Every recorded clean verification: (hex pack id, Unix seconds).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn pack_checks(&self) -> Result<Vec<(String, i64)>> {
        let conn = self.conn();
        let err = |e| sql_error(&self.path, e);
        let mut stmt = conn.prepare("SELECT pack, checked_at FROM pack_checks").map_err(err)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .map_err(err)?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(err)
    }
}

/// Opens a per-repository database of the cache directory with `connect`.
/// A file that is not a database, or a damaged one, is deleted (with its
/// WAL and shared-memory files) and created again; one merely busy is
/// another process's, in use, and its error is returned.
pub(crate) fn open_replacing_damaged(
    path: &Path,
    what: &str,
    connect: impl Fn(&Path) -> Result<Connection>,
) -> Result<Connection> {
    match connect(path) {
        Ok(conn) => Ok(conn),
        Err(e) if is_damaged_database(&e) => {
            tracing::warn!(error = %e, "{what} damaged; starting it afresh");
            delete_database_files(path);
            connect(path)
        }
        Err(e) => Err(e),
    }
}

/// Deletes a database file with its WAL and shared-memory files. Other
/// processes keep reading the file they opened; the next open creates a
/// new one.
pub(crate) fn delete_database_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.to_owned().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// Whether `error` says the file is not a usable database at all.
fn is_damaged_database(error: &Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(sql) = cause.downcast_ref::<rusqlite::Error>() {
            return matches!(
                sql.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            );
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    // Several processes of one host start at once with a new cache
    // directory (cron, or nine `nfrepo snapshots` in the audit e2e test):
    // each must open every database of the cache, none may fail. Before
    // `enable_wal`, about one open in a hundred got "database is locked";
    // before `Cache::migrate` ran in one immediate transaction, a second
    // opener of a new check cache failed on "table pack_checks already
    // exists".
    // Threads with their own connections take the same file locks as
    // processes do.
    #[test]
    fn many_connections_creating_the_cache_databases_at_once_all_open() {
        const OPENERS: usize = 6;
        for _round in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(OPENERS));
            let openers: Vec<_> = (0..OPENERS)
                .map(|n| {
                    let (dir, start) = (dir.path().to_path_buf(), start.clone());
                    std::thread::spawn(move || -> Result<()> {
                        start.wait();
                        // Each opener takes the databases in its own order.
                        for step in 0..5 {
                            match (n + step) % 5 {
                                0 => drop(crate::ObjectCache::open(&dir, "ab12")?.snapshots(true)?),
                                1 => drop(crate::KnownFiles::open(&dir, "ab12", b"scope")?),
                                2 => drop(crate::SessionRecord::open(&dir, "ab12")?.open_sessions()?),
                                3 => Cache::open(&dir, "ab12")?.record_pack_checked("p", 1)?,
                                _ => drop(crate::IndexCache::open(&dir, "ab12")?),
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for opener in openers {
                if let Err(e) = opener.join().unwrap() {
                    panic!("an opener failed: {e}");
                }
            }
        }
    }

    // Issue 9, bug 5: the cache was created with the umask's mode.
    #[test]
    fn cache_directory_and_database_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache").join("nfrepo");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        let cache = Cache::open(&cache_dir, "ab12").unwrap();
        cache.record_pack_checked("p1", 10).unwrap();
        let index = crate::IndexCache::open(&cache_dir, "cd34").unwrap();
        nix::sys::stat::umask(old);
        drop(index);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache_dir), 0o700);
        assert_eq!(mode(&dir.path().join("cache")), 0o700);
        assert_eq!(mode(cache.path()), 0o600);
        assert_eq!(mode(&cache_dir.join("cd34.sqlite")), 0o600);
        // An existing database made world-readable is tightened on open.
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Cache::open(&cache_dir, "ab12").unwrap());
        assert_eq!(mode(cache.path()), 0o600);
    }

    #[test]
    fn records_survive_reopening_and_a_deleted_database_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), "ab12").unwrap();
        cache.record_pack_checked("p1", 10).unwrap();
        cache.record_pack_checked("p2", 20).unwrap();
        cache.record_pack_checked("p1", 30).unwrap();
        cache.forget_pack_check("p2").unwrap();
        drop(cache);
        let cache = Cache::open(dir.path(), "ab12").unwrap();
        assert_eq!(cache.pack_checks().unwrap(), vec![("p1".to_owned(), 30)]);
        let path = cache.path().to_path_buf();
        drop(cache);
        std::fs::remove_file(path).unwrap();
        assert!(
            Cache::open(dir.path(), "ab12")
                .unwrap()
                .pack_checks()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_unknown_schema_is_rebuilt_and_other_repositories_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), "01").unwrap();
        cache.record_pack_checked("p1", 10).unwrap();
        cache
            .conn()
            .execute("UPDATE meta SET value = 999 WHERE key = 'schema'", [])
            .unwrap();
        drop(cache);
        assert!(Cache::open(dir.path(), "01").unwrap().pack_checks().unwrap().is_empty());
        assert!(Cache::open(dir.path(), "02").unwrap().pack_checks().unwrap().is_empty());
        assert!(Cache::open(dir.path(), "../x").is_err());
    }
}
