//! Streaming index deltas one at a time, so GC never holds the whole index.

use std::collections::HashSet;

use nfrepo_format::{IndexDelta, IndexId};

use crate::objects;
use crate::{Repository, Result};

/// Every delta in the repository, by id.
pub(crate) async fn list(repo: &Repository) -> Result<Vec<IndexId>> {
    let listed = objects::list::<IndexDelta>(repo).await?;
    Ok(listed.into_iter().map(|(id, _)| id).collect())
}

/// Loads and verifies one delta; one gone since the listing is [`Error::Missing`].
pub(crate) async fn load(repo: &Repository, id: &IndexId) -> Result<IndexDelta> {
    objects::load_one::<IndexDelta>(repo, id).await
}

/// The deltas of `all` that no delta of `all` supersedes.
pub(crate) fn live(all: &[IndexId], superseded: &HashSet<IndexId>) -> Vec<IndexId> {
    all.iter().filter(|id| !superseded.contains(id)).copied().collect()
}
