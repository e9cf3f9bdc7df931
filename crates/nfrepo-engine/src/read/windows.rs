//! Metadata blobs read through windows of their tree pack.
//!
//! A walk of a snapshot (a backup comparing with its parent, a restore, `ls`,
//! `find`, `diff`, a mount) reads every directory's tree, and a large file's
//! content is found through its lists, one blob at a time,
//! each from wherever the index puts it. A backup writes all of a
//! snapshot's trees into a few tree packs, so the trees a walk needs lie
//! close together, but in the order their directories were finished
//! (children first), not the order a walk asks for them (parents first).
//! Fetched one request each, a tree of 3,500 directories on S3 cost 3,500
//! round trips: about 5 s of a 6 s incremental and most of a restore.
//!
//! So a metadata blob is not fetched alone: the aligned [`WINDOW_BYTES`]
//! block of its tree pack that holds it is fetched once (extended to the
//! blob's end, clamped to the pack's indexed size) and kept, and every blob
//! that lies in a kept block is cut out of it. At most [`WINDOWS_KEPT`]
//! blocks are kept, each under 2 MiB (a blob larger than a block is
//! fetched alone and not kept), whatever the tree's size; callers asking
//! for blocks being fetched wait for that one request. That request is a
//! shared future, driven by whichever of its callers is polled: a caller
//! that stops polling (a list read buffered ahead in a content stream that
//! is set aside while an inner list is read, or a planner waiting to hand
//! over its batch) does not hold up the others. With a `OnceCell` the
//! first caller ran the fetch for everyone, so a restore whose buffered
//! list read had started a block that the list being read next needed
//! waited for itself, for ever. Blocks are aligned
//! rather than started at the blob asked for, so a walk that goes
//! backwards through the pack (parents after children) reuses them too.
//! Only bytes are shared: each blob is still opened (authenticated under
//! its id, decompressed, checked) by the caller, and a block that cannot be
//! fetched whole (a pack shorter than the index says) falls back to the
//! blob's own range.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use nfrepo_format::PackId;

use super::{Reader, pack_key};
use crate::index::BlobLocation;
use crate::{Error, Result};

/// The block of a tree pack fetched for one metadata blob: several
/// hundred directory trees of a few KiB.
pub(crate) const WINDOW_BYTES: u64 = 1 << 20;
/// Blocks kept: the memory a walk's metadata reads hold at most.
pub(crate) const WINDOWS_KEPT: usize = 8;

/// The one fetch of a block, shared by every caller that needs it: `None`
/// if it failed (each caller then reads its own blob's range, and the next
/// caller fetches the block again).
type Block = Shared<BoxFuture<'static, Option<Bytes>>>;

/// The kept blocks, by pack and block number.
pub(crate) type Windows = Arc<Mutex<lru::LruCache<(PackId, u64), Block>>>;

/// An empty set of kept blocks.
pub(crate) fn windows() -> Windows {
    Arc::new(Mutex::new(lru::LruCache::new(
        NonZeroUsize::new(WINDOWS_KEPT).unwrap_or(NonZeroUsize::MIN),
    )))
}

impl Reader {
    /// The sealed bytes of the metadata blob at `location`, cut from its
    /// pack's kept block (fetched first if need be).
    ///
    /// # Errors
    /// As the store's ranged read of the blob itself.
    pub(super) async fn sealed_from_window(&self, location: &BlobLocation) -> Result<Bytes> {
        let object = pack_key(location)?;
        let start = u64::from(location.offset);
        let end = start + u64::from(location.sealed_len);
        let key = block_of(location);
        let poisoned = || Error::Pipeline("tree pack windows poisoned".into());
        let block = {
            let mut kept = self.windows.lock().map_err(|_| poisoned())?;
            kept.get_or_insert(key, || {
                let store = Arc::clone(self.repo.store());
                let (object, range) = (
                    object.clone(),
                    block_range(location, self.index.pack_size(&location.pack)),
                );
                async move { store.get_range(&object, range).await.ok() }
                    .boxed()
                    .shared()
            })
            .clone()
        };
        let from = key.1 * WINDOW_BYTES;
        let fetched = block.clone().await;
        if fetched.is_none() {
            let mut kept = self.windows.lock().map_err(|_| poisoned())?;
            if kept.peek(&key).is_some_and(|kept| kept.ptr_eq(&block)) {
                kept.pop(&key);
            }
        }
        match fetched {
            Some(bytes) if from + bytes.len() as u64 >= end => {
                let at = usize::try_from(start - from).unwrap_or(usize::MAX);
                let len = location.sealed_len as usize;
                Ok(bytes.slice(at..at.saturating_add(len).min(bytes.len())))
            }
            // The block could not be fetched whole, or ended before this
            // blob (its pack's size was not indexed): the blob's own range
            // decides.
            _ => self
                .repo
                .store()
                .get_range(&object, start..end)
                .await
                .map_err(Error::store),
        }
    }
}

/// The kept block a blob is cut from: its pack and the number of the
/// aligned [`WINDOW_BYTES`] block it starts in.
fn block_of(location: &BlobLocation) -> (PackId, u64) {
    (location.pack, u64::from(location.offset) / WINDOW_BYTES)
}

/// The bytes of the pack fetched for the block of `location`: the aligned
/// block, extended to the blob's end, clamped to the pack's size when it is
/// known (else only up to the blob's end).
fn block_range(location: &BlobLocation, pack_size: Option<u64>) -> std::ops::Range<u64> {
    let from = block_of(location).1 * WINDOW_BYTES;
    let end = u64::from(location.offset) + u64::from(location.sealed_len);
    from..pack_size.map_or(end, |size| (from + WINDOW_BYTES).min(size).max(end))
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::at;
    use super::*;

    #[test]
    fn a_block_stays_in_its_pack_and_within_its_bound() {
        let bound = u32::try_from(WINDOW_BYTES).unwrap();
        assert_ne!(block_of(&at(1, 0, 100)), block_of(&at(2, 100, 100)), "another pack");
        assert_eq!(
            block_of(&at(1, 5000, 900)),
            block_of(&at(1, 1000, 1000)),
            "siblings in any order"
        );
        assert_ne!(block_of(&at(1, 0, 100)), block_of(&at(1, bound, 1)), "a block further");
        assert_eq!(
            block_range(&at(1, 1000, 100), Some(3000)),
            0..3000,
            "clamped to the pack"
        );
        assert_eq!(
            block_range(&at(1, bound - 100, 300), Some(2 * WINDOW_BYTES)),
            0..WINDOW_BYTES + 200,
            "extended to the blob's end"
        );
        assert_eq!(
            block_range(&at(1, 1000, 100), None),
            0..1100,
            "the blob's end without a size"
        );
    }
}
