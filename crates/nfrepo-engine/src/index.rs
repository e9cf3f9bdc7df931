//! The index: blob id → where it is stored, in memory or in the local cache.
//!
//! Three backings answer the same questions:
//! - **In memory**: every index delta merged at open time into one sorted
//!   vector of fixed-size records (52 bytes per blob, packs interned as
//!   `u32`), searched by binary search. Used when no cache directory is
//!   available (and for `memory://` repositories in tests).
//! - **Local cache** ([`nfrepo_store::IndexCache`]): the same records in a
//!   SQLite table on this machine. A run downloads only the deltas written
//!   since the last one, and memory no longer grows with the repository:
//!   only the list of packs (about one per thousand blobs) stays in memory.
//!   Bringing it up to date is `cached::load`.
//! - **Sorted records on local disk** ([`IndexBuilder`]): what `check`
//!   builds from the repository's deltas, one at a time, without trusting
//!   the local cache; 8 MiB in memory, the rest spilled (`crate::runs`).
//!
//! Readers must list snapshots *before* index deltas (see
//! [`crate::Repository::load_index`]): a snapshot is only written after its
//! delta, so every blob a listed snapshot refers to is then in the index.
//!
//! **Shared caches.** Other processes of this host use the same cache file
//! and may rebuild it while this one runs. A cached lookup therefore returns
//! the pack's id straight from the cache, in one statement; no pack number
//! is held in this process, so a rebuild can never make a blob appear to be
//! in a pack it is not in. What a rebuild can do is make a lookup reflect a
//! newer index than the one loaded: a blob may then be found in a newer pack
//! or no longer found. Both are safe for a backup (it checks every pack it
//! deduplicated against before committing, `crate::backup`) and for a reader
//! (a miss goes through recovery, below).
//!
//! **Packs known to be gone.** A blob may be indexed in more than one pack
//! (two backups racing, or a backup that stored it again, below); both
//! backings keep every copy, first indexed first. A pack the index names
//! but the storage no longer has (a maintenance race, see issue 17) is
//! excluded with [`Index::exclude_packs`] or [`Index::mark_absent`]: lookups
//! then answer with another copy, or not at all. A backup excludes every
//! indexed pack its listing lacks before deduplicating, so it stores such
//! blobs again instead of referring to a pack that is gone
//! (`crate::backup`); a reader that finds a pack missing marks it and
//! retries with the next copy (`crate::read`). The set is of pack ids, one
//! entry per pack, whatever the number of blobs they held.
//!
//! **A damaged cache is not a damaged repository.** When a cached lookup
//! finds an inconsistent row, or a blob located through the cache cannot be
//! read (missing, wrong bytes, pack gone), [`Index::recover`] loads the
//! repository's index afresh into memory, answers from it from then on, and
//! empties the cache so that the next run rebuilds it. Only a failure that
//! the fresh index confirms is reported as repository damage.

mod cached;
mod sorted;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use nfrepo_format::{BlobId, BlobKind, IndexDelta, IndexId, IndexedPack, PackEntry, PackId, PackKind, SessionRef};
use nfrepo_store::{BlobToCache, DeltaToCache, IndexCache, PackToCache};

pub(crate) use self::cached::{load as load_cached, unlisted as load_unlisted};
pub(crate) use self::sorted::{BuiltIndex, IndexBuilder, PackSummary, entries_digest};
use crate::{Error, Repository, Result};

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack.
    pub pack: PackId,
    /// The pack's family.
    pub pack_kind: PackKind,
    /// The blob's kind.
    pub kind: BlobKind,
    /// Offset in the pack.
    pub offset: u32,
    /// Sealed length.
    pub sealed_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// The put-only session whose key sealed the pack; `None` for the
    /// repository's keys (open with `nfrepo_format::pack_sealer`).
    pub sealing: Option<SessionRef>,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    id: BlobId,
    pack: u32,
    offset: u32,
    sealed_len: u32,
    raw_len: u32,
    kind: BlobKind,
}

