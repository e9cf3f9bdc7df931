//! Sorted sets of fixed-size records too large for memory: in memory up to
//! a budget, then in sorted runs on local disk merged into one file.
//!
//! Used where a command would otherwise hold one entry per blob of the
//! repository (issue 14: memory flat in the size of the repository): gc's
//! referenced-blob set (`crate::gc`) and check's blob index
//! (`crate::index`, [`crate::Index`] backed by a [`SortedRuns`]).
//!
//! Up to a budget of records are kept in one sorted vector. Past that, each
//! full vector is written as a sorted run to a private directory (under the
//! local cache directory, else the system's temporary directory; removed
//! when the set is dropped), by a thread of its own so the producer goes on
//! meanwhile. [`SortedRuns::finish`] then merges the runs into one sorted,
//! deduplicated file and keeps in memory only the [`RunRecord::prefix`] of
//! the first record of every block of [`BLOCK`] records; a lookup
//! ([`SortedRuns::find`]) searches that sparse index and reads one block
//! (rarely two) from the file: the page cache, not this process, holds the
//! file. Both forms answer exactly alike (`tests::spilled_answers_like_memory`).
//!
//! Memory: the sorted vector (the budget), an unsorted tail of a quarter of
//! it, and the run being written (the budget again) while filling; 64 KiB
//! per run while merging; then 8 bytes per [`BLOCK`] records.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use nfrepo_format::BlobId;

use crate::{Error, Result};

/// Bytes of records a set holds in memory by default before it spills.
pub(crate) const MEMORY_BUDGET_BYTES: usize = 8 << 20;

/// Records per block of the merged file: one sparse-index entry and one
/// read of `BLOCK * R::LEN` bytes per lookup.
const BLOCK: usize = 64;

/// A record of a [`SortedRuns`]: fixed-size, ordered, and looked up by the
/// 64-bit prefix of its sort key.
pub(crate) trait RunRecord: Copy + Ord + Send + 'static {
    /// Encoded length in bytes.
    const LEN: usize;
    /// Appends exactly [`Self::LEN`] bytes, the first 8 being [`Self::prefix`]
    /// big-endian.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes what [`Self::encode`] wrote; `bytes` is [`Self::LEN`] long.
    fn decode(bytes: &[u8]) -> Self;
    /// The first 64 bits of the sort key: records sort by it first.
    fn prefix(&self) -> u64;
}

impl RunRecord for u64 {
    const LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        encoded_prefix(bytes)
    }

    fn prefix(&self) -> u64 {
        *self
    }
}

/// The first 64 bits of a blob id: what sets of blobs are looked up by
/// (ids are keyed BLAKE3 outputs, so prefixes are evenly spread).
pub(crate) fn blob_prefix(id: &BlobId) -> u64 {
    encoded_prefix(&id.0)
}

/// The prefix an encoded record starts with.
fn encoded_prefix(bytes: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    if let Some(first) = bytes.get(..8) {
        head.copy_from_slice(first);
    }
    u64::from_be_bytes(head)
}

/// A sorted, deduplicated set of records, spilling to local disk past its budget.
pub(crate) struct SortedRuns<R: RunRecord> {
    /// Sorted and deduplicated; all of the set unless it spilled.
    sorted: Vec<R>,
    pending: Vec<R>,
    budget: usize,
    tail: usize,
    /// Where runs go (a private directory is made under it at the first spill).
    base: PathBuf,
    /// What the set is, for its directory's name and error messages.
    label: &'static str,
    spill: Option<Spill<R>>,
    merged: Option<Merged>,
}

/// Runs being written.
struct Spill<R> {
    dir: tempfile::TempDir,
    sender: SyncSender<Vec<R>>,
    writer: JoinHandle<std::io::Result<Vec<PathBuf>>>,
}

/// The merged file and its sparse index.
struct Merged {
    _dir: tempfile::TempDir,
    path: PathBuf,
    file: File,
    /// The prefix of the first record of each block.
    firsts: Vec<u64>,
    len: usize,
}

