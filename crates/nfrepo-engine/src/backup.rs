//! The backup pipeline and its commit protocol.
//!
//! [`Repository::begin_backup`] returns a [`BackupSession`], the one value
//! that may end a backup: [`BackupSession::commit`] or
//! [`BackupSession::abort`], each taking the session by value. What sources
//! feed is a [`BackupWriter`] ([`BackupSession::writer`]): it is `Clone`,
//! so any number of threads can store streams and trees while the session
//! stays with its owner, and nothing has to be unwrapped from an `Arc`
//! before committing. A session derefs to its writer, so a single-threaded
//! caller can feed and commit the same value.
//!
//! A backup turns streams and trees into blobs, packs and, on commit, one
//! index delta and one snapshot:
//!
//! 1. The caller's thread reads and chunks a stream (FastCDC), hashes the
//!    whole content, names each chunk (keyed BLAKE3, several GB/s) and skips
//!    the ones already stored, so known data never leaves that thread. New
//!    chunks go to rayon, which compresses and seals them on every core; a
//!    byte budget bounds what is in flight, and the caller goes on to the
//!    next chunk or file without waiting (`writer`).
//! 2. Sealed blobs fill one open pack per family; full packs go through a
//!    bounded queue to the uploader, which verifies and writes them once
//!    (`packer`, `upload`).
//! 3. `commit` flushes the packs, waits for every upload, writes the index
//!    delta, then the snapshot: the commit point (`commit`). A failure
//!    anywhere before that leaves only unreferenced packs. Writes through
//!    any writer clone after the session ended fail.
//!
//! **Resume.** At start the session may list the packs and adopt those no
//! index mentions (left by an interrupted run): it reads their trailers,
//! treats their blobs as present, and records them in its own index delta.
//! A re-run after `kill -9` therefore uploads only what the dead run had not
//! (`begin`).
//!
//! **Packs that are gone.** The listing made at start (after the index is
//! loaded) also shows which indexed packs are no longer stored (a
//! maintenance race or damage, issue 17). Their copies are no deduplication
//! targets ([`crate::Index::exclude_packs`]): their blobs are stored again,
//! and the parent snapshot is not reused, since its unchanged files could
//! refer to them. Just before the commit point the packs the session
//! deduplicated against (one set of pack ids, not per-blob lists; packs it
//! uploaded itself are left out) are checked again (a `stat` of each when
//! they are few, a listing otherwise); if one vanished the backup fails with
//! [`Error::DedupPackMissing`] and commits nothing, and the next run, listing
//! again, stores the data anew.
//!
//! **When the start lists every pack.** With a local cache directory, only
//! when that can find something: this host's record shows a session that
//! did not commit (packs to adopt), or no listing that found every indexed
//! pack within [`PACK_LISTING_INTERVAL`] (`listing`). Otherwise a run's cost
//! does not grow with the number of packs; the check before the commit
//! point is what keeps deduplication safe either way.
//!
//! **GC.** The session announces itself with a marker and a heartbeat
//! (`crate::session`), reads the GC plans before the index, and never
//! deduplicates against or adopts a pack named in a plan (format-spec/gc.md).
//!
//! Memory is bounded by the in-flight budget (2 MiB of plaintext with the
//! sealing workers), one open pack per family (a data pack within its
//! target and an eighth, a tree pack within 4 MiB and an eighth), and at
//! most `upload_concurrency` finished packs (a full pack waits for its
//! upload slot before the next one is opened: `packer`), not by the input, with
//! one exception by design (DESIGN.md
//! allows 40–64 bytes of lookup structure per blob): the index of stored
//! blobs (52 bytes each) and the set of blobs this session added (a hash set
//! of ids, about 55 bytes each on average). Uploaded packs are written to
//! index deltas as they accumulate (see `upload`), so their entries are not
//! held until commit.
//!
//! The writer's methods are synchronous and must be called from a thread
//! that is not a runtime worker (`spawn_blocking` or a plain thread): they
//! block on the bounded queues, which is the backpressure.

mod begin;
mod budget;
mod commit;
mod known;
mod listing;
mod packer;
pub(crate) mod upload;
mod writer;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nfrepo_format::{BlobId, CommandRecord, IndexDelta, IndexId};

pub use self::listing::PACK_LISTING_INTERVAL;
pub use self::writer::{BackupWriter, StoredContent, StreamResume};
use crate::index::Index;
use crate::{Error, Result};

