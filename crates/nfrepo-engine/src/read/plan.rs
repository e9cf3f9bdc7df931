//! Restore planning: the chunks of many files at once, read by pack.
//!
//! Streaming files one by one ([`Reader::content`]) reads a chunk shared by
//! many files once per file and orders requests by file, not by where the
//! bytes are. A restore instead plans a *batch* of files together:
//!
//! 1. The content lists of the batch's files are expanded into placements
//!    (file, offset, chunk), and every chunk is located with one batched
//!    index lookup ([`crate::Index::get_many`]), not one cache query each.
//! 2. Chunks are deduplicated: a chunk needed at many offsets, in one file
//!    or many, is read and opened once and written to each placement.
//! 3. Chunks are ordered by pack and by offset in the pack, then
//!    coalesced into [`PackRead`]s: one ranged read over neighbouring chunks
//!    of one pack, across gaps of at most [`PlanLimits::max_gap`] bytes,
//!    of at most [`PlanLimits::max_read`] sealed and
//!    [`PlanLimits::max_raw`] plaintext bytes. Each needed range of a pack
//!    is read once. The reads are issued in the order the files first need
//!    them, so files, and each part of a large file, complete early (see
//!    [`group_reads`]).
//!
//! A batch ends after [`PlanLimits::max_placements`] placements, so memory is
//! bounded whatever the number or size of the files: a file larger than a
//! batch continues in the next one ([`BatchFile::listed`] says when its
//! list ended). The first batch holds a sixteenth of that and each next
//! one twice the last, so the first reads start after little planning and
//! the caller plans the larger batches while they run.
//!
//! Opening ([`Reader::open_read_unhashed`]) authenticates, decompresses and
//! length-checks every chunk on every core (rayon); a chunk that does not
//! open is an error naming it, never data. It does not hash each chunk
//! again to its id: the restore checks every byte against its file's whole
//! BLAKE3 instead, so each byte is hashed once, not twice. The unit of work
//! is a run of a read
//! ([`PackRead::runs`]): chunks that follow each other in the pack and land
//! one after the other in one file, so the caller writes each run with one
//! call. Chunk by chunk, two workers writing neighbouring chunks of a file
//! queue on the file's lock, and the file system zeroes the unwritten part
//! of every page a chunk's edge cuts (content-defined chunks are not page
//! aligned): 12 % of a local restore's CPU in a profile. Runs are kept
//! small ([`MAX_RUN_RAW`]) so a run's plaintext is still in the core's
//! cache when it is copied to the file: with 1 MiB runs the copy and the
//! lock, held longer, cost more than they saved.
//!
//! The caller retries a chunk that did not verify, or every chunk of a read
//! that failed, through [`Reader::read_blob`], which falls back to other
//! copies and to the repository's index when the local cache was wrong.

use std::collections::{HashMap, VecDeque};

use futures::stream::{BoxStream, StreamExt};
use nfrepo_format::{BlobId, BlobKind, Content, ListEntry, PackId};
use nfrepo_store::Pieces;
use rayon::prelude::*;

use super::{Reader, pack_key};
use crate::index::BlobLocation;
use crate::{Error, Result};

/// Where one chunk goes: a file (the caller's number) and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The caller's number for the file.
    pub file: usize,
    /// The offset of the chunk's first byte in the file.
    pub offset: u64,
}

/// One chunk to read, and every place it goes.
#[derive(Clone, Debug)]
pub struct PlannedChunk {
    /// The chunk.
    pub id: BlobId,
    /// Where it is stored.
    pub location: BlobLocation,
    /// Where it goes, in plan order.
    pub placements: Vec<Placement>,
}

/// One ranged read of a pack, covering the chunks it holds in offset order.
#[derive(Clone, Debug)]
pub struct PackRead {
    /// First byte read.
    pub start: u64,
    /// One past the last byte read.
    pub end: u64,
    /// The chunks, in pack offset order (at least one).
    pub chunks: Vec<PlannedChunk>,
}

impl PackRead {
    /// The pack read.
    #[must_use]
    pub fn pack(&self) -> Option<PackId> {
        self.chunks.first().map(|c| c.location.pack)
    }

    /// Plaintext bytes of its chunks (each counted once).
    #[must_use]
    pub fn raw_len(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.location.raw_len)).sum()
    }
}

