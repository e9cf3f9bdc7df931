//! An index built from the repository's deltas into sorted records on local
//! disk, for `check` (issue 14: memory flat in the size of the repository).
//!
//! `check` must not trust the local cache (it may be what is damaged), yet
//! cannot hold every blob in memory. So it streams the deltas through an
//! [`IndexBuilder`]: each pack is kept as a small [`PackSummary`] (no blob
//! list, only a digest of it), and each blob as one [`BlobRecord`] of 49 bytes in a
//! [`SortedRuns`] (8 MiB in memory, the rest in sorted runs on local disk,
//! merged into one file with a sparse index; see [`crate::runs`]).
//!
//! Which deltas count is only known once all are read (a later delta may
//! supersede an earlier one), so every pack a delta names gets its own
//! number as it is read, and [`IndexBuilder::finish`] keeps only the numbers
//! of packs in deltas no other supersedes, each pack once (its first
//! occurrence in name order), as [`crate::Index::from_deltas`] does. The
//! merge drops the records of the others. Pack numbers follow name order,
//! so the copies of a blob held by several packs sort in indexing order,
//! first indexed first, like the in-memory index.

use std::collections::HashSet;
use std::path::Path;

use nfrepo_format::{BlobId, IndexDelta, IndexId, PackEntry, PackId, PackKind, SessionRef};

use super::{Index, Lookup, PackInfo, blob_kind_code};
use crate::runs::{RunRecord, SortedRuns, blob_prefix};
use crate::{Error, Result};

/// What the record set is called in its spill directory's name and in errors.
const LABEL: &str = "check index";

/// One copy of a blob: where it is in which pack (by number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BlobRecord {
    pub(super) id: BlobId,
    pub(super) pack: u32,
    pub(super) offset: u32,
    pub(super) sealed_len: u32,
    pub(super) raw_len: u32,
    /// The cache's code for the blob's kind (`blob_kind_code`).
    pub(super) kind: u8,
}

impl RunRecord for BlobRecord {
    const LEN: usize = 32 + 4 * 4 + 1;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        for n in [self.pack, self.offset, self.sealed_len, self.raw_len] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.push(self.kind);
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut id = [0u8; 32];
        if let Some(head) = bytes.get(..32) {
            id.copy_from_slice(head);
        }
        let word = |i: usize| {
            let mut n = [0u8; 4];
            if let Some(b) = bytes.get(32 + 4 * i..36 + 4 * i) {
                n.copy_from_slice(b);
            }
            u32::from_be_bytes(n)
        };
        Self {
            id: BlobId(id),
            pack: word(0),
            offset: word(1),
            sealed_len: word(2),
            raw_len: word(3),
            kind: bytes.get(48).copied().unwrap_or(u8::MAX),
        }
    }

    fn prefix(&self) -> u64 {
        blob_prefix(&self.id)
    }
}

/// One indexed pack without its blob list: what `check` keeps per pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackSummary {
    /// The pack.
    pub(crate) id: PackId,
    /// Its family.
    pub(crate) kind: PackKind,
    /// Its size in bytes, as the index records it.
    pub(crate) size: u64,
    /// The put-only session whose key sealed it, if any.
    pub(crate) sealing: Option<SessionRef>,
    /// How many blob entries the index lists for it.
    pub(crate) blobs: u64,
    /// [`entries_digest`] of the blob entries the index lists for it, in order.
    pub(crate) entries: [u8; 32],
    /// The delta whose entry for it counts: where its blob list can be read again.
    pub(crate) delta: IndexId,
}

/// A BLAKE3 digest of a list of pack entries, in order: two lists have the
/// same digest exactly when they are equal. What lets `check --read-data`
/// compare a pack's trailer with its index entries without keeping them.
pub(crate) fn entries_digest(entries: &[PackEntry]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(entries.len() as u64).to_le_bytes());
    for entry in entries {
        hasher.update(&entry.id.0);
        hasher.update(&[blob_kind_code(entry.kind)]);
        for n in [entry.offset, entry.sealed_len, entry.raw_len] {
            hasher.update(&n.to_le_bytes());
        }
    }
    *hasher.finalize().as_bytes()
}

/// What [`IndexBuilder::finish`] built.
#[derive(Debug)]
pub(crate) struct BuiltIndex {
    /// The index, answering from local disk (or memory, when small).
    pub(crate) index: Index,
    /// Every indexed pack, in indexing order.
    pub(crate) packs: Vec<PackSummary>,
    /// Blob entries beyond the first of each blob (blobs stored in more than one pack).
    pub(crate) duplicate_blobs: u64,
}

