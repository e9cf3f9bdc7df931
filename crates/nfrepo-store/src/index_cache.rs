//! The local index cache: the repository's index deltas, merged into one
//! SQLite table on this machine, so that a run neither downloads every
//! delta again nor holds every blob in memory.
//!
//! Why on disk: the index grows with the repository (one entry per blob, 6.5
//! million for a 100 GB dump at 16 KiB). Loading it into memory on every
//! run is what makes peers run out of memory on big repositories. Here a
//! lookup is a B-tree search with a bounded page cache, and a run fetches
//! only the deltas written since the last one.
//!
//! Like every local cache, it is never the only copy of anything. Each row
//! comes from an index delta in the repository, and the table records which
//! deltas it holds. The engine compares that with the repository's listing
//! and rebuilds from scratch whenever a delta it holds has gone or been
//! superseded (compaction), so the cache never names a pack the repository
//! no longer indexes. Deleting the file costs one full reload.
//!
//! This module stores raw ids and small integers and knows nothing of the
//! format's types; the engine maps them. Its tables (`index_*`) live in the
//! repository's cache database beside the others ([`crate::Cache`]),
//! `<dir>/<repository id>.sqlite`, with their own schema version in the
//! shared `meta` table. The database runs in WAL mode with `synchronous =
//! NORMAL`: a crash of this process never corrupts it, and a database that
//! fails to open is deleted and rebuilt.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, ErrorKind, Result};

/// Bumped whenever a table changes shape; tables of another version are rebuilt.
const SCHEMA_VERSION: i64 = 1;
/// This module's key in the shared `meta` table.
const SCHEMA_KEY: &str = "index_schema";

/// SQLite's page cache for one connection, in KiB: the cache's whole share
/// of memory. The operating system's page cache keeps the rest of the file
/// close at hand without counting against the process.
const PAGE_CACHE_KIB: i64 = 4 * 1024;

/// One blob's index entry as the cache stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedBlob {
    /// The blob id.
    pub id: [u8; 32],
    /// The pack's number in [`IndexCache::packs`].
    pub pack: u32,
    /// The blob kind's format code.
    pub kind: u8,
    /// Offset in the pack.
    pub offset: u32,
    /// Sealed length.
    pub sealed_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// One pack as the cache stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedPack {
    /// Its number, unique within this cache.
    pub number: u32,
    /// The pack id.
    pub id: [u8; 32],
    /// The pack kind's format code.
    pub kind: u8,
    /// Its size in bytes.
    pub size: u64,
}

/// A pack to record, with its blobs (offset, sealed and raw lengths, kind code).
#[derive(Clone, Copy, Debug)]
pub struct PackToCache<'a> {
    /// The pack id.
    pub id: [u8; 32],
    /// The pack kind's format code.
    pub kind: u8,
    /// Its size in bytes.
    pub size: u64,
    /// Its blobs.
    pub blobs: &'a [BlobToCache],
}

/// A blob to record.
#[derive(Clone, Copy, Debug)]
pub struct BlobToCache {
    /// The blob id.
    pub id: [u8; 32],
    /// The blob kind's format code.
    pub kind: u8,
    /// Offset in the pack.
    pub offset: u32,
    /// Sealed length.
    pub sealed_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// One repository's index cache. Safe to share between threads; calls are
/// short local I/O and run on the caller's thread.
#[derive(Debug)]
pub struct IndexCache {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl IndexCache {
    /// Opens (creating if needed) the index cache of repository `repo_id`
    /// (hex) under `dir`. A database that does not open cleanly is deleted
    /// and created again.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] for a malformed id; [`ErrorKind::Other`] if
    /// the directory or database cannot be created.
    pub fn open(dir: &Path, repo_id: &str) -> Result<Self> {
        let path = crate::cache::database_path(dir, repo_id)?;
        match Self::open_at(&path) {
            Ok(cache) => Ok(cache),
            Err(first) => {
                tracing::warn!(cache = %path.display(), error = %first, "index cache unreadable; rebuilding it");
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
                crate::cache::create_private_file(&path)?;
                Self::open_at(&path)
            }
        }
    }

    fn open_at(path: &Path) -> Result<Self> {
        let err = |e| sql_error(path, e);
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB).map_err(err)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            .map_err(err)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![SCHEMA_KEY], |row| {
                row.get(0)
            })
            .optional()
            .map_err(err)?;
        if version != Some(SCHEMA_VERSION) {
            conn.execute_batch(
                "DROP TABLE IF EXISTS index_blobs;
                 DROP TABLE IF EXISTS index_packs;
                 DROP TABLE IF EXISTS index_deltas;
                 CREATE TABLE index_deltas (id BLOB PRIMARY KEY, ingested INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE index_packs (
                     number INTEGER PRIMARY KEY,
                     id BLOB NOT NULL UNIQUE,
                     kind INTEGER NOT NULL,
                     size INTEGER NOT NULL
                 );
                 CREATE TABLE index_blobs (
                     id BLOB PRIMARY KEY,
                     pack INTEGER NOT NULL,
                     kind INTEGER NOT NULL,
                     offset INTEGER NOT NULL,
                     sealed_len INTEGER NOT NULL,
                     raw_len INTEGER NOT NULL
                 ) WITHOUT ROWID;",
            )
            .map_err(err)?;
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![SCHEMA_KEY, SCHEMA_VERSION],
            )
            .map_err(err)?;
        }
        // Fail now, not at the first lookup, if the file is not a database.
        conn.query_row("SELECT count(*) FROM index_deltas", [], |row| row.get::<_, i64>(0))
            .map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// Where the database file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |e| sql_error(&self.path, e)
    }