/// One indexed pack; for an in-memory index, `number` is what blob records refer to.
#[derive(Clone, Copy, Debug)]
struct PackInfo {
    number: u32,
    id: PackId,
    kind: PackKind,
    size: u64,
    sealing: Option<SessionRef>,
}

#[derive(Debug)]
enum Lookup {
    Memory(Vec<Record>),
    Cached {
        cache: IndexCache,
        /// Counted when first asked: counting distinct ids reads every
        /// blob row, which no backup needs (issue 14 item 7).
        blobs: std::sync::OnceLock<u64>,
    },
    /// Sorted records on local disk, built from the deltas by `check`
    /// ([`IndexBuilder`]); pack numbers as for `Memory`.
    Sorted(crate::runs::SortedRuns<sorted::BlobRecord>),
}

/// All known blobs.
#[derive(Debug)]
pub struct Index {
    /// Sorted by number. For a cached index, the packs known when it was
    /// loaded and those absorbed since; lookups do not go through it.
    packs: RwLock<Vec<PackInfo>>,
    lookup: Lookup,
    /// Distinct blobs of an in-memory index (records may hold several copies).
    distinct: usize,
    /// Packs known to be gone: lookups skip their copies.
    absent: RwLock<HashSet<PackId>>,
    /// Whether `absent` is non-empty (lookups skip the lock otherwise).
    any_absent: AtomicBool,
    /// Whether a blob with no copy outside `absent` is still located in one
    /// (for `check`, which reports the missing pack itself).
    absent_as_fallback: AtomicBool,
    deltas: Vec<IndexId>,
    /// The first failure of the local cache, reported with lookups that miss.
    cache_failure: Mutex<Option<String>>,
    /// The repository's index loaded afresh after the cache was found
    /// wrong ([`Self::recover`]); answers every lookup once set.
    recovered: std::sync::OnceLock<Arc<Index>>,
    /// That load while it runs, shared by every caller of
    /// [`Self::recover`].
    recovering: Mutex<Option<Recovery>>,
}

/// The load of the repository's index by [`Index::recover`], driven by
/// whichever waiting caller is polled, so one set aside (a read buffered
/// ahead in a content stream) holds up no other; `None` if it failed, the
/// error kept for the first caller that sees it.
#[derive(Clone)]
struct Recovery {
    load: futures::future::Shared<futures::future::BoxFuture<'static, Option<Arc<Index>>>>,
    failure: Arc<Mutex<Option<Error>>>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery").finish_non_exhaustive()
    }
}

impl Default for Index {
    fn default() -> Self {
        Self::with_lookup(Lookup::Memory(Vec::new()), Vec::new(), Vec::new())
    }
}

impl Index {
    fn with_lookup(lookup: Lookup, packs: Vec<PackInfo>, deltas: Vec<IndexId>) -> Self {
        Self {
            packs: RwLock::new(packs),
            lookup,
            distinct: 0,
            absent: RwLock::new(HashSet::new()),
            any_absent: AtomicBool::new(false),
            absent_as_fallback: AtomicBool::new(false),
            deltas,
            cache_failure: Mutex::new(None),
            recovered: std::sync::OnceLock::new(),
            recovering: Mutex::new(None),
        }
    }

    /// Builds an in-memory index from deltas, dropping deltas that a later
    /// compaction superseded.
    #[must_use]
    pub fn from_deltas(deltas: Vec<(IndexId, IndexDelta)>) -> Self {
        let superseded: HashSet<IndexId> = deltas.iter().flat_map(|(_, d)| d.supersedes.iter().copied()).collect();
        let mut index = Self::default();
        for (id, delta) in deltas {
            if superseded.contains(&id) {
                continue;
            }
            index.deltas.push(id);
            for pack in delta.packs {
                index.add_pack(&pack);
            }
        }
        index.finish();
        index
    }

    /// An index answered by the local cache, which already holds `deltas`.
    ///
    /// # Errors
    /// Cache failures, or a cache whose rows this build cannot read.
    pub(crate) fn cached(cache: IndexCache, deltas: Vec<IndexId>) -> Result<Self> {
        let packs = cached_packs(&cache)?;
        let blobs = std::sync::OnceLock::new();
        Ok(Self::with_lookup(Lookup::Cached { cache, blobs }, packs, deltas))
    }

