//! The first pass of a check: snapshots, index deltas and the pack listing,
//! each object opened on its own so that one damaged object is one finding.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use nfrepo_format::{IndexDelta, IndexId, IndexedPack, PackId, PackKind, Snapshot, SnapshotId};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind};

use super::Findings;
use crate::index::Index;
use crate::read::{SnapshotEntry, pack_object_key};
use crate::{Error, ErrorCode, Repository, Result};

/// Metadata objects fetched at once.
const CONCURRENCY: usize = 16;

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
    /// The index built from the deltas that opened.
    pub index: Arc<Index>,
    /// Every indexed pack with its blobs (the first delta naming it wins).
    pub packs: HashMap<PackId, IndexedPack>,
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

/// Whether a storage error means the object is gone or damaged (a finding)
/// rather than the storage failing (which aborts the check).
pub(crate) fn object_problem(err: &Error) -> Option<ErrorCode> {
    match err {
        Error::Store(e) if e.kind() == ErrorKind::NotFound => Some(ErrorCode::BackupNotFound),
        Error::Store(e) if e.kind() == ErrorKind::Corrupted => Some(ErrorCode::BackupCorrupted),
        Error::Corrupted { .. } => Some(ErrorCode::BackupCorrupted),
        Error::Format(e) if e.is_corruption() => Some(ErrorCode::BackupCorrupted),
        Error::Format(_) => Some(ErrorCode::SnapshotInvalid),
        Error::Missing { .. } => Some(ErrorCode::SnapshotInvalid),
        _ => None,
    }
}

/// Runs the load pass. Snapshots are listed before index deltas (see [`crate::Index`]).
pub(crate) async fn load(repo: &Repository, findings: &mut Findings) -> Result<Loaded> {
    let snapshots = load_snapshots(repo, findings).await?;
    let deltas = load_deltas(repo, findings).await?;

    let superseded: HashSet<IndexId> = deltas.iter().flat_map(|(_, d)| d.supersedes.iter().copied()).collect();
    let mut packs: HashMap<PackId, IndexedPack> = HashMap::new();
    let mut index = Index::default();
    for (id, delta) in deltas {
        if superseded.contains(&id) {
            continue;
        }
        for pack in delta.packs {
            if packs.contains_key(&pack.id) {
                continue;
            }
            index.add_pack(&pack);
            packs.insert(pack.id, pack);
        }
    }
    let total: usize = packs.values().map(|p| p.blobs.len()).sum();
    index.finish();
    let duplicate_blobs = total.saturating_sub(index.len()) as u64;

    let mut present: HashMap<PackId, u64> = HashMap::new();
    for kind in [ObjectKind::Data, ObjectKind::Tree] {
        for info in repo.store().list(kind).await.map_err(Error::store)? {
            if let Ok(id) = info.key.name().parse::<PackId>() {
                present.insert(id, info.size);
            }
        }
    }
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

pub(crate) async fn load_snapshots(repo: &Repository, findings: &mut Findings) -> Result<Vec<SnapshotEntry>> {
    let listed = repo.store().list(ObjectKind::Snapshot).await.map_err(Error::store)?;
    let results: Vec<(ObjectKey, Result<SnapshotEntry>)> = stream::iter(listed)
        .map(|info| async move {
            let result = async {
                let id: SnapshotId = info.key.name().parse().map_err(|e| Error::decode(info.key.path(), e))?;
                let bytes = repo.store().get(&info.key).await.map_err(Error::store)?;
                let snapshot = Snapshot::decode(&id, &bytes, repo.sealer(), &repo.id())
                    .map_err(|e| Error::decode(info.key.path(), e))?;
                Ok(SnapshotEntry { id, snapshot })
            }
            .await;
            (info.key, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for (key, result) in results {
        match result {
            Ok(entry) => out.push(entry),
            Err(e) => match object_problem(&e) {
                Some(code) => findings.add(
                    code,
                    key.path(),
                    None,
                    None,
                    format!("snapshot does not open: {}", super::one_line(&e)),
                ),
                None => return Err(e),
            },
        }
    }
    out.sort_by_key(|e| (e.snapshot.time_ns, e.id));
    Ok(out)
}

async fn load_deltas(repo: &Repository, findings: &mut Findings) -> Result<Vec<(IndexId, IndexDelta)>> {
    let listed = repo.store().list(ObjectKind::Index).await.map_err(Error::store)?;
    let results: Vec<(ObjectKey, Result<(IndexId, IndexDelta)>)> = stream::iter(listed)
        .map(|info| async move {
            let result = async {
                let id: IndexId = info.key.name().parse().map_err(|e| Error::decode(info.key.path(), e))?;
                let bytes = repo.store().get(&info.key).await.map_err(Error::store)?;
                let delta = IndexDelta::decode(&id, &bytes, repo.sealer(), &repo.id())
                    .map_err(|e| Error::decode(info.key.path(), e))?;
                Ok((id, delta))
            }
            .await;
            (info.key, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for (key, result) in results {
        match result {
            Ok(delta) => out.push(delta),
            Err(e) => match object_problem(&e) {
                Some(code) => findings.add(
                    code,
                    key.path(),
                    None,
                    None,
                    format!("index delta does not open: {}", super::one_line(&e)),
                ),
                None => return Err(e),
            },
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}