/// Plaintext bytes a run of chunks holds at most ([`PackRead::runs`]); a
/// larger chunk is a run alone. Measured on the 964 MB dump restored from a
/// local directory (3 runs each): chunk by chunk 2.30–2.44 s; runs of
/// 64 KiB 2.02–2.11 s, 128 KiB 1.91–1.97 s, 256 KiB 2.46–2.59 s.
pub(crate) const MAX_RUN_RAW: u64 = 128 << 10;

impl PackRead {
    /// The read's chunks cut into runs: neighbours in the read whose first
    /// placements follow each other without a gap in one file, of at most
    /// 128 KiB of plaintext together (`MAX_RUN_RAW`). Ranges of [`Self::chunks`], in
    /// order, covering it.
    #[must_use]
    pub fn runs(&self) -> Vec<std::ops::Range<usize>> {
        let mut runs = Vec::new();
        let (mut start, mut raw) = (0, 0u64);
        let mut next: Option<Placement> = None;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let len = u64::from(chunk.location.raw_len);
            let first = chunk.placements.first().copied();
            let continues = first.is_some() && first == next && raw + len <= MAX_RUN_RAW;
            if i > start && !continues {
                runs.push(start..i);
                (start, raw) = (i, 0);
            }
            raw += len;
            next = first.map(|p| Placement {
                file: p.file,
                offset: p.offset + len,
            });
        }
        if start < self.chunks.len() {
            runs.push(start..self.chunks.len());
        }
        runs
    }
}

/// Bounds of a restore plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanLimits {
    /// Placements per batch.
    pub max_placements: usize,
    /// Sealed bytes per read.
    pub max_read: u64,
    /// Plaintext bytes per read.
    pub max_raw: u64,
    /// Unneeded bytes a read may span between two chunks.
    pub max_gap: u64,
}

impl Default for PlanLimits {
    /// 16 Ki placements per batch (256 MiB of 16 KiB dump chunks); reads
    /// of up to 4 MiB sealed and 4 MiB plain (a larger chunk is read alone),
    /// spanning gaps up to 256 KiB: at S3 latencies reading a gap costs
    /// less than a second request.
    fn default() -> Self {
        Self {
            max_placements: 16 * 1024,
            max_read: 4 << 20,
            max_raw: 4 << 20,
            max_gap: 256 << 10,
        }
    }
}

/// Groups located placements into pack reads (the pure part of planning,
/// see the module docs).
#[must_use]
pub fn group_reads(placed: Vec<(BlobId, BlobLocation, Placement)>, limits: &PlanLimits) -> Vec<PackRead> {
    // Each chunk with the position of its first placement in plan order.
    let mut chunks: Vec<(PlannedChunk, usize)> = Vec::new();
    let mut seen: HashMap<BlobId, usize> = HashMap::with_capacity(placed.len());
    for (need, (id, location, placement)) in placed.into_iter().enumerate() {
        match seen.get(&id) {
            Some(&i) => {
                if let Some((chunk, _)) = chunks.get_mut(i) {
                    chunk.placements.push(placement);
                }
            }
            None => {
                seen.insert(id, chunks.len());
                let chunk = PlannedChunk {
                    id,
                    location,
                    placements: vec![placement],
                };
                chunks.push((chunk, need));
            }
        }
    }
    // Each pack's chunks together, in offset order, to be coalesced; the
    // reads are put in need order below.
    chunks.sort_by_key(|(c, _)| (c.location.pack, c.location.offset));
    // Each read with the first need of its chunks.
    let mut reads: Vec<(PackRead, usize)> = Vec::new();
    for (chunk, need) in chunks {
        let start = u64::from(chunk.location.offset);
        let end = start + u64::from(chunk.location.sealed_len);
        let raw = u64::from(chunk.location.raw_len);
        if let Some((read, first)) = reads.last_mut()
            && read.pack() == Some(chunk.location.pack)
            && start >= read.end
            && start - read.end <= limits.max_gap
            && end - read.start <= limits.max_read
            && read.raw_len() + raw <= limits.max_raw
        {
            read.end = end;
            read.chunks.push(chunk);
            *first = (*first).min(need);
            continue;
        }
        let read = PackRead {
            start,
            end,
            chunks: vec![chunk],
        };
        reads.push((read, need));
    }
    // Reads in the order the files first need them (each read's first
    // need is its own: a chunk is in one read). By pack alone, a
    // restore of a snapshot taken after an incremental read every range of
    // the first backup's first pack, then every new chunk of the
    // incremental's first pack, spread over a hundred MiB of the file, and
    // no part of the file was complete until the old packs of all that
    // span were read too.
    reads.sort_by_key(|(_, first)| *first);
    reads.into_iter().map(|(read, _)| read).collect()
}