impl<R: RunRecord> std::fmt::Debug for SortedRuns<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedRuns")
            .field("label", &self.label)
            .field("in_memory", &self.sorted.len())
            .field("spilled", &self.merged.as_ref().map(|m| m.len))
            .finish_non_exhaustive()
    }
}

impl<R: RunRecord> SortedRuns<R> {
    /// An empty set spilling under `dir` (the local cache directory), or
    /// under the system's temporary directory when `None`, once it holds
    /// more than [`MEMORY_BUDGET_BYTES`] of records.
    pub(crate) fn new(dir: Option<&Path>, label: &'static str) -> Self {
        Self::with_budget(dir, label, MEMORY_BUDGET_BYTES / std::mem::size_of::<R>().max(1))
    }

    /// An empty set holding at most `budget` records in memory.
    pub(crate) fn with_budget(dir: Option<&Path>, label: &'static str, budget: usize) -> Self {
        let budget = budget.max(1);
        Self {
            sorted: Vec::new(),
            pending: Vec::new(),
            budget,
            tail: (budget / 4).max(1),
            base: dir.map_or_else(std::env::temp_dir, Path::to_path_buf),
            label,
            spill: None,
            merged: None,
        }
    }

    fn local_error(&self, path: &Path, source: std::io::Error) -> Error {
        Error::Source {
            what: format!("{} in {}", self.label, path.display()),
            source,
        }
    }

    /// Adds a record. May block while a full run is written: call from
    /// synchronous code or `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Source`] if a run cannot be written.
    pub(crate) fn insert(&mut self, record: R) -> Result<()> {
        self.pending.push(record);
        if self.pending.len() >= self.tail {
            self.absorb()?;
        }
        Ok(())
    }

    /// Sorts the tail into the set, and spills the set when it is over budget.
    fn absorb(&mut self) -> Result<()> {
        self.sorted.append(&mut self.pending);
        self.sorted.sort_unstable();
        self.sorted.dedup();
        if self.sorted.len() >= self.budget {
            let run = std::mem::take(&mut self.sorted);
            self.spill_run(run)?;
        }
        Ok(())
    }

    fn spill_run(&mut self, run: Vec<R>) -> Result<()> {
        if self.spill.is_none() {
            std::fs::create_dir_all(&self.base).map_err(|e| self.local_error(&self.base, e))?;
            let dir = tempfile::Builder::new()
                .prefix(&format!("{}-", self.label.replace(' ', "-")))
                .tempdir_in(&self.base)
                .map_err(|e| self.local_error(&self.base, e))?;
            // One run written while the next fills: a rendezvous channel.
            let (sender, receiver) = sync_channel::<Vec<R>>(0);
            let runs_dir = dir.path().to_path_buf();
            let writer = std::thread::Builder::new()
                .name("spill-runs".into())
                .spawn(move || {
                    let mut paths = Vec::new();
                    for run in receiver {
                        let path = runs_dir.join(format!("run-{}", paths.len()));
                        write_run(&path, &run)?;
                        paths.push(path);
                    }
                    Ok(paths)
                })
                .map_err(|e| self.local_error(&self.base, e))?;
            self.spill = Some(Spill { dir, sender, writer });
        }
        let Some(spill) = &self.spill else {
            return Err(Error::Pipeline(format!("{} lost its spill", self.label)));
        };
        // A closed channel means the writer failed; `finish` reports why.
        let _ = spill.sender.send(run);
        Ok(())
    }

