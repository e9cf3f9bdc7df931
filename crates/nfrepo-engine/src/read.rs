//! Reading a repository: snapshots, the index, blobs, trees and file content.
//!
//! A [`Reader`] pairs an open repository with its loaded index. Blobs are
//! fetched with range requests (one per blob, or one per run of adjacent
//! blobs when streaming file content), opened (authenticated, decompressed,
//! re-hashed) on the blocking pool, and never returned unless they verify:
//! a damaged blob is an [`Error::Corrupted`] naming the pack and blob.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::stream::{self, Stream, StreamExt};
use nfrepo_format::{
    BlobCodec, BlobId, BlobKind, Content, ContentList, IndexDelta, IndexId, ListEntry, Node, NodeKind, Snapshot,
    SnapshotId, Tree,
};
use nfrepo_store::{ObjectInfo, ObjectKey, ObjectKind};

use crate::index::{BlobLocation, Index};
use crate::objects::RepoObject;
use crate::{Error, Repository, Result};

/// Content bytes read ahead while streaming one file: many small dump
/// chunks at once, or a few large file chunks, at the same memory cost.
const READ_AHEAD_BYTES: u64 = 4 << 20;
/// At most this many range reads in flight per file, however small.
const READ_AHEAD_MAX: usize = 64;
/// The longest run of adjacent blobs fetched with one range request: long
/// enough to make per-request costs vanish against 16 KiB dump chunks, short
/// enough that several runs decode in parallel within the read-ahead.
const COALESCE_BYTES: u64 = 1 << 20;

/// A snapshot with its id.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    /// Its id.
    pub id: SnapshotId,
    /// Its content.
    pub snapshot: Snapshot,
}

