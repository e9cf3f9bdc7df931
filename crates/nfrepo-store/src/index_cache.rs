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
//! deltas it holds (`ingested`) and which it knows to be dead (superseded by
//! a compaction, or removed: `ingested = 0`). The engine compares that with
//! the repository's listing and rebuilds whenever a delta it holds has died,
//! so the cache never names a pack the repository no longer indexes.
//! Deleting the file costs one full reload.
//!
//! **Several processes share one file** (a cron backup and an operator's
//! `ls` on the same host), so:
//! - A lookup answers with the pack's *id*, joined inside one SQL statement;
//!   the pack numbers that blob rows use never leave SQLite, and are never
//!   reused (`AUTOINCREMENT`): no process can hold a number across a rebuild
//!   and map it to another pack.
//! - Every change is one transaction ([`IndexCache::update`],
//!   [`IndexCache::ingest`]); a rebuild deletes and refills the tables in the
//!   same transaction, so readers (WAL mode) see the old or the new cache,
//!   never an empty or half-filled one.
//! - Every change bumps a version in `meta`. [`IndexCache::update`] applies a
//!   change computed from [`IndexCache::state`] only if the version is still
//!   the one read; otherwise another process changed the cache meanwhile and
//!   the caller starts over ([`Applied::Stale`]).
//!
//! **Several copies.** A blob stored in more than one pack (two backups
//! racing, or a backup that stored a blob again because the pack its index
//! entry names is gone) keeps one row per pack, first ingested first
//! ([`IndexCache::lookup_all`]): a caller that finds a pack missing can use
//! the next copy instead of failing.
//!
//! **Integrity.** Each blob row carries a 64-bit tag over the blob id, the
//! pack *id* and the location, checked on every lookup: a row pointing at
//! another pack, at no pack, or at another offset is reported as
//! inconsistent ([`IndexCache::is_damage`]) instead of being believed. After
//! an unclean close SQLite's `quick_check` runs at open (`open.rs`). A file
//! that is not a database or fails the check is deleted and created again.
//!
//! This module stores raw ids and small integers and knows nothing of the
//! format's types; the engine maps them. Its tables (`index_*`) live in the
//! repository's cache database beside the others ([`crate::Cache`]),
//! `<dir>/<repository id>.sqlite`, with their own schema version in the
//! shared `meta` table. The database runs in WAL mode with `synchronous =
//! NORMAL`: a crash of this process never corrupts it.

mod open;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::{Error, ErrorKind, Result};

/// Bumped whenever a table changes shape; tables of another version are rebuilt.
const SCHEMA_VERSION: i64 = 3;
/// This module's schema key in the shared `meta` table.
const SCHEMA_KEY: &str = "index_schema";
/// The content version in `meta`, bumped by every change.
const VERSION_KEY: &str = "index_version";

/// One blob's index entry as the cache stores it, with its pack resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedBlob {
    /// The blob id.
    pub id: [u8; 32],
    /// The pack id.
    pub pack: [u8; 32],
    /// The pack kind's format code.
    pub pack_kind: u8,
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
    /// The pack id.
    pub id: [u8; 32],
    /// The pack kind's format code.
    pub kind: u8,
    /// Its size in bytes.
    pub size: u64,
}

/// A pack to record, with its blobs.
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

/// One index delta to record.
#[derive(Clone, Copy, Debug)]
pub struct DeltaToCache<'a> {
    /// The delta id.
    pub id: [u8; 32],
    /// The deltas it supersedes (recorded as dead).
    pub supersedes: &'a [[u8; 32]],
    /// Its packs.
    pub packs: &'a [PackToCache<'a>],
}

/// What the cache holds, as of one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheState {
    /// The content version; [`IndexCache::update`] checks it.
    pub version: i64,
    /// Deltas whose entries the cache holds.
    pub live: Vec<[u8; 32]>,
    /// Deltas known to be superseded or removed.
    pub dead: Vec<[u8; 32]>,
}

/// A change computed from one [`CacheState`], applied as one transaction.
#[derive(Clone, Copy, Debug)]
pub struct CacheUpdate<'a> {
    /// The version the change was computed from.
    pub expected_version: i64,
    /// Deltas to record as dead. A live delta among them requires `rebuild`.
    pub dead: &'a [[u8; 32]],
    /// Dead deltas to stop remembering (no longer in the repository at all).
    pub forget: &'a [[u8; 32]],
    /// Drop every entry first, and refill from `deltas` alone.
    pub rebuild: bool,
    /// Deltas to add (those already known, live or dead, are skipped).
    pub deltas: &'a [DeltaToCache<'a>],
}

/// Whether an [`IndexCache::update`] was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied.
    Done,
    /// Not applied: the cache changed since the state the update was computed from.
    Stale,
}