/// A file to restore: the caller's number, its content and recorded size.
#[derive(Clone, Debug)]
pub struct FileToRestore {
    /// The caller's number for the file.
    pub file: usize,
    /// Its content.
    pub content: Content,
}

/// What a batch holds of one file.
#[derive(Debug)]
pub struct BatchFile {
    /// The caller's number for the file.
    pub file: usize,
    /// Placements of the file in this batch's reads.
    pub placements: u64,
    /// Whether the file's chunk list ended in this batch (no later batch
    /// has placements for it).
    pub listed: bool,
    /// Why the file cannot be restored (its list or a chunk is missing or
    /// damaged); none of its placements are in this batch's reads and no
    /// later batch names it.
    pub failed: Option<Error>,
}

/// One batch of a restore plan.
#[derive(Debug, Default)]
pub struct RestoreBatch {
    /// The reads, in the order to issue them.
    pub reads: Vec<PackRead>,
    /// Every file with placements in this batch, or whose list ended or failed in it, in order.
    pub files: Vec<BatchFile>,
}

struct Listing {
    file: usize,
    entries: BoxStream<'static, Result<ListEntry>>,
    offset: u64,
}

/// Plans a restore batch by batch (see the module docs).
pub struct RestorePlanner {
    reader: Reader,
    limits: PlanLimits,
    queue: VecDeque<FileToRestore>,
    current: Option<Listing>,
    /// Placements the next batch may hold: a sixteenth of the limit at
    /// first, doubling with each batch up to the limit.
    ramp: usize,
}

/// The first batch holds `max_placements` divided by this. Locating 16 Ki
/// chunks in the index took about 0.15 s before the first read of a
/// restore from S3 could start (the 297 MB Redis RDB); a first batch of
/// 1 Ki starts reading after a few milliseconds, while later, larger
/// batches are planned during the reads.
const FIRST_BATCH_DIVISOR: usize = 16;

