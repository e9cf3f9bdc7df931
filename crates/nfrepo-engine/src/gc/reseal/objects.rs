//! Resealing the small objects: index deltas, GC plans, snapshots and their
//! markers, drill records, the config.
//!
//! An object is old when it does not open under the current epoch alone
//! (the repository from [`Repository::current_epoch_only`]); it is then
//! opened with the whole ring and written again. One that opens under no
//! live epoch stops the reseal with its error: nothing is dropped while
//! something cannot be read ([`Error::Corrupted`]; `check` and `repair`
//! deal with it).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use nfrepo_format::{
    DrillRecord, GcPlan, GoodMarker, IndexDelta, ProtectMarker, Snapshot, SnapshotId, decode_config_body,
    decode_config_header, encode_config,
};
use nfrepo_store::{ErrorKind, ObjectKey, PutMode};

use super::super::{compact, deltas, plans};
use super::{RESEALED_FROM, ResealReport};
use crate::lease::GcLease;
use crate::objects::{self, Fetched, RepoObject};
use crate::{Error, Repository, Result};

/// An object rewritten in place under its own name.
trait Reseal: RepoObject {
    /// The stored bytes, sealed with `repo`'s sealer (the current epoch).
    fn seal(&self, repo: &Repository) -> nfrepo_format::Result<Vec<u8>>;
}

macro_rules! reseal_by_encode {
    ($($object:ty),*) => {$(
        impl Reseal for $object {
            fn seal(&self, repo: &Repository) -> nfrepo_format::Result<Vec<u8>> {
                self.encode(repo.sealer(), &repo.id())
            }
        }
    )*};
}

reseal_by_encode!(ProtectMarker, GoodMarker, DrillRecord);

/// Seals every older small object again (see the module docs).
pub(super) async fn reseal_objects(
    repo: &Repository,
    current: &Repository,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    compact_deltas(repo, current, lease, report).await?;
    reseal_plans(repo, current, lease, report).await?;
    reseal_snapshots(repo, current, lease, report).await?;
    rewrite_in_place::<ProtectMarker>(repo, current, lease, report).await?;
    rewrite_in_place::<GoodMarker>(repo, current, lease, report).await?;
    rewrite_in_place::<DrillRecord>(repo, current, lease, report).await?;
    reseal_config(repo, current, lease, report).await
}

/// What a dry run reports: the small objects that would be sealed again.
pub(super) async fn survey(repo: &Repository, report: &mut ResealReport) -> Result<()> {
    let current = repo.current_epoch_only();
    let mut count = |noun: &'static str, n: usize| {
        if n > 0 {
            *report.rewritten.entry(noun).or_default() += n as u64;
        }
    };
    count(
        IndexDelta::NOUN,
        objects::load_all::<IndexDelta>(&current).await?.damaged.len(),
    );
    count(GcPlan::NOUN, objects::load_all::<GcPlan>(&current).await?.damaged.len());
    count(
        Snapshot::NOUN,
        objects::load_all::<Snapshot>(&current).await?.damaged.len(),
    );
    count(
        ProtectMarker::NOUN,
        objects::load_all::<ProtectMarker>(&current).await?.damaged.len(),
    );
    count(
        GoodMarker::NOUN,
        objects::load_all::<GoodMarker>(&current).await?.damaged.len(),
    );
    count(
        DrillRecord::NOUN,
        objects::load_all::<DrillRecord>(&current).await?.damaged.len(),
    );
    count("config", usize::from(!config_is_current(repo, &current).await?));
    Ok(())
}

/// The objects of kind `T` that do not open under the current epoch
/// alone, opened with the whole ring.
async fn older<T: RepoObject>(repo: &Repository, current: &Repository) -> Result<Vec<(T::Id, ObjectKey, T)>> {
    let loaded = objects::load_all::<T>(current).await?;
    let mut out = Vec::new();
    for damaged in loaded.damaged {
        match objects::fetch::<T>(repo, &damaged.id, &damaged.key).await? {
            Fetched::Good(object) => out.push((damaged.id, damaged.key, object)),
            Fetched::Damaged(error) => return Err(error),
            // Deleted since the listing (a forget, an unprotect).
            Fetched::Vanished => {}
        }
    }
    Ok(out)
}

/// Merges the whole index into deltas sealed under the current epoch when
/// any delta is older (the old deltas are deleted after, as in GC).
async fn compact_deltas(
    repo: &Repository,
    current: &Repository,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    if objects::load_all::<IndexDelta>(current).await?.damaged.is_empty() {
        return Ok(());
    }
    let all = deltas::list(repo).await?;
    let mut superseded = HashSet::new();
    for id in &all {
        superseded.extend(deltas::load(repo, id).await?.supersedes);
    }
    let live = deltas::live(&all, &superseded);
    lease.renew().await?;
    let done = compact::compact(repo, &all, &live, &HashSet::new()).await?;
    report.deltas_compacted += done.deltas_before;
    Ok(())
}

/// Writes each older GC plan again (a new plan of the same packs first,
/// then the old one deleted). Its grace period starts again: a pack is
/// never deleted sooner than the plan it was in allowed.
async fn reseal_plans(
    repo: &Repository,
    current: &Repository,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    for (_, key, plan) in older::<GcPlan>(repo, current).await? {
        lease.renew().await?;
        plans::write_plan(repo, &plan).await?;
        lease.ensure_held().await?;
        repo.store().delete(&key).await.map_err(Error::store)?;
        *report.rewritten.entry(GcPlan::NOUN).or_default() += 1;
    }
    Ok(())
}

