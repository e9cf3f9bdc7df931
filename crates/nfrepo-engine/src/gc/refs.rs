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
