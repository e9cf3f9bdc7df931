//! What sources feed: streams and trees in, sealed blobs out to the packer.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nfrepo_format::{
    BlobId, BlobKind, Chunker, Content, ContentListBuilder, EmittedList, ListEntry, NodeKind, Precedent, StreamHash,
    Tree,
};
use sha2::Digest;

use super::budget::ByteBudget;
use super::packer::Packer;
use super::upload::UploadQueue;
use super::{Claims, Progress};
use crate::index::Index;
use crate::read::{Reader, SnapshotEntry};
use crate::{Error, Repository, Result};

thread_local! {
    static CHUNK_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Plaintext bytes handed to the sealing workers and not yet packed. 2 MiB
/// keeps two cores busy better than 4 or 8 did (the dump's first backup:
/// 3.87–4.26 s at 8 and 4 MiB; in a later pass 3.66–3.88 s at 4 and
/// 3.39–3.60 s at 2, with [`PIPELINE_BYTES`] lowered from 4 to 2 MiB at
/// the same time, and less system time: what is in flight stays in the CPU
/// caches) and lowers the first backup to S3's peak (96–98 → 93–95 MiB).
const IN_FLIGHT_BYTES: usize = 2 << 20;

/// Bytes of a stream cut and hashed on one thread before the rest is split
/// between a cutting and a hashing thread (a thread per small file would
/// cost more than it saves).
const PIPELINE_AFTER: u64 = 8 << 20;
/// Bytes of chunks between the cutting and the hashing thread (the batch
/// being gathered, those queued and the one being looked up), at least two
/// chunks (two 4 MiB chunks for the `files` profile, 32 of the `dump`
/// profile's at most 64 KiB, 64 of the `rows` profile's 32 KiB). Counting
/// only the queued batches, as before, let three batches of two 4 MiB
/// chunks pile up per large file: 16 MB of a tree backup's peak
/// (heaptrack). 2 MiB did as well as 4 for the dump's backups (with
/// [`IN_FLIGHT_BYTES`] at 2 MiB too: see there).
const PIPELINE_BYTES: usize = 2 << 20;
/// Chunks the hashing thread takes off the queue at once, to look them up
/// in the index in one batch: one cache query for up to this many chunks
/// instead of one locked query each.
const LOOKUP_BATCH: usize = 32;

/// Where a stream stored by [`BackupWriter::store_stream_resumable`] goes
/// on from when bytes are appended to it: every chunk but the last, and
/// the whole-stream hash up to there.
///
/// Content-defined cut points depend only on the bytes from a chunk's start
/// to its cut, so every chunk before the last stays a chunk of the longer
/// stream; the last one was cut by the end of the stream and is cut again
/// with what follows. Resuming therefore stores exactly what storing the
/// whole longer stream would, while reading only from the last chunk's
/// start. Kept in memory only (about 40 bytes per chunk).
#[derive(Clone)]
pub struct StreamResume {
    offset: u64,
    entries: Vec<ListEntry>,
    whole: blake3::Hasher,
}

impl StreamResume {
    /// The offset reading resumes at: the start of the stream's last chunk.
    #[must_use]
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

impl std::fmt::Debug for StreamResume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResume")
            .field("offset", &self.offset)
            .field("chunks", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// A stream stored by [`BackupWriter::store_stream`].
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
    /// Every blob the content references (chunks, then list blobs), kept
    /// only in a session that remembers files (`known`), and only up to
    /// [`super::known::MAX_REMEMBERED_BLOBS`].
    pub(crate) blobs: Option<Arc<Vec<BlobId>>>,
}

impl StoredContent {
    /// The kind of a file node holding this content.
    #[must_use]
    pub fn file_kind(&self) -> NodeKind {
        NodeKind::File {
            size: self.size,
            content: self.content.clone(),
            blake3: self.blake3,
            sha256: self.sha256,
        }
    }
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    blobs_added: AtomicU64,
    bytes_added_raw: AtomicU64,
}

/// How a session cuts and names streams.
pub(super) struct Streams {
    pub chunker: Chunker,
    /// Record a SHA-256 of whole objects ([`crate::BackupOptions::sha256`]).
    pub sha256: bool,
}

/// What every clone of a writer, and the sealing workers, share.
pub(super) struct Shared {
    repo: Repository,
    claims: Arc<Claims>,
    packer: Packer,
    pub(super) queue: UploadQueue,
    counters: Counters,
    pub(super) budget: ByteBudget,
    failure: Mutex<Option<Arc<Error>>>,
    /// Set when the session commits or aborts: later writes fail.
    closed: AtomicBool,
    chunker: Chunker,
    /// Whether whole objects get a SHA-256 ([`crate::BackupOptions::sha256`]).
    sha256: bool,
    parent: Option<SnapshotEntry>,
    reader: Reader,
    handle: tokio::runtime::Handle,
    /// A put-only session's record of the files it stored (`super::known`).
    pub(super) known: Option<Arc<nfrepo_store::KnownFiles>>,
}

/// The feeding side of a backup: cheap to clone, shared by every thread a
/// source uses. See the module docs of `crate::backup`.
///
/// Its methods block; call them from a thread that is not a runtime worker.
/// Once the session has committed or aborted, they fail.
#[derive(Clone)]
pub struct BackupWriter {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for BackupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl BackupWriter {
    /// A writer over a freshly started session's claims and upload queue.
    /// Must be called on the runtime (it keeps a handle to it).
    pub(super) fn new(
        repo: &Repository,
        claims: Arc<Claims>,
        queue: UploadQueue,
        streams: Streams,
        parent: Option<SnapshotEntry>,
        index: Arc<Index>,
        known: Option<Arc<nfrepo_store::KnownFiles>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                repo: repo.clone(),
                packer: Packer::new(repo.config().pack_size as usize, repo.sealer().clone(), repo.id()),
                claims,
                queue,
                counters: Counters::default(),
                budget: ByteBudget::with_low_mark(IN_FLIGHT_BYTES, IN_FLIGHT_BYTES / 2),
                failure: Mutex::new(None),
                closed: AtomicBool::new(false),
                chunker: streams.chunker,
                sha256: streams.sha256,
                parent,
                reader: Reader::new(repo.clone(), index),
                handle: tokio::runtime::Handle::current(),
                known,
            }),
        }
    }

    /// The parent snapshot used for unchanged-file detection, if any.
    #[must_use]
    pub fn parent(&self) -> Option<&SnapshotEntry> {
        self.shared.parent.as_ref()
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
        self.shared.handle.block_on(self.shared.reader.tree(id))
    }

    /// Reads `reader` to its end and stores it as chunks. Blocks.
    ///
    /// `whole_object`: the stream is an object as an operator knows it (a
    /// dump, a piped stream, a bucket object), not a file of a tree or a
    /// part of a larger object; its SHA-256 is recorded when the session
    /// asked for it ([`crate::BackupOptions::sha256`]).
    ///
    /// Returns as soon as the last chunk is handed to the sealing workers:
    /// the next file's reading overlaps this one's sealing.
    ///
    /// # Errors
    /// [`Error::Source`] if reading fails (the whole backup should then
    /// decide whether to skip the file); pipeline errors if sealing or an
    /// upload failed, or the session has ended.
    pub fn store_stream(&self, reader: impl Read, whole_object: bool) -> Result<StoredContent> {
        self.shared.check_open()?;
        let digest = StreamDigest::new(whole_object && self.shared.sha256, self.shared.known.is_some());
        self.chunk_with_buffer(reader, digest, None)?.finish(&self.shared)
    }

    /// [`Self::store_stream`] for a whole object the snapshot holds as the
    /// file `name` at its root (a dump, a piped stream). When the parent
    /// snapshot has a file of that name, its chunks guide the cuts
    /// ([`nfrepo_format::Guided`]): over the bytes that did not change, each
    /// chunk is named and compared with the parent's instead of searched
    /// for. The chunks are the same either way; a parent that cannot be
    /// read only loses the guidance (with a warning). Blocks.
    ///
    /// # Errors
    /// As [`Self::store_stream`].
    pub fn store_root_stream(&self, reader: impl Read, name: &str) -> Result<StoredContent> {
        self.shared.check_open()?;
        let precedent = self.precedent(name.as_bytes());
        let digest = StreamDigest::new(self.shared.sha256, self.shared.known.is_some());
        self.chunk_with_buffer(reader, digest, precedent.as_ref())?
            .finish(&self.shared)
    }

    /// The chunks of the parent snapshot's root file `name`, when there is
    /// one and the chunker can be guided by them.
    fn precedent(&self, name: &[u8]) -> Option<Precedent> {
        let chunker = &self.shared.chunker;
        let parent = self.shared.parent.as_ref()?;
        if !chunker.can_guide() {
            return None;
        }
        let loaded = self.shared.handle.block_on(async {
            use futures::TryStreamExt;
            let root = self.shared.reader.tree(&parent.snapshot.root).await?;
            let Some(NodeKind::File { content, .. }) =
                root.nodes.iter().find(|node| node.name == name).map(|node| &node.kind)
            else {
                return Ok(None);
            };
            let mut builder = Precedent::builder(chunker.profile().max);
            let mut chunks = self.shared.reader.content_chunks(content);
            while let Some(entry) = chunks.try_next().await? {
                if !builder.push(&entry.id, entry.len) {
                    return Ok(None);
                }
            }
            Ok::<_, Error>(builder.build())
        });
        loaded.unwrap_or_else(|e| {
            tracing::warn!(
                error = %e,
                "cannot read the parent snapshot's chunks of {}; cutting without them",
                String::from_utf8_lossy(name)
            );
            None
        })
    }

    /// Stores a stream that may grow, continuing from `from` (a shorter
    /// version of it stored earlier: see [`StreamResume`]) when every chunk
    /// that recorded is still stored. `open(offset)` gives the stream's
    /// bytes from `offset` on: from [`StreamResume::offset`] when resuming,
    /// else from 0. Returns the content, where the next version can resume,
    /// and the offset reading started at. Blocks.
    ///
    /// The caller vouches that the stream's first `from.offset()` bytes are
    /// still those stored then (an append-only file it has kept open, say).
    ///
    /// # Errors
    /// As [`Self::store_stream`]; [`Error::Source`] if `open` fails.
    pub fn store_stream_resumable<R: Read>(
        &self,
        from: Option<&StreamResume>,
        open: impl FnOnce(u64) -> std::io::Result<R>,
    ) -> Result<(StoredContent, StreamResume, u64)> {
        self.shared.check_open()?;
        let ids: Vec<BlobId> = from
            .map(|r| r.entries.iter().map(|e| e.id).collect())
            .unwrap_or_default();
        let from = match from {
            Some(resume) if self.shared.claims.reuse(&ids)? => Some(resume),
            _ => None,
        };
        let mut digest = StreamDigest::new(false, false);
        digest.trail = Some(Trail::default());
        if let Some(resume) = from {
            digest.resume(&self.shared, resume)?;
        }
        let offset = digest.size;
        let reader = open(offset).map_err(|source| Error::Source {
            what: "stream".into(),
            source,
        })?;
        let mut digest = self.chunk_with_buffer(reader, digest, None)?;
        let resume = digest.resume_point();
        Ok((digest.finish(&self.shared)?, resume, offset))
    }

    /// [`Self::chunk_stream`] with this thread's reused read buffer.
    fn chunk_with_buffer(
        &self,
        reader: impl Read,
        digest: StreamDigest,
        precedent: Option<&Precedent>,
    ) -> Result<StreamDigest> {
        // One read buffer per thread, reused from file to file.
        let mut buffer = CHUNK_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let result = self.chunk_stream(reader, digest, &mut buffer, precedent);
        CHUNK_BUFFER.with(|b| *b.borrow_mut() = buffer);
        result
    }

    /// Chunks a stream and stores its new chunks.
    ///
    /// Short streams (most files) are cut and hashed on this thread. Past
    /// [`PIPELINE_AFTER`] bytes the work splits in two: this thread reads
    /// and cuts, a second one runs the whole-stream digests, looks chunks up
    /// and hands new ones on. Over known data, where nothing else is busy,
    /// that uses both cores instead of one.
    ///
    /// Naming each chunk (keyed BLAKE3) goes to whichever side has time for
    /// it: a batch is handed over unnamed when the queue has room, and named
    /// here first when it is full (the hashing side is behind: a
    /// whole-stream SHA-256, or new chunks waiting for the sealing budget).
    /// Per 964 MB of dump (`perf`): about 0.5 s reading and cutting, 0.35 s
    /// naming, 0.1 s of whole-stream BLAKE3, 0.65 s of SHA-256 when asked
    /// for. Naming always on the cutting side kept the hashing one waiting
    /// over known data (the incremental 10 % slower); always on the hashing
    /// side would put it behind whenever it also runs SHA-256.
    ///
    /// With a `precedent`, the cutting side names every chunk as it cuts
    /// it (that is how a guess is checked: [`nfrepo_format::Guided`]).
    fn chunk_stream(
        &self,
        reader: impl Read,
        mut digest: StreamDigest,
        buffer: &mut Vec<u8>,
        precedent: Option<&Precedent>,
    ) -> Result<StreamDigest> {
        let source_error = |source| Error::Source {
            what: "stream".into(),
            source,
        };
        let shared = &self.shared;
        let keys = shared.repo.keys();
        let mut chunks = match precedent {
            Some(precedent) => Cuts::Guided(
                shared
                    .chunker
                    .guided(reader, buffer, precedent, |c: &[u8]| keys.blob_id(c)),
            ),
            None => Cuts::Searched(shared.chunker.chunks_with_buffer(reader, buffer)),
        };
        let pipeline_after = digest.size.saturating_add(PIPELINE_AFTER);
        while digest.size < pipeline_after {
            match chunks.next() {
                Some(chunk) => {
                    let (chunk, id) = chunk.map_err(source_error)?;
                    digest.absorb(shared, chunk, id)?;
                }
                None => {
                    chunks.report();
                    return Ok(digest);
                }
            }
        }
        std::thread::scope(|scope| {
            // At most `depth` chunks between the two threads: the batch being
            // cut, the batches queued and the one being hashed.
            let depth = (PIPELINE_BYTES / shared.chunker.profile().max as usize).max(2);
            let batch_len = LOOKUP_BATCH.min(depth / 2);
            let queued = (depth / batch_len).saturating_sub(2);
            // Batches, not chunks, cross the queue: the hashing thread waits
            // for the cutting one over known data, so a chunk per message
            // woke it once per chunk (9 % of an incremental's CPU in
            // context switches, `perf`).
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(queued);
            let hasher = scope.spawn(move || -> Result<StreamDigest> {
                for mut batch in rx {
                    batch.name(keys);
                    let found = shared.claims.locate_many(&batch.ids);
                    for ((id, chunk), at) in batch.ids.into_iter().zip(batch.chunks).zip(found) {
                        digest.absorb_located(shared, id, chunk, at)?;
                    }
                }
                Ok(digest)
            });
            let mut read_error = None;
            let mut batch = Batch::new(batch_len);
            for chunk in chunks.by_ref() {
                match chunk {
                    Ok((chunk, id)) => {
                        batch.chunks.push(chunk);
                        batch.ids.extend(id);
                        // A closed channel means the hasher failed; its error is reported below.
                        if batch.chunks.len() == batch_len
                            && batch_handed(&tx, std::mem::replace(&mut batch, Batch::new(batch_len)), keys).is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        read_error = Some(source_error(e));
                        break;
                    }
                }
            }
            if read_error.is_none() && !batch.chunks.is_empty() {
                // As above: if the hasher is gone, its error is what the join reports.
                let _ = tx.send(batch);
            }
            drop(tx);
            let digest = hasher
                .join()
                .map_err(|_| Error::Pipeline("the hashing thread panicked".into()))??;
            chunks.report();
            match read_error {
                Some(e) => Err(e),
                None => Ok(digest),
            }
        })
    }

    /// Stores a directory's tree node and returns its id. Blocks.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the tree is not sorted; pipeline errors.
    pub fn store_tree(&self, tree: &Tree) -> Result<BlobId> {
        self.shared.check_open()?;
        let plaintext = tree.encode().map_err(|e| Error::Invalid(e.to_string()))?;
        let id = self.shared.repo.keys().blob_id(&plaintext);
        self.shared.store_blob(BlobKind::Tree, id, plaintext)?;
        Ok(id)
    }
}