impl std::fmt::Debug for RestorePlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestorePlanner")
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl RestorePlanner {
    /// A planner reading lists and the index through `reader`.
    #[must_use]
    pub fn new(reader: &Reader, limits: PlanLimits) -> Self {
        Self {
            reader: reader.clone(),
            limits,
            queue: VecDeque::new(),
            current: None,
            ramp: (limits.max_placements / FIRST_BATCH_DIVISOR).max(1),
        }
    }

    /// Queues a file; files are planned in the order queued.
    pub fn push(&mut self, file: FileToRestore) {
        self.queue.push_back(file);
    }

    /// Files queued and not yet completely planned.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.queue.len() + usize::from(self.current.is_some())
    }

    /// The next batch, or `None` once every queued file is planned.
    ///
    /// # Errors
    /// Only failures that are no single file's (a storage failure
    /// recovering the index); a file's damaged list or missing chunk is
    /// [`BatchFile::failed`].
    pub async fn next_batch(&mut self) -> Result<Option<RestoreBatch>> {
        let mut files: Vec<BatchFile> = Vec::new();
        let mut entries: Vec<(ListEntry, Placement)> = Vec::new();
        let cap = self.ramp;
        self.ramp = self.ramp.saturating_mul(2).min(self.limits.max_placements.max(1));
        while entries.len() < cap {
            if self.current.is_none() {
                let Some(next) = self.queue.pop_front() else {
                    break;
                };
                files.push(BatchFile {
                    file: next.file,
                    placements: 0,
                    listed: false,
                    failed: None,
                });
                self.current = Some(Listing {
                    file: next.file,
                    entries: self.reader.content_chunks(&next.content).boxed(),
                    offset: 0,
                });
            }
            let Some(listing) = self.current.as_mut() else {
                break;
            };
            if files.last().is_none_or(|f| f.file != listing.file) {
                files.push(BatchFile {
                    file: listing.file,
                    placements: 0,
                    listed: false,
                    failed: None,
                });
            }
            let batch_file = files.last_mut();
            match listing.entries.next().await {
                Some(Ok(entry)) => {
                    entries.push((
                        entry,
                        Placement {
                            file: listing.file,
                            offset: listing.offset,
                        },
                    ));
                    listing.offset += entry.len;
                }
                Some(Err(e)) => {
                    if let Some(f) = batch_file {
                        f.failed = Some(e);
                        f.listed = true;
                    }
                    self.current = None;
                }
                None => {
                    if let Some(f) = batch_file {
                        f.listed = true;
                    }
                    self.current = None;
                }
            }
        }
        if files.is_empty() {
            return Ok(None);
        }
        let placed = Self::locate(&self.reader, entries, &mut files).await?;
        // A file that failed gets no placements, now or later.
        if let Some(listing) = &self.current
            && files.iter().any(|f| f.file == listing.file && f.failed.is_some())
        {
            self.current = None;
        }
        let failed: Vec<usize> = files.iter().filter(|f| f.failed.is_some()).map(|f| f.file).collect();
        let placed: Vec<_> = placed
            .into_iter()
            .filter(|(_, _, p)| !failed.contains(&p.file))
            .collect();
        let mut counts: HashMap<usize, u64> = HashMap::new();
        for (_, _, p) in &placed {
            *counts.entry(p.file).or_default() += 1;
        }
        for f in &mut files {
            f.placements = counts.get(&f.file).copied().unwrap_or(0);
            if f.failed.is_some() {
                f.listed = true;
            }
        }
        Ok(Some(RestoreBatch {
            reads: group_reads(placed, &self.limits),
            files,
        }))
    }

    /// Locates every entry with batched lookups; an entry that cannot be
    /// located (after recovering a local cache that may be wrong) fails its
    /// file. (Not a method: the planner holds streams that are not `Sync`.)
    async fn locate(
        reader: &Reader,
        entries: Vec<(ListEntry, Placement)>,
        files: &mut [BatchFile],
    ) -> Result<Vec<(BlobId, BlobLocation, Placement)>> {
        let index = reader.index();
        let ids: Vec<BlobId> = entries.iter().map(|(e, _)| e.id).collect();
        let mut found = index.get_many(&ids);
        let missing = |found: &[Option<BlobLocation>]| {
            found
                .iter()
                .zip(&entries)
                .filter(|(l, (e, _))| l.is_none_or(|l| l.kind != BlobKind::Data || u64::from(l.raw_len) != e.len))
                .count()
        };
        if missing(&found) > 0 {
            let probe = Error::Missing {
                object: "blob".into(),
                detail: "not in the local index cache".into(),
            };
            if index.may_recover(&probe) {
                index.recover(reader.repository()).await?;
                found = index.get_many(&ids);
            }
        }
        let mut placed = Vec::with_capacity(entries.len());
        for ((entry, placement), location) in entries.into_iter().zip(found) {
            let problem = match location {
                None => Some(Error::Missing {
                    object: format!("blob {}", entry.id),
                    detail: match index.cache_failure() {
                        Some(failure) => format!("not found, and the local index cache failed: {failure}"),
                        None => "not in any index".into(),
                    },
                }),
                Some(l) if l.kind != BlobKind::Data => Some(Error::Missing {
                    object: format!("blob {}", entry.id),
                    detail: format!("indexed as {:?}, expected {:?}", l.kind, BlobKind::Data),
                }),
                Some(l) if u64::from(l.raw_len) != entry.len => Some(Error::decode(
                    format!("blob {} in pack {}", entry.id, l.pack),
                    nfrepo_format::Error::Malformed {
                        what: "content list entry",
                        detail: format!("the list says {} bytes, the index {}", entry.len, l.raw_len),
                    },
                )),
                Some(l) => {
                    placed.push((entry.id, l, placement));
                    None
                }
            };
            if let Some(problem) = problem
                && let Some(f) = files
                    .iter_mut()
                    .find(|f| f.file == placement.file && f.failed.is_none())
            {
                f.failed = Some(problem);
            }
        }
        Ok(placed)
    }
}