    /// Adds a pack's blobs to an in-memory index; call [`Self::finish`]
    /// before lookups. (A cached index takes whole deltas: [`Self::absorb`].)
    pub fn add_pack(&mut self, pack: &IndexedPack) {
        let Lookup::Memory(records) = &mut self.lookup else {
            return;
        };
        let packs = self.packs.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(number) = u32::try_from(packs.len()) else {
            return;
        };
        packs.push(PackInfo {
            number,
            id: pack.id,
            kind: pack.kind,
            size: pack.size,
            sealing: pack.sealing,
        });
        records.extend(pack.blobs.iter().map(|b: &PackEntry| Record {
            id: b.id,
            pack: number,
            offset: b.offset,
            sealed_len: b.sealed_len,
            raw_len: b.raw_len,
            kind: b.kind,
        }));
    }

    /// Sorts the records; a blob keeps one record per pack holding it,
    /// the first added first.
    pub fn finish(&mut self) {
        if let Lookup::Memory(records) = &mut self.lookup {
            // Stable: copies of one blob stay in the order they were added.
            records.sort_by_key(|r| r.id);
            records.dedup_by(|a, b| a.id == b.id && a.pack == b.pack);
            records.shrink_to_fit();
            self.distinct = records.len() - records.windows(2).filter(|w| w[0].id == w[1].id).count();
        }
    }

    /// Excludes packs known to be gone (absent from a listing made after
    /// this index was loaded): lookups skip their copies from now on.
    pub fn exclude_packs(&self, packs: impl IntoIterator<Item = PackId>) {
        let mut absent = self.absent.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        absent.extend(packs);
        self.any_absent.store(!absent.is_empty(), Ordering::Release);
    }

    /// Prefers copies outside `packs` (known to be gone), but still locates
    /// a blob that has no other copy in one of them: what `check` needs to
    /// read the good copy where there is one, and to blame the missing pack
    /// where there is not. Never for deduplication.
    pub(crate) fn prefer_packs_other_than(&self, packs: impl IntoIterator<Item = PackId>) {
        self.absent_as_fallback.store(true, Ordering::Release);
        self.exclude_packs(packs);
    }

    /// Excludes one pack found missing while reading; returns whether it
    /// was not excluded before (so a caller retrying stops once no pack is new).
    pub fn mark_absent(&self, pack: PackId) -> bool {
        let mut absent = self.absent.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = absent.insert(pack);
        self.any_absent.store(true, Ordering::Release);
        new
    }

    /// Whether `pack` is excluded as gone.
    #[must_use]
    pub fn is_absent(&self, pack: &PackId) -> bool {
        self.any_absent.load(Ordering::Acquire)
            && self
                .absent
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(pack)
    }

    /// Adds a delta just written to the repository, if this index is
    /// cached; returns whether it did. (An in-memory index is immutable once
    /// shared; a backup session keeps its own record of what it added.)
    pub fn absorb(&self, id: IndexId, delta: &IndexDelta) -> bool {
        let Lookup::Cached { cache, .. } = &self.lookup else {
            return false;
        };
        if self.recovered.get().is_some() {
            return false;
        }
        if let Err(e) = ingest(cache, id, delta) {
            self.note_cache_failure(&e.to_string());
            return false;
        }
        let mut known = self.packs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let present: HashSet<PackId> = known.iter().map(|p| p.id).collect();
        for pack in &delta.packs {
            if !present.contains(&pack.id) {
                let number = known.last().map_or(0, |p| p.number.saturating_add(1));
                known.push(PackInfo {
                    number,
                    id: pack.id,
                    kind: pack.kind,
                    size: pack.size,
                    sealing: pack.sealing,
                });
            }
        }
        true
    }