/// A stream's chunks: searched for, or guided by its earlier version's
/// (each then named as it is cut).
enum Cuts<'p, B, R, F> {
    Searched(nfrepo_format::Chunks<B, R>),
    Guided(nfrepo_format::Guided<'p, B, R, F>),
}

impl<B: std::borrow::BorrowMut<Vec<u8>>, R: Read, F: FnMut(&[u8]) -> BlobId> Cuts<'_, B, R, F> {
    /// Logs how many chunks a guided stream's guesses cut.
    fn report(&self) {
        if let Self::Guided(guided) = self {
            let (cut, guessed) = guided.counts();
            tracing::debug!(cut, guessed, "cut a stream guided by the parent snapshot's chunks");
        }
    }
}

impl<B: std::borrow::BorrowMut<Vec<u8>>, R: Read, F: FnMut(&[u8]) -> BlobId> Iterator for Cuts<'_, B, R, F> {
    type Item = std::io::Result<(Vec<u8>, Option<BlobId>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Searched(chunks) => chunks.next().map(|c| c.map(|chunk| (chunk, None))),
            Self::Guided(guided) => guided.next().map(|c| c.map(|(chunk, id)| (chunk, Some(id)))),
        }
    }
}

/// Chunks handed from the cutting to the hashing thread, with their names
/// when the cutting side had time to compute them (else `ids` is empty).
struct Batch {
    ids: Vec<BlobId>,
    chunks: Vec<Vec<u8>>,
}

