//! Bringing the local index cache up to date with the repository.
//!
//! Several processes of one host share the cache file, so an update is
//! computed from one [`CacheState`] and applied only if the cache is still
//! at that state's version ([`nfrepo_store::IndexCache::update`]); if
//! another process changed it meanwhile, this one reads the state and lists
//! the deltas again. Order matters: the state is read **before** the listing
//! it is compared with. Then a delta the cache holds but the listing lacks
//! existed before the listing began, and is therefore really gone (delta
//! names are content hashes and never come back); and a rebuild can never
//! take the cache back to an older listing than the one another process
//! already put in it.
//!
//! A delta held by the cache that was removed or superseded (a compaction)
//! may name packs GC has since deleted, so the cache is then rebuilt from
//! every live delta, in the same single transaction that empties it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use nfrepo_format::{IndexDelta, IndexId};
use nfrepo_store::{Applied, CacheUpdate, IndexCache, ObjectKey};

use super::{DeltaRows, Index};
use crate::{Error, Repository, Result};

/// Updates computed and refused because another process changed the cache
/// first, before giving up on the cache for this run.
const ATTEMPTS: usize = 5;

/// Brings the cache under `dir` up to date and returns an index answered by
/// it. `listed` is a listing of the index deltas made by the caller; it is
/// used if it covers what the cache holds, and listed again otherwise.
///
/// # Errors
/// Storage and decoding errors; cache failures as [`Error::Store`] of kind
/// `Other` (the caller then loads the index into memory).
pub(crate) async fn load(repo: &Repository, dir: PathBuf, listed: &[(IndexId, ObjectKey)]) -> Result<Index> {
    match load_once(repo, dir.clone(), listed).await {
        // A damaged file was deleted on the way out: start from an empty one.
        Err(Error::Store(e)) if IndexCache::is_damage(&e) => {
            tracing::warn!(error = %e, "the local index cache is damaged; rebuilding it");
            load_once(repo, dir, listed).await
        }
        other => other,
    }
}

async fn load_once(repo: &Repository, dir: PathBuf, listed: &[(IndexId, ObjectKey)]) -> Result<Index> {
    let id = repo.id().to_hex();
    let cache = Arc::new(blocking(move || IndexCache::open(&dir, &id).map_err(Error::store)).await?);
    let mut listing: Vec<(IndexId, ObjectKey)> = listed.to_vec();
    for attempt in 0..ATTEMPTS {
        let state = {
            let cache = cache.clone();
            blocking(move || cache.state().map_err(|e| discard_if_damaged(&cache, e))).await?
        };
        let live: HashSet<IndexId> = state.live.iter().copied().map(IndexId).collect();
        let dead: HashSet<IndexId> = state.dead.iter().copied().map(IndexId).collect();
        let covers = |listing: &[(IndexId, ObjectKey)]| {
            let ids: HashSet<IndexId> = listing.iter().map(|(id, _)| *id).collect();
            live.iter().all(|id| ids.contains(id))
        };
        // A listing made before the state was read may lack deltas another
        // process added since: it must not make them look removed.
        if attempt > 0 || !covers(&listing) {
            listing = crate::objects::list::<IndexDelta>(repo).await?;
        }
        let listed_ids: HashSet<IndexId> = listing.iter().map(|(id, _)| *id).collect();
        let new: Vec<(IndexId, ObjectKey)> = listing
            .iter()
            .filter(|(id, _)| !live.contains(id) && !dead.contains(id))
            .cloned()
            .collect();
        let mut fetched = repo.fetch_deltas(new).await?;
        // The cache's rows do not record which put-only session sealed a
        // pack (format-spec/put-only.md): such deltas are read into memory.
        if fetched.iter().any(|(_, d)| d.has_sessions()) {
            return Err(Error::store(nfrepo_store::Error::new(
                nfrepo_store::ErrorKind::Other,
                "the index lists packs of put-only sessions, which the local cache cannot hold",
            )));
        }
        let superseded: HashSet<IndexId> = fetched.iter().flat_map(|(_, d)| d.supersedes.iter().copied()).collect();
        let dying: Vec<IndexId> = live
            .iter()
            .filter(|id| !listed_ids.contains(id) || superseded.contains(id))
            .copied()
            .collect();
        let rebuild = !dying.is_empty();
        if rebuild {
            tracing::info!(
                deltas = dying.len(),
                "index deltas the local cache holds were removed or superseded; rebuilding the cache"
            );
            let keep: Vec<(IndexId, ObjectKey)> = listing
                .iter()
                .filter(|(id, _)| live.contains(id) && !dying.contains(id))
                .cloned()
                .collect();
            fetched.extend(repo.fetch_deltas(keep).await?);
        }
        let forget: Vec<[u8; 32]> = dead
            .iter()
            .filter(|id| !listed_ids.contains(id))
            .map(|id| id.0)
            .collect();
        let cache_for_update = cache.clone();
        let applied = blocking(move || {
            apply(
                &cache_for_update,
                state.version,
                &dying,
                &forget,
                rebuild,
                &fetched,
                &superseded,
            )
        })
        .await?;
        let Some(mut held) = applied else {
            tracing::debug!(attempt, "the local index cache changed meanwhile; looking again");
            continue;
        };
        if !rebuild {
            held.extend(live.iter().copied());
        }
        held.retain(|id| listed_ids.contains(id));
        let cache = Arc::try_unwrap(cache).map_err(|_| Error::Pipeline("index cache still shared".into()))?;
        return blocking(move || Index::cached(cache, held)).await;
    }
    Err(Error::store(nfrepo_store::Error::new(
        nfrepo_store::ErrorKind::Other,
        format!("the local index cache kept changing under this process ({ATTEMPTS} attempts)"),
    )))
}