    /// Where `id` is stored: its first copy in a pack not excluded as gone.
    #[must_use]
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        if !self.any_absent.load(Ordering::Acquire) {
            return self.locate(id, &|_| true);
        }
        let absent = self.absent.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.locate(id, &|pack| !absent.contains(pack)).or_else(|| {
            self.absent_as_fallback
                .load(Ordering::Acquire)
                .then(|| self.locate(id, &|_| true))
                .flatten()
        })
    }

    /// The first copy of `id` in a pack `usable` accepts.
    fn locate(&self, id: &BlobId, usable: &dyn Fn(&PackId) -> bool) -> Option<BlobLocation> {
        if let Some(fresh) = self.recovered.get() {
            return fresh.locate(id, usable);
        }
        match &self.lookup {
            Lookup::Memory(records) => {
                let first = records.partition_point(|r| r.id < *id);
                let packs = self.packs.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                records
                    .get(first..)?
                    .iter()
                    .take_while(|r| r.id == *id)
                    .filter_map(|r| {
                        let info = packs.get(packs.binary_search_by_key(&r.pack, |p| p.number).ok()?)?;
                        usable(&info.id).then_some(BlobLocation {
                            pack: info.id,
                            pack_kind: info.kind,
                            kind: r.kind,
                            offset: r.offset,
                            sealed_len: r.sealed_len,
                            raw_len: r.raw_len,
                            sealing: info.sealing,
                        })
                    })
                    .next()
            }
            Lookup::Cached { cache, .. } => match cache.lookup_all(&id.0) {
                Ok(rows) => self.first_usable(id, rows, usable),
                Err(e) => {
                    self.note_cache_failure(&e.to_string());
                    None
                }
            },
            Lookup::Sorted(records) => {
                let records = match records.find(crate::runs::blob_prefix(id)) {
                    Ok(records) => records,
                    Err(e) => {
                        self.note_cache_failure(&e.to_string());
                        return None;
                    }
                };
                let packs = self.packs.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                records.iter().filter(|r| r.id == *id).find_map(|r| {
                    let info = packs.get(packs.binary_search_by_key(&r.pack, |p| p.number).ok()?)?;
                    let Some(kind) = blob_kind_from_code(r.kind) else {
                        self.note_cache_failure(&format!("blob {id} has an unknown kind code in check's index"));
                        return None;
                    };
                    usable(&info.id).then_some(BlobLocation {
                        pack: info.id,
                        pack_kind: info.kind,
                        kind,
                        offset: r.offset,
                        sealed_len: r.sealed_len,
                        raw_len: r.raw_len,
                        sealing: info.sealing,
                    })
                })
            }
        }
    }

    /// [`Self::get`] for many blobs at once, in the order of `ids`: one
    /// batch of cache queries instead of one locked query per blob.
    #[must_use]
    pub fn get_many(&self, ids: &[BlobId]) -> Vec<Option<BlobLocation>> {
        let cache = match (&self.lookup, self.recovered.get()) {
            (Lookup::Cached { cache, .. }, None) => cache,
            _ => return ids.iter().map(|id| self.get(id)).collect(),
        };
        let keys: Vec<[u8; 32]> = ids.iter().map(|id| id.0).collect();
        let rows = match cache.lookup_many(&keys) {
            Ok(rows) => rows,
            Err(e) => {
                self.note_cache_failure(&e.to_string());
                return vec![None; ids.len()];
            }
        };
        let absent = self
            .any_absent
            .load(Ordering::Acquire)
            .then(|| self.absent.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let fallback = self.absent_as_fallback.load(Ordering::Acquire);
        ids.iter()
            .zip(rows)
            .map(|(id, rows)| match &absent {
                None => self.first_usable(id, rows, &|_| true),
                Some(absent) => self
                    .first_usable(id, rows.clone(), &|pack| !absent.contains(pack))
                    .or_else(|| fallback.then(|| self.first_usable(id, rows, &|_| true)).flatten()),
            })
            .collect()
    }

    /// The first of a blob's cached rows in a pack `usable` accepts.
    fn first_usable(
        &self,
        id: &BlobId,
        rows: Vec<nfrepo_store::CachedBlob>,
        usable: &dyn Fn(&PackId) -> bool,
    ) -> Option<BlobLocation> {
        for r in rows {
            let (Some(kind), Some(pack_kind)) = (blob_kind_from_code(r.kind), pack_kind_from_code(r.pack_kind)) else {
                self.note_cache_failure(&format!("blob {id} has unknown kind codes in the cache"));
                return None;
            };
            let pack = PackId(r.pack);
            if usable(&pack) {
                return Some(BlobLocation {
                    pack,
                    pack_kind,
                    kind,
                    offset: r.offset,
                    sealed_len: r.sealed_len,
                    raw_len: r.raw_len,
                    sealing: None,
                });
            }
        }
        None
    }

    /// Whether `id` is stored.
    #[must_use]
    pub fn contains(&self, id: &BlobId) -> bool {
        match (&self.lookup, self.recovered.get()) {
            (Lookup::Memory(records), None) if !self.any_absent.load(Ordering::Acquire) => {
                records.binary_search_by(|r| r.id.cmp(id)).is_ok()
            }
            _ => self.get(id).is_some(),
        }
    }

    fn note_cache_failure(&self, message: &str) {
        tracing::error!(error = message, "local index cache failed");
        if let Ok(mut failure) = self.cache_failure.lock() {
            failure.get_or_insert_with(|| message.to_owned());
        }
    }

    /// The first failure of the local cache, if any: a lookup that missed
    /// may have missed because of it.
    #[must_use]
    pub fn cache_failure(&self) -> Option<String> {
        self.cache_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Whether `error`, met while reading a blob this index located, may be
    /// the local cache's fault rather than the repository's, and
    /// [`Self::recover`] has not been tried yet.
    #[must_use]
    pub fn may_recover(&self, error: &Error) -> bool {
        matches!(self.lookup, Lookup::Cached { .. }) && self.recovered.get().is_none() && error.is_damage()
    }

    /// Distrusts the local cache: loads the repository's index afresh into
    /// memory (once; concurrent callers wait for the same load), answers
    /// every later lookup from it, and empties the cache so that the next
    /// run rebuilds it. A no-op for an in-memory index.
    ///
    /// # Errors
    /// Storage and decoding errors loading the index.
    pub async fn recover(&self, repo: &Repository) -> Result<()> {
        use futures::FutureExt;
        let Lookup::Cached { cache, .. } = &self.lookup else {
            return Ok(());
        };
        if self.recovered.get().is_some() {
            return Ok(());
        }
        let poisoned = || Error::Pipeline("index recovery poisoned".into());
        let recovery = {
            let mut slot = self.recovering.lock().map_err(|_| poisoned())?;
            slot.get_or_insert_with(|| {
                tracing::warn!(
                    cache = %cache.path().display(),
                    "a blob located through the local index cache did not read; \
                     loading the index from the repository and rebuilding the cache"
                );
                let failure = Arc::new(Mutex::new(None));
                let (repo, failed) = (repo.clone(), Arc::clone(&failure));
                let load = async move {
                    match repo.load_index_uncached().await {
                        Ok(fresh) => Some(Arc::new(fresh)),
                        Err(e) => {
                            if let Ok(mut failed) = failed.lock() {
                                *failed = Some(e);
                            }
                            None
                        }
                    }
                }
                .boxed()
                .shared();
                Recovery { load, failure }
            })
            .clone()
        };
        if let Some(fresh) = recovery.load.clone().await {
            self.recovered.get_or_init(|| {
                if let Err(e) = cache.invalidate() {
                    tracing::warn!(error = %e, "could not empty the local index cache; deleting it");
                    IndexCache::delete_files(cache.path());
                }
                fresh
            });
            return Ok(());
        }
        // The next caller loads again.
        let mut slot = self.recovering.lock().map_err(|_| poisoned())?;
        if slot.as_ref().is_some_and(|kept| kept.load.ptr_eq(&recovery.load)) {
            *slot = None;
        }
        drop(slot);
        let failure = recovery.failure.lock().map_err(|_| poisoned())?.take();
        Err(failure.unwrap_or_else(|| {
            Error::Pipeline("loading the repository's index failed (reported by another read)".into())
        }))
    }

    /// Number of distinct blobs: when the index was loaded, or for a
    /// cached one when first asked (0 if the cache cannot count them, the
    /// failure noted as in a lookup).
    #[must_use]
    pub fn len(&self) -> usize {
        if let Some(fresh) = self.recovered.get() {
            return fresh.len();
        }
        match &self.lookup {
            Lookup::Memory(_) | Lookup::Sorted(_) => self.distinct,
            Lookup::Cached { cache, blobs } => {
                let count = blobs.get_or_init(|| {
                    cache.blob_count().unwrap_or_else(|e| {
                        self.note_cache_failure(&e.to_string());
                        0
                    })
                });
                usize::try_from(*count).unwrap_or(usize::MAX)
            }
        }
    }

    /// Whether the index is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every indexed pack with its kind and size.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, PackKind, u64)> + '_ {
        let source = self.recovered.get().map_or(self, |fresh| &**fresh);
        let packs = source.packs.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        packs
            .iter()
            .map(|p| (p.id, p.kind, p.size))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The size of `pack`, if it is indexed.
    #[must_use]
    pub fn pack_size(&self, pack: &PackId) -> Option<u64> {
        self.packs().find(|(id, _, _)| id == pack).map(|(_, _, size)| size)
    }

    /// Whether `pack` is indexed.
    #[must_use]
    pub fn has_pack(&self, pack: &PackId) -> bool {
        self.packs().any(|(id, _, _)| id == *pack)
    }

    /// Whether lookups go to the local cache, and it has not failed.
    pub(crate) fn is_cached(&self) -> bool {
        matches!(self.lookup, Lookup::Cached { .. }) && self.cache_failure().is_none()
    }

    /// The deltas the index was built from.
    #[must_use]
    pub fn deltas(&self) -> &[IndexId] {
        &self.deltas
    }
}

fn cached_packs(cache: &IndexCache) -> Result<Vec<PackInfo>> {
    cache
        .packs()
        .map_err(Error::store)?
        .into_iter()
        .zip(0u32..)
        .map(|(p, number)| {
            Ok(PackInfo {
                number,
                id: PackId(p.id),
                kind: pack_kind_from_code(p.kind).ok_or_else(|| bad_cache(cache, "pack kind"))?,
                size: p.size,
                // The cache holds no delta that lists a put-only session's pack (`cached::load`).
                sealing: None,
            })
        })
        .collect()
}

/// Rows of one delta, borrowed by [`DeltaToCache`].
pub(crate) struct DeltaRows {
    id: IndexId,
    supersedes: Vec<[u8; 32]>,
    blobs: Vec<Vec<BlobToCache>>,
    packs: Vec<(PackId, u8, u64)>,
}

impl DeltaRows {
    pub(crate) fn new(id: IndexId, delta: &IndexDelta) -> Self {
        Self {
            id,
            supersedes: delta.supersedes.iter().map(|d| d.0).collect(),
            blobs: delta
                .packs
                .iter()
                .map(|pack| {
                    pack.blobs
                        .iter()
                        .map(|b| BlobToCache {
                            id: b.id.0,
                            kind: blob_kind_code(b.kind),
                            offset: b.offset,
                            sealed_len: b.sealed_len,
                            raw_len: b.raw_len,
                        })
                        .collect()
                })
                .collect(),
            packs: delta
                .packs
                .iter()
                .map(|p| (p.id, pack_kind_code(p.kind), p.size))
                .collect(),
        }
    }

    pub(crate) fn packs(&self) -> Vec<PackToCache<'_>> {
        self.packs
            .iter()
            .zip(&self.blobs)
            .map(|(&(id, kind, size), blobs)| PackToCache {
                id: id.0,
                kind,
                size,
                blobs,
            })
            .collect()
    }

    pub(crate) fn delta<'a>(&'a self, packs: &'a [PackToCache<'a>]) -> DeltaToCache<'a> {
        DeltaToCache {
            id: self.id.0,
            supersedes: &self.supersedes,
            packs,
        }
    }
}