impl Batch {
    fn new(len: usize) -> Self {
        Self {
            ids: Vec::with_capacity(len),
            chunks: Vec::with_capacity(len),
        }
    }

    /// Names the chunks, unless that is done already.
    fn name(&mut self, keys: &nfrepo_format::RepoKeys) {
        if self.ids.len() < self.chunks.len() {
            self.ids.clear();
            self.ids.extend(self.chunks.iter().map(|chunk| keys.blob_id(chunk)));
        }
    }
}

/// Hands a batch to the hashing thread: unnamed if the queue has room,
/// else named here while the hashing thread catches up.
fn batch_handed(
    tx: &std::sync::mpsc::SyncSender<Batch>,
    batch: Batch,
    keys: &nfrepo_format::RepoKeys,
) -> std::result::Result<(), ()> {
    use std::sync::mpsc::TrySendError;
    match tx.try_send(batch) {
        Ok(()) => Ok(()),
        Err(TrySendError::Disconnected(_)) => Err(()),
        Err(TrySendError::Full(mut batch)) => {
            batch.name(keys);
            tx.send(batch).map_err(|_| ())
        }
    }
}

/// The running digests and chunk list of one stream.
struct StreamDigest {
    whole: StreamHash,
    sha: Option<sha2::Sha256>,
    lists: ContentListBuilder,
    emitted: Vec<EmittedList>,
    size: u64,
    /// Every blob referenced so far, when remembered; `None` once past the limit.
    blobs: Option<Vec<BlobId>>,
    /// What a later, longer version needs to resume, when it may come.
    trail: Option<Trail>,
}