/// Options for one backup.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BackupOptions {
    /// The source name snapshots are grouped by; the parent is the latest snapshot of it.
    pub source: String,
    /// What kind of source (`files`, `stdin`, `command`...).
    pub source_kind: String,
    /// Paths or stream names, as given.
    pub paths: Vec<String>,
    /// `key=value` tags.
    pub tags: Vec<(String, String)>,
    /// Chunking profile name (`files`, `dump` or `rows`; see [`nfrepo_format::ChunkerProfile`]).
    pub profile: String,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
    /// Look for a parent snapshot to skip unchanged files.
    pub use_parent: bool,
    /// Uploaded blobs recorded in an index delta at a time: bounds what the
    /// session holds for the index, and what a killed run leaves unindexed.
    pub index_flush_blobs: usize,
    /// Also record the SHA-256 of every whole object stored with
    /// [`BackupWriter::store_stream`] (`whole_object`): dumps, streams and
    /// bucket objects, for operators who compare them with `sha256sum` or
    /// an S3 checksum. Off by default: it is about 15 % of a dump backup's
    /// CPU, and a verified read of such a node pays it again. Every file
    /// node carries its whole BLAKE3 either way.
    pub sha256: bool,
}

impl BackupOptions {
    /// Options for `source` with the given profile and defaults otherwise.
    #[must_use]
    pub fn new(source: impl Into<String>, source_kind: impl Into<String>, profile: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            source_kind: source_kind.into(),
            paths: Vec::new(),
            tags: Vec::new(),
            profile: profile.into(),
            upload_concurrency: 2,
            use_parent: true,
            index_flush_blobs: 1 << 16,
            sha256: false,
        }
    }

    /// Sets the paths.
    #[must_use]
    pub fn paths(mut self, paths: Vec<String>) -> Self {
        self.paths = paths;
        self
    }

    /// Sets the tags.
    #[must_use]
    pub fn tags(mut self, tags: Vec<(String, String)>) -> Self {
        self.tags = tags;
        self
    }

    /// Records the SHA-256 of every whole object (see [`Self::sha256`](BackupOptions#structfield.sha256)).
    #[must_use]
    pub fn sha256(mut self, sha256: bool) -> Self {
        self.sha256 = sha256;
        self
    }
}

/// What the caller adds to the snapshot at commit.
#[derive(Clone, Debug, Default)]
pub struct CommitDetails {
    /// Files seen.
    pub files: u64,
    /// Directories seen.
    pub dirs: u64,
    /// Other nodes.
    pub others: u64,
    /// Files reused from the parent.
    pub files_unchanged: u64,
    /// Content bytes covered.
    pub bytes: u64,
    /// For command sources.
    pub command: Option<CommandRecord>,
    /// Entries left out, with why.
    pub skipped: Vec<String>,
    /// Facts recorded by the source.
    pub extra: Vec<(String, String)>,
    /// Storage retries the backup needed (from the caller's retrying store).
    pub retries: u64,
}

/// A backup's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added_raw: u64,
    /// New blobs.
    pub blobs_added: u64,
}

/// Which blobs are stored, or being stored by this session.
///
/// A blob is either in the index or claimed by this session, never neither,
/// so it is never stored twice by one session. Once the uploader has written
/// a delta for claimed blobs and a cached index has absorbed it, their
/// claims are dropped: with the local cache, the claim set holds only blobs
/// not yet indexed, however long the backup.
pub(crate) struct Claims {
    index: Arc<Index>,
    /// Packs in GC plans: never deduplicated against (see `crate::session`).
    planned: HashSet<nfrepo_format::PackId>,
    claimed: Mutex<HashSet<BlobId>>,
    /// Every pack a blob was found in instead of being stored: checked just
    /// before the commit point (`crate::session`). One entry per pack, not per blob.
    deduplicated: Mutex<std::collections::HashMap<nfrepo_format::PackId, nfrepo_format::PackKind>>,
    /// Packs this session uploaded and indexed: finding a blob there is not deduplication.
    own: Mutex<HashSet<nfrepo_format::PackId>>,
}

impl Claims {
    /// Where the index has each of `ids`, looked up in one batch, for
    /// [`Self::claim_at`].
    fn locate_many(&self, ids: &[BlobId]) -> Vec<Option<crate::index::BlobLocation>> {
        self.index.get_many(ids)
    }

