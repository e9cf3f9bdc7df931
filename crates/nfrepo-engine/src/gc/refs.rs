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
//! the prefixes live in a [`SortedRuns`] of 8-byte records, so up to 8 MiB
//! of them are kept in one sorted vector, and past that they spill to
//! sorted runs under the local cache directory, merged into one file with a
//! sparse index of every 64th prefix ([`crate::runs`]). At 10 M blobs that
//! is 80 MB on disk and about 1.3 MB in memory; each lookup reads one block
//! of 512 bytes.

use nfrepo_format::BlobId;

use crate::Result;
use crate::runs::{SortedRuns, blob_prefix};

/// What the set is called in its spill directory's name and in errors.
const LABEL: &str = "gc refs";

/// A set of blob-id prefixes that errs only towards "referenced".
#[derive(Debug)]
pub(crate) struct RefSet(SortedRuns<u64>);

impl Default for RefSet {
    fn default() -> Self {
        Self::new(None)
    }
}

impl RefSet {
    /// An empty set spilling under `dir` (the local cache directory), or
    /// under the system's temporary directory when `None`.
    pub(crate) fn new(dir: Option<&std::path::Path>) -> Self {
        Self(SortedRuns::new(dir, LABEL))
    }

    #[cfg(test)]
    fn with_budget(dir: Option<&std::path::Path>, budget: usize) -> Self {
        Self(SortedRuns::with_budget(dir, LABEL, budget))
    }

    /// Adds a blob.
    ///
    /// # Errors
    /// [`crate::Error::Source`] if a run cannot be written.
    pub(crate) fn insert(&mut self, id: &BlobId) -> Result<()> {
        self.0.insert(blob_prefix(id))
    }

    /// Makes the set ready for [`Self::contains`]: sorts what is in memory,
    /// or merges the spilled runs into one file. Blocks on local disk I/O
    /// when the set spilled: call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`crate::Error::Source`] if a run could not be written or merged.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.0.finish(|_| true)
    }

    /// Whether `id` may be referenced. Only valid after [`Self::finish`].
    /// Reads 512 bytes of local disk (the page cache, mostly) when the set
    /// spilled.
    ///
    /// # Errors
    /// [`crate::Error::Source`] if the spilled file cannot be read.
    pub(crate) fn contains(&self, id: &BlobId) -> Result<bool> {
        Ok(!self.0.find(blob_prefix(id))?.is_empty())
    }

    /// Distinct prefixes held. Only valid after [`Self::finish`].
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set went to disk.
    #[cfg(test)]
    fn spilled(&self) -> bool {
        self.0.spilled()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// What the wrapper adds to its [`SortedRuns`]: a blob counts by the
    /// first 8 bytes of its id, so the set errs only towards "referenced",
    /// in memory and spilled alike. Spilling, merging, cleaning up and
    /// answering like a set in memory are `crate::runs`'s tests.
    #[test]
    fn errs_towards_referenced_in_memory_and_spilled() {
        let a = BlobId([1; 32]);
        let mut same_prefix = [1; 32];
        same_prefix[31] = 9;
        let b = BlobId([3; 32]);
        for (budget, spills) in [(usize::MAX, false), (1, true)] {
            let dir = tempfile::tempdir().unwrap();
            let mut set = RefSet::with_budget(Some(dir.path()), budget);
            for id in [&a, &b, &a, &BlobId(same_prefix)] {
                set.insert(id).unwrap();
            }
            set.finish().unwrap();
            assert_eq!(set.spilled(), spills);
            assert_eq!(set.len(), 2, "one per prefix (budget {budget})");
            assert!(set.contains(&a).unwrap());
            assert!(set.contains(&BlobId(same_prefix)).unwrap());
            assert!(set.contains(&b).unwrap());
            assert!(!set.contains(&BlobId([2; 32])).unwrap());
        }
    }
}