/// The chunks of a resumable stream, and the state before its last one.
#[derive(Default)]
struct Trail {
    entries: Vec<ListEntry>,
    /// The offset and whole-stream hash before the last chunk.
    before_last: Option<(u64, blake3::Hasher)>,
}

impl StreamDigest {
    fn new(sha256: bool, remember: bool) -> Self {
        Self {
            whole: StreamHash::default(),
            sha: sha256.then(sha2::Sha256::new),
            lists: ContentListBuilder::new(),
            emitted: Vec::new(),
            size: 0,
            blobs: remember.then(Vec::new),
            trail: None,
        }
    }

    /// Takes up a shorter version's chunks (already stored: the caller
    /// checked) without reading them.
    fn resume(&mut self, shared: &Arc<Shared>, from: &StreamResume) -> Result<()> {
        let keys = shared.repo.keys();
        for entry in &from.entries {
            self.lists
                .push(keys, *entry, &mut self.emitted)
                .map_err(Error::Format)?;
            for list in std::mem::take(&mut self.emitted) {
                shared.store_blob(BlobKind::ContentList, list.id, list.plaintext)?;
            }
        }
        self.whole = StreamHash::from_hasher(from.whole.clone());
        self.size = from.offset;
        if let Some(trail) = self.trail.as_mut() {
            trail.entries.clone_from(&from.entries);
        }
        Ok(())
    }

