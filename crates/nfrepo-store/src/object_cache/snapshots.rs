//! Snapshot headers in the object cache: each snapshot's stored (sealed)
//! bytes **and** its decoded header, with the fields a backup looks its
//! parent up by, and when the last full listing of `snapshots/` was merged.
//!
//! Why the decoded header too: opening 10,000 sealed headers (AEAD, content
//! hash, decoding) was a fifth of `nfrepo snapshots`' CPU at 10,000
//! snapshots, and a backup needs one of them, its parent. With the source,
//! profile and time in columns, the parent candidate is one indexed query.
//!
//! Table `snapshot_headers_v2` (one row per snapshot object name):
//!
//! | column | type | what |
//! |---|---|---|
//! | `name` | text, key | the object name (hex of the snapshot id) |
//! | `source` | text | the snapshot's source |
//! | `profile` | text | its chunking profile |
//! | `time_ns` | integer | its time, ns since the epoch |
//! | `sealed` | blob | the object's stored bytes, as fetched (still sealed) |
//! | `header` | blob | the header decoded from them, as the engine encodes it |
//!
//! and `listings_v1 (kind, listed_ns)`: when (this host's clock, ns) the
//! latest full listing of a kind whose result was merged here began; kept
//! at the latest of concurrent writers.
//!
//! What a row may be trusted for is the engine's decision (it documents
//! it): the sealed bytes are authenticated again whenever a decision rests
//! on them; the columns and the decoded header serve display and pick
//! candidates. They hold what a snapshot header holds (host and user
//! names, paths, tags, a command's argv with secrets removed, facts such
//! as a binlog position), never a key: readable on this host by the
//! cache's owner only (`0600`), like the rest of the cache.
//!
//! Rows written by the earlier layout (`cached_objects_v1`, sealed bytes
//! only) are still read, through [`ObjectCache::load`], and moved here as
//! the engine opens them.

use rusqlite::{OptionalExtension, params};

use super::{ObjectCache, sql_error};
use crate::ObjectKind;
use crate::error::Result;

/// The tables (created with the cache's other tables).
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS snapshot_headers_v2 (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        profile TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        sealed BLOB NOT NULL,
        header BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS snapshot_headers_v2_latest
        ON snapshot_headers_v2 (source, profile, time_ns);
    CREATE TABLE IF NOT EXISTS listings_v1 (
        kind TEXT PRIMARY KEY,
        listed_ns INTEGER NOT NULL
    ) WITHOUT ROWID";

/// One snapshot to cache.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotRow<'a> {
    /// Its object name.
    pub name: &'a str,
    /// Its source.
    pub source: &'a str,
    /// Its chunking profile.
    pub profile: &'a str,
    /// Its time, ns since the epoch.
    pub time_ns: i64,
    /// The stored bytes it was opened from.
    pub sealed: &'a [u8],
    /// The decoded header, encoded by the caller.
    pub header: &'a [u8],
}

/// One cached snapshot: its name and one of its two forms (which one is
/// the method's to say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedSnapshot {
    /// Its object name.
    pub name: String,
    /// The sealed bytes or the decoded header.
    pub bytes: Vec<u8>,
}

impl ObjectCache {
    /// Every cached snapshot with its decoded header (`header == true`) or
    /// its sealed bytes, in name order.
    ///
    /// # Errors
    /// SQLite failures, as [`crate::ErrorKind::Other`].
    pub fn snapshots(&self, header: bool) -> Result<Vec<CachedSnapshot>> {
        let err = |e| sql_error(&self.path, e);
        let conn = self.conn();
        let sql = if header {
            "SELECT name, header FROM snapshot_headers_v2 ORDER BY name"
        } else {
            "SELECT name, sealed FROM snapshot_headers_v2 ORDER BY name"
        };
        let mut select = conn.prepare_cached(sql).map_err(err)?;
        let rows = select
            .query_map([], |row| {
                Ok(CachedSnapshot {
                    name: row.get(0)?,
                    bytes: row.get(1)?,
                })
            })
            .map_err(err)?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(err)
    }

    /// The cached snapshot of `source` and `profile` with the latest time
    /// (the greatest name among equal times), with its sealed bytes.
    ///
    /// # Errors
    /// SQLite failures, as [`crate::ErrorKind::Other`].
    pub fn latest_snapshot(&self, source: &str, profile: &str) -> Result<Option<CachedSnapshot>> {
        let conn = self.conn();
        let mut select = conn
            .prepare_cached(
                "SELECT name, sealed FROM snapshot_headers_v2 WHERE source = ?1 AND profile = ?2
                 ORDER BY time_ns DESC, name DESC LIMIT 1",
            )
            .map_err(|e| sql_error(&self.path, e))?;
        select
            .query_row(params![source, profile], |row| {
                Ok(CachedSnapshot {
                    name: row.get(0)?,
                    bytes: row.get(1)?,
                })
            })
            .optional()
            .map_err(|e| sql_error(&self.path, e))
    }

