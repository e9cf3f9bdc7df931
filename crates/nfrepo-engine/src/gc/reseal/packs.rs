//! Resealing packs: every blob of a pack sealed under an older key epoch is
//! opened, verified and sealed again under the current epoch into new packs.
//!
//! Which packs: those an index delta lists and no GC plan names (a planned
//! pack is on its way out, or GC unmarks it and a later run reseals it).
//! Whether a pack is old is told by its trailer alone (two range reads):
//! every pack writer seals blobs and trailer under the same epoch (a
//! repack too, since it reseals the blobs it copies), and the final check
//! ([`super::finish`]) reads every blob anyway.

use std::collections::{BTreeMap, HashSet};

use nfrepo_format::{
    Aad, IndexDelta, IndexedPack, PackBuilder, PackId, PackKind, PlanReason, PlannedPack, SealedBlob, decode_trailer,
    trailer_len,
};
use zeroize::Zeroizing;

use super::super::{deltas, plans};
use super::{ResealOptions, ResealReport};
use crate::lease::GcLease;
use crate::read::pack_object_key;
use crate::{Error, Repository, Result};

/// A pack as the index lists it: id, kind, stored size.
pub(super) type Listed = (PackId, PackKind, u64);

/// Reseals every indexed, unplanned pack whose trailer does not open under
/// `current` (the repository with the current epoch only), in batches.
pub(super) async fn reseal_packs(
    repo: &Repository,
    current: &Repository,
    options: &ResealOptions,
    lease: &mut GcLease,
    report: &mut ResealReport,
) -> Result<()> {
    let work = options.gc.work.as_deref();
    let candidates = indexed_unplanned(repo).await?;
    if let Some(work) = work {
        work.phase("resealing packs", candidates.len() as u64, 0);
    }
    let mut batch: Vec<Listed> = Vec::new();
    for (id, kind, size) in candidates {
        report.packs_checked += 1;
        match trailer_is_current(repo, current, &id, kind, size).await? {
            Some(true) => {
                report.packs_current += 1;
                crate::work::advance(work, 1, 0);
            }
            None => crate::work::advance(work, 1, 0),
            Some(false) => batch.push((id, kind, size)),
        }
        if batch.len() >= options.batch_packs.max(1) {
            reseal_batch(repo, &std::mem::take(&mut batch), lease, work, report).await?;
        }
    }
    if !batch.is_empty() {
        reseal_batch(repo, &batch, lease, work, report).await?;
    }
    Ok(())
}

/// What a dry run reports: the packs that would be resealed.
pub(super) async fn survey(repo: &Repository, report: &mut ResealReport) -> Result<()> {
    let current = repo.current_epoch_only();
    for (id, kind, size) in indexed_unplanned(repo).await? {
        report.packs_checked += 1;
        match trailer_is_current(repo, &current, &id, kind, size).await? {
            Some(false) => report.resealed.add(size),
            Some(true) | None => report.packs_current += 1,
        }
    }
    Ok(())
}

/// The packs the live index deltas list and no GC plan names, by id.
pub(super) async fn indexed_unplanned(repo: &Repository) -> Result<Vec<Listed>> {
    let planned: HashSet<PackId> = plans::read_plans(repo)
        .await?
        .iter()
        .flat_map(|p| p.plan.packs.iter().map(|pack| pack.id))
        .collect();
    let all = deltas::list(repo).await?;
    let mut superseded = HashSet::new();
    let mut per_delta = Vec::with_capacity(all.len());
    for id in &all {
        let delta = deltas::load(repo, id).await?;
        superseded.extend(delta.supersedes.iter().copied());
        let packs: Vec<Listed> = delta.packs.iter().map(|p| (p.id, p.kind, p.size)).collect();
        per_delta.push((*id, packs));
    }
    let mut packs: BTreeMap<PackId, (PackKind, u64)> = BTreeMap::new();
    for (id, listed) in per_delta {
        if superseded.contains(&id) {
            continue;
        }
        for (pack, kind, size) in listed {
            if !planned.contains(&pack) {
                packs.insert(pack, (kind, size));
            }
        }
    }
    Ok(packs.into_iter().map(|(id, (kind, size))| (id, kind, size)).collect())
}

/// Whether the pack's trailer opens under `current`'s key alone; `None`
/// for a pack the index lists but the storage does not hold (`check`
/// reports it; there is nothing to reseal).
pub(super) async fn trailer_is_current(
    repo: &Repository,
    current: &Repository,
    id: &PackId,
    kind: PackKind,
    size: u64,
) -> Result<Option<bool>> {
    let key = pack_object_key(kind, id)?;
    let damaged = |detail: &str| Error::Corrupted {
        object: key.path(),
        source: nfrepo_format::Error::Malformed {
            what: "pack",
            detail: detail.to_owned(),
        },
    };
    let end = size
        .checked_sub(4)
        .ok_or_else(|| damaged("shorter than its trailer length"))?;
    let tail = match repo.store().get_range(&key, end..size).await {
        Ok(tail) => tail,
        Err(e) if e.kind() == nfrepo_store::ErrorKind::NotFound => {
            tracing::warn!(pack = %key, "an indexed pack is missing from storage; nothing to reseal");
            return Ok(None);
        }
        Err(e) => return Err(Error::store(e)),
    };
    let len = trailer_len(&tail).map_err(|e| Error::decode(key.path(), e))? as u64;
    let start = end
        .checked_sub(len)
        .ok_or_else(|| damaged("trailer longer than the pack"))?;
    let sealed = repo.store().get_range(&key, start..end).await.map_err(Error::store)?;
    match decode_trailer(&sealed, size, current.sealer(), &repo.id()) {
        Ok(_) => Ok(Some(true)),
        // An object of a put-only session of an older epoch names a key
        // the current epoch alone cannot derive: older too.
        Err(nfrepo_format::Error::Authentication { .. } | nfrepo_format::Error::MissingKey { .. }) => Ok(Some(false)),
        Err(e) => Err(Error::decode(key.path(), e)),
    }
}