    /// Where a longer version resumes: before the last chunk.
    fn resume_point(&mut self) -> StreamResume {
        let trail = self.trail.take().unwrap_or_default();
        let mut entries = trail.entries;
        match trail.before_last {
            Some((offset, whole)) => {
                entries.pop();
                StreamResume { offset, entries, whole }
            }
            None => StreamResume {
                offset: self.size,
                entries,
                whole: self.whole.settled().clone(),
            },
        }
    }

    /// Hashes a chunk, names it, and stores it unless it is known.
    fn absorb(&mut self, shared: &Arc<Shared>, chunk: Vec<u8>, id: Option<BlobId>) -> Result<()> {
        let id = id.unwrap_or_else(|| shared.repo.keys().blob_id(&chunk));
        let at = shared.claims.index.get(&id);
        self.absorb_located(shared, id, chunk, at)
    }

    /// [`Self::absorb`] for a chunk named, and looked up in the index, already.
    fn absorb_located(
        &mut self,
        shared: &Arc<Shared>,
        id: BlobId,
        chunk: Vec<u8>,
        at: Option<crate::index::BlobLocation>,
    ) -> Result<()> {
        let keys = shared.repo.keys();
        let len = chunk.len() as u64;
        if let Some(trail) = self.trail.as_mut() {
            trail.before_last = Some((self.size, self.whole.settled().clone()));
            trail.entries.push(ListEntry { id, len });
        }
        self.whole.update(&chunk);
        if let Some(sha) = self.sha.as_mut() {
            sha.update(&chunk);
        }
        self.size += len;
        shared.counters.bytes_read.fetch_add(len, Ordering::Relaxed);
        self.lists
            .push(keys, ListEntry { id, len }, &mut self.emitted)
            .map_err(Error::Format)?;
        shared.store_located(BlobKind::Data, id, chunk, at)?;
        note(&mut self.blobs, id);
        let emitted = std::mem::take(&mut self.emitted);
        for list in emitted {
            note(&mut self.blobs, list.id);
            shared.store_blob(BlobKind::ContentList, list.id, list.plaintext)?;
        }
        Ok(())
    }