/// Writes each older snapshot again under its new id (the hash of its new
/// bytes), with `resealed_from` = its old id, moves its protect and good
/// markers, and deletes the old snapshot. A snapshot already written again
/// by an interrupted run is found by its `resealed_from`.
async fn reseal_snapshots(
    repo: &Repository,
    current: &Repository,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    let loaded = objects::load_all::<Snapshot>(current).await?;
    let done: HashMap<SnapshotId, SnapshotId> = loaded
        .good
        .iter()
        .filter_map(|stored| {
            let (_, old) = stored.object.extra.iter().find(|(k, _)| k == RESEALED_FROM)?;
            Some((old.parse().ok()?, stored.id))
        })
        .collect();
    for damaged in loaded.damaged {
        let snapshot = match objects::fetch::<Snapshot>(repo, &damaged.id, &damaged.key).await? {
            Fetched::Good(snapshot) => snapshot,
            Fetched::Damaged(error) => return Err(error),
            Fetched::Vanished => continue,
        };
        lease.renew().await?;
        let new_id = match done.get(&damaged.id) {
            Some(id) => *id,
            None => write_again(repo, &damaged.id, snapshot).await?,
        };
        for moved in [
            move_marker::<ProtectMarker>(repo, &damaged.id, &new_id, |m, id| m.snapshot = id).await?,
            move_marker::<GoodMarker>(repo, &damaged.id, &new_id, |m, id| m.snapshot = id).await?,
        ] {
            report.markers_moved += u64::from(moved);
        }
        lease.ensure_held().await?;
        repo.store().delete(&damaged.key).await.map_err(Error::store)?;
        tracing::info!(old = %damaged.id, new = %new_id, "resealed a snapshot under a new id");
        report.snapshots.push((damaged.id, new_id));
    }
    Ok(())
}

/// Writes `snapshot` (stored as `old`) again, sealed under the current
/// epoch, recording `old` in `extra`; returns its new id.
async fn write_again(repo: &Repository, old: &SnapshotId, mut snapshot: Snapshot) -> Result<SnapshotId> {
    snapshot.extra.retain(|(key, _)| key != RESEALED_FROM);
    snapshot.extra.push((RESEALED_FROM.to_owned(), old.to_hex()));
    snapshot.extra.sort();
    let (id, bytes) = snapshot.encode(repo.sealer(), &repo.id()).map_err(Error::Format)?;
    let key = objects::key::<Snapshot>(&id)?;
    match repo.store().put(&key, Bytes::from(bytes), PutMode::CreateNew).await {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(Error::store(e)),
        _ => {}
    }
    Ok(id)
}

/// Moves the marker of kind `T` of snapshot `old` to `new` (written for
/// `new` first, then deleted for `old`); returns whether there was one.
async fn move_marker<T>(
    repo: &Repository,
    old: &SnapshotId,
    new: &SnapshotId,
    retarget: impl Fn(&mut T, SnapshotId),
) -> Result<bool>
where
    T: Reseal<Id = SnapshotId>,
{
    let old_key = objects::key::<T>(old)?;
    let mut marker = match objects::fetch::<T>(repo, old, &old_key).await? {
        Fetched::Good(marker) => marker,
        Fetched::Vanished => return Ok(false),
        Fetched::Damaged(error) => return Err(error),
    };
    retarget(&mut marker, *new);
    let bytes = marker.seal(repo).map_err(Error::Format)?;
    repo.put_marker(&objects::key::<T>(new)?, bytes).await?;
    repo.store().delete(&old_key).await.map_err(Error::store)?;
    Ok(true)
}

/// Rewrites each older object of kind `T` in place, under its own name.
async fn rewrite_in_place<T: Reseal>(
    repo: &Repository,
    current: &Repository,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    let older = older::<T>(repo, current).await?;
    if older.is_empty() {
        return Ok(());
    }
    lease.renew().await?;
    for (_, key, object) in older {
        let bytes = object.seal(repo).map_err(Error::Format)?;
        repo.store()
            .put(&key, Bytes::from(bytes), PutMode::Overwrite)
            .await
            .map_err(Error::store)?;
        *report.rewritten.entry(T::NOUN).or_default() += 1;
    }
    Ok(())
}

/// Whether the config's body opens under the current epoch alone.
pub(super) async fn config_is_current(repo: &Repository, current: &Repository) -> Result<bool> {
    let bytes = repo.store().get(&ObjectKey::config()).await.map_err(Error::store)?;
    let (header, sealed) = decode_config_header(&bytes).map_err(|e| Error::decode("config", e))?;
    match decode_config_body(&header, sealed, current.sealer()) {
        Ok(_) => Ok(true),
        // An object of a put-only session of an older epoch names a key
        // the current epoch alone cannot derive: older too.
        Err(nfrepo_format::Error::Authentication { .. } | nfrepo_format::Error::MissingKey { .. }) => Ok(false),
        Err(e) => Err(Error::decode("config", e)),
    }
}

/// Rewrites the config in place under the current epoch (its plaintext is
/// unchanged), if it is older.
async fn reseal_config(
    repo: &Repository,
    current: &Repository,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    if config_is_current(repo, current).await? {
        return Ok(());
    }
    let bytes = repo.store().get(&ObjectKey::config()).await.map_err(Error::store)?;
    let (header, sealed) = decode_config_header(&bytes).map_err(|e| Error::decode("config", e))?;
    let body = decode_config_body(&header, sealed, repo.sealer()).map_err(|e| Error::decode("config", e))?;
    let again = encode_config(&header, &body, repo.sealer()).map_err(Error::Format)?;
    lease.renew().await?;
    repo.store()
        .put(&ObjectKey::config(), Bytes::from(again), PutMode::Overwrite)
        .await
        .map_err(Error::store)?;
    *report.rewritten.entry("config").or_default() += 1;
    Ok(())
}