/// Reseals one batch of old packs: a GC plan naming them first (reason
/// `Resealed`), then the new packs, then one index delta for those.
pub(super) async fn reseal_batch(
    repo: &Repository,
    batch: &[Listed],
    lease: &mut GcLease,
    work: Option<&crate::Work>,
    report: &mut ResealReport,
) -> Result<()> {
    lease.renew().await?;
    let mut plan = nfrepo_format::GcPlan {
        created_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        packs: batch
            .iter()
            .map(|&(id, kind, size)| PlannedPack {
                id,
                kind,
                size,
                reason: PlanReason::Resealed,
            })
            .collect(),
    };
    plan.packs.sort_by_key(|p| p.id);
    plans::write_plan(repo, &plan).await?;
    let pack_size = repo.config().pack_size as usize;
    let mut builders = [
        (PackKind::Data, PackBuilder::new(PackKind::Data, pack_size)),
        (PackKind::Tree, PackBuilder::new(PackKind::Tree, pack_size)),
    ];
    let mut written: Vec<IndexedPack> = Vec::new();
    for &(id, kind, size) in batch {
        lease.renew().await?;
        let key = pack_object_key(kind, &id)?;
        let bytes = repo.store().get(&key).await.map_err(Error::store)?;
        let opener = repo.clone();
        let blobs = tokio::task::spawn_blocking(move || reseal_blobs(&opener, &id, &bytes))
            .await
            .map_err(|e| Error::Pipeline(e.to_string()))??;
        let slot = usize::from(kind == PackKind::Tree);
        for blob in blobs {
            let Some((kind, builder)) = builders.get_mut(slot) else {
                continue;
            };
            if builder.len() + blob.sealed.len() > pack_size && !builder.is_empty() {
                let full = std::mem::replace(builder, PackBuilder::new(*kind, pack_size));
                written.push(upload(repo, full).await?);
            }
            builder.add(&blob).map_err(Error::Format)?;
            report.blobs += 1;
        }
        report.resealed.add(size);
        crate::work::advance(work, 1, size);
        crate::failpoint::step(crate::failpoint::RESEAL, report.resealed.packs);
    }
    for (_, builder) in builders {
        if !builder.is_empty() {
            written.push(upload(repo, builder).await?);
        }
    }
    for pack in &written {
        report.written.add(pack.size);
    }
    if !written.is_empty() {
        lease.ensure_held().await?;
        repo.write_index_delta(&IndexDelta {
            packs: written,
            supersedes: Vec::new(),
        })
        .await?;
    }
    tracing::info!(
        packs = batch.len(),
        "resealed a batch of packs under the current key epoch"
    );
    Ok(())
}

/// Verifies a whole old pack (every blob opened, decompressed and
/// re-hashed under the whole ring) and seals each blob's compressed bytes
/// again under the current epoch: same id, kind and lengths.
fn reseal_blobs(repo: &Repository, id: &PackId, bytes: &[u8]) -> Result<Vec<SealedBlob>> {
    let object = format!("pack {id}");
    let mut codec = repo.codec()?;
    let (_, entries, faults) =
        nfrepo_format::verify_pack(id, bytes, &mut codec, &repo.id()).map_err(|e| Error::decode(object.clone(), e))?;
    if let Some(fault) = faults.into_iter().next() {
        return Err(Error::decode(format!("blob {} in {object}", fault.id), fault.error));
    }
    let current = repo.keys().current_sealer(repo.cipher());
    // A put-only session's pack: its blobs open under the session's key.
    let (_, sealing, _) = nfrepo_format::decode_pack_sealing(bytes).map_err(|e| Error::decode(object.clone(), e))?;
    let sealer =
        nfrepo_format::pack_sealer(repo.sealer(), sealing.as_ref()).map_err(|e| Error::decode(object.clone(), e))?;
    entries
        .iter()
        .map(|entry| {
            let start = entry.offset as usize;
            let sealed = bytes
                .get(start..start + entry.sealed_len as usize)
                .ok_or_else(|| Error::Corrupted {
                    object: object.clone(),
                    source: nfrepo_format::Error::Malformed {
                        what: "pack",
                        detail: "a blob lies outside the pack".into(),
                    },
                })?;
            let aad = Aad::blob(entry.kind.sealed_kind(), &entry.id);
            let framed = Zeroizing::new(
                sealer
                    .open("blob", aad, sealed)
                    .map_err(|e| Error::decode(object.clone(), e))?,
            );
            Ok(SealedBlob {
                id: entry.id,
                kind: entry.kind,
                raw_len: entry.raw_len,
                sealed: current.seal(aad, &framed).map_err(Error::Format)?,
            })
        })
        .collect()
}

/// Seals a pack's trailer and uploads it through the backup uploader, which
/// verifies it first like every other pack writer.
async fn upload(repo: &Repository, builder: PackBuilder) -> Result<IndexedPack> {
    let finished = builder.finish(repo.sealer(), &repo.id()).map_err(Error::Format)?;
    crate::backup::upload::upload_one(repo, finished).await
}