    /// Whether this session must store `id` (true at most once per id),
    /// given where the index has it (`at`, from `Index::get` or
    /// [`Self::locate_many`]). A location found a moment before is as good
    /// as one found now: a blob indexed in between is stored again
    /// (harmless), and every pack deduplicated against is checked before
    /// the commit point whenever it was found.
    fn claim_at(&self, id: &BlobId, at: Option<crate::index::BlobLocation>) -> Result<bool> {
        if let Some(at) = at.filter(|at| !self.planned.contains(&at.pack)) {
            let mut deduplicated = self
                .deduplicated
                .lock()
                .map_err(|_| Error::Pipeline("deduplication record poisoned".into()))?;
            // The own-pack set is only consulted for packs not yet recorded.
            if !deduplicated.contains_key(&at.pack)
                && !self
                    .own
                    .lock()
                    .map_err(|_| Error::Pipeline("own pack record poisoned".into()))?
                    .contains(&at.pack)
            {
                deduplicated.insert(at.pack, at.pack_kind);
            }
            return Ok(false);
        }
        let mut claimed = self
            .claimed
            .lock()
            .map_err(|_| Error::Pipeline("claim set poisoned".into()))?;
        Ok(claimed.insert(*id))
    }

    /// Whether every blob of `ids` is stored (in the index, outside GC
    /// plans) or being stored by this session, so that a node naming them
    /// may be reused without reading its file. The packs found are checked
    /// before the commit point, as deduplicated ones are.
    fn reuse(&self, ids: &[BlobId]) -> Result<bool> {
        let poisoned = || Error::Pipeline("deduplication record poisoned".into());
        let mut found = Vec::new();
        {
            let claimed = self.claimed.lock().map_err(|_| poisoned())?;
            for id in ids {
                match self.index.get(id).filter(|at| !self.planned.contains(&at.pack)) {
                    Some(at) => found.push((at.pack, at.pack_kind)),
                    None if claimed.contains(id) => {}
                    None => return Ok(false),
                }
            }
        }
        // Locked in the order `claim` takes them.
        let mut deduplicated = self.deduplicated.lock().map_err(|_| poisoned())?;
        let own = self.own.lock().map_err(|_| poisoned())?;
        for (pack, kind) in found {
            if !deduplicated.contains_key(&pack) && !own.contains(&pack) {
                deduplicated.insert(pack, kind);
            }
        }
        Ok(true)
    }

    /// Called after a delta of this session's uploads is written.
    pub(crate) fn indexed(&self, id: IndexId, delta: &IndexDelta) {
        // Before the index can answer with them.
        if let Ok(mut own) = self.own.lock() {
            own.extend(delta.packs.iter().map(|p| p.id));
        }
        if !self.index.absorb(id, delta) {
            return;
        }
        if let Ok(mut claimed) = self.claimed.lock() {
            for blob in delta.packs.iter().flat_map(|p| &p.blobs) {
                claimed.remove(&blob.id);
            }
            let keep = claimed.len() * 2;
            claimed.shrink_to(keep);
        }
    }
}

/// One backup in progress: the committer. See the module docs for the protocol.
///
/// Only this value can [`commit`](Self::commit) or [`abort`](Self::abort);
/// sources feed clones of its [`BackupWriter`].
pub struct BackupSession {
    writer: BackupWriter,
    options: BackupOptions,
    uploader: Mutex<Option<tokio::task::JoinHandle<Result<upload::UploadReport>>>>,
    live: crate::session::LiveSession,
    /// This host's record of its sessions (`listing`), when there is a cache directory.
    record: Option<Arc<nfrepo_store::SessionRecord>>,
    started: Instant,
    time_ns: i64,
}

impl std::fmt::Debug for BackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSession")
            .field("source", &self.options.source)
            .finish_non_exhaustive()
    }
}

impl BackupSession {
    /// A writer for this backup, to hand to a source on another thread.
    #[must_use]
    pub fn writer(&self) -> BackupWriter {
        self.writer.clone()
    }

    /// The options the backup was started with.
    #[must_use]
    pub const fn options(&self) -> &BackupOptions {
        &self.options
    }
}

impl std::ops::Deref for BackupSession {
    type Target = BackupWriter;

    fn deref(&self) -> &BackupWriter {
        &self.writer
    }
}