    /// Makes the set ready for [`Self::find`]: sorts what is in memory, or
    /// merges the spilled runs into one file. Each distinct record is
    /// offered to `keep` once, in order, and dropped from the set if it
    /// returns false. Blocks on local disk I/O when the set spilled: call
    /// from `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Source`] if a run could not be written or merged.
    pub(crate) fn finish(&mut self, mut keep: impl FnMut(&R) -> bool) -> Result<()> {
        self.absorb()?;
        let Some(spill) = self.spill.take() else {
            self.sorted.retain(|r| keep(r));
            self.sorted.shrink_to_fit();
            return Ok(());
        };
        let Spill { dir, sender, writer } = spill;
        let last = std::mem::take(&mut self.sorted);
        if !last.is_empty() {
            let _ = sender.send(last);
        }
        drop(sender);
        let runs = writer
            .join()
            .map_err(|_| Error::Pipeline(format!("{}: the spill thread panicked", self.label)))?
            .map_err(|e| self.local_error(dir.path(), e))?;
        let path = dir.path().join("merged");
        let (firsts, len) = merge_runs::<R>(&runs, &path, &mut keep).map_err(|e| self.local_error(&path, e))?;
        for run in &runs {
            let _ = std::fs::remove_file(run);
        }
        let file = File::open(&path).map_err(|e| self.local_error(&path, e))?;
        self.merged = Some(Merged {
            _dir: dir,
            path,
            file,
            firsts,
            len,
        });
        Ok(())
    }

    /// Every record whose [`RunRecord::prefix`] is `prefix`, in order. Only
    /// valid after [`Self::finish`]. Reads one block of local disk (the page
    /// cache, mostly) when the set spilled.
    ///
    /// # Errors
    /// [`Error::Source`] if the spilled file cannot be read.
    pub(crate) fn find(&self, prefix: u64) -> Result<Vec<R>> {
        let Some(merged) = &self.merged else {
            let first = self.sorted.partition_point(|r| r.prefix() < prefix);
            return Ok(self
                .sorted
                .get(first..)
                .unwrap_or_default()
                .iter()
                .take_while(|r| r.prefix() == prefix)
                .copied()
                .collect());
        };
        // Records with `prefix` start in the last block whose first prefix
        // is below it (or the first block) and end before the first block
        // whose first prefix is above it.
        let end = merged.firsts.partition_point(|first| *first <= prefix);
        if end == 0 {
            return Ok(Vec::new());
        }
        let start = merged.firsts.partition_point(|first| *first < prefix).saturating_sub(1);
        let first_record = start * BLOCK;
        let count = (end * BLOCK).min(merged.len) - first_record;
        let mut bytes = vec![0u8; count * R::LEN];
        merged
            .file
            .read_exact_at(&mut bytes, (first_record * R::LEN) as u64)
            .map_err(|e| self.local_error(&merged.path, e))?;
        Ok(bytes
            .chunks_exact(R::LEN)
            .filter(|b| encoded_prefix(b) == prefix)
            .map(R::decode)
            .collect())
    }

    /// Distinct records held. Only valid after [`Self::finish`].
    pub(crate) fn len(&self) -> usize {
        self.merged.as_ref().map_or(self.sorted.len(), |m| m.len)
    }

    /// Whether the set went to disk.
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> bool {
        self.merged.is_some()
    }
}

fn write_run<R: RunRecord>(path: &Path, run: &[R]) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    let mut bytes = Vec::with_capacity(R::LEN);
    for record in run {
        bytes.clear();
        record.encode(&mut bytes);
        out.write_all(&bytes)?;
    }
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    Ok(())
}

/// One sorted run being read.
struct RunReader(BufReader<File>);