    /// Closes the chunk list and the digests.
    fn finish(mut self, shared: &Arc<Shared>) -> Result<StoredContent> {
        let content = self
            .lists
            .finish(shared.repo.keys(), &mut self.emitted)
            .map_err(Error::Format)?;
        let emitted = std::mem::take(&mut self.emitted);
        for list in emitted {
            note(&mut self.blobs, list.id);
            shared.store_blob(BlobKind::ContentList, list.id, list.plaintext)?;
        }
        Ok(StoredContent {
            size: self.size,
            content,
            blake3: self.whole.finalize(),
            sha256: self.sha.map(|s| s.finalize().into()),
            blobs: self.blobs.map(Arc::new),
        })
    }
}

/// Notes a referenced blob in `blobs`, if blobs are remembered; past
/// [`super::known::MAX_REMEMBERED_BLOBS`] the stream is not remembered.
fn note(blobs: &mut Option<Vec<BlobId>>, id: BlobId) {
    if let Some(list) = blobs.as_mut() {
        if list.len() < super::known::MAX_REMEMBERED_BLOBS {
            list.push(id);
        } else {
            *blobs = None;
        }
    }
}

impl Shared {
    /// Hands a blob to a sealing worker unless it is already stored or
    /// claimed. Blocks while the in-flight byte budget is spent.
    fn store_blob(self: &Arc<Self>, kind: BlobKind, id: BlobId, plaintext: Vec<u8>) -> Result<()> {
        let at = self.claims.index.get(&id);
        self.store_located(kind, id, plaintext, at)
    }

