//! One blob codec per worker thread.
//!
//! A [`BlobCodec`] holds zstd contexts that are costly to build and cannot
//! be shared between threads, so each rayon or blocking-pool thread keeps
//! its own, tied to the repository it was made for: a process that works
//! on two repositories never opens one's blobs with the other's keys.

use std::cell::RefCell;

use nfrepo_format::{BlobCodec, KeyRef, RepoId};

use crate::{Error, Repository, Result};

thread_local! {
    static CODEC: RefCell<Option<((RepoId, KeyRef), BlobCodec)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's codec for `repo`, making it on first use.
pub(crate) fn with_codec<T>(repo: &Repository, f: impl FnOnce(&mut BlobCodec) -> Result<T>) -> Result<T> {
    CODEC.with(|cell| {
        let mut slot = cell.borrow_mut();
        // Keyed by the sealer's reference too: a put-only session of the
        // same repository in this process seals under its own key.
        let key = (repo.id(), repo.sealing_reference());
        if slot.as_ref().is_none_or(|(k, _)| *k != key) {
            *slot = Some((key, repo.codec()?));
        }
        match slot.as_mut() {
            Some((_, codec)) => f(codec),
            None => Err(Error::Pipeline("no blob codec".into())),
        }
    })
}
