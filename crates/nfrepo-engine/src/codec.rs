//! One blob codec per worker thread.
//!
//! A [`BlobCodec`] holds zstd contexts that are costly to build and cannot
//! be shared between threads, so each rayon or blocking-pool thread keeps
//! its own, tied to the repository it was made for: a process that works
//! on two repositories never opens one's blobs with the other's keys.

use std::cell::RefCell;

use nfrepo_format::{BlobCodec, RepoId};

use crate::{Error, Repository, Result};

thread_local! {
    static CODEC: RefCell<Option<(RepoId, BlobCodec)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's codec for `repo`, making it on first use.
pub(crate) fn with_codec<T>(repo: &Repository, f: impl FnOnce(&mut BlobCodec) -> Result<T>) -> Result<T> {
    CODEC.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(id, _)| *id != repo.id()) {
            *slot = Some((repo.id(), repo.codec()?));
        }
        match slot.as_mut() {
            Some((_, codec)) => f(codec),
            None => Err(Error::Pipeline("no blob codec".into())),
        }
    })
}
