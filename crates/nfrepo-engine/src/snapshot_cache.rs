//! Snapshot headers through the host's local cache
//! ([`nfrepo_store::ObjectCache`], `<cache dir>/<repository id>.objects.sqlite`),
//! so that what a run costs does not grow with the number of snapshots
//! (issue 14, item 7).
//!
//! Each snapshot is kept as its stored (sealed) bytes and as its decoded
//! header, with its source, profile and time in columns. How far each form
//! is trusted:
//!
//! - **Deciding** (forget, gc, restore, and every caller of
//!   [`crate::Repository::snapshots`] and `readable_snapshots`): the sealed
//!   bytes are opened on every run, as if just fetched (authenticated,
//!   checked against the name); an entry that does not open is fetched
//!   again and replaced.
//! - **Showing** ([`crate::Repository::snapshot_list`], `nfrepo snapshots`):
//!   the decoded headers, not opened again. Each one was decoded from bytes
//!   that opened when it entered the cache; the cache is the operator's
//!   file (`0600`). Nothing is decided on them.
//! - **Nominating a backup's parent** ([`parent`]): the latest cached
//!   snapshot of the source and profile is only a candidate; the backup
//!   fetches it from the repository (which confirms that it still exists,
//!   after the backup's marker is written and its plans read, as the
//!   listing did: format-spec/gc.md, "A backup", step 3) and opens it.
//!
//! Both loads list `snapshots/` (names only), read the cache **before**
//! listing (so that an entry the listing lacks existed before the listing
//! began and is really gone: names are content hashes and never come
//! back), fetch only names not cached, and drop entries no longer listed.
//! A backup that commits adds its own snapshot, so the next backup of the
//! host finds it without listing. Entries of the earlier layout (sealed
//! bytes only) are opened and moved over as they are met.
//!
//! The cache only saves work: when it cannot be opened or written, the
//! snapshots are fetched, and a backup lists them.

use std::collections::HashMap;
use std::path::PathBuf;

use nfrepo_format::{Snapshot, SnapshotId};
use nfrepo_store::{CachedSnapshot, ObjectCache, ObjectKind, SnapshotRow};

use crate::objects::{self, Fetched, Loaded, RepoObject, Stored};
use crate::{Repository, Result, SnapshotEntry};

/// Which form of the cached entries a load uses (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Open the sealed bytes: for anything decided on the snapshots.
    Sealed,
    /// Decode the cached headers: for display only.
    Decoded,
}

/// What the cache answered about a backup's parent.
#[derive(Debug)]
pub(crate) enum ParentLookup {
    /// The parent (none: the source and profile have no snapshot the host
    /// knows of), fetched from the repository and opened.
    Found(Option<Box<SnapshotEntry>>),
    /// The cache cannot tell: list the snapshots.
    List,
}

/// Opens the cache of `repo` (off the runtime); `None` without a cache
/// directory, or with a warning when it cannot be opened.
async fn open_cache(repo: &Repository) -> Option<ObjectCache> {
    let dir: PathBuf = repo.index_cache_dir()?.to_path_buf();
    let repo_id = repo.id().to_hex();
    match blocking(move || ObjectCache::open(&dir, &repo_id)).await {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(error = %e, "local object cache unusable; fetching every snapshot");
            None
        }
    }
}

/// Every snapshot of the repository: listed, taken from the cache as
/// `trust` says, the rest fetched (and cached). Without a usable cache,
/// every snapshot is fetched. Unlike [`objects::load_all`], `good` is in
/// no particular order: the caller sorts it by time (sorting 10,000
/// headers by name first was a tenth of `nfrepo snapshots`' CPU).
///
/// # Errors
/// Storage failures that are not about one snapshot.
pub(crate) async fn load(repo: &Repository, trust: Trust) -> Result<Loaded<Snapshot>> {
    let Some(cache) = open_cache(repo).await else {
        return objects::load_all(repo).await;
    };
    let started_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    // The cache before the listing (see the module docs).
    let read = blocking(move || {
        let rows = cache.snapshots(trust == Trust::Decoded)?;
        let earlier = cache.load(ObjectKind::Snapshot)?;
        Ok((cache, rows, earlier))
    })
    .await;
    let listed = objects::list_names(repo, ObjectKind::Snapshot).await?;
    let (cache, rows, earlier) = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %e, "local object cache unusable; fetching every snapshot");
            return objects::load_listed(repo, listed).await;
        }
    };
    let (named, foreign) = objects::split_names::<Snapshot>(listed);
    let mut cached: HashMap<String, Vec<u8>> = rows.into_iter().map(|r| (r.name, r.bytes)).collect();
    let mut earlier: HashMap<String, Vec<u8>> = earlier.into_iter().collect();
    let mut loaded = Loaded {
        foreign,
        good: Vec::with_capacity(named.len()),
        ..Loaded::default()
    };
    let mut missing = Vec::new();
    // Entries of the earlier layout that opened: moved to the new one.
    let mut moved: Vec<(String, Vec<u8>)> = Vec::new();
    for (id, info) in named {
        let name = info.key.name();
        let opened = if let Some(bytes) = cached.remove(name) {
            match trust {
                Trust::Sealed => Snapshot::open(repo, &id, &bytes).map_err(|e| e.to_string()),
                Trust::Decoded => Snapshot::decode_plain(&bytes).map_err(|e| e.to_string()),
            }
        } else if let Some(bytes) = earlier.remove(name) {
            let opened = Snapshot::open(repo, &id, &bytes).map_err(|e| e.to_string());
            if opened.is_ok() {
                moved.push((name.to_owned(), bytes));
            }
            opened
        } else {
            missing.push((id, info));
            continue;
        };
        match opened {
            Ok(object) => loaded.good.push(Stored {
                id,
                key: info.key,
                written: info.last_modified,
                object,
            }),
            Err(error) => {
                tracing::warn!(object = %info.key, %error, "a cached snapshot does not open; fetching it again");
                missing.push((id, info));
            }
        }
    }
    // Cached entries the listing lacks were removed from the repository.
    let stale: Vec<String> = cached.into_keys().chain(earlier.into_keys()).collect();
    let fetched = objects::fetch_listed::<Snapshot>(repo, missing).await?;
    let mut put = loaded.sort_in(fetched);
    put.extend(moved.into_iter().map(|(name, bytes)| (name, bytes::Bytes::from(bytes))));
    // Only what is new is written: most runs put nothing.
    let headers: HashMap<&str, &Snapshot> = if put.is_empty() {
        HashMap::new()
    } else {
        loaded.good.iter().map(|s| (s.key.name(), &s.object)).collect()
    };
    // (name, sealed, header, source, profile, time) of each new entry.
    type Entry = (String, bytes::Bytes, Vec<u8>, String, String, i64);
    let entries: Vec<Entry> = put
        .into_iter()
        .filter_map(|(name, sealed)| {
            let s = *headers.get(name.as_str())?;
            let header = s.encode_plain().ok()?;
            Some((name, sealed, header, s.source.clone(), s.profile.clone(), s.time_ns))
        })
        .collect();
    let updated = blocking(move || {
        let rows: Vec<SnapshotRow<'_>> = entries
            .iter()
            .map(|(name, sealed, header, source, profile, time_ns)| SnapshotRow {
                name,
                source,
                profile,
                time_ns: *time_ns,
                sealed,
                header,
            })
            .collect();
        cache.update_snapshots(&rows, &stale, Some(started_ns))
    })
    .await;
    if let Err(e) = updated {
        tracing::warn!(error = %e, "cannot update the local object cache");
    }
    Ok(loaded)
}