impl RunReader {
    fn read_next<R: RunRecord>(&mut self, buf: &mut [u8]) -> std::io::Result<Option<R>> {
        match self.0.read_exact(buf) {
            Ok(()) => Ok(Some(R::decode(buf))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Merges sorted runs into one sorted, deduplicated file at `out`, leaving
/// out the records `keep` refuses; returns the first prefix of each block
/// and the number of records written.
fn merge_runs<R: RunRecord>(
    runs: &[PathBuf],
    out: &Path,
    keep: &mut impl FnMut(&R) -> bool,
) -> std::io::Result<(Vec<u64>, usize)> {
    let mut buf = vec![0u8; R::LEN];
    let mut readers = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::new();
    for (i, path) in runs.iter().enumerate() {
        let mut reader = RunReader(BufReader::with_capacity(1 << 16, File::open(path)?));
        if let Some(first) = reader.read_next::<R>(&mut buf)? {
            heap.push(Reverse((first, i)));
        }
        readers.push(reader);
    }
    let mut writer = BufWriter::with_capacity(1 << 16, File::create(out)?);
    let mut firsts = Vec::new();
    let mut len = 0usize;
    let mut last = None;
    while let Some(Reverse((record, i))) = heap.pop() {
        if last != Some(record) {
            last = Some(record);
            if keep(&record) {
                if len.is_multiple_of(BLOCK) {
                    firsts.push(record.prefix());
                }
                buf.clear();
                record.encode(&mut buf);
                writer.write_all(&buf)?;
                len += 1;
            }
        }
        buf.resize(R::LEN, 0);
        if let Some(next) = readers
            .get_mut(i)
            .map(|r| r.read_next::<R>(&mut buf))
            .transpose()?
            .flatten()
        {
            heap.push(Reverse((next, i)));
        }
    }
    writer.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    Ok((firsts, len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// A record with a payload after its prefix, so that several records
    /// share one prefix.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Pair(u64, u32);

    impl RunRecord for Pair {
        const LEN: usize = 12;

        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0.to_be_bytes());
            out.extend_from_slice(&self.1.to_be_bytes());
        }

        fn decode(bytes: &[u8]) -> Self {
            Self(
                encoded_prefix(bytes),
                u32::from_be_bytes(bytes[8..12].try_into().unwrap()),
            )
        }

        fn prefix(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn spills_over_budget_filters_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = SortedRuns::with_budget(Some(dir.path()), "test set", 100);
        for i in 0..1000u64 {
            let p = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            set.insert(Pair(p, 2)).unwrap();
            set.insert(Pair(p, 1)).unwrap();
            set.insert(Pair(p, 1)).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut offered = 0;
        set.finish(|r| {
            offered += 1;
            r.1 == 1 || r.0.is_multiple_of(2)
        })
        .unwrap();
        assert_eq!(offered, 2000, "each distinct record once");
        assert!(set.spilled());
        let p = 7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let expected = if p.is_multiple_of(2) {
            vec![Pair(p, 1), Pair(p, 2)]
        } else {
            vec![Pair(p, 1)]
        };
        assert_eq!(set.find(p).unwrap(), expected);
        assert!(set.find(1).unwrap().is_empty());
        drop(set);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spill directory is removed"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The spilled set, at any budget, answers exactly like a set in
        /// memory, also for prefixes many records share across blocks.
        #[test]
        fn spilled_answers_like_memory(
            inserted in proptest::collection::vec((any::<u64>(), 0u32..4), 0..3000),
            small in proptest::collection::vec((0u64..8, 0u32..300), 0..800),
            probes in proptest::collection::vec(any::<u64>(), 0..200),
            budget in 1usize..700,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut spilled = SortedRuns::with_budget(Some(dir.path()), "test set", budget);
            let mut memory = SortedRuns::with_budget(None, "test set", usize::MAX);
            let mut model = BTreeSet::new();
            for (p, v) in inserted.iter().chain(&small) {
                spilled.insert(Pair(*p, *v)).unwrap();
                memory.insert(Pair(*p, *v)).unwrap();
                model.insert(Pair(*p, *v));
            }
            spilled.finish(|r| r.1 != 3).unwrap();
            memory.finish(|r| r.1 != 3).unwrap();
            model.retain(|r| r.1 != 3);
            prop_assert_eq!(spilled.len(), model.len());
            prop_assert_eq!(memory.len(), model.len());
            for p in inserted.iter().chain(&small).map(|(p, _)| p).chain(&probes).chain(&[0, u64::MAX]) {
                let expected: Vec<Pair> = model.iter().filter(|r| r.0 == *p).copied().collect();
                prop_assert_eq!(&spilled.find(*p).unwrap(), &expected);
                prop_assert_eq!(&memory.find(*p).unwrap(), &expected);
            }
        }
    }
}
