//! Streaming index deltas one at a time, so GC never holds the whole index.

use std::collections::HashSet;

use nfrepo_format::{IndexDelta, IndexId};
use nfrepo_store::{ObjectKey, ObjectKind};

use crate::{Error, Repository, Result};

/// Every delta in the repository, by id.
pub(crate) async fn list(repo: &Repository) -> Result<Vec<IndexId>> {
    Ok(repo
        .store()
        .list(ObjectKind::Index)
        .await
        .map_err(Error::store)?
        .into_iter()
        .filter_map(|info| info.key.name().parse::<IndexId>().ok())
        .collect())
}

/// Loads and verifies one delta.
pub(crate) async fn load(repo: &Repository, id: &IndexId) -> Result<IndexDelta> {
    let key = ObjectKey::new(ObjectKind::Index, id.to_hex()).map_err(Error::store)?;
    let bytes = repo.store().get(&key).await.map_err(Error::store)?;
    IndexDelta::decode(id, &bytes, repo.sealer(), &repo.id()).map_err(|e| Error::decode(key.to_string(), e))
}

/// The deltas of `all` that no delta of `all` supersedes.
pub(crate) fn live(all: &[IndexId], superseded: &HashSet<IndexId>) -> Vec<IndexId> {
    all.iter().filter(|id| !superseded.contains(id)).copied().collect()
}
