//! The backup pipeline and its commit protocol.
//!
//! A [`BackupSession`] turns streams and trees into blobs, packs and, on
//! [`BackupSession::commit`], one index delta and one snapshot:
//!
//! 1. The caller's thread reads and chunks a stream (FastCDC), hashes the
//!    whole content, names each chunk (keyed BLAKE3, several GB/s) and skips
//!    the ones already stored, so known data never leaves that thread. New
//!    chunks go to rayon, which compresses and seals them on every core; a
//!    byte budget bounds what is in flight, and the caller goes on to the
//!    next chunk or file without waiting.
//! 2. Sealed blobs fill one open pack per family; full packs go through a
//!    bounded queue to the uploader, which verifies and writes them once.
//! 3. `commit` flushes the packs, waits for every upload, writes the index
//!    delta, then the snapshot: the commit point. A failure anywhere before
//!    that leaves only unreferenced packs.
//!
//! **Resume.** At start the session lists the packs and adopts those no index
//! mentions (left by an interrupted run): it reads their trailers, treats
//! their blobs as present, and records them in its own index delta. A re-run
//! after `kill -9` therefore uploads only what the dead run had not.
//!
//! **GC.** The session announces itself with a marker and a heartbeat
//! (`crate::session`), reads the GC plans before the index, and never
//! deduplicates against or adopts a pack named in a plan (format-spec/gc.md).
//!
//! Memory is bounded by the in-flight budget, the pack size and the upload
//! concurrency, not by the input, with one exception by design (DESIGN.md
//! allows 40–64 bytes of lookup structure per blob): the index of stored
//! blobs (52 bytes each) and the set of blobs this session added (a hash set
//! of ids, about 55 bytes each on average). Uploaded packs are written to
//! index deltas as they accumulate (see `upload`), so their entries are not
//! held until commit.
//!
//! The methods that take data are synchronous and must be called from a
//! thread that is not a runtime worker (`spawn_blocking` or a plain thread):
//! they block on the bounded queues, which is the backpressure.

mod budget;
mod packer;
mod upload;

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use nfrepo_format::{
    BlobId, BlobKind, Chunker, CommandRecord, Content, ContentListBuilder, EmittedList, IndexDelta, IndexId,
    IndexedPack, ListEntry, PackKind, Snapshot, SnapshotId, Summary, Tree,
};
use nfrepo_store::{ObjectInfo, ObjectKey, ObjectKind, PutMode};
use sha2::Digest;

use self::budget::ByteBudget;
use self::packer::Packer;
use self::upload::UploadQueue;
use crate::index::Index;
use crate::read::{Reader, SnapshotEntry};
use crate::{Error, Repository, Result};

thread_local! {
    static CHUNK_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Plaintext bytes handed to the sealing workers and not yet packed.
const IN_FLIGHT_BYTES: usize = 8 << 20;

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
    /// Chunking profile name (`files` or `dump`).
    pub profile: String,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
    /// Look for a parent snapshot to skip unchanged files.
    pub use_parent: bool,
    /// Uploaded blobs recorded in an index delta at a time: bounds what the
    /// session holds for the index, and what a killed run leaves unindexed.
    pub index_flush_blobs: usize,
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
}

/// A stream stored by [`BackupSession::store_stream`].
#[derive(Clone, Debug)]
pub struct StoredContent {
    /// Bytes read.
    pub size: u64,
    /// The chunk list for the file node.
    pub content: Content,
    /// Plain BLAKE3 of the whole stream.
    pub blake3: [u8; 32],
    /// SHA-256 of the whole stream, when asked for.
    pub sha256: Option<[u8; 32]>,
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
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added_raw: u64,
    /// New blobs.
    pub blobs_added: u64,
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    blobs_added: AtomicU64,
    bytes_added_raw: AtomicU64,
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
}