/// Records a delta in the cache.
pub(crate) fn ingest(cache: &IndexCache, id: IndexId, delta: &IndexDelta) -> nfrepo_store::Result<()> {
    let rows = DeltaRows::new(id, delta);
    let packs = rows.packs();
    cache.ingest(&rows.delta(&packs))
}

fn bad_cache(cache: &IndexCache, what: &str) -> Error {
    Error::Invalid(format!(
        "the local index cache {} holds an unknown {what}; delete it and it will be rebuilt",
        cache.path().display()
    ))
}

// The cache's own codes for kinds. They are local to this machine's cache
// (the schema version covers them), not part of the repository format.

/// A kind this build has no cache code for; it reads back as a cache failure.
const UNKNOWN_KIND: u8 = u8::MAX;
const fn blob_kind_code(kind: BlobKind) -> u8 {
    match kind {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
        BlobKind::ContentList => 2,
        _ => UNKNOWN_KIND,
    }
}

const fn blob_kind_from_code(code: u8) -> Option<BlobKind> {
    match code {
        0 => Some(BlobKind::Data),
        1 => Some(BlobKind::Tree),
        2 => Some(BlobKind::ContentList),
        _ => None,
    }
}

const fn pack_kind_code(kind: PackKind) -> u8 {
    match kind {
        PackKind::Data => 0,
        PackKind::Tree => 1,
        _ => UNKNOWN_KIND,
    }
}