impl Reader {
    /// Fetches the sealed bytes of a planned read with one ranged request,
    /// as the pieces the store received them in (not joined: each chunk is
    /// opened from its own bytes, see [`nfrepo_store::Pieces`]).
    ///
    /// # Errors
    /// Storage errors (a pack that is gone is [`nfrepo_store::ErrorKind::NotFound`]).
    pub async fn fetch_read(&self, read: &PackRead) -> Result<Pieces> {
        let Some(first) = read.chunks.first() else {
            return Ok(Pieces::default());
        };
        let object = pack_key(&first.location)?;
        self.repo
            .store()
            .get_range_pieces(&object, read.start..read.end)
            .await
            .map_err(Error::store)
    }

    /// Opens every chunk of a fetched read, its runs ([`PackRead::runs`])
    /// on every core, and hands each run to `each` (on the worker thread
    /// that opened it) with each chunk's plaintext, or the error naming it
    /// if it did not open. `each` returns one result per chunk of the run;
    /// they come back in chunk order. Holds one run's plaintext per worker
    /// at most. Blocking: call it from a blocking thread.
    ///
    /// Chunks are authenticated (the seal binds each to its id),
    /// decompressed and length-checked, but not hashed again to their ids
    /// ([`nfrepo_format::BlobCodec::open_unhashed_with`]). The caller must
    /// check every byte against a whole-content hash before anything relies
    /// on it, and on a mismatch read the chunks again through
    /// [`Reader::read_blob`], which re-hashes them, so that a chunk sealed
    /// under an id it does not hash to is still named (format-spec/blob.md,
    /// "Opening without the re-hash").
    pub fn open_read_unhashed<T: Send>(
        &self,
        read: &PackRead,
        sealed: &Pieces,
        each: impl Fn(&[PlannedChunk], Vec<Result<Vec<u8>>>) -> Vec<T> + Sync + Send,
    ) -> Vec<T> {
        read.runs()
            .into_par_iter()
            .flat_map_iter(|run| {
                let chunks = read.chunks.get(run).unwrap_or_default();
                let opened = chunks
                    .iter()
                    .map(|chunk| self.open_chunk(read, sealed, chunk))
                    .collect();
                each(chunks, opened)
            })
            .collect()
    }