/// Builds an [`Index`] on local disk from deltas read one at a time (see the module docs).
#[derive(Debug)]
pub(crate) struct IndexBuilder {
    records: SortedRuns<BlobRecord>,
    /// Every pack of every delta added, numbered by position.
    packs: Vec<PackSummary>,
    deltas: Vec<IndexId>,
    superseded: HashSet<IndexId>,
}

impl IndexBuilder {
    /// A builder spilling under `dir` (the local cache directory), or the
    /// system's temporary directory when `None`.
    pub(crate) fn new(dir: Option<&Path>) -> Self {
        Self::with_records(SortedRuns::new(dir, LABEL))
    }

    fn with_records(records: SortedRuns<BlobRecord>) -> Self {
        Self {
            records,
            packs: Vec::new(),
            deltas: Vec::new(),
            superseded: HashSet::new(),
        }
    }

    /// Adds one delta; call in name order. May block on local disk I/O:
    /// call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Source`] if the records cannot be spilled; [`Error::Invalid`]
    /// past 2^32 pack entries.
    pub(crate) fn add_delta(&mut self, id: IndexId, delta: &IndexDelta) -> Result<()> {
        self.deltas.push(id);
        self.superseded.extend(delta.supersedes.iter().copied());
        for pack in &delta.packs {
            let number = u32::try_from(self.packs.len())
                .map_err(|_| Error::Invalid("the index names more than 2^32 packs".into()))?;
            self.packs.push(PackSummary {
                id: pack.id,
                kind: pack.kind,
                size: pack.size,
                sealing: pack.sealing,
                blobs: pack.blobs.len() as u64,
                entries: entries_digest(&pack.blobs),
                delta: id,
            });
            for blob in &pack.blobs {
                self.records.insert(BlobRecord {
                    id: blob.id,
                    pack: number,
                    offset: blob.offset,
                    sealed_len: blob.sealed_len,
                    raw_len: blob.raw_len,
                    kind: blob_kind_code(blob.kind),
                })?;
            }
        }
        Ok(())
    }

