//! Streaming index deltas one at a time, so GC never holds the whole index.

use std::collections::HashSet;

use nfrepo_format::{IndexDelta, IndexId};
use nfrepo_store::ObjectKind;

use crate::objects::{self, RepoObject};
use crate::{Error, Repository, Result};

/// Every delta in the repository, by id.
pub(crate) async fn list(repo: &Repository) -> Result<Vec<IndexId>> {
    let listed = repo.store().list(ObjectKind::Index).await.map_err(Error::store)?;
    Ok(listed
        .into_iter()
        .filter_map(|info| {
            let id = IndexDelta::parse_name(info.key.name());
            if id.is_none() {
                tracing::warn!(object = %info.key, "ignoring an object whose name is not an index delta id");
            }
            id
        })
        .collect())
}

/// Loads and verifies one delta; one gone since the listing is [`Error::Missing`].
pub(crate) async fn load(repo: &Repository, id: &IndexId) -> Result<IndexDelta> {
    objects::load_one::<IndexDelta>(repo, id).await
}

/// The deltas of `all` that no delta of `all` supersedes.
pub(crate) fn live(all: &[IndexId], superseded: &HashSet<IndexId>) -> Vec<IndexId> {
    all.iter().filter(|id| !superseded.contains(id)).copied().collect()
}