    /// The index deltas the cache has seen: `(id, true)` for those whose
    /// entries it holds, `(id, false)` for those it skipped because another
    /// delta supersedes them.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn deltas(&self) -> Result<Vec<([u8; 32], bool)>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT id, ingested FROM index_deltas")
            .map_err(self.err())?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, [u8; 32]>(0)?, row.get::<_, bool>(1)?)))
            .map_err(self.err())?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Empties the cache, for a rebuild.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn clear(&self) -> Result<()> {
        self.conn()
            .execute_batch("DELETE FROM index_blobs; DELETE FROM index_packs; DELETE FROM index_deltas;")
            .map_err(self.err())
    }

    /// Records one index delta's packs and blobs, and the deltas it
    /// supersedes as seen and skipped, in one transaction. A blob already
    /// present keeps its first location; a delta already seen is skipped.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn ingest(&self, delta: [u8; 32], supersedes: &[[u8; 32]], packs: &[PackToCache<'_>]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err())?;
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO index_deltas (id, ingested) VALUES (?1, 1)",
                params![delta],
            )
            .map_err(self.err())?;
        for old in supersedes {
            tx.execute(
                "INSERT OR IGNORE INTO index_deltas (id, ingested) VALUES (?1, 0)",
                params![old],
            )
            .map_err(self.err())?;
        }
        if added == 1 {
            let mut add_pack = tx
                .prepare_cached("INSERT OR IGNORE INTO index_packs (id, kind, size) VALUES (?1, ?2, ?3)")
                .map_err(self.err())?;
            let mut pack_number = tx
                .prepare_cached("SELECT number FROM index_packs WHERE id = ?1")
                .map_err(self.err())?;
            let mut add_blob = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO index_blobs (id, pack, kind, offset, sealed_len, raw_len)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(self.err())?;
            for pack in packs {
                let size = i64::try_from(pack.size).unwrap_or(i64::MAX);
                add_pack
                    .execute(params![pack.id, pack.kind, size])
                    .map_err(self.err())?;
                let number: i64 = pack_number
                    .query_row(params![pack.id], |row| row.get(0))
                    .map_err(self.err())?;
                for blob in pack.blobs {
                    add_blob
                        .execute(params![
                            blob.id,
                            number,
                            blob.kind,
                            blob.offset,
                            blob.sealed_len,
                            blob.raw_len
                        ])
                        .map_err(self.err())?;
                }
            }
        }
        tx.commit().map_err(self.err())
    }

    /// Where `id` is stored, if the cache knows it.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn lookup(&self, id: &[u8; 32]) -> Result<Option<CachedBlob>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached("SELECT pack, kind, offset, sealed_len, raw_len FROM index_blobs WHERE id = ?1")
            .map_err(self.err())?;
        statement
            .query_row(params![id], |row| {
                Ok(CachedBlob {
                    id: *id,
                    pack: row.get(0)?,
                    kind: row.get(1)?,
                    offset: row.get(2)?,
                    sealed_len: row.get(3)?,
                    raw_len: row.get(4)?,
                })
            })
            .optional()
            .map_err(self.err())
    }

    /// Every pack the cache knows.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn packs(&self) -> Result<Vec<CachedPack>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT number, id, kind, size FROM index_packs ORDER BY number")
            .map_err(self.err())?;
        let rows = statement
            .query_map([], |row| {
                Ok(CachedPack {
                    number: row.get(0)?,
                    id: row.get(1)?,
                    kind: row.get(2)?,
                    size: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                })
            })
            .map_err(self.err())?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(self.err())
    }

    /// How many distinct blobs the cache knows.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn blob_count(&self) -> Result<u64> {
        let count: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM index_blobs", [], |row| row.get(0))
            .map_err(self.err())?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Other, format!("local index cache {}: {e}", path.display())).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, offset: u32) -> BlobToCache {
        BlobToCache {
            id: [n; 32],
            kind: 1,
            offset,
            sealed_len: 10,
            raw_len: 8,
        }
    }

    #[test]
    fn ingest_lookup_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::open(dir.path(), "ab12").unwrap();
        let first = [blob(1, 8), blob(2, 18)];
        let second = [blob(2, 8), blob(3, 18)];
        cache
            .ingest(
                [7; 32],
                &[],
                &[PackToCache {
                    id: [70; 32],
                    kind: 0,
                    size: 100,
                    blobs: &first,
                }],
            )
            .unwrap();
        cache
            .ingest(
                [8; 32],
                &[[6; 32]],
                &[PackToCache {
                    id: [80; 32],
                    kind: 0,
                    size: 200,
                    blobs: &second,
                }],
            )
            .unwrap();
        assert_eq!(cache.blob_count().unwrap(), 3);
        let packs = cache.packs().unwrap();
        assert_eq!(packs.len(), 2);
        // A blob in two packs keeps its first location.
        let two = cache.lookup(&[2; 32]).unwrap().unwrap();
        assert_eq!((two.pack, two.offset), (packs[0].number, 18));
        assert_eq!(cache.lookup(&[9; 32]).unwrap(), None);
        let mut deltas = cache.deltas().unwrap();
        deltas.sort_unstable();
        assert_eq!(deltas, vec![([6; 32], false), ([7; 32], true), ([8; 32], true)]);
        drop(cache);
        // Reopening keeps everything; clearing drops everything.
        let cache = IndexCache::open(dir.path(), "ab12").unwrap();
        assert_eq!(cache.blob_count().unwrap(), 3);
        cache.clear().unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
        assert!(cache.deltas().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_database_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cd.sqlite"), b"not a database at all, just bytes").unwrap();
        let cache = IndexCache::open(dir.path(), "cd").unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
    }
}
