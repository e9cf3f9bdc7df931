//! The first pass of a check: snapshots, index deltas and the pack listing,
//! each object opened on its own so that one damaged object is one finding.
//!
//! The deltas are streamed, a few in flight, into an index on local disk
//! ([`IndexBuilder`]): what stays in memory is one [`PackSummary`] per pack,
//! never a blob list (issue 14). The index is built from the repository's
//! deltas, not from the local cache, which may be what is damaged.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use nfrepo_format::{IndexDelta, PackId, PackKind, Snapshot};
use nfrepo_store::ObjectKey;

use super::Findings;
use crate::index::{BuiltIndex, Index, IndexBuilder, PackSummary};
use crate::objects::{self, Damaged, Fetched, RepoObject, Stored};
use crate::read::{SnapshotEntry, pack_object_key};
use crate::{Error, ErrorClass, ErrorCode, Operation, Repository, Result};

/// Metadata objects fetched at once.
const CONCURRENCY: usize = 16;

/// Index deltas fetched at once: each holds up to 50,000 blob entries
/// (about 2.4 MB decoded) until its turn comes to be indexed.
const DELTA_CONCURRENCY: usize = 4;

/// Listings of the deltas made when deltas vanish while being read.
const DELTA_ATTEMPTS: usize = 4;

/// Why a pack cannot be read.
#[derive(Clone, Debug)]
pub(crate) struct PackProblem {
    pub code: ErrorCode,
    pub message: String,
}

/// What the load pass found.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Snapshots that opened, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// The index built from the deltas that opened (on local disk past 8 MiB).
    pub index: Arc<Index>,
    /// Every indexed pack, without its blobs (the first delta naming it wins).
    pub packs: HashMap<PackId, PackSummary>,
    /// Indexed packs that are missing or of the wrong size.
    pub bad_packs: HashMap<PackId, PackProblem>,
    /// Packs in storage that no index names.
    pub stray: Vec<PackId>,
    /// Blobs stored in more than one pack.
    pub duplicate_blobs: u64,
}