/// The parent of a backup of `source` with `profile`, from the cache
/// without listing, when `fresh` accepts the time its last full listing of
/// the snapshots began (see the module docs); [`ParentLookup::List`] when
/// it does not, when there is no cache, or when the candidate is gone or
/// does not open (the listing then brings the cache up to date).
///
/// A snapshot of the source written by another host since that listing is
/// not a candidate until the next listing (`nfrepo snapshots`, forget, or
/// a backup's hourly full start): the parent only spares reading unchanged
/// files, so an older one costs time, never data.
///
/// # Errors
/// Storage failures fetching the candidate.
pub(crate) async fn parent(
    repo: &Repository,
    source: &str,
    profile: &str,
    fresh: impl Fn(i64) -> bool,
) -> Result<ParentLookup> {
    let Some(cache) = open_cache(repo).await else {
        return Ok(ParentLookup::List);
    };
    let (source_owned, profile_owned) = (source.to_owned(), profile.to_owned());
    let asked = blocking(move || {
        let listed = cache.snapshots_listed_ns()?;
        let latest = cache.latest_snapshot(&source_owned, &profile_owned)?;
        Ok((cache, listed, latest))
    })
    .await;
    let (cache, listed, latest) = match asked {
        Ok(asked) => asked,
        Err(e) => {
            tracing::warn!(error = %e, "local object cache unusable; listing the snapshots");
            return Ok(ParentLookup::List);
        }
    };
    if !listed.is_some_and(fresh) {
        return Ok(ParentLookup::List);
    }
    let Some(CachedSnapshot { name, .. }) = latest else {
        return Ok(ParentLookup::Found(None));
    };
    let Some(id) = Snapshot::parse_name(&name) else {
        return Ok(ParentLookup::List);
    };
    let key = objects::key::<Snapshot>(&id)?;
    match objects::fetch::<Snapshot>(repo, &id, &key).await? {
        Fetched::Good(snapshot) if snapshot.source == source && snapshot.profile == profile => {
            Ok(ParentLookup::Found(Some(Box::new(SnapshotEntry { id, snapshot }))))
        }
        Fetched::Vanished => {
            // Forgotten elsewhere: the listing will say what replaces it.
            let removed = blocking(move || cache.update_snapshots(&[], &[name], None)).await;
            if let Err(e) = removed {
                tracing::warn!(error = %e, "cannot update the local object cache");
            }
            Ok(ParentLookup::List)
        }
        _ => Ok(ParentLookup::List),
    }
}

/// Adds a snapshot this process just committed to the cache, so that the
/// next backup of the host finds its parent without listing. Best effort.
pub(crate) async fn remember(repo: &Repository, id: SnapshotId, sealed: Vec<u8>, snapshot: &Snapshot) {
    let Some(cache) = open_cache(repo).await else {
        return;
    };
    let Ok(header) = snapshot.encode_plain() else {
        return;
    };
    let (source, profile, time_ns) = (snapshot.source.clone(), snapshot.profile.clone(), snapshot.time_ns);
    let done = blocking(move || {
        let name = id.to_hex();
        let row = SnapshotRow {
            name: &name,
            source: &source,
            profile: &profile,
            time_ns,
            sealed: &sealed,
            header: &header,
        };
        cache.update_snapshots(&[row], &[], None)
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "cannot add the new snapshot to the local object cache");
    }
}

/// Runs short local work (the SQLite cache) off the async workers.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> nfrepo_store::Result<R> + Send + 'static,
) -> nfrepo_store::Result<R> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        nfrepo_store::Error::new(nfrepo_store::ErrorKind::Other, format!("object cache task failed: {e}"))
    })?
}