impl Claims {
    /// Whether this session must store `id` (true at most once per id).
    fn claim(&self, id: &BlobId) -> Result<bool> {
        let stored = if self.planned.is_empty() {
            self.index.contains(id)
        } else {
            self.index.get(id).is_some_and(|at| !self.planned.contains(&at.pack))
        };
        if stored {
            return Ok(false);
        }
        let mut claimed = self
            .claimed
            .lock()
            .map_err(|_| Error::Pipeline("claim set poisoned".into()))?;
        Ok(claimed.insert(*id))
    }

    /// Called after a delta of this session's uploads is written.
    pub(crate) fn indexed(&self, id: IndexId, delta: &IndexDelta) {
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

/// The part of a session that sealing workers share.
struct Shared {
    repo: Repository,
    claims: Arc<Claims>,
    packer: Packer,
    queue: UploadQueue,
    counters: Counters,
    budget: ByteBudget,
    failure: Mutex<Option<Arc<Error>>>,
}

/// One backup in progress. See the module docs for the protocol.
pub struct BackupSession {
    shared: Arc<Shared>,
    repo: Repository,
    options: BackupOptions,
    chunker: Chunker,
    uploader: Mutex<Option<tokio::task::JoinHandle<Result<upload::UploadReport>>>>,
    parent: Option<SnapshotEntry>,
    reader: Reader,
    handle: tokio::runtime::Handle,
    live: crate::session::LiveSession,
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

impl Repository {
    /// Starts a backup: loads snapshots and the index, adopts packs left by
    /// interrupted runs, and starts the uploader.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown profile; storage and decoding errors.
    pub async fn begin_backup(&self, options: BackupOptions) -> Result<BackupSession> {
        let profile = self
            .config()
            .profile(&options.profile)
            .ok_or_else(|| Error::Invalid(format!("unknown chunking profile {:?}", options.profile)))?;
        let chunker = Chunker::new(profile, self.keys().chunker_seed).map_err(Error::Format)?;
        let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        // Marker, then GC plans, then snapshots and index: see crate::session.
        let live = crate::session::LiveSession::start(self, &options.source, time_ns).await?;
        let (plan_ids, planned) = crate::gc::planned_packs(self).await?;
        // Snapshots before the index: see crate::index.
        let snapshots = self.readable_snapshots().await?;
        let mut index = self.load_index().await?;
        let adopted = self.adopt_orphan_packs(&index, &planned).await?;
        let adopted_packs = adopted.len();
        if !adopted.is_empty() {
            let delta = IndexDelta {
                packs: adopted,
                supersedes: Vec::new(),
            };
            let id = self.write_index_delta(&delta).await?;
            if !index.absorb(id, &delta) {
                for pack in &delta.packs {
                    index.add_pack(pack);
                }
                index.finish();
            }
        }
        let index = Arc::new(index);
        let parent = if options.use_parent {
            snapshots
                .into_iter()
                .rfind(|e| e.snapshot.source == options.source && e.snapshot.profile == options.profile)
        } else {
            None
        };
        live.confirm(plan_ids, parent.as_ref().map(|p| p.snapshot.root)).await?;
        let claims = Arc::new(Claims {
            index: index.clone(),
            planned,
            claimed: Mutex::new(HashSet::new()),
        });
        let (queue, uploader) = upload::start(
            self.clone(),
            claims.clone(),
            options.upload_concurrency,
            options.index_flush_blobs,
        );
        tracing::info!(
            source = %options.source,
            parent = ?parent.as_ref().map(|p| p.id),
            adopted_packs,
            "backup started"
        );
        Ok(BackupSession {
            shared: Arc::new(Shared {
                repo: self.clone(),
                packer: Packer::new(self.config().pack_size as usize, self.sealer().clone(), self.id()),
                claims,
                queue,
                counters: Counters::default(),
                budget: ByteBudget::new(IN_FLIGHT_BYTES),
                failure: Mutex::new(None),
            }),
            repo: self.clone(),
            reader: Reader::new(self.clone(), index),
            options,
            chunker,
            uploader: Mutex::new(Some(uploader)),
            parent,
            handle: tokio::runtime::Handle::current(),
            live,
            started: Instant::now(),
            time_ns,
        })
    }

    /// Packs present in storage but in no index: left by interrupted backups.
    async fn adopt_orphan_packs(
        &self,
        index: &Index,
        planned: &HashSet<nfrepo_format::PackId>,
    ) -> Result<Vec<IndexedPack>> {
        use futures::stream::{self, StreamExt};
        let indexed: std::collections::HashSet<nfrepo_format::PackId> = index.packs().map(|(id, _, _)| id).collect();
        let mut orphans: Vec<(ObjectInfo, PackKind)> = Vec::new();
        for (kind, pack_kind) in [(ObjectKind::Data, PackKind::Data), (ObjectKind::Tree, PackKind::Tree)] {
            for info in self.store().list(kind).await.map_err(Error::store)? {
                match info.key.name().parse::<nfrepo_format::PackId>() {
                    Ok(id) if !indexed.contains(&id) && !planned.contains(&id) => orphans.push((info, pack_kind)),
                    _ => {}
                }
            }
        }
        let results: Vec<Option<IndexedPack>> = stream::iter(orphans)
            .map(|(info, kind)| async move {
                match self.read_pack_trailer(&info).await {
                    Ok(pack) if pack.kind == kind => Some(pack),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(pack = %info.key, error = %e, "not reusing a pack whose trailer does not read");
                        None
                    }
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        Ok(results.into_iter().flatten().collect())
    }

    /// Reads a pack's trailer with two range requests.
    ///
    /// # Errors
    /// Storage errors, or [`Error::Corrupted`] if the trailer does not open.
    pub async fn read_pack_trailer(&self, info: &ObjectInfo) -> Result<IndexedPack> {
        let id: nfrepo_format::PackId = info
            .key
            .name()
            .parse()
            .map_err(|e| Error::decode(info.key.to_string(), e))?;
        let size = info.size;
        let corrupt = |e| Error::decode(format!("pack {id}"), e);
        if size < (nfrepo_format::PACK_HEADER_LEN + 4) as u64 {
            return Err(corrupt(nfrepo_format::Error::Malformed {
                what: "pack",
                detail: format!("{size} bytes is too short"),
            }));
        }
        let tail = self
            .store()
            .get_range(&info.key, size - 4..size)
            .await
            .map_err(Error::store)?;
        let tlen = nfrepo_format::trailer_len(&tail).map_err(corrupt)? as u64;
        let start = size
            .checked_sub(4 + tlen)
            .filter(|s| *s >= nfrepo_format::PACK_HEADER_LEN as u64);
        let start = start.ok_or_else(|| {
            corrupt(nfrepo_format::Error::Malformed {
                what: "pack",
                detail: "trailer longer than the pack".into(),
            })
        })?;
        let head = self
            .store()
            .get_range(&info.key, 0..nfrepo_format::PACK_HEADER_LEN as u64)
            .await
            .map_err(Error::store)?;
        let kind = nfrepo_format::decode_pack_header(&head).map_err(corrupt)?;
        let sealed = self
            .store()
            .get_range(&info.key, start..size - 4)
            .await
            .map_err(Error::store)?;
        let blobs = nfrepo_format::decode_trailer(&sealed, size, self.sealer(), &self.id()).map_err(corrupt)?;
        nfrepo_format::check_entry_kinds(kind, &blobs).map_err(corrupt)?;
        Ok(IndexedPack { id, kind, size, blobs })
    }
}

impl BackupSession {
    /// The parent snapshot used for unchanged-file detection, if any.
    #[must_use]
    pub const fn parent(&self) -> Option<&SnapshotEntry> {
        self.parent.as_ref()
    }

    /// Progress so far, for display while the backup runs.
    #[must_use]
    pub fn progress(&self) -> Progress {
        let c = &self.shared.counters;
        Progress {
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_added_raw: c.bytes_added_raw.load(Ordering::Relaxed),
            blobs_added: c.blobs_added.load(Ordering::Relaxed),
        }
    }

    /// Loads a tree of the parent snapshot. Blocks; call from a non-runtime thread.
    ///
    /// # Errors
    /// As [`Reader::tree`].
    pub fn parent_tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        self.handle.block_on(self.reader.tree(id))
    }

    /// Reads `reader` to its end and stores it as chunks. Blocks.
    ///
    /// Returns as soon as the last chunk is handed to the sealing workers:
    /// the next file's reading overlaps this one's sealing.
    ///
    /// # Errors
    /// [`Error::Source`] if reading fails (the whole backup should then
    /// decide whether to skip the file); pipeline errors if sealing or an
    /// upload failed.
    pub fn store_stream(&self, reader: impl Read, sha256: bool) -> Result<StoredContent> {
        self.shared.check()?;
        // One read buffer per thread, reused from file to file.
        let mut buffer = CHUNK_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let result = self.chunk_stream(reader, sha256, &mut buffer);
        CHUNK_BUFFER.with(|b| *b.borrow_mut() = buffer);
        result
    }

    /// Chunks a stream and stores its new chunks.
    ///
    /// Short streams (most files) are cut and hashed on this thread. Past
    /// [`PIPELINE_AFTER`] bytes the work splits in two: this thread reads and
    /// cuts, a second one hashes (whole-stream BLAKE3 and SHA-256, keyed
    /// chunk ids) and hands new chunks on. Over known data, where nothing
    /// else is busy, that uses both cores instead of one.
    fn chunk_stream(&self, reader: impl Read, sha256: bool, buffer: &mut Vec<u8>) -> Result<StoredContent> {
        let source_error = |source| Error::Source {
            what: "stream".into(),
            source,
        };
        let mut digest = StreamDigest::new(sha256);
        let mut chunks = self.chunker.chunks_with_buffer(reader, buffer);
        while digest.size < PIPELINE_AFTER {
            match chunks.next() {
                Some(chunk) => digest.absorb(self, chunk.map_err(source_error)?)?,
                None => return digest.finish(self),
            }
        }
        std::thread::scope(|scope| {
            let depth = (PIPELINE_BYTES / self.chunker.profile().max as usize).max(2);
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(depth);
            let hasher = scope.spawn(move || -> Result<StreamDigest> {
                for chunk in rx {
                    digest.absorb(self, chunk)?;
                }
                Ok(digest)
            });
            let mut read_error = None;
            for chunk in chunks {
                match chunk {
                    // A closed channel means the hasher failed; its error is reported below.
                    Ok(chunk) => {
                        if tx.send(chunk).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        read_error = Some(source_error(e));
                        break;
                    }
                }
            }
            drop(tx);
            let digest = hasher
                .join()
                .map_err(|_| Error::Pipeline("the hashing thread panicked".into()))??;
            match read_error {
                Some(e) => Err(e),
                None => digest.finish(self),
            }
        })
    }

    /// Stores a directory's tree node and returns its id. Blocks.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the tree is not sorted; pipeline errors.
    pub fn store_tree(&self, tree: &Tree) -> Result<BlobId> {
        self.shared.check()?;
        let plaintext = tree.encode().map_err(|e| Error::Invalid(e.to_string()))?;
        let id = self.repo.keys().blob_id(&plaintext);
        self.shared.store_blob(BlobKind::Tree, id, plaintext)?;
        Ok(id)
    }
}

/// Bytes of a stream cut and hashed on one thread before the rest is split
/// between a cutting and a hashing thread (a thread per small file would
/// cost more than it saves).
const PIPELINE_AFTER: u64 = 8 << 20;
/// Bytes of chunks queued between the cutting and the hashing thread; the
/// queue holds at least two chunks (two 4 MiB chunks for the `files`
/// profile, 64 of the `dump` profile's at most 64 KiB).
const PIPELINE_BYTES: usize = 4 << 20;

/// The running digests and chunk list of one stream.
struct StreamDigest {
    whole: blake3::Hasher,
    sha: Option<sha2::Sha256>,
    lists: ContentListBuilder,
    emitted: Vec<EmittedList>,
    size: u64,
}

impl StreamDigest {
    fn new(sha256: bool) -> Self {
        Self {
            whole: blake3::Hasher::new(),
            sha: sha256.then(sha2::Sha256::new),
            lists: ContentListBuilder::new(),
            emitted: Vec::new(),
            size: 0,
        }
    }

    /// Hashes a chunk, names it, and stores it unless it is known.
    fn absorb(&mut self, session: &BackupSession, chunk: Vec<u8>) -> Result<()> {
        let keys = session.repo.keys();
        let len = chunk.len() as u64;
        self.whole.update(&chunk);
        if let Some(sha) = self.sha.as_mut() {
            sha.update(&chunk);
        }
        self.size += len;
        session.shared.counters.bytes_read.fetch_add(len, Ordering::Relaxed);
        let id = keys.blob_id(&chunk);
        self.lists
            .push(keys, ListEntry { id, len }, &mut self.emitted)
            .map_err(Error::Format)?;
        session.shared.store_blob(BlobKind::Data, id, chunk)?;
        for list in self.emitted.drain(..) {
            session
                .shared
                .store_blob(BlobKind::ContentList, list.id, list.plaintext)?;
        }
        Ok(())
    }

    /// Closes the chunk list and the digests.
    fn finish(mut self, session: &BackupSession) -> Result<StoredContent> {
        let content = self
            .lists
            .finish(session.repo.keys(), &mut self.emitted)
            .map_err(Error::Format)?;
        for list in self.emitted.drain(..) {
            session
                .shared
                .store_blob(BlobKind::ContentList, list.id, list.plaintext)?;
        }
        Ok(StoredContent {
            size: self.size,
            content,
            blake3: *self.whole.finalize().as_bytes(),
            sha256: self.sha.map(|s| s.finalize().into()),
        })
    }
}

impl Shared {
    /// Hands a blob to a sealing worker unless it is already stored or
    /// claimed. Blocks while the in-flight byte budget is spent.
    fn store_blob(self: &Arc<Self>, kind: BlobKind, id: BlobId, plaintext: Vec<u8>) -> Result<()> {
        if !self.claims.claim(&id)? {
            return Ok(());
        }
        self.check()?;
        let len = plaintext.len();
        self.budget.acquire(len);
        let shared = Arc::clone(self);
        rayon::spawn(move || {
            if let Err(e) = shared.seal_and_pack(kind, id, &plaintext) {
                shared.fail(e);
            }
            drop(plaintext);
            shared.budget.release(len);
        });
        Ok(())
    }

    fn seal_and_pack(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<()> {
        let blob = crate::codec::with_codec(&self.repo, |codec| {
            codec.seal_with_id(kind, id, plaintext).map_err(Error::Format)
        })?;
        self.counters.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_added_raw
            .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        self.packer.add(&blob, &self.queue)
    }

    /// Records the first failure of a sealing worker; every later call fails with it.
    fn fail(&self, error: Error) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert_with(|| error.into_shared());
        }
    }

    /// Fails if a sealing worker or an upload failed.
    fn check(&self) -> Result<()> {
        if let Some(error) = self.failure.lock().ok().and_then(|f| f.clone()) {
            return Err(Error::Shared(error));
        }
        self.queue.check()
    }
}

impl BackupSession {
    /// Flushes, waits for uploads, writes the index delta and then the
    /// snapshot naming `root`. Nothing is visible to readers before this returns.
    ///
    /// # Errors
    /// Any upload failure; the snapshot is then not written.
    pub async fn commit(self, root: BlobId, details: CommitDetails) -> Result<(SnapshotId, Snapshot)> {
        let report = self.finish_uploads().await?;
        self.live.ensure_alive()?;
        if !report.unindexed.is_empty() {
            let delta = IndexDelta {
                packs: report.unindexed,
                supersedes: Vec::new(),
            };
            let id = self.repo.write_index_delta(&delta).await?;
            self.shared.claims.indexed(id, &delta);
        }
        let mut tags = self.options.tags.clone();
        tags.sort();
        let mut extra = details.extra;
        extra.sort();
        let snapshot = Snapshot {
            time_ns: self.time_ns,
            source: self.options.source.clone(),
            source_kind: self.options.source_kind.clone(),
            hostname: crate::host::hostname(),
            username: crate::host::username(),
            paths: self.options.paths.clone(),
            tags,
            profile: self.options.profile.clone(),
            parent: self.parent.as_ref().map(|p| p.id),
            root,
            summary: Summary {
                files: details.files,
                dirs: details.dirs,
                others: details.others,
                files_unchanged: details.files_unchanged,
                bytes: details.bytes,
                bytes_read: self.shared.counters.bytes_read.load(Ordering::Relaxed),
                blobs_added: self.shared.counters.blobs_added.load(Ordering::Relaxed),
                bytes_added_raw: self.shared.counters.bytes_added_raw.load(Ordering::Relaxed),
                bytes_added_stored: report.stored_bytes,
                packs_added: report.packs,
                retries: details.retries,
                duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            },
            command: details.command,
            skipped: details.skipped,
            extra,
            program_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let (id, bytes) = snapshot
            .encode(self.repo.sealer(), &self.repo.id())
            .map_err(Error::Format)?;
        let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex()).map_err(Error::store)?;
        put_once(&self.repo, &key, bytes).await?;
        self.live.finish().await;
        tracing::info!(snapshot = %id, "snapshot committed");
        Ok((id, snapshot))
    }

    /// Stops without committing. Uploaded packs stay and the next backup adopts them.
    ///
    /// Packs already full when this is called (including those the sealing
    /// workers are finishing) are still uploaded; the open ones are dropped.
    pub async fn abort(self) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            shared.budget.wait_idle();
            shared.queue.close();
        })
        .await;
        self.shared.queue.close();
        let uploader = self.uploader.lock().ok().and_then(|mut u| u.take());
        if let Some(task) = uploader {
            let _ = task.await;
        }
        self.live.finish().await;
    }

