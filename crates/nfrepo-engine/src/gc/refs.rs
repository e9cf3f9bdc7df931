//! The set of referenced blobs: 8 bytes per blob, in memory up to a budget,
//! then in sorted runs on local disk.
//!
//! GC only needs to answer "may this blob be referenced?", and a wrong "yes"
//! merely keeps a pack one more round. So the set holds the first 8 bytes of
//! each blob id. Two blobs whose ids share their first 64 bits are both
//! treated as referenced if one is; ids are keyed BLAKE3 outputs, so that
//! happens to about one pair in 2^64 / n.
//!
//! **Memory is bounded, not proportional to the repository** (issue 14):
//! up to [`MEMORY_BUDGET`] prefixes are kept in one sorted vector, as
//! before. Past that, each full vector is written as a sorted run to a
//! private directory (under the local cache directory, else the system's
//! temporary directory; removed when the set is dropped), by a thread of its
//! own so the walk goes on meanwhile. [`RefSet::finish`] then merges the
//! runs into one sorted, deduplicated file and keeps in memory only the
//! first prefix of every block of [`BLOCK`] prefixes (1/64 of the file);
//! [`RefSet::contains`] searches that sparse index and reads one block of
//! 512 bytes from the file (the page cache, not this process, holds the
//! file). At 10 M blobs that is 80 MB on disk and about 1.3 MB in memory.
//! Both forms answer exactly alike (`tests::spilled_answers_like_memory`).

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

/// Prefixes held in memory at most before the set spills to disk: 8 MiB
/// (the sorted vector; a run being written and the unsorted tail add at
/// most as much again).
pub(crate) const MEMORY_BUDGET: usize = 1 << 20;

/// Prefixes per block of the spilled file: one sparse-index entry and one
/// read of `8 * BLOCK` bytes per lookup.
const BLOCK: usize = 64;

/// Unsorted prefixes gathered before they are sorted into the set.
const TAIL: usize = 1 << 18;

/// A set of blob-id prefixes that errs only towards "referenced".
pub(crate) struct RefSet {
    /// Sorted and deduplicated; all of the set unless it spilled.
    sorted: Vec<u64>,
    pending: Vec<u64>,
    budget: usize,
    /// Where runs go (a private directory is made under it at the first spill).
    base: PathBuf,
    spill: Option<Spill>,
    merged: Option<Merged>,
}

/// Runs being written.
struct Spill {
    dir: tempfile::TempDir,
    sender: SyncSender<Vec<u64>>,
    writer: JoinHandle<std::io::Result<Vec<PathBuf>>>,
}

/// The merged file and its sparse index.
struct Merged {
    _dir: tempfile::TempDir,
    path: PathBuf,
    file: File,
    /// The first prefix of each block.
    firsts: Vec<u64>,
    len: usize,
}

impl std::fmt::Debug for RefSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefSet")
            .field("in_memory", &self.sorted.len())
            .field("spilled", &self.merged.as_ref().map(|m| m.len))
            .finish_non_exhaustive()
    }
}

impl Default for RefSet {
    fn default() -> Self {
        Self::new(None)
    }
}

/// The prefix a blob is stored under.
pub(crate) fn prefix(id: &BlobId) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(id.0.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(head)
}

fn local_error(path: &Path, source: std::io::Error) -> Error {
    Error::Source {
        what: format!("gc's reference set in {}", path.display()),
        source,
    }
}

impl RefSet {
    /// An empty set spilling under `dir` (the local cache directory), or
    /// under the system's temporary directory when `None`.
    pub(crate) fn new(dir: Option<&Path>) -> Self {
        Self::with_budget(dir, MEMORY_BUDGET)
    }

    fn with_budget(dir: Option<&Path>, budget: usize) -> Self {
        Self {
            sorted: Vec::new(),
            pending: Vec::new(),
            budget: budget.max(1),
            base: dir.map_or_else(std::env::temp_dir, Path::to_path_buf),
            spill: None,
            merged: None,
        }
    }