impl Repository {
    /// Every snapshot, oldest first. A snapshot that does not open fails
    /// the whole call: what must see every snapshot (gc, forget) uses this.
    ///
    /// # Errors
    /// Storage errors, or [`Error::Corrupted`] for a damaged snapshot.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let (good, mut damaged) = self.load_snapshots().await?;
        match damaged.pop() {
            Some(error) => Err(error),
            None => Ok(good),
        }
    }

    /// Every snapshot that opens, oldest first; each damaged one is logged as
    /// a warning (naming the object) and left out. Backups, browsing and
    /// restores use this, so one damaged snapshot stops neither the next
    /// backup nor a restore of another snapshot; `nfrepo check` reports it.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn readable_snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let (good, damaged) = self.load_snapshots().await?;
        for error in damaged {
            tracing::warn!("skipping a damaged snapshot (run `nfrepo check`): {error}");
        }
        Ok(good)
    }

    /// Snapshots that open, and the errors of those that do not. A
    /// snapshot forgotten between the listing and the read is neither.
    async fn load_snapshots(&self) -> Result<(Vec<SnapshotEntry>, Vec<Error>)> {
        let loaded = crate::objects::load_all::<Snapshot>(self).await?;
        let mut good: Vec<SnapshotEntry> = loaded
            .good
            .into_iter()
            .map(|s| SnapshotEntry {
                id: s.id,
                snapshot: s.object,
            })
            .collect();
        good.sort_by_key(|e| (e.snapshot.time_ns, e.id));
        Ok((good, loaded.damaged.into_iter().map(|d| d.error).collect()))
    }

    /// Resolves a snapshot spec: an id prefix, `latest`, or `SOURCE@latest`.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] or [`Error::AmbiguousSnapshot`].
    pub async fn find_snapshot(&self, spec: &str) -> Result<SnapshotEntry> {
        let all = self.readable_snapshots().await?;
        select_snapshot(all, spec)
    }

    /// Loads the index. Call after listing snapshots (see [`Index`]).
    ///
    /// With a local cache ([`Self::with_index_cache`]) only the deltas the
    /// cache has not seen are fetched, and the cache is rebuilt from every
    /// delta when one it holds has gone or been superseded. Otherwise every
    /// delta is fetched into memory.
    ///
    /// # Errors
    /// Storage errors, local cache errors, or [`Error::Corrupted`] for a damaged delta.
    pub async fn load_index(&self) -> Result<Index> {
        // A delta that vanishes between listing and reading was merged by a
        // concurrent compaction, which wrote its replacement first: list again.
        let mut attempts = 0;
        loop {
            match self.load_index_once().await {
                Err(Error::Missing { .. }) if attempts < 3 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn load_index_once(&self) -> Result<Index> {
        let listed = self.store().list(ObjectKind::Index).await.map_err(Error::store)?;
        let Some(dir) = self.index_cache_dir() else {
            return Ok(Index::from_deltas(self.fetch_deltas(listed).await?));
        };
        let listed: Vec<(IndexId, ObjectInfo)> = listed
            .into_iter()
            .filter_map(|info| Some((<IndexDelta as RepoObject>::parse_name(info.key.name())?, info)))
            .collect();
        match self.load_cached_index(dir.to_owned(), &listed).await {
            Ok(index) => Ok(index),
            // The cache only saves work: without it, the index is loaded into
            // memory. (Other storage errors, such as a delta gone missing, are
            // the repository's and go to the caller.)
            Err(Error::Store(e)) if e.kind() == nfrepo_store::ErrorKind::Other => {
                tracing::warn!(error = %e, "local index cache unusable; loading the index into memory");
                let listed = listed.into_iter().map(|(_, info)| info).collect();
                Ok(Index::from_deltas(self.fetch_deltas(listed).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// Brings the local index cache up to date with `listed` and opens it.
    async fn load_cached_index(&self, dir: std::path::PathBuf, listed: &[(IndexId, ObjectInfo)]) -> Result<Index> {
        let repo = self.id().to_hex();
        let cache = blocking(move || nfrepo_store::IndexCache::open(&dir, &repo).map_err(Error::store)).await?;
        let (cache, seen) = blocking(move || {
            let seen = cache.deltas().map_err(Error::store)?;
            Ok((cache, seen))
        })
        .await?;
        let ingested: HashSet<IndexId> = seen.iter().filter(|(_, i)| *i).map(|(id, _)| IndexId(*id)).collect();
        let seen: HashSet<IndexId> = seen.into_iter().map(|(id, _)| IndexId(id)).collect();
        let listed_ids: HashSet<IndexId> = listed.iter().map(|(id, _)| *id).collect();
        let new: Vec<ObjectInfo> = listed
            .iter()
            .filter(|(id, _)| !seen.contains(id))
            .map(|(_, info)| info.clone())
            .collect();
        let mut fetched = self.fetch_deltas(new).await?;
        let superseded: HashSet<IndexId> = fetched.iter().flat_map(|(_, d)| d.supersedes.iter().copied()).collect();
        let rebuild = ingested
            .iter()
            .any(|id| !listed_ids.contains(id) || superseded.contains(id));
        if rebuild {
            tracing::info!("an index delta the local cache holds was removed or superseded; rebuilding the cache");
            let missing: Vec<ObjectInfo> = listed
                .iter()
                .filter(|(id, _)| seen.contains(id))
                .map(|(_, info)| info.clone())
                .collect();
            fetched.extend(self.fetch_deltas(missing).await?);
        }
        blocking(move || {
            if rebuild {
                cache.clear().map_err(Error::store)?;
            }
            let superseded: HashSet<IndexId> = fetched.iter().flat_map(|(_, d)| d.supersedes.iter().copied()).collect();
            for (id, delta) in &fetched {
                if superseded.contains(id) {
                    continue;
                }
                crate::index::ingest(&cache, *id, delta).map_err(Error::store)?;
            }
            let held: Vec<IndexId> = cache
                .deltas()
                .map_err(Error::store)?
                .into_iter()
                .filter(|(id, ingested)| *ingested && listed_ids.contains(&IndexId(*id)))
                .map(|(id, _)| IndexId(id))
                .collect();
            Index::cached(cache, held)
        })
        .await
    }

    /// Fetches and opens the listed index deltas. A damaged delta fails the
    /// load (its blobs would silently vanish from the index); one that
    /// vanished is [`Error::Missing`], on which [`Self::load_index`] lists again.
    async fn fetch_deltas(&self, listed: Vec<ObjectInfo>) -> Result<Vec<(IndexId, IndexDelta)>> {
        let loaded = crate::objects::load_listed::<IndexDelta>(self, listed).await?;
        if let Some(damaged) = loaded.damaged.into_iter().next() {
            return Err(damaged.error);
        }
        if let Some(key) = loaded.vanished.into_iter().next() {
            return Err(Error::Missing {
                object: key.path(),
                detail: "the index delta was removed while the index was loading".into(),
            });
        }
        Ok(loaded.good.into_iter().map(|d| (d.id, d.object)).collect())
    }

    /// A blob codec for this repository (one per worker thread).
    ///
    /// # Errors
    /// If zstd rejects the configured level.
    pub fn codec(&self) -> Result<BlobCodec> {
        BlobCodec::new(self.keys().clone(), self.sealer().clone(), self.config().zstd_level).map_err(Error::Format)
    }

    /// Opens a reader: loads the index.
    ///
    /// # Errors
    /// As [`Self::load_index`].
    pub async fn reader(&self) -> Result<Reader> {
        let index = self.load_index().await?;
        Ok(Reader::new(self.clone(), Arc::new(index)))
    }
}

/// Picks the snapshot `spec` names out of `all` (sorted oldest first).
///
/// # Errors
/// [`Error::SnapshotNotFound`] or [`Error::AmbiguousSnapshot`].
pub fn select_snapshot(all: Vec<SnapshotEntry>, spec: &str) -> Result<SnapshotEntry> {
    let not_found = || Error::SnapshotNotFound(spec.to_owned());
    if spec == "latest" {
        return all.into_iter().next_back().ok_or_else(not_found);
    }
    if let Some(source) = spec.strip_suffix("@latest") {
        return all
            .into_iter()
            .rfind(|e| e.snapshot.source == source)
            .ok_or_else(not_found);
    }
    if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let spec_lower = spec.to_ascii_lowercase();
    let mut matches = all.into_iter().filter(|e| e.id.to_hex().starts_with(&spec_lower));
    let first = matches.next().ok_or_else(not_found)?;
    if matches.next().is_some() {
        return Err(Error::AmbiguousSnapshot(spec.to_owned()));
    }
    Ok(first)
}

/// Reads blobs, trees and file content of one repository through its index.
#[derive(Clone)]
pub struct Reader {
    repo: Repository,
    index: Arc<Index>,
    trees: Arc<Mutex<lru::LruCache<BlobId, Arc<Tree>>>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("blobs", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader over `index`.
    #[must_use]
    pub fn new(repo: Repository, index: Arc<Index>) -> Self {
        let capacity = NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN);
        Self {
            repo,
            index,
            trees: Arc::new(Mutex::new(lru::LruCache::new(capacity))),
        }
    }

    /// The repository.
    #[must_use]
    pub const fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The index.
    #[must_use]
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Where a blob is stored.
    ///
    /// # Errors
    /// [`Error::Missing`] if no index entry names it.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.index.get(id).ok_or_else(|| Error::Missing {
            object: format!("blob {id}"),
            detail: match self.index.cache_failure() {
                Some(failure) => format!("not found, and the local index cache failed: {failure}"),
                None => "not in any index".into(),
            },
        })
    }

    /// Fetches, opens and verifies one blob.
    ///
    /// # Errors
    /// [`Error::Missing`], storage errors, or [`Error::Corrupted`] naming pack and blob.
    pub async fn read_blob(&self, id: &BlobId, expect: BlobKind) -> Result<Vec<u8>> {
        let location = self.locate_kind(id, expect)?;
        let object = pack_key(&location)?;
        let start = u64::from(location.offset);
        let sealed = self
            .repo
            .store()
            .get_range(&object, start..start + u64::from(location.sealed_len))
            .await
            .map_err(Error::store)?;
        let repo = self.repo.clone();
        let id = *id;
        tokio::task::spawn_blocking(move || {
            crate::codec::with_codec(&repo, |codec| {
                codec
                    .open(location.kind, &id, location.raw_len, &sealed)
                    .map_err(|e| Error::decode(format!("blob {id} in pack {}", location.pack), e))
            })
        })
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
    }

    /// Loads a tree (cached).
    ///
    /// # Errors
    /// As [`Self::read_blob`], or [`Error::Corrupted`] if it does not decode.
    pub async fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(tree) = self
            .trees
            .lock()
            .map_err(|_| Error::Pipeline("tree cache poisoned".into()))?
            .get(id)
        {
            return Ok(tree.clone());
        }
        let bytes = self.read_blob(id, BlobKind::Tree).await?;
        let tree = Arc::new(Tree::decode(&bytes).map_err(|e| Error::decode(format!("tree {id}"), e))?);
        if let Ok(mut cache) = self.trees.lock() {
            cache.put(*id, tree.clone());
        }
        Ok(tree)
    }

    /// Resolves `path` (slash-separated, relative to the root) to its node.
    /// The root itself resolves to `None`.
    ///
    /// # Errors
    /// [`Error::PathNotFound`].
    pub async fn resolve(&self, snapshot: &SnapshotEntry, path: &str) -> Result<Option<Node>> {
        let mut tree_id = snapshot.snapshot.root;
        let mut node = None;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        for (i, part) in parts.iter().enumerate() {
            let tree = self.tree(&tree_id).await?;
            let found = tree.find(part.as_bytes()).cloned().ok_or_else(|| Error::PathNotFound {
                snapshot: snapshot.id.short(),
                path: path.to_owned(),
            })?;
            match &found.kind {
                NodeKind::Dir { tree } => tree_id = *tree,
                _ if i + 1 < parts.len() => {
                    return Err(Error::PathNotFound {
                        snapshot: snapshot.id.short(),
                        path: path.to_owned(),
                    });
                }
                _ => {}
            }
            node = Some(found);
        }
        Ok(node)
    }

    /// The chunks of a file's content in order, without fetching them.
    ///
    /// # Errors
    /// Errors reading list blobs.
    pub fn content_chunks(&self, content: &Content) -> impl Stream<Item = Result<ListEntry>> + Send + 'static {
        let reader = self.clone();
        let start: Vec<Vec<ListEntry>> = match content {
            Content::Inline(chunks) => vec![chunks.iter().rev().copied().collect()],
            Content::List { root, .. } => vec![vec![ListEntry { id: *root, len: 0 }]],
        };
        let inline = matches!(content, Content::Inline(_));
        // A depth-first walk; each stack frame holds entries in reverse order
        // and whether they are list blobs (true) or chunks (false).
        let stack: Vec<(Vec<ListEntry>, bool)> = start.into_iter().map(|v| (v, !inline)).collect();
        stream::try_unfold((reader, stack), |(reader, mut stack)| async move {
            loop {
                let Some((entries, is_list)) = stack.last_mut() else {
                    return Ok(None);
                };
                let Some(entry) = entries.pop() else {
                    stack.pop();
                    continue;
                };
                if !*is_list {
                    return Ok(Some((entry, (reader, stack))));
                }
                let bytes = reader.read_blob(&entry.id, BlobKind::ContentList).await?;
                let list =
                    ContentList::decode(&bytes).map_err(|e| Error::decode(format!("content list {}", entry.id), e))?;
                let children_are_lists = list.level > 1;
                stack.push((list.entries.into_iter().rev().collect(), children_are_lists));
            }
        })
    }

    /// A file's content as a stream of verified chunks, in order.
    ///
    /// Consecutive chunks stored back to back in one pack (the common case:
    /// a backup packs a file's new chunks in order) are fetched with one
    /// range request of up to 1 MiB, then opened one by one on
    /// the blocking pool. Reads ahead are bounded by bytes (4 MiB) and by
    /// count (64 requests).
    pub fn content(&self, content: &Content) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
        type Pending = futures::stream::FuturesOrdered<futures::future::BoxFuture<'static, Result<Vec<Vec<u8>>>>>;
        struct State {
            reader: Reader,
            entries: futures::stream::BoxStream<'static, Result<ListEntry>>,
            lookahead: Option<(ListEntry, BlobLocation)>,
            pending: Pending,
            ready: std::collections::VecDeque<Vec<u8>>,
            bytes: u64,
            exhausted: bool,
        }
        impl State {
            async fn next_located(&mut self) -> Result<Option<(ListEntry, BlobLocation)>> {
                if let Some(next) = self.lookahead.take() {
                    return Ok(Some(next));
                }
                match self.entries.next().await {
                    Some(entry) => {
                        let entry = entry?;
                        let location = self.reader.locate_kind(&entry.id, BlobKind::Data)?;
                        Ok(Some((entry, location)))
                    }
                    None => Ok(None),
                }
            }

            /// Collects the next run of chunks that are adjacent in one pack.
            async fn next_run(&mut self) -> Result<Option<Vec<(ListEntry, BlobLocation)>>> {
                let Some(first) = self.next_located().await? else {
                    return Ok(None);
                };
                let start = u64::from(first.1.offset);
                let mut end = start + u64::from(first.1.sealed_len);
                let mut run = vec![first];
                while end - start < COALESCE_BYTES {
                    let Some(next) = self.next_located().await? else {
                        break;
                    };
                    let location = &next.1;
                    if location.pack != run[0].1.pack || u64::from(location.offset) != end {
                        self.lookahead = Some(next);
                        break;
                    }
                    end += u64::from(location.sealed_len);
                    run.push(next);
                }
                Ok(Some(run))
            }
        }
        let state = State {
            reader: self.clone(),
            entries: self.content_chunks(content).boxed(),
            lookahead: None,
            pending: Pending::new(),
            ready: std::collections::VecDeque::new(),
            bytes: 0,
            exhausted: false,
        };
        stream::try_unfold(state, |mut state| async move {
            loop {
                while !state.exhausted
                    && (state.pending.is_empty() || state.bytes < READ_AHEAD_BYTES)
                    && state.pending.len() < READ_AHEAD_MAX
                {
                    match state.next_run().await? {
                        Some(run) => {
                            let len: u64 = run.iter().map(|(entry, _)| entry.len).sum();
                            state.bytes += len;
                            let reader = state.reader.clone();
                            state
                                .pending
                                .push_back(async move { reader.read_run(run).await }.boxed());
                        }
                        None => state.exhausted = true,
                    }
                }
                // Opened chunks count against the read-ahead until handed
                // out, so fetched-but-unread data stays within the bound.
                if let Some(chunk) = state.ready.pop_front() {
                    state.bytes = state.bytes.saturating_sub(chunk.len() as u64);
                    return Ok(Some((chunk, state)));
                }
                match state.pending.next().await {
                    Some(done) => state.ready.extend(done?),
                    None => return Ok(None),
                }
            }
        })
    }

    /// Where a blob of an expected kind is stored.
    fn locate_kind(&self, id: &BlobId, expect: BlobKind) -> Result<BlobLocation> {
        let location = self.locate(id)?;
        if location.kind != expect {
            return Err(Error::Missing {
                object: format!("blob {id}"),
                detail: format!("indexed as {:?}, expected {expect:?}", location.kind),
            });
        }
        Ok(location)
    }

    /// Fetches blobs stored back to back in one pack with one range request,
    /// and opens each; fails on the first that does not verify.
    async fn read_run(&self, run: Vec<(ListEntry, BlobLocation)>) -> Result<Vec<Vec<u8>>> {
        let Some((_, first)) = run.first() else {
            return Ok(Vec::new());
        };
        let start = u64::from(first.offset);
        let end = run
            .iter()
            .map(|(_, l)| u64::from(l.offset) + u64::from(l.sealed_len))
            .max()
            .unwrap_or(start);
        let object = pack_key(first)?;
        let sealed = self
            .repo
            .store()
            .get_range(&object, start..end)
            .await
            .map_err(Error::store)?;
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || {
            crate::codec::with_codec(&repo, |codec| {
                run.iter()
                    .map(|(entry, location)| {
                        let from = usize::try_from(u64::from(location.offset) - start).unwrap_or(usize::MAX);
                        let to = from.saturating_add(location.sealed_len as usize);
                        let bytes = sealed.get(from..to).ok_or_else(|| Error::Missing {
                            object: format!("blob {} in pack {}", entry.id, location.pack),
                            detail: "the pack is shorter than its index says".into(),
                        })?;
                        codec
                            .open(location.kind, &entry.id, location.raw_len, bytes)
                            .map_err(|e| Error::decode(format!("blob {} in pack {}", entry.id, location.pack), e))
                    })
                    .collect()
            })
        })
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
    }
}

/// Runs short local work (the SQLite cache) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
}

/// The store key of the pack holding a blob.
pub(crate) fn pack_key(location: &BlobLocation) -> Result<ObjectKey> {
    pack_object_key(location.pack_kind, &location.pack)
}

/// The store key of a pack: data packs under `data/`, tree packs under `tree/`.
pub(crate) fn pack_object_key(kind: nfrepo_format::PackKind, id: &nfrepo_format::PackId) -> Result<ObjectKey> {
    let kind = match kind {
        nfrepo_format::PackKind::Tree => ObjectKind::Tree,
        _ => ObjectKind::Data,
    };
    ObjectKey::new(kind, id.to_hex()).map_err(Error::store)
}
