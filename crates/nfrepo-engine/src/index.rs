//! The in-memory index: blob id → where it is stored.
//!
//! Built from every index delta at open time into one sorted vector of
//! fixed-size records (52 bytes per blob, packs interned as `u32`), searched
//! by binary search. That is within DESIGN.md's 40–64 bytes per blob and,
//! unlike a hash map of boxed entries, has no per-entry allocation.
//!
//! Readers must list snapshots *before* index deltas (see
//! [`crate::Repository::load_index`]): a snapshot is only written after its
//! delta, so every blob a listed snapshot refers to is then in the index.

use std::collections::HashSet;

use nfrepo_format::{BlobId, BlobKind, IndexDelta, IndexId, IndexedPack, PackEntry, PackId, PackKind};

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

/// All known blobs, sorted by id.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<(PackId, PackKind, u64)>,
    records: Vec<Record>,
    deltas: Vec<IndexId>,
}

impl Index {
    /// Builds the index from deltas, dropping deltas that a later compaction superseded.
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

    /// Adds a pack's blobs; call [`Self::finish`] before lookups.
    pub fn add_pack(&mut self, pack: &IndexedPack) {
        let Ok(number) = u32::try_from(self.packs.len()) else {
            return;
        };
        self.packs.push((pack.id, pack.kind, pack.size));
        self.records.extend(pack.blobs.iter().map(|b: &PackEntry| Record {
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
        self.records.sort_unstable_by_key(|r| r.id);
        self.records.dedup_by(|a, b| a.id == b.id);
        self.records.shrink_to_fit();
    }

    /// Where `id` is stored.
    #[must_use]
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        let i = self.records.binary_search_by(|r| r.id.cmp(id)).ok()?;
        let r = self.records.get(i)?;
        let (pack, pack_kind, _) = *self.packs.get(r.pack as usize)?;
        Some(BlobLocation {
            pack,
            pack_kind,
            kind: r.kind,
            offset: r.offset,
            sealed_len: r.sealed_len,
            raw_len: r.raw_len,
        })
    }

    /// Whether `id` is stored.
    #[must_use]
    pub fn contains(&self, id: &BlobId) -> bool {
        self.records.binary_search_by(|r| r.id.cmp(id)).is_ok()
    }

    /// Number of distinct blobs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the index is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every indexed pack with its kind and size.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, PackKind, u64)> + '_ {
        self.packs.iter().copied()
    }

    /// Whether `pack` is indexed.
    #[must_use]
    pub fn has_pack(&self, pack: &PackId) -> bool {
        self.packs.iter().any(|(p, _, _)| p == pack)
    }

    /// The deltas the index was built from.
    #[must_use]
    pub fn deltas(&self) -> &[IndexId] {
        &self.deltas
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