    /// [`Self::store_blob`] with `id` looked up in the index already.
    fn store_located(
        self: &Arc<Self>,
        kind: BlobKind,
        id: BlobId,
        plaintext: Vec<u8>,
        at: Option<crate::index::BlobLocation>,
    ) -> Result<()> {
        if !self.claims.claim_at(&id, at)? {
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
    pub(super) fn check(&self) -> Result<()> {
        if let Some(error) = self.failure.lock().ok().and_then(|f| f.clone()) {
            return Err(Error::Shared(error));
        }
        self.queue.check()
    }

    /// Fails if the session has ended, or as [`Self::check`].
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Pipeline("the backup session has ended".into()));
        }
        self.check()
    }

    /// Marks the session ended: writes through any writer clone fail from now on.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Flushes the open packs (after every sealing worker is done) and
    /// closes the upload queue. Blocks on the bounded queue.
    pub(super) fn flush(&self) -> Result<()> {
        self.budget.wait_idle();
        let result = self.check().and_then(|()| self.packer.flush(&self.queue));
        self.queue.close();
        result
    }

    /// Counters for the snapshot summary: bytes read, blobs added, raw bytes added.
    pub(super) fn totals(&self) -> (u64, u64, u64) {
        let c = &self.counters;
        (
            c.bytes_read.load(Ordering::Relaxed),
            c.blobs_added.load(Ordering::Relaxed),
            c.bytes_added_raw.load(Ordering::Relaxed),
        )
    }

    pub(super) const fn repo(&self) -> &Repository {
        &self.repo
    }

    pub(super) fn claims(&self) -> &Claims {
        &self.claims
    }
}

#[cfg(test)]
mod tests {
    use super::{Batch, batch_handed};

    fn batch(chunks: &[&[u8]]) -> Batch {
        let mut batch = Batch::new(chunks.len());
        batch.chunks.extend(chunks.iter().map(|c| c.to_vec()));
        batch
    }

    #[test]
    fn a_batch_goes_unnamed_while_the_queue_has_room_and_is_named_once() {
        let keys = nfrepo_format::MasterKey::from_bytes([7; 32]).derive();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(1);
        batch_handed(&tx, batch(&[b"one", b"two"]), &keys).unwrap();
        let mut handed = rx.recv().unwrap();
        assert!(handed.ids.is_empty());
        // The receiving side names what is unnamed...
        handed.name(&keys);
        assert_eq!(handed.ids, vec![keys.blob_id(b"one"), keys.blob_id(b"two")]);
        // ...and keeps what the cutting side named.
        let mut named = batch(&[b"three"]);
        named.ids.push(nfrepo_format::BlobId([1; 32]));
        named.name(&keys);
        assert_eq!(named.ids, vec![nfrepo_format::BlobId([1; 32])]);
        // A receiver that is gone is reported, not waited for, full queue or not.
        batch_handed(&tx, batch(&[b"four"]), &keys).unwrap();
        drop(rx);
        assert!(batch_handed(&tx, batch(&[b"five"]), &keys).is_err());
    }
}