    fn open_chunk(&self, read: &PackRead, sealed: &Pieces, chunk: &PlannedChunk) -> Result<Vec<u8>> {
        let location = &chunk.location;
        let what = || format!("blob {} in pack {}", chunk.id, location.pack);
        let from = usize::try_from(u64::from(location.offset).saturating_sub(read.start)).unwrap_or(usize::MAX);
        let bytes = sealed
            .slice(from..from.saturating_add(location.sealed_len as usize))
            .ok_or_else(|| Error::Missing {
                object: what(),
                detail: "the pack is shorter than its index says".into(),
            })?;
        crate::codec::with_codec(&self.repo, |codec| {
            let sealer = nfrepo_format::pack_sealer(self.repo.sealer(), location.sealing.as_ref())
                .map_err(|e| Error::decode(what(), e))?;
            codec
                .open_unhashed_with(&sealer, location.kind, &chunk.id, location.raw_len, &bytes)
                .map_err(|e| Error::decode(what(), e))
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use nfrepo_format::PackKind;

    /// A data chunk of `len` sealed bytes at `offset` of pack `pack`.
    pub(in crate::read) fn at(pack: u8, offset: u32, len: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            pack_kind: PackKind::Data,
            kind: BlobKind::Data,
            offset,
            sealed_len: len,
            raw_len: len * 2,
            sealing: None,
        }
    }

    fn place(file: usize, offset: u64) -> Placement {
        Placement { file, offset }
    }

    #[test]
    fn shared_chunks_are_read_once_and_packs_in_first_need_order() {
        let limits = PlanLimits::default();
        let placed = vec![
            (BlobId([1; 32]), at(9, 100, 100), place(0, 0)),
            (BlobId([2; 32]), at(3, 0, 100), place(0, 200)),
            (BlobId([1; 32]), at(9, 100, 100), place(1, 0)),
            (BlobId([3; 32]), at(9, 0, 100), place(1, 200)),
        ];
        let reads = group_reads(placed, &limits);
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert_eq!(reads[0].pack(), Some(PackId([9; 32])), "pack 9 is needed first");
        assert_eq!((reads[0].start, reads[0].end), (0, 200));
        let ids: Vec<BlobId> = reads[0].chunks.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![BlobId([3; 32]), BlobId([1; 32])], "offset order in the pack");
        assert_eq!(reads[0].chunks[1].placements, vec![place(0, 0), place(1, 0)]);
        assert_eq!(reads[1].pack(), Some(PackId([3; 32])));
    }

    // A file whose chunks alternate between two packs (a snapshot after an
    // incremental: old chunks and new ones): the ranges are read in the
    // order the file needs them, not every range of the first pack first.
    #[test]
    fn reads_follow_the_order_the_files_need_them() {
        let limits = PlanLimits {
            max_gap: 0,
            ..PlanLimits::default()
        };
        let placed = vec![
            (BlobId([1; 32]), at(1, 0, 100), place(0, 0)),
            (BlobId([2; 32]), at(2, 0, 100), place(0, 200)),
            (BlobId([3; 32]), at(1, 1000, 100), place(0, 400)),
            (BlobId([4; 32]), at(2, 1000, 100), place(0, 600)),
        ];
        let reads = group_reads(placed, &limits);
        let order: Vec<(Option<PackId>, u64)> = reads.iter().map(|r| (r.pack(), r.start)).collect();
        assert_eq!(
            order,
            vec![
                (Some(PackId([1; 32])), 0),
                (Some(PackId([2; 32])), 0),
                (Some(PackId([1; 32])), 1000),
                (Some(PackId([2; 32])), 1000),
            ]
        );
    }

    fn planned(location: BlobLocation, placements: Vec<Placement>) -> PlannedChunk {
        PlannedChunk {
            id: BlobId([location.offset as u8; 32]),
            location,
            placements,
        }
    }

    #[test]
    fn runs_are_neighbours_that_continue_each_other_in_one_file() {
        // raw_len is twice the sealed length in `at`.
        let read = PackRead {
            start: 0,
            end: 500,
            chunks: vec![
                planned(at(1, 0, 100), vec![place(0, 0)]),
                planned(at(1, 100, 100), vec![place(0, 200), place(1, 0)]),
                planned(at(1, 200, 100), vec![place(0, 400)]),
                // A gap in the file: 600 follows, not 700.
                planned(at(1, 300, 100), vec![place(0, 700)]),
                // Another file.
                planned(at(1, 400, 100), vec![place(1, 900)]),
                planned(at(1, 500, 100), vec![place(1, 1100)]),
            ],
        };
        assert_eq!(read.runs(), vec![0..3, 3..4, 4..6]);
    }

    #[test]
    fn a_run_ends_at_its_plaintext_bound() {
        let half = u32::try_from(MAX_RUN_RAW / 4).unwrap();
        let raw = u64::from(half) * 2;
        let chunks = (0..5)
            .map(|i| planned(at(1, i * half, half), vec![place(0, u64::from(i) * raw)]))
            .collect();
        let read = PackRead {
            start: 0,
            end: 5 * u64::from(half),
            chunks,
        };
        // Two chunks of MAX_RUN_RAW / 2 fill a run.
        assert_eq!(read.runs(), vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn reads_split_at_gaps_and_size_limits() {
        let limits = PlanLimits {
            max_placements: 100,
            max_read: 300,
            max_raw: 1000,
            max_gap: 50,
        };
        let placed = vec![
            (BlobId([1; 32]), at(1, 0, 100), place(0, 0)),
            (BlobId([2; 32]), at(1, 150, 100), place(0, 200)),
            (BlobId([3; 32]), at(1, 250, 100), place(0, 400)),
            (BlobId([4; 32]), at(1, 400, 10), place(0, 600)),
        ];
        let reads = group_reads(placed, &limits);
        let spans: Vec<(u64, u64)> = reads.iter().map(|r| (r.start, r.end)).collect();
        // 0..100 then a 50-byte gap to 150..250 (coalesced); 250..350 would
        // make the read 350 bytes (over 300); 400 is 50 bytes after 350.
        assert_eq!(spans, vec![(0, 250), (250, 410)]);
    }
}