    /// Keeps the packs that count (see the module docs) and makes the index
    /// ready for lookups. Blocks on local disk I/O: call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Source`] if the spilled records cannot be merged.
    pub(crate) fn finish(self) -> Result<BuiltIndex> {
        let Self {
            mut records,
            packs,
            deltas,
            superseded,
        } = self;
        let mut seen: HashSet<PackId> = HashSet::new();
        let counts: Vec<bool> = packs
            .iter()
            .map(|p| !superseded.contains(&p.delta) && seen.insert(p.id))
            .collect();
        drop(seen);
        let mut distinct = 0usize;
        let mut last: Option<(BlobId, u32)> = None;
        records.finish(|r| {
            if !counts.get(r.pack as usize).copied().unwrap_or(false) {
                return false;
            }
            // One record per blob and pack, as the in-memory index keeps.
            if last.is_some_and(|(id, pack)| id == r.id && pack == r.pack) {
                return false;
            }
            if last.is_none_or(|(id, _)| id != r.id) {
                distinct += 1;
            }
            last = Some((r.id, r.pack));
            true
        })?;
        let mut kept = Vec::new();
        let mut infos = Vec::new();
        let mut entries = 0u64;
        for ((number, pack), counts) in (0u32..).zip(packs).zip(counts) {
            if counts {
                infos.push(PackInfo {
                    number,
                    id: pack.id,
                    kind: pack.kind,
                    size: pack.size,
                    sealing: pack.sealing,
                });
                entries += pack.blobs;
                kept.push(pack);
            }
        }
        let live: Vec<IndexId> = deltas.into_iter().filter(|d| !superseded.contains(d)).collect();
        let mut index = Index::with_lookup(Lookup::Sorted(records), infos, live);
        index.distinct = distinct;
        Ok(BuiltIndex {
            index,
            packs: kept,
            duplicate_blobs: entries.saturating_sub(distinct as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use nfrepo_format::{BlobKind, IndexedPack, PackEntry};

    use super::*;

    fn pack(n: u8, blobs: &[u8]) -> IndexedPack {
        IndexedPack {
            id: PackId([n; 32]),
            kind: PackKind::Data,
            size: 100 + u64::from(n),
            blobs: blobs
                .iter()
                .map(|b| PackEntry {
                    id: BlobId([*b; 32]),
                    kind: if *b >= 200 { BlobKind::Tree } else { BlobKind::Data },
                    offset: u32::from(*b) * 10 + u32::from(n),
                    sealed_len: 5,
                    raw_len: u32::from(*b),
                })
                .collect(),
            sealing: None,
        }
    }

    fn delta(packs: Vec<IndexedPack>, supersedes: &[u8]) -> IndexDelta {
        IndexDelta {
            packs,
            supersedes: supersedes.iter().map(|d| IndexId([*d; 32])).collect(),
        }
    }

    /// Deltas in name order, some superseding others, with packs named twice
    /// and blobs in several packs.
    fn deltas() -> Vec<(IndexId, IndexDelta)> {
        vec![
            (IndexId([1; 32]), delta(vec![pack(1, &[1, 2, 200])], &[])),
            // Superseded by delta 4: its pack 2 and blob 9 must not be found.
            (IndexId([2; 32]), delta(vec![pack(2, &[3, 9])], &[])),
            // Names pack 1 again (a compaction interrupted): the first entry counts.
            (
                IndexId([3; 32]),
                delta(vec![pack(1, &[1, 2, 200]), pack(3, &[2, 4])], &[]),
            ),
            (IndexId([4; 32]), delta(vec![pack(4, &[3])], &[2])),
        ]
    }

    fn build(budget: usize, dir: &Path) -> BuiltIndex {
        let mut builder = IndexBuilder::with_records(SortedRuns::with_budget(Some(dir), LABEL, budget));
        for (id, delta) in deltas() {
            builder.add_delta(id, &delta).unwrap();
        }
        builder.finish().unwrap()
    }

    /// The index on disk answers every lookup as the in-memory index built
    /// from the same deltas does, whether it spilled or not.
    #[test]
    fn answers_like_the_memory_index() {
        let memory = Index::from_deltas(deltas());
        for budget in [1, 2, 3, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let built = build(budget, dir.path());
            let index = &built.index;
            if budget == 1 {
                assert!(matches!(&index.lookup, Lookup::Sorted(r) if r.spilled()));
            }
            for b in [1, 2, 3, 4, 9, 200, 77] {
                let id = BlobId([b; 32]);
                assert_eq!(index.get(&id), memory.get(&id), "blob {b} at budget {budget}");
            }
            assert_eq!(index.get(&BlobId([9; 32])), None, "superseded delta skipped");
            assert_eq!(index.len(), memory.len());
            assert_eq!(index.len(), 5);
            assert_eq!(index.deltas(), [IndexId([1; 32]), IndexId([3; 32]), IndexId([4; 32])]);
            let packs: Vec<PackId> = built.packs.iter().map(|p| p.id).collect();
            assert_eq!(packs, [PackId([1; 32]), PackId([3; 32]), PackId([4; 32])]);
            assert_eq!(
                built.packs[0].delta,
                IndexId([1; 32]),
                "the first entry of pack 1 counts"
            );
            assert_eq!(built.packs[0].blobs, 3);
            // Blob 2 is in packs 1 and 3: one duplicate.
            assert_eq!(built.duplicate_blobs, 1);
            let blob2 = BlobId([2; 32]);
            assert_eq!(index.get(&blob2).unwrap().pack, PackId([1; 32]), "first indexed first");
            assert_eq!(built.packs[1].entries, entries_digest(&pack(3, &[2, 4]).blobs));
            // A missing pack: its blobs are read from another copy if there
            // is one, and still located in it if not (check blames the pack).
            index.prefer_packs_other_than([PackId([1; 32])]);
            assert_eq!(index.get(&blob2).unwrap().pack, PackId([3; 32]));
            assert_eq!(index.get(&BlobId([1; 32])).unwrap().pack, PackId([1; 32]));
            let tree = index.get(&BlobId([200; 32])).unwrap();
            assert_eq!((tree.kind, tree.raw_len), (BlobKind::Tree, 200));
            assert_eq!(index.cache_failure(), None);
        }
    }

    #[test]
    fn entry_digests_tell_lists_apart() {
        let list = pack(1, &[1, 2]).blobs;
        let digest = entries_digest(&list);
        assert_eq!(digest, entries_digest(&list.clone()));
        let mut reordered = list.clone();
        reordered.reverse();
        let mut moved = list.clone();
        moved[1].offset += 1;
        let mut retyped = list.clone();
        retyped[0].kind = BlobKind::ContentList;
        for other in [reordered, moved, retyped, list[..1].to_vec(), Vec::new()] {
            assert_ne!(entries_digest(&other), digest, "{other:?}");
        }
    }

    #[test]
    fn records_roundtrip() {
        let record = BlobRecord {
            id: BlobId([7; 32]),
            pack: 1,
            offset: 2,
            sealed_len: 3,
            raw_len: u32::MAX,
            kind: 2,
        };
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        assert_eq!(bytes.len(), BlobRecord::LEN);
        assert_eq!(BlobRecord::decode(&bytes), record);
        assert_eq!(record.prefix(), u64::from_be_bytes([7; 8]));
    }
}