    /// Adds a blob.
    ///
    /// # Errors
    /// [`Error::Source`] if a run cannot be written.
    pub(crate) fn insert(&mut self, id: &BlobId) -> Result<()> {
        self.pending.push(prefix(id));
        if self.pending.len() >= TAIL.min(self.budget) {
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

    fn spill_run(&mut self, run: Vec<u64>) -> Result<()> {
        if self.spill.is_none() {
            std::fs::create_dir_all(&self.base).map_err(|e| local_error(&self.base, e))?;
            let dir = tempfile::Builder::new()
                .prefix("gc-refs-")
                .tempdir_in(&self.base)
                .map_err(|e| local_error(&self.base, e))?;
            // One run written while the next fills: a rendezvous channel.
            let (sender, receiver) = sync_channel::<Vec<u64>>(0);
            let runs_dir = dir.path().to_path_buf();
            let writer = std::thread::Builder::new()
                .name("gc-refs-spill".into())
                .spawn(move || {
                    let mut paths = Vec::new();
                    for run in receiver {
                        let path = runs_dir.join(format!("run-{}", paths.len()));
                        write_run(&path, &run)?;
                        paths.push(path);
                    }
                    Ok(paths)
                })
                .map_err(|e| local_error(&self.base, e))?;
            self.spill = Some(Spill { dir, sender, writer });
        }
        let Some(spill) = &self.spill else {
            return Err(Error::Pipeline("gc's reference set lost its spill".into()));
        };
        // A closed channel means the writer failed; `finish` reports why.
        let _ = spill.sender.send(run);
        Ok(())
    }

    /// Makes the set ready for [`Self::contains`]: sorts what is in memory,
    /// or merges the spilled runs into one file. Blocks on local disk I/O
    /// when the set spilled: call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Source`] if a run could not be written or merged.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.absorb()?;
        let Some(spill) = self.spill.take() else {
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
            .map_err(|_| Error::Pipeline("gc's reference spill thread panicked".into()))?
            .map_err(|e| local_error(dir.path(), e))?;
        let path = dir.path().join("merged");
        let (firsts, len) = merge_runs(&runs, &path).map_err(|e| local_error(&path, e))?;
        for run in &runs {
            let _ = std::fs::remove_file(run);
        }
        let file = File::open(&path).map_err(|e| local_error(&path, e))?;
        self.merged = Some(Merged {
            _dir: dir,
            path,
            file,
            firsts,
            len,
        });
        Ok(())
    }

    /// Whether `id` may be referenced. Only valid after [`Self::finish`].
    /// Reads 512 bytes of local disk (the page cache, mostly) when the set
    /// spilled.
    ///
    /// # Errors
    /// [`Error::Source`] if the spilled file cannot be read.
    pub(crate) fn contains(&self, id: &BlobId) -> Result<bool> {
        let wanted = prefix(id);
        let Some(merged) = &self.merged else {
            return Ok(self.sorted.binary_search(&wanted).is_ok());
        };
        // The last block whose first prefix is not above `wanted`.
        let block = merged.firsts.partition_point(|first| *first <= wanted);
        let Some(block) = block.checked_sub(1) else {
            return Ok(false);
        };
        let start = block * BLOCK;
        let count = BLOCK.min(merged.len - start);
        let mut bytes = [0u8; 8 * BLOCK];
        let bytes = bytes.get_mut(..8 * count).unwrap_or_default();
        merged
            .file
            .read_exact_at(bytes, (start * 8) as u64)
            .map_err(|e| local_error(&merged.path, e))?;
        let found = bytes
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
            .any(|p| p == wanted);
        Ok(found)
    }

    /// Distinct prefixes held. Only valid after [`Self::finish`].
    pub(crate) fn len(&self) -> usize {
        self.merged.as_ref().map_or(self.sorted.len(), |m| m.len)
    }

    /// Whether the set went to disk.
    #[cfg(test)]
    fn spilled(&self) -> bool {
        self.merged.is_some()
    }
}

fn write_run(path: &Path, run: &[u64]) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    for p in run {
        out.write_all(&p.to_be_bytes())?;
    }
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    Ok(())
}

/// One sorted run being read.
struct RunReader(BufReader<File>);

impl RunReader {
    fn read_next(&mut self) -> std::io::Result<Option<u64>> {
        let mut bytes = [0u8; 8];
        match self.0.read_exact(&mut bytes) {
            Ok(()) => Ok(Some(u64::from_be_bytes(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Merges sorted runs into one sorted, deduplicated file at `out`;
/// returns the first prefix of each block and the number of prefixes.
fn merge_runs(runs: &[PathBuf], out: &Path) -> std::io::Result<(Vec<u64>, usize)> {
    let mut readers = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::new();
    for (i, path) in runs.iter().enumerate() {
        let mut reader = RunReader(BufReader::with_capacity(1 << 16, File::open(path)?));
        if let Some(first) = reader.read_next()? {
            heap.push(Reverse((first, i)));
        }
        readers.push(reader);
    }
    let mut writer = BufWriter::with_capacity(1 << 16, File::create(out)?);
    let mut firsts = Vec::new();
    let mut len = 0usize;
    let mut last = None;
    while let Some(Reverse((value, i))) = heap.pop() {
        if last != Some(value) {
            if len.is_multiple_of(BLOCK) {
                firsts.push(value);
            }
            writer.write_all(&value.to_be_bytes())?;
            len += 1;
            last = Some(value);
        }
        if let Some(next) = readers.get_mut(i).map(RunReader::read_next).transpose()?.flatten() {
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

    #[test]
    fn errs_towards_referenced() {
        let mut set = RefSet::default();
        let a = BlobId([1; 32]);
        let mut same_prefix = [1; 32];
        same_prefix[31] = 9;
        set.insert(&a).unwrap();
        set.insert(&a).unwrap();
        set.finish().unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.contains(&a).unwrap());
        assert!(set.contains(&BlobId(same_prefix)).unwrap());
        assert!(!set.contains(&BlobId([2; 32])).unwrap());
    }

    fn id(prefix: u64, tail: u8) -> BlobId {
        let mut bytes = [tail; 32];
        bytes[..8].copy_from_slice(&prefix.to_be_bytes());
        BlobId(bytes)
    }

    #[test]
    fn spills_over_budget_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = RefSet::with_budget(Some(dir.path()), 100);
        for i in 0..1000u64 {
            set.insert(&id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 0)).unwrap();
            set.insert(&id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1)).unwrap();
        }
        set.finish().unwrap();
        assert!(set.spilled());
        assert_eq!(set.len(), 1000);
        assert!(set.contains(&id(7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15), 5)).unwrap());
        assert!(!set.contains(&id(1, 0)).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(set);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spill directory is removed"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The spilled set, at any budget, answers exactly like a set of prefixes in memory.
        #[test]
        fn spilled_answers_like_memory(
            inserted in proptest::collection::vec(any::<u64>(), 0..3000),
            small in proptest::collection::vec(0u64..64, 0..500),
            probes in proptest::collection::vec(any::<u64>(), 0..200),
            budget in 1usize..700,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut spilled = RefSet::with_budget(Some(dir.path()), budget);
            let mut memory = RefSet::with_budget(None, usize::MAX);
            let mut model = BTreeSet::new();
            for p in inserted.iter().chain(&small) {
                spilled.insert(&id(*p, 3)).unwrap();
                memory.insert(&id(*p, 4)).unwrap();
                model.insert(*p);
            }
            spilled.finish().unwrap();
            memory.finish().unwrap();
            prop_assert_eq!(spilled.len(), model.len());
            prop_assert_eq!(memory.len(), model.len());
            for p in inserted.iter().chain(&small).chain(&probes).chain(&[0, u64::MAX]) {
                let expected = model.contains(p);
                prop_assert_eq!(spilled.contains(&id(*p, 9)).unwrap(), expected);
                prop_assert_eq!(memory.contains(&id(*p, 9)).unwrap(), expected);
            }
        }
    }
}