    /// When the latest full listing of `snapshots/` merged here began, if any.
    ///
    /// # Errors
    /// SQLite failures, as [`crate::ErrorKind::Other`].
    pub fn snapshots_listed_ns(&self) -> Result<Option<i64>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT listed_ns FROM listings_v1 WHERE kind = ?1",
            params![ObjectKind::Snapshot.prefix()],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| sql_error(&self.path, e))
    }

    /// In one transaction: adds (or replaces) the snapshots `put`, removes
    /// those named in `remove` (from both layouts), and, with `listed_ns`,
    /// records a full listing begun then (unless a later one is recorded).
    ///
    /// # Errors
    /// SQLite failures, as [`crate::ErrorKind::Other`]; nothing was changed.
    pub fn update_snapshots(&self, put: &[SnapshotRow<'_>], remove: &[String], listed_ns: Option<i64>) -> Result<()> {
        if put.is_empty() && remove.is_empty() && listed_ns.is_none() {
            return Ok(());
        }
        let err = |e| sql_error(&self.path, e);
        let kind = ObjectKind::Snapshot.prefix();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(err)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM snapshot_headers_v2 WHERE name = ?1")
                .map_err(err)?;
            let mut delete_v1 = tx
                .prepare_cached("DELETE FROM cached_objects_v1 WHERE kind = ?1 AND name = ?2")
                .map_err(err)?;
            for name in remove {
                delete.execute(params![name]).map_err(err)?;
                delete_v1.execute(params![kind, name]).map_err(err)?;
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO snapshot_headers_v2 (name, source, profile, time_ns, sealed, header)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err)?;
            for row in put {
                insert
                    .execute(params![
                        row.name,
                        row.source,
                        row.profile,
                        row.time_ns,
                        row.sealed,
                        row.header
                    ])
                    .map_err(err)?;
                delete_v1.execute(params![kind, row.name]).map_err(err)?;
            }
            if let Some(ns) = listed_ns {
                tx.execute(
                    "INSERT INTO listings_v1 (kind, listed_ns) VALUES (?1, ?2)
                     ON CONFLICT (kind) DO UPDATE SET listed_ns = max(listed_ns, excluded.listed_ns)",
                    params![kind, ns],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    fn row<'a>(name: &'a str, source: &'a str, time_ns: i64) -> SnapshotRow<'a> {
        SnapshotRow {
            name,
            source,
            profile: "dump",
            time_ns,
            sealed: name.as_bytes(),
            header: source.as_bytes(),
        }
    }

    fn names(rows: Vec<CachedSnapshot>) -> Vec<String> {
        rows.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn rows_answer_the_latest_of_a_source_and_are_shared_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let one = ObjectCache::open(dir.path(), "ab12").unwrap();
        let two = ObjectCache::open(dir.path(), "ab12").unwrap();
        assert_eq!(one.snapshots_listed_ns().unwrap(), None);
        one.update_snapshots(
            &[row("a1", "db", 10), row("b2", "db", 30), row("c3", "web", 40)],
            &[],
            Some(5),
        )
        .unwrap();
        // The later of two listings is kept, whatever the order of the writes.
        two.update_snapshots(&[], &[], Some(3)).unwrap();
        assert_eq!(one.snapshots_listed_ns().unwrap(), Some(5));
        let latest = two.latest_snapshot("db", "dump").unwrap().unwrap();
        assert_eq!((latest.name.as_str(), latest.bytes.as_slice()), ("b2", &b"b2"[..]));
        assert_eq!(two.latest_snapshot("db", "files").unwrap(), None);
        assert_eq!(two.latest_snapshot("mail", "dump").unwrap(), None);
        let headers = two.snapshots(true).unwrap();
        assert_eq!(names(headers.clone()), ["a1", "b2", "c3"]);
        assert_eq!(headers[2].bytes, b"web");
        assert_eq!(two.snapshots(false).unwrap()[2].bytes, b"c3");
        // Equal times: the greatest name, so every process picks the same.
        two.update_snapshots(&[row("b1", "db", 30)], &["a1".to_owned()], None)
            .unwrap();
        assert_eq!(one.latest_snapshot("db", "dump").unwrap().unwrap().name, "b2");
        two.update_snapshots(&[], &["b2".to_owned()], None).unwrap();
        assert_eq!(one.latest_snapshot("db", "dump").unwrap().unwrap().name, "b1");
        assert_eq!(names(one.snapshots(false).unwrap()), ["b1", "c3"]);
    }

    #[test]
    fn earlier_rows_are_read_and_leave_once_moved_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ObjectCache::open(dir.path(), "ab12").unwrap();
        cache
            .update(
                ObjectKind::Snapshot,
                &[("a1".to_owned(), b"old"), ("b2".to_owned(), b"old")],
                &[],
            )
            .unwrap();
        assert_eq!(cache.load(ObjectKind::Snapshot).unwrap().len(), 2);
        cache
            .update_snapshots(&[row("a1", "db", 1)], &["b2".to_owned()], None)
            .unwrap();
        assert!(cache.load(ObjectKind::Snapshot).unwrap().is_empty());
        assert_eq!(names(cache.snapshots(true).unwrap()), ["a1"]);
    }
}
