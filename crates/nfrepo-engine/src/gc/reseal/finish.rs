//! The last step of a reseal: check that every object opens under the
//! current key epoch alone, then drop the older epochs.
//!
//! Nothing is dropped while anything older may still be needed: a key slot
//! a rotation has not rewritten yet (its password would open nothing), a
//! live backup that began under an older epoch (what it writes is sealed
//! under that epoch), an old pack waiting for its plan's grace period, an
//! object that opens only under an older epoch. Each is reported as
//! pending, and the next run tries again.

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use nfrepo_format::{
    DrillRecord, GcPlan, GoodMarker, IndexDelta, KeyHistory, KeyRing, Lease, PackId, PackKind, ProtectMarker,
    SessionMarker, Snapshot,
};
use nfrepo_store::{ErrorKind, ObjectKind, PutMode};
use zeroize::Zeroizing;

use super::super::plans;
use super::{ResealOptions, ResealReport, objects as small, packs};
use crate::lease::GcLease;
use crate::objects::{self, RepoObject};
use crate::repository::{history_key, read_slots};
use crate::{Error, Repository, Result};

/// Checks everything (see the module docs) and drops the older epochs when
/// nothing is pending.
pub(super) async fn finish(
    repo: &Repository,
    current: &Repository,
    options: &ResealOptions,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    for stored in read_slots(repo.store().as_ref()).await? {
        if let Ok(slot) = &stored.slot
            && slot.claimed_epoch() < repo.epoch()
        {
            report.pending.push(format!(
                "key slot {} ({}) is still at key epoch {}: finish the rotation with `nfrepo key rotate` first",
                stored.id.short(),
                slot.label,
                slot.claimed_epoch()
            ));
        }
    }
    let (live, _) = crate::session::live_sessions(repo, SystemTime::now()).await?;
    let live: HashSet<String> = live.iter().map(|s| s.key.path()).collect();
    for damaged in objects::load_all::<SessionMarker>(current).await?.damaged {
        if live.contains(&damaged.key.path()) {
            report.pending.push(format!(
                "the backup of session {} began under an older key epoch and is still running",
                damaged.key
            ));
        }
    }
    check_kind::<IndexDelta>(current, report).await?;
    check_kind::<Snapshot>(current, report).await?;
    check_kind::<GcPlan>(current, report).await?;
    check_kind::<ProtectMarker>(current, report).await?;
    check_kind::<GoodMarker>(current, report).await?;
    check_kind::<DrillRecord>(current, report).await?;
    check_kind::<Lease>(current, report).await?;
    if small::config_is_current(repo, current).await? {
        report.verified_objects += 1;
    } else {
        report
            .pending
            .push("the config opens only under an older key epoch".into());
    }
    // Reading every pack is the expensive part: only when it can finish.
    if !report.pending.is_empty() {
        return Ok(());
    }
    check_packs(repo, current, options, lease, report).await?;
    if report.pending.is_empty() {
        drop_older_epochs(repo, current, lease, report).await?;
    }
    Ok(())
}

/// Reports every object of kind `T` that does not open under the current epoch alone.
async fn check_kind<T: RepoObject>(current: &Repository, report: &mut ResealReport) -> Result<()> {
    let loaded = objects::load_all::<T>(current).await?;
    report.verified_objects += loaded.good.len() as u64;
    for damaged in loaded.damaged {
        report.pending.push(format!(
            "{} does not open under key epoch {}: {}",
            damaged.key,
            current.epoch(),
            damaged.error
        ));
    }
    Ok(())
}

/// Reads every pack in storage whole and checks its trailer and every blob
/// under the current epoch alone. An indexed pack that fails (blobs of an
/// older epoch behind a current trailer) is resealed now; a planned or
/// unindexed one waits for GC.
async fn check_packs(
    repo: &Repository,
    current: &Repository,
    options: &ResealOptions,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    let planned: HashSet<PackId> = plans::read_plans(repo)
        .await?
        .iter()
        .flat_map(|p| p.plan.packs.iter().map(|pack| pack.id))
        .collect();
    let listed = objects::list_packs(repo).await?;
    if let Some(work) = options.gc.work.as_deref() {
        work.phase(
            "verifying packs",
            listed.len() as u64,
            listed.iter().map(|(_, info)| info.size).sum(),
        );
    }
    let mut again = Vec::new();
    for (id, info) in listed {
        lease.renew().await?;
        let bytes = match repo.store().get(&info.key).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::store(e)),
        };
        let checker = current.clone();
        let opens = tokio::task::spawn_blocking(move || opens_under(&checker, &id, &bytes))
            .await
            .map_err(|e| Error::Pipeline(e.to_string()))??;
        crate::work::advance(options.gc.work.as_deref(), 1, info.size);
        if opens {
            report.verified_objects += 1;
            continue;
        }
        let kind = if info.key.kind() == ObjectKind::Tree {
            PackKind::Tree
        } else {
            PackKind::Data
        };
        if planned.contains(&id) {
            report.pending.push(format!(
                "{} is sealed under an older key epoch and planned for deletion by gc",
                info.key
            ));
        } else {
            again.push((id, kind, info.size));
        }
    }
    if again.is_empty() {
        return Ok(());
    }
    // Indexed ones are resealed; unindexed ones (left by a backup that
    // never committed) only wait for gc, which plans them.
    let indexed: HashSet<PackId> = packs::indexed_unplanned(repo).await?.iter().map(|p| p.0).collect();
    let (resealable, unindexed): (Vec<_>, Vec<_>) = again.into_iter().partition(|(id, _, _)| indexed.contains(id));
    for (id, _, _) in &unindexed {
        report.pending.push(format!(
            "pack {id} is sealed under an older key epoch and no index lists it: gc deletes it after the grace period"
        ));
    }
    if !resealable.is_empty() {
        report.pending.push(format!(
            "{} packs held blobs of an older key epoch; they were resealed now and their old copies go at the next `nfrepo gc --reseal` after the grace period",
            resealable.len()
        ));
        packs::reseal_batch(repo, &resealable, lease, options.gc.work.as_deref(), report).await?;
    }
    Ok(())
}

