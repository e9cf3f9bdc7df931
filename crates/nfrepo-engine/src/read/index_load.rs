//! Index loading: the deltas, through the local index cache when there is one.

use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_format::{IndexDelta, IndexId};
use nfrepo_store::ObjectKey;

use super::LIST_CONCURRENCY;
use crate::index::Index;
use crate::objects::{self, Fetched};
use crate::{Error, Repository, Result};

impl Repository {
    /// Loads the index. Call after listing snapshots (see [`Index`]).
    ///
    /// With a local cache ([`Self::with_index_cache`]) only the deltas the
    /// cache has not seen are fetched, and the cache is rebuilt from every
    /// delta when one it holds has gone or been superseded. Otherwise every
    /// delta is fetched into memory.
    ///
    /// # Errors
    /// Storage errors, local cache errors, or [`Error::Corrupted`] for a damaged delta.
    pub async fn load_index(&self) -> Result<Index> {
        // A delta that vanishes between listing and reading was merged by a
        // concurrent compaction, which wrote its replacement first: list again.
        let mut attempts = 0;
        loop {
            match self.load_index_once().await {
                Err(Error::Store(e)) if e.kind() == nfrepo_store::ErrorKind::NotFound && attempts < 3 => {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// The index as the local cache holds it, without listing the deltas:
    /// `None` without a cache directory, or when the cache is empty or does
    /// not answer (load it with [`Self::load_index`] then). Only a backup
    /// that knows the cache is recent enough calls this (`crate::backup`).
    pub(crate) async fn load_index_unlisted(&self) -> Option<Index> {
        let dir = self.index_cache_dir()?.to_owned();
        crate::index::load_unlisted(self, dir).await
    }

    async fn load_index_once(&self) -> Result<Index> {
        let listed = objects::list::<IndexDelta>(self).await?;
        let Some(dir) = self.index_cache_dir() else {
            return Ok(Index::from_deltas(self.fetch_deltas(listed).await?));
        };
        match crate::index::load_cached(self, dir.to_owned(), &listed).await {
            Ok(index) => Ok(index),
            // The cache only saves work: without it, the index is loaded into
            // memory. (Other storage errors, such as a delta gone missing, are
            // the repository's and go to the caller.)
            Err(Error::Store(e)) if e.kind() == nfrepo_store::ErrorKind::Other => {
                tracing::warn!(error = %e, "local index cache unusable; loading the index into memory");
                Ok(Index::from_deltas(self.fetch_deltas(listed).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches and opens index deltas, several at a time, through the
    /// typed object layer. Every delta is needed: a damaged one is its
    /// error, and one gone since the listing (merged by a compaction) is a
    /// storage `NotFound`, on which [`Self::load_index`] lists again.
    pub(crate) async fn fetch_deltas(&self, deltas: Vec<(IndexId, ObjectKey)>) -> Result<Vec<(IndexId, IndexDelta)>> {
        let put_only = self.is_put_only();
        let fetched: Vec<Option<(IndexId, IndexDelta)>> = stream::iter(deltas)
            .map(|(id, key)| async move {
                match objects::fetch::<IndexDelta>(self, &id, &key).await? {
                    Fetched::Good(delta) => Ok(Some((id, delta))),
                    // A put-only session reads only the deltas sealed under
                    // its index key (put-only.md); it deduplicates against
                    // those and stores again what only the others list.
                    Fetched::Damaged(Error::Format(nfrepo_format::Error::MissingKey { .. })) if put_only => Ok(None),
                    Fetched::Damaged(error) => Err(error),
                    Fetched::Vanished => Err(Error::store(
                        nfrepo_store::Error::new(
                            nfrepo_store::ErrorKind::NotFound,
                            "index delta gone since the listing",
                        )
                        .with_key(&key),
                    )),
                }
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
    }
}