impl Loaded {
    /// The snapshots `specs` name (all if empty).
    pub fn select(&self, specs: &[String]) -> Result<Vec<SnapshotEntry>> {
        if specs.is_empty() {
            return Ok(self.snapshots.clone());
        }
        let mut out: Vec<SnapshotEntry> = Vec::new();
        for spec in specs {
            let entry = crate::select_snapshot(self.snapshots.clone(), spec)?;
            if !out.iter().any(|e| e.id == entry.id) {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

/// The store path of a pack, for findings.
pub(crate) fn pack_path(kind: PackKind, id: &PackId) -> String {
    pack_object_key(kind, id).map_or_else(|_| format!("pack {id}"), |k| k.path())
}

/// The finding an error of reading an object makes, by the engine's one
/// classification ([`Error::class`]): damaged, missing or unusable objects
/// are findings; the storage failing (`None`) aborts the check.
pub(crate) fn object_problem(err: &Error) -> Option<ErrorCode> {
    let class = err.class();
    (class.is_damage() || class == ErrorClass::Invalid).then(|| class.code(Operation::Inspect))
}

/// Runs the load pass. Snapshots are listed before index deltas (see [`crate::Index`]).
pub(crate) async fn load(repo: &Repository, findings: &mut Findings) -> Result<Loaded> {
    let snapshots = load_snapshots(repo, findings).await?;
    let BuiltIndex {
        index,
        packs,
        duplicate_blobs,
    } = load_index(repo, findings).await?;
    let packs: HashMap<PackId, PackSummary> = packs.into_iter().map(|p| (p.id, p)).collect();

    let present = objects::list_packs(repo).await?;
    let mut present: HashMap<PackId, u64> = present.into_iter().map(|(id, info)| (id, info.size)).collect();
    // A listing may lag behind writes (eventually consistent stores) or be
    // cut short: ask for each indexed pack it did not show before calling it missing.
    let unlisted: Vec<(PackId, PackKind)> = packs
        .values()
        .filter(|p| !present.contains_key(&p.id))
        .map(|p| (p.id, p.kind))
        .collect();
    let found: Vec<Option<(PackId, u64)>> = stream::iter(unlisted)
        .map(|(id, kind)| async move {
            let key = pack_object_key(kind, &id).ok()?;
            repo.store().stat(&key).await.ok().map(|info| (id, info.size))
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    present.extend(found.into_iter().flatten());
    let mut bad_packs = HashMap::new();
    for pack in packs.values() {
        let problem = match present.get(&pack.id) {
            None => Some(PackProblem {
                code: ErrorCode::BackupNotFound,
                message: "pack is indexed but missing from storage".into(),
            }),
            Some(size) if *size != pack.size => Some(PackProblem {
                code: ErrorCode::BackupCorrupted,
                message: format!("pack is {size} bytes, the index says {}", pack.size),
            }),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            findings.add(
                problem.code,
                pack_path(pack.kind, &pack.id),
                Some(pack.id),
                None,
                problem.message.clone(),
            );
            bad_packs.insert(pack.id, problem);
        }
    }
    // A blob also stored in a pack that is present (stored again by a
    // backup that found this one gone, issue 17) is read from there.
    index.prefer_packs_other_than(
        bad_packs
            .iter()
            .filter(|(_, problem)| problem.code == ErrorCode::BackupNotFound)
            .map(|(id, _)| *id),
    );
    let mut stray: Vec<PackId> = present.keys().filter(|id| !packs.contains_key(id)).copied().collect();
    stray.sort();
    Ok(Loaded {
        snapshots,
        index: Arc::new(index),
        packs,
        bad_packs,
        stray,
        duplicate_blobs,
    })
}

/// Every snapshot that opens, oldest first; each one that does not is a finding.
pub(crate) async fn load_snapshots(repo: &Repository, findings: &mut Findings) -> Result<Vec<SnapshotEntry>> {
    let loaded = load_kind::<Snapshot>(repo, findings).await?;
    let mut out: Vec<SnapshotEntry> = loaded
        .into_iter()
        .map(|s| SnapshotEntry {
            id: s.id,
            snapshot: s.object,
        })
        .collect();
    crate::read::sort_oldest_first(&mut out);
    Ok(out)
}

/// Streams every index delta that opens into an index on local disk, in
/// name order; each one that does not open is a finding. Deltas removed
/// since the listing (compacted; the listing may have missed their
/// replacement) make the deltas be listed and read again.
async fn load_index(repo: &Repository, findings: &mut Findings) -> Result<BuiltIndex> {
    let dir = repo.index_cache_dir().map(std::path::Path::to_path_buf);
    for attempt in 1..=DELTA_ATTEMPTS {
        let listed = repo.store().list(IndexDelta::KIND).await.map_err(Error::store)?;
        let (named, foreign) = objects::split_names::<IndexDelta>(listed);
        let mut builder = IndexBuilder::new(dir.as_deref());
        let mut damaged: Vec<Damaged<IndexDelta>> = Vec::new();
        let mut vanished = false;
        let mut fetched = stream::iter(named)
            .map(|(id, info)| async move {
                let outcome = objects::fetch::<IndexDelta>(repo, &id, &info.key).await?;
                Ok::<_, Error>((id, info.key, outcome))
            })
            .buffered(DELTA_CONCURRENCY);
        while let Some(next) = fetched.next().await {
            let (id, key, outcome) = next?;
            match outcome {
                Fetched::Good(delta) => {
                    builder = blocking(move || {
                        builder.add_delta(id, &delta)?;
                        Ok(builder)
                    })
                    .await?;
                }
                Fetched::Damaged(error) => damaged.push(Damaged { id, key, error }),
                Fetched::Vanished => vanished = true,
            }
        }
        drop(fetched);
        if vanished && attempt < DELTA_ATTEMPTS {
            continue;
        }
        report_damaged(findings, &damaged, &foreign);
        return blocking(move || builder.finish()).await;
    }
    Err(Error::Pipeline("index deltas kept vanishing".into()))
}

/// Runs local disk work (the index being built) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
}

/// Every object of kind `T` that opens, in name order. Each damaged object,
/// and each name that is not an id of the kind, is a finding; objects
/// removed since the listing (forgotten snapshots, compacted deltas whose
/// replacement the listing may have missed) make the kind be listed again.
async fn load_kind<T: RepoObject>(repo: &Repository, findings: &mut Findings) -> Result<Vec<Stored<T>>> {
    let mut attempts = 0;
    let loaded = loop {
        let loaded = objects::load_all::<T>(repo).await?;
        if loaded.vanished.is_empty() || attempts == 3 {
            break loaded;
        }
        attempts += 1;
    };
    report_damaged(findings, &loaded.damaged, &loaded.foreign);
    Ok(loaded.good)
}

/// Each damaged object, and each name that is not an id of the kind, as a finding.
fn report_damaged<T: RepoObject>(findings: &mut Findings, damaged: &[Damaged<T>], foreign: &[ObjectKey]) {
    for damaged in damaged {
        let code = object_problem(&damaged.error).unwrap_or(ErrorCode::BackupCorrupted);
        findings.add(
            code,
            damaged.key.path(),
            None,
            None,
            format!("{} does not open: {}", T::NOUN, super::one_line(&damaged.error)),
        );
    }
    for key in foreign {
        findings.add(
            ErrorClass::Corrupted.code(Operation::Inspect),
            key.path(),
            None,
            None,
            format!("the name is not a {} id", T::NOUN),
        );
    }
}
