//! The index: blob id → where it is stored, in memory or in the local cache.
//!
//! Two backings answer the same questions:
//! - **In memory**: every index delta merged at open time into one sorted
//!   vector of fixed-size records (52 bytes per blob, packs interned as
//!   `u32`), searched by binary search. Used when no cache directory is
//!   available (and for `memory://` repositories in tests).
//! - **Local cache** ([`nfrepo_store::IndexCache`]): the same records in a
//!   SQLite table on this machine. A run downloads only the deltas written
//!   since the last one, and memory no longer grows with the repository:
//!   only the list of packs (about one per thousand blobs) stays in memory.
//!
//! Readers must list snapshots *before* index deltas (see
//! [`crate::Repository::load_index`]): a snapshot is only written after its
//! delta, so every blob a listed snapshot refers to is then in the index.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock};

use nfrepo_format::{BlobId, BlobKind, IndexDelta, IndexId, IndexedPack, PackEntry, PackId, PackKind};
use nfrepo_store::{BlobToCache, CachedBlob, IndexCache, PackToCache};

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

/// One indexed pack; `number` is what blob records refer to.
#[derive(Clone, Copy, Debug)]
struct PackInfo {
    number: u32,
    id: PackId,
    kind: PackKind,
    size: u64,
}

#[derive(Debug)]
enum Lookup {
    Memory(Vec<Record>),
    Cached { cache: IndexCache, blobs: u64 },
}

/// All known blobs.
#[derive(Debug)]
pub struct Index {
    /// Sorted by number.
    packs: RwLock<Vec<PackInfo>>,
    lookup: Lookup,
    deltas: Vec<IndexId>,
    /// The first failure of the local cache, reported with lookups that miss.
    cache_failure: Mutex<Option<String>>,
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
            deltas,
            cache_failure: Mutex::new(None),
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
    pub(crate) fn cached(cache: IndexCache, deltas: Vec<IndexId>) -> crate::Result<Self> {
        let packs = cache
            .packs()
            .map_err(crate::Error::store)?
            .into_iter()
            .map(|p| {
                Ok(PackInfo {
                    number: p.number,
                    id: PackId(p.id),
                    kind: pack_kind_from_code(p.kind).ok_or_else(|| bad_cache(&cache, "pack kind"))?,
                    size: p.size,
                })
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let blobs = cache.blob_count().map_err(crate::Error::store)?;
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

    /// Sorts and removes duplicate blobs (keeping the first copy).
    pub fn finish(&mut self) {
        if let Lookup::Memory(records) = &mut self.lookup {
            records.sort_by_key(|r| r.id);
            records.dedup_by(|a, b| a.id == b.id);
            records.shrink_to_fit();
        }
    }

    /// Adds a delta just written to the repository, if this index is
    /// cached; returns whether it did. (An in-memory index is immutable once
    /// shared; a backup session keeps its own record of what it added.)
    pub fn absorb(&self, id: IndexId, delta: &IndexDelta) -> bool {
        let Lookup::Cached { cache, .. } = &self.lookup else {
            return false;
        };
        if let Err(e) = ingest(cache, id, delta) {
            self.note_cache_failure(&e.to_string());
            return false;
        }
        match cache.packs() {
            Ok(packs) => {
                let mut known = self.packs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                for p in packs {
                    if known.binary_search_by_key(&p.number, |k| k.number).is_err()
                        && let Some(kind) = pack_kind_from_code(p.kind)
                    {
                        known.push(PackInfo {
                            number: p.number,
                            id: PackId(p.id),
                            kind,
                            size: p.size,
                        });
                    }
                }
                known.sort_by_key(|k| k.number);
                true
            }
            Err(e) => {
                self.note_cache_failure(&e.to_string());
                false
            }
        }
    }

    /// Where `id` is stored.
    #[must_use]
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        let (pack, kind, offset, sealed_len, raw_len) = match &self.lookup {
            Lookup::Memory(records) => {
                let r = records.get(records.binary_search_by(|r| r.id.cmp(id)).ok()?)?;
                (r.pack, r.kind, r.offset, r.sealed_len, r.raw_len)
            }
            Lookup::Cached { cache, .. } => {
                let r: CachedBlob = self.cache_lookup(cache, id)?;
                let Some(kind) = blob_kind_from_code(r.kind) else {
                    self.note_cache_failure(&format!("blob {id} has an unknown kind code {}", r.kind));
                    return None;
                };
                (r.pack, kind, r.offset, r.sealed_len, r.raw_len)
            }
        };
        let packs = self.packs.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let info = packs.get(packs.binary_search_by_key(&pack, |p| p.number).ok()?)?;
        Some(BlobLocation {
            pack: info.id,
            pack_kind: info.kind,
            kind,
            offset,
            sealed_len,
            raw_len,
        })
    }

    /// Whether `id` is stored.
    #[must_use]
    pub fn contains(&self, id: &BlobId) -> bool {
        match &self.lookup {
            Lookup::Memory(records) => records.binary_search_by(|r| r.id.cmp(id)).is_ok(),
            Lookup::Cached { cache, .. } => self.cache_lookup(cache, id).is_some(),
        }
    }

    fn cache_lookup(&self, cache: &IndexCache, id: &BlobId) -> Option<CachedBlob> {
        match cache.lookup(&id.0) {
            Ok(found) => found,
            Err(e) => {
                self.note_cache_failure(&e.to_string());
                None
            }
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

    /// Number of distinct blobs (when the index was loaded).
    #[must_use]
    pub fn len(&self) -> usize {
        match &self.lookup {
            Lookup::Memory(records) => records.len(),
            Lookup::Cached { blobs, .. } => usize::try_from(*blobs).unwrap_or(usize::MAX),
        }
    }

    /// Whether the index is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every indexed pack with its kind and size.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, PackKind, u64)> + '_ {
        let packs = self.packs.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        packs
            .iter()
            .map(|p| (p.id, p.kind, p.size))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Whether `pack` is indexed.
    #[must_use]
    pub fn has_pack(&self, pack: &PackId) -> bool {
        let packs = self.packs.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        packs.iter().any(|p| p.id == *pack)
    }

    /// The deltas the index was built from.
    #[must_use]
    pub fn deltas(&self) -> &[IndexId] {
        &self.deltas
    }
}

/// Records a delta in the cache.
pub(crate) fn ingest(cache: &IndexCache, id: IndexId, delta: &IndexDelta) -> nfrepo_store::Result<()> {
    let blobs: Vec<Vec<BlobToCache>> = delta
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
        .collect();
    let packs: Vec<PackToCache<'_>> = delta
        .packs
        .iter()
        .zip(&blobs)
        .map(|(pack, blobs)| PackToCache {
            id: pack.id.0,
            kind: pack_kind_code(pack.kind),
            size: pack.size,
            blobs,
        })
        .collect();
    let supersedes: Vec<[u8; 32]> = delta.supersedes.iter().map(|d| d.0).collect();
    cache.ingest(id.0, &supersedes, &packs)
}

fn bad_cache(cache: &IndexCache, what: &str) -> crate::Error {
    crate::Error::Invalid(format!(
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

    fn pack_delta(n: u8) -> IndexDelta {
        IndexDelta {
            packs: vec![pack(n, &[3])],
            supersedes: vec![],
        }
    }
}