/// Marks an error as an inconsistency of the cache itself (see [`IndexCache::is_damage`]).
#[derive(Debug)]
struct Inconsistent;

impl std::fmt::Display for Inconsistent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the local index cache is inconsistent")
    }
}

impl std::error::Error for Inconsistent {}

/// One repository's index cache. Safe to share between threads; calls are
/// short local I/O and run on the caller's thread.
#[derive(Debug)]
pub struct IndexCache {
    path: PathBuf,
    conn: Mutex<Connection>,
    handle: Option<i64>,
}

impl IndexCache {
    /// Opens (creating if needed) the index cache of repository `repo_id`
    /// (hex) under `dir`. A file that is not a database, or fails the
    /// integrity check after an unclean close, is deleted and created again.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] for a malformed id; [`ErrorKind::Other`] if
    /// the directory or database cannot be created or opened.
    pub fn open(dir: &Path, repo_id: &str) -> Result<Self> {
        let path = crate::cache::database_path(dir, repo_id)?;
        let opened = match open::open(&path) {
            Ok(opened) => opened,
            Err(first) if open::is_damaged_file(&first) => {
                tracing::warn!(cache = %path.display(), error = %first, "index cache damaged; deleting it, it will be rebuilt");
                Self::delete_files(&path);
                crate::cache::create_private_file(&path)?;
                open::open(&path)?
            }
            Err(first) => return Err(first),
        };
        Ok(Self {
            path,
            conn: Mutex::new(opened.conn),
            handle: opened.handle,
        })
    }

    /// Deletes the database file (for a cache found damaged while in use).
    /// Other processes keep reading the file they opened; the next open
    /// creates a new one.
    pub fn delete_files(path: &Path) {
        crate::cache::delete_database_files(path);
    }

    /// Whether `error` (from this module) means the cache itself is damaged
    /// (SQLite corruption, a failed integrity check, an inconsistent row),
    /// as opposed to a failure to reach it. The fix is to rebuild the cache.
    #[must_use]
    pub fn is_damage(error: &Error) -> bool {
        open::is_damaged_file(error)
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

    fn inconsistent(&self, what: String) -> Error {
        Error::new(
            ErrorKind::Other,
            format!("local index cache {}: {what}", self.path.display()),
        )
        .with_source(Inconsistent)
    }

    /// The version and the deltas the cache holds, read in one transaction.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn state(&self) -> Result<CacheState> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err())?;
        let state = read_state(&tx).map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(state)
    }