/// Whether the whole pack opens under `current` alone: hash, trailer and
/// every blob. Damage (a wrong hash, a blob that does not decompress) is an
/// error, not "older".
fn opens_under(current: &Repository, id: &PackId, bytes: &[u8]) -> Result<bool> {
    let object = format!("pack {id}");
    // A fresh codec: the per-thread one is keyed by repository id only and
    // holds the whole ring.
    let mut codec = current.codec()?;
    match nfrepo_format::verify_pack(id, bytes, &mut codec, &current.id()) {
        Ok((_, _, faults)) if faults.is_empty() => Ok(true),
        Ok((_, _, faults)) => match faults.into_iter().find(|f| {
            !matches!(
                f.error,
                nfrepo_format::Error::Authentication { .. } | nfrepo_format::Error::MissingKey { .. }
            )
        }) {
            Some(fault) => Err(Error::decode(format!("blob {} in {object}", fault.id), fault.error)),
            None => Ok(false),
        },
        // An object of a put-only session of an older epoch names a key
        // the current epoch alone cannot derive: older too.
        Err(nfrepo_format::Error::Authentication { .. } | nfrepo_format::Error::MissingKey { .. }) => Ok(false),
        Err(e) => Err(Error::decode(object, e)),
    }
}

/// Rewrites the current epoch's key history without the older epochs
/// (their audit keys kept as retired) and deletes the histories of older
/// epochs, which hold their secrets.
async fn drop_older_epochs(
    repo: &Repository,
    current: &Repository,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    let epoch = repo.epoch();
    let key = history_key(epoch)?;
    let bytes = match repo.store().get(&key).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::Missing {
                object: key.path(),
                detail: format!("the key history of epoch {epoch} is gone"),
            });
        }
        Err(e) => return Err(Error::store(e)),
    };
    let history =
        KeyHistory::decode(&bytes, epoch, current.sealer(), &repo.id()).map_err(|e| Error::decode(key.path(), e))?;
    if !history.older.is_empty() {
        // `keys/public` must hold the current epoch's key before the older
        // ones go: a key holder replaces only a live epoch's.
        let public = repo
            .key_pair()
            .public()
            .encode_object(&repo.id(), &repo.keys().audit_key);
        let public_key =
            nfrepo_store::ObjectKey::new(ObjectKind::Key, crate::PUBLIC_KEY_OBJECT).map_err(Error::store)?;
        lease.ensure_held().await?;
        repo.store()
            .put(&public_key, Bytes::from(public), PutMode::Overwrite)
            .await
            .map_err(Error::store)?;
        let dropped = KeyRing::dropped_history(&history);
        let sealed = Zeroizing::new(dropped.encode(current.sealer(), &repo.id()).map_err(Error::Format)?);
        lease.ensure_held().await?;
        repo.store()
            .put(&key, Bytes::copy_from_slice(&sealed), PutMode::Overwrite)
            .await
            .map_err(Error::store)?;
        report.dropped_epochs = history.older.iter().map(|e| e.epoch).collect();
        tracing::info!(epoch, dropped = ?report.dropped_epochs, "dropped the older key epochs");
    }
    delete_older_histories(repo, lease).await?;
    report.finished = true;
    Ok(())
}

/// Deletes the key histories of epochs older than the current one.
pub(super) async fn delete_older_histories(repo: &Repository, lease: &mut GcLease) -> Result<()> {
    let older: Vec<_> = repo
        .store()
        .list(ObjectKind::Key)
        .await
        .map_err(Error::store)?
        .into_iter()
        .filter(|info| KeyHistory::parse_name(info.key.name()).is_some_and(|e| e < repo.epoch()))
        .collect();
    if older.is_empty() {
        return Ok(());
    }
    lease.ensure_held().await?;
    for info in older {
        repo.store().delete(&info.key).await.map_err(Error::store)?;
    }
    Ok(())
}