const fn pack_kind_from_code(code: u8) -> Option<PackKind> {
    match code {
        0 => Some(PackKind::Data),
        1 => Some(PackKind::Tree),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8, blobs: &[u8]) -> IndexedPack {
        IndexedPack {
            id: PackId([n; 32]),
            kind: PackKind::Data,
            size: 100,
            blobs: blobs
                .iter()
                .map(|b| PackEntry {
                    id: BlobId([*b; 32]),
                    kind: BlobKind::Data,
                    offset: u32::from(*b),
                    sealed_len: 1,
                    raw_len: 1,
                })
                .collect(),
            sealing: None,
        }
    }

    #[test]
    fn lookups_and_superseding() {
        let a = IndexDelta {
            packs: vec![pack(1, &[1, 2])],
            supersedes: vec![],
        };
        let b = IndexDelta {
            packs: vec![pack(2, &[2, 3])],
            supersedes: vec![],
        };
        let merged = IndexDelta {
            packs: vec![pack(1, &[1, 2])],
            supersedes: vec![IndexId([2; 32])],
        };
        let index = Index::from_deltas(vec![(IndexId([1; 32]), a), (IndexId([2; 32]), b)]);
        assert_eq!(index.len(), 3);
        assert_eq!(index.get(&BlobId([3; 32])).unwrap().pack, PackId([2; 32]));
        let index = Index::from_deltas(vec![(IndexId([2; 32]), pack_delta(2)), (IndexId([3; 32]), merged)]);
        assert!(!index.contains(&BlobId([3; 32])));
        assert!(index.contains(&BlobId([1; 32])));
    }

    /// Issue 17: a blob stored again because its first pack is gone is
    /// found in the second pack once the first is excluded.
    #[test]
    fn copies_in_excluded_packs_are_skipped() {
        let index = Index::from_deltas(vec![
            (IndexId([1; 32]), pack_delta(1)),
            (IndexId([2; 32]), pack_delta(2)),
        ]);
        assert_eq!(index.len(), 1, "one blob, two copies");
        assert_eq!(index.get(&BlobId([3; 32])).unwrap().pack, PackId([1; 32]));
        assert!(index.mark_absent(PackId([1; 32])));
        assert!(!index.mark_absent(PackId([1; 32])), "marked once");
        assert_eq!(index.get(&BlobId([3; 32])).unwrap().pack, PackId([2; 32]));
        index.exclude_packs([PackId([2; 32])]);
        assert_eq!(index.get(&BlobId([3; 32])), None);
        assert!(!index.contains(&BlobId([3; 32])));
    }

    fn pack_delta(n: u8) -> IndexDelta {
        IndexDelta {
            packs: vec![pack(n, &[3])],
            supersedes: vec![],
        }
    }
}