    async fn finish_uploads(&self) -> Result<upload::UploadReport> {
        // Waiting for the workers and flushing may block on the bounded
        // queue, so this runs off the runtime.
        let shared = self.shared.clone();
        let flush = tokio::task::spawn_blocking(move || {
            shared.budget.wait_idle();
            let result = shared.check().and_then(|()| shared.packer.flush(&shared.queue));
            shared.queue.close();
            result
        });
        let uploader = self
            .uploader
            .lock()
            .map_err(|_| Error::Pipeline("uploader handle poisoned".into()))?
            .take()
            .ok_or_else(|| Error::Pipeline("uploads already finished".into()))?;
        let flushed = flush.await.map_err(|e| Error::Pipeline(e.to_string()))?;
        let report = uploader.await.map_err(|e| Error::Pipeline(e.to_string()))?;
        flushed?;
        report
    }
}

impl Repository {
    /// Writes an index delta; its packs must already be uploaded.
    ///
    /// # Errors
    /// Storage and encoding errors.
    pub async fn write_index_delta(&self, delta: &IndexDelta) -> Result<nfrepo_format::IndexId> {
        let (id, bytes) = delta.encode(self.sealer(), &self.id()).map_err(Error::Format)?;
        let key = ObjectKey::new(ObjectKind::Index, id.to_hex()).map_err(Error::store)?;
        put_once(self, &key, bytes).await?;
        Ok(id)
    }
}

async fn put_once(repo: &Repository, key: &ObjectKey, bytes: Vec<u8>) -> Result<()> {
    match repo.store().put(key, Bytes::from(bytes), PutMode::CreateNew).await {
        Err(e) if e.kind() == nfrepo_store::ErrorKind::AlreadyExists => Ok(()),
        other => other.map_err(Error::store),
    }
}