/// The index as the cache under `dir` holds it, without listing the
/// deltas (a backup that may skip the listing: `crate::backup`'s
/// `listing` module says when). `None` when the cache is empty or cannot be
/// read: the caller then loads the index as usual, which lists, and
/// repairs or rebuilds the cache.
pub(crate) async fn unlisted(repo: &Repository, dir: PathBuf) -> Option<Index> {
    let id = repo.id().to_hex();
    let opened = blocking(move || {
        let cache = IndexCache::open(&dir, &id).map_err(Error::store)?;
        let state = cache.state().map_err(Error::store)?;
        if state.live.is_empty() {
            return Ok(None);
        }
        Index::cached(cache, state.live.into_iter().map(IndexId).collect()).map(Some)
    })
    .await;
    opened.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "the local index cache does not answer as it stands; listing the deltas");
        None
    })
}

/// Applies one update; `None` if the cache changed since `version`,
/// otherwise the deltas added.
fn apply(
    cache: &IndexCache,
    version: i64,
    dying: &[IndexId],
    forget: &[[u8; 32]],
    rebuild: bool,
    fetched: &[(IndexId, IndexDelta)],
    superseded: &HashSet<IndexId>,
) -> Result<Option<Vec<IndexId>>> {
    let adding: Vec<&(IndexId, IndexDelta)> = fetched.iter().filter(|(id, _)| !superseded.contains(id)).collect();
    let rows: Vec<DeltaRows> = adding.iter().map(|(id, delta)| DeltaRows::new(*id, delta)).collect();
    let packs: Vec<Vec<nfrepo_store::PackToCache<'_>>> = rows.iter().map(DeltaRows::packs).collect();
    let deltas: Vec<nfrepo_store::DeltaToCache<'_>> = rows.iter().zip(&packs).map(|(r, p)| r.delta(p)).collect();
    let dead: Vec<[u8; 32]> = dying.iter().map(|id| id.0).collect();
    let update = CacheUpdate {
        expected_version: version,
        dead: &dead,
        forget,
        rebuild,
        deltas: &deltas,
    };
    Ok(match cache.update(&update).map_err(|e| discard_if_damaged(cache, e))? {
        Applied::Done => Some(adding.iter().map(|(id, _)| *id).collect()),
        Applied::Stale => None,
    })
}

/// Deletes the cache file when `error` says it is damaged (other processes
/// keep the file they have open; the next open creates a new one).
fn discard_if_damaged(cache: &IndexCache, error: nfrepo_store::Error) -> Error {
    if IndexCache::is_damage(&error) {
        IndexCache::delete_files(cache.path());
    }
    Error::store(error)
}

impl Repository {
    /// The index loaded from every live delta into memory, bypassing the
    /// local cache: what [`Index::recover`] falls back to.
    ///
    /// # Errors
    /// Storage and decoding errors.
    pub(crate) async fn load_index_uncached(&self) -> Result<Index> {
        let listing = crate::objects::list::<IndexDelta>(self).await?;
        Ok(Index::from_deltas(self.fetch_deltas(listing).await?))
    }
}

/// Runs short local work (the SQLite cache) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
}