    /// Applies `update` if the cache is still at `update.expected_version`,
    /// as one transaction that bumps the version.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`]; an update that marks a live
    /// delta dead without rebuilding (a caller bug that would leave entries
    /// of a dead delta behind).
    pub fn update(&self, update: &CacheUpdate<'_>) -> Result<Applied> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        if version(&tx).map_err(self.err())? != update.expected_version {
            return Ok(Applied::Stale);
        }
        if update.rebuild {
            tx.execute_batch(
                "DELETE FROM index_blobs; DELETE FROM index_packs; DELETE FROM index_deltas WHERE ingested = 1;",
            )
            .map_err(self.err())?;
        } else {
            let mut live = tx
                .prepare_cached("SELECT 1 FROM index_deltas WHERE id = ?1 AND ingested = 1")
                .map_err(self.err())?;
            for id in update.dead {
                if live.exists(params![id]).map_err(self.err())? {
                    return Err(Error::new(
                        ErrorKind::Other,
                        "index cache: a live delta cannot die without a rebuild",
                    ));
                }
            }
        }
        for id in update.dead {
            tx.execute(
                "INSERT OR REPLACE INTO index_deltas (id, ingested) VALUES (?1, 0)",
                params![id],
            )
            .map_err(self.err())?;
        }
        for id in update.forget {
            tx.execute("DELETE FROM index_deltas WHERE id = ?1 AND ingested = 0", params![id])
                .map_err(self.err())?;
        }
        for delta in update.deltas {
            add_delta(&tx, delta).map_err(self.err())?;
        }
        bump(&tx).map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(Applied::Done)
    }

    /// Records one index delta just written to the repository, whatever the
    /// version (a new delta can be added to any state). A blob already
    /// present in another pack gains a second row after its first; a delta
    /// already known is skipped.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn ingest(&self, delta: &DeltaToCache<'_>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        add_delta(&tx, delta).map_err(self.err())?;
        bump(&tx).map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Drops every entry (keeping what is known of dead deltas) so the next
    /// load refills the cache from the repository: for a cache found
    /// inconsistent while in use.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn invalidate(&self) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        tx.execute_batch(
            "DELETE FROM index_blobs; DELETE FROM index_packs; DELETE FROM index_deltas WHERE ingested = 1;",
        )
        .map_err(self.err())?;
        bump(&tx).map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Where `id` is stored, if the cache knows it: its first location
    /// (see [`Self::lookup_all`] for every copy).
    ///
    /// # Errors
    /// As [`Self::lookup_all`].
    pub fn lookup(&self, id: &[u8; 32]) -> Result<Option<CachedBlob>> {
        Ok(self.lookup_all(id)?.into_iter().next())
    }

    /// Every location of `id` the cache knows, in the order their deltas
    /// were ingested (empty if none).
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`]; a row whose pack is unknown
    /// or whose tag does not match, as an inconsistency ([`Self::is_damage`]).
    pub fn lookup_all(&self, id: &[u8; 32]) -> Result<Vec<CachedBlob>> {
        Ok(self.lookup_many(std::slice::from_ref(id))?.pop().unwrap_or_default())
    }

    /// [`Self::lookup_all`] for many blobs at once: every location of each
    /// id, in the order of `ids`. One lock for the whole call and one
    /// statement per `LOOKUP_BATCH` ids, so a restore resolving a whole
    /// content list pays neither per-blob lock nor per-blob query costs.
    ///
    /// The ids are looked up in sorted order, so each statement covers a
    /// narrow range of the table's keys: content-addressed ids are random,
    /// so statements of ids in the caller's order each touched a leaf page
    /// per id, across the whole table, and once the table outgrew SQLite's
    /// page cache most of those were reads from the file (51,000 reads of
    /// 4 KiB, 196 MB, in the restore of an 8 MB cache). Sorted, a page is
    /// read about once per call, however many of its ids the call asks for.
    ///
    /// # Errors
    /// As [`Self::lookup_all`].
    pub fn lookup_many(&self, ids: &[[u8; 32]]) -> Result<Vec<Vec<CachedBlob>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&i| ids[i]);
        let conn = self.conn();
        let mut found: Vec<Vec<CachedBlob>> = vec![Vec::new(); ids.len()];
        for batch in order.chunks(LOOKUP_BATCH) {
            let placeholders = vec!["?"; batch.len()].join(",");
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT b.id, b.kind, b.offset, b.sealed_len, b.raw_len, b.tag, p.id, p.kind
                     FROM index_blobs b LEFT JOIN index_packs p ON p.number = b.pack
                     WHERE b.id IN ({placeholders}) ORDER BY b.id, b.pack"
                ))
                .map_err(self.err())?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(batch.iter().map(|&i| &ids[i])), |row| {
                    Ok((
                        row.get::<_, [u8; 32]>(0)?,
                        row.get::<_, u8>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, u32>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, Option<[u8; 32]>>(6)?,
                        row.get::<_, Option<u8>>(7)?,
                    ))
                })
                .map_err(self.err())?;
            let mut by_id: std::collections::HashMap<[u8; 32], Vec<CachedBlob>> = std::collections::HashMap::new();
            for row in rows {
                let (id, kind, offset, sealed_len, raw_len, stored_tag, pack, pack_kind) = row.map_err(self.err())?;
                let (Some(pack), Some(pack_kind)) = (pack, pack_kind) else {
                    return Err(self.inconsistent(format!("blob {} names a pack the cache does not know", hex(&id))));
                };
                let blob = CachedBlob {
                    id,
                    pack,
                    pack_kind,
                    kind,
                    offset,
                    sealed_len,
                    raw_len,
                };
                if tag(&blob) != stored_tag {
                    return Err(self.inconsistent(format!("the row of blob {} fails its check", hex(&id))));
                }
                by_id.entry(id).or_default().push(blob);
            }
            // An id asked for twice gets its rows twice. (`clone`, not
            // `clone_from` into the empty vector: that grows it to room for
            // four rows, 5 MiB more for a restore's batch of 16 Ki chunks.)
            for &i in batch {
                if let Some(rows) = by_id.get(&ids[i]) {
                    found[i] = rows.clone();
                }
            }
        }
        Ok(found)
    }

    /// Every pack the cache knows.
    ///
    /// # Errors
    /// SQLite failures, as [`ErrorKind::Other`].
    pub fn packs(&self) -> Result<Vec<CachedPack>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT id, kind, size FROM index_packs ORDER BY number")
            .map_err(self.err())?;
        let rows = statement
            .query_map([], |row| {
                Ok(CachedPack {
                    id: row.get(0)?,
                    kind: row.get(1)?,
                    size: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
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
            .query_row("SELECT count(DISTINCT id) FROM index_blobs", [], |row| row.get(0))
            .map_err(self.err())?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

impl Drop for IndexCache {
    /// A clean close: the handle's row goes, so the next open skips the integrity check.
    fn drop(&mut self) {
        if let Some(handle) = self.handle {
            let _ = self
                .conn()
                .execute("DELETE FROM index_handles WHERE rowid = ?1", params![handle]);
        }
    }
}

fn version(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", params![VERSION_KEY], |row| {
            row.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

fn bump(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, 1) ON CONFLICT (key) DO UPDATE SET value = value + 1",
        params![VERSION_KEY],
    )
    .map(|_| ())
}

fn read_state(tx: &Transaction<'_>) -> rusqlite::Result<CacheState> {
    let mut state = CacheState {
        version: version(tx)?,
        ..CacheState::default()
    };
    let mut statement = tx.prepare("SELECT id, ingested FROM index_deltas")?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, [u8; 32]>(0)?, row.get::<_, bool>(1)?)))?;
    for row in rows {
        let (id, ingested) = row?;
        if ingested {
            state.live.push(id);
        } else {
            state.dead.push(id);
        }
    }
    Ok(state)
}

/// Adds one delta's rows unless the delta is already known (live or dead).
fn add_delta(tx: &Transaction<'_>, delta: &DeltaToCache<'_>) -> rusqlite::Result<()> {
    let added = tx.execute(
        "INSERT OR IGNORE INTO index_deltas (id, ingested) VALUES (?1, 1)",
        params![delta.id],
    )?;
    for old in delta.supersedes {
        tx.execute(
            "INSERT OR IGNORE INTO index_deltas (id, ingested) VALUES (?1, 0)",
            params![old],
        )?;
    }
    if added == 0 {
        return Ok(());
    }
    let mut add_pack = tx.prepare_cached("INSERT OR IGNORE INTO index_packs (id, kind, size) VALUES (?1, ?2, ?3)")?;
    let mut pack_number = tx.prepare_cached("SELECT number, kind FROM index_packs WHERE id = ?1")?;
    let mut add_blob = tx.prepare_cached(
        "INSERT OR IGNORE INTO index_blobs (id, pack, kind, offset, sealed_len, raw_len, tag)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut numbers = Vec::with_capacity(delta.packs.len());
    for pack in delta.packs {
        let size = i64::try_from(pack.size).unwrap_or(i64::MAX);
        add_pack.execute(params![pack.id, pack.kind, size])?;
        numbers.push(pack_number.query_row(params![pack.id], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, u8>(1)?))
        })?);
    }
    // Rows go in by id, a sorted run at a time: ids are hashes, so in pack
    // order each row lands on a random page of the table, and a delta
    // larger than SQLite's page cache wrote pages to the log again and
    // again as they were evicted and dirtied anew (an incremental's 33,000
    // new blobs: 19,700 page writes for a 6.5 MB cache). In id order each
    // page is dirtied once per run.
    let mut rows = delta
        .packs
        .iter()
        .zip(&numbers)
        .flat_map(|(pack, number)| pack.blobs.iter().map(move |blob| (pack, *number, blob)))
        .peekable();
    let mut run = Vec::with_capacity(SORTED_RUN.min(delta.packs.iter().map(|p| p.blobs.len()).sum()));
    while rows.peek().is_some() {
        run.extend(rows.by_ref().take(SORTED_RUN));
        // Stable: of two rows of one blob in one pack, the first is kept, as before.
        run.sort_by_key(|(_, _, blob)| blob.id);
        for (pack, (number, pack_kind), blob) in run.drain(..) {
            let row = CachedBlob {
                id: blob.id,
                pack: pack.id,
                pack_kind,
                kind: blob.kind,
                offset: blob.offset,
                sealed_len: blob.sealed_len,
                raw_len: blob.raw_len,
            };
            add_blob.execute(params![
                blob.id,
                number,
                blob.kind,
                blob.offset,
                blob.sealed_len,
                blob.raw_len,
                tag(&row)
            ])?;
        }
    }
    Ok(())
}

/// Rows of a delta sorted and inserted together ([`add_delta`]): 32 bytes
/// each while sorted.
const SORTED_RUN: usize = 1 << 16;

/// Ids per statement of [`IndexCache::lookup_many`] (SQLite allows 32766 parameters).
const LOOKUP_BATCH: usize = 512;

/// FNV-1a (64-bit) over everything a lookup returns, the pack by id: a
/// check against accidental damage (a flipped bit, a row pointing at the
/// wrong pack number), not against deliberate forgery, which the sealed
/// objects themselves detect.
fn tag(blob: &CachedBlob) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let fields = [
        &blob.id[..],
        &blob.pack[..],
        &[blob.pack_kind, blob.kind][..],
        &blob.offset.to_le_bytes()[..],
        &blob.sealed_len.to_le_bytes()[..],
        &blob.raw_len.to_le_bytes()[..],
    ];
    for byte in fields.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_le_bytes(hash.to_le_bytes())
}

fn hex(id: &[u8; 32]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Other, format!("local index cache {}: {e}", path.display())).with_source(e)
}

#[cfg(test)]
mod tests;
