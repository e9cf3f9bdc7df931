//! The set of referenced blobs, in 8 bytes per blob.
//!
//! GC only needs to answer "may this blob be referenced?", and a wrong "yes"
//! merely keeps a pack one more round. So the set holds the first 8 bytes of
//! each blob id in a sorted vector: 80 MB for 10 M blobs, instead of the
//! 32+ bytes per blob of a set of full ids. Two blobs whose ids share their
//! first 64 bits are both treated as referenced if one is; ids are keyed
//! BLAKE3 outputs, so that happens to about one pair in 2^64 / n.

use nfrepo_format::BlobId;

/// A sorted set of blob-id prefixes that errs only towards "referenced".
#[derive(Debug, Default)]
pub(crate) struct RefSet {
    sorted: Vec<u64>,
    pending: Vec<u64>,
}

/// The prefix a blob is stored under.
pub(crate) fn prefix(id: &BlobId) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(id.0.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(head)
}

impl RefSet {
    /// Adds a blob.
    pub(crate) fn insert(&mut self, id: &BlobId) {
        self.pending.push(prefix(id));
        // Merge before the unsorted tail outgrows the set, so duplicates never pile up.
        if self.pending.len() >= (self.sorted.len() / 2).max(1 << 20) {
            self.merge();
        }
    }

    /// Sorts what was added; call before [`Self::contains`].
    pub(crate) fn merge(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.sorted.append(&mut self.pending);
        self.sorted.sort_unstable();
        self.sorted.dedup();
        self.pending.shrink_to(1 << 20);
    }

    /// Whether `id` may be referenced. Only valid after [`Self::merge`].
    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        self.sorted.binary_search(&prefix(id)).is_ok()
    }

    /// Distinct prefixes held.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn errs_towards_referenced() {
        let mut set = RefSet::default();
        let a = BlobId([1; 32]);
        let mut same_prefix = [1; 32];
        same_prefix[31] = 9;
        set.insert(&a);
        set.insert(&a);
        set.merge();
        assert_eq!(set.len(), 1);
        assert!(set.contains(&a));
        assert!(set.contains(&BlobId(same_prefix)));
        assert!(!set.contains(&BlobId([2; 32])));
    }
}
