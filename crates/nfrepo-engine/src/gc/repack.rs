//! Repacking: copying the live blobs of mostly unused packs into new packs.
//!
//! This is the one place GC reads data packs, and it reads only the live
//! blobs (one range request each). Sealed blobs are copied verbatim: their
//! associated data binds the blob id and kind, not the pack, so a copy opens
//! like the original. Each is opened and re-hashed before it is copied, so
//! a damaged blob is never spread. A blob of an older key epoch is sealed
//! again under the current one instead (same framed bytes), so a pack's
//! blobs are always of its trailer's epoch. The new packs get their own index delta;
//! the old ones go into the run's new plan as `Repacked` and are deleted by
//! a later run like any planned pack, once every referenced blob of theirs
//! has a copy outside the plans (gc.md). Each new pack is verified as a
//! whole before upload by the same function the backup uploader uses.

use nfrepo_format::{IndexDelta, IndexedPack, PackBuilder, PackId, PackKind, SealedBlob};

use super::deltas;
use super::refs::RefSet;
use crate::read::pack_object_key;
use crate::{Error, Repository, Result};

/// Copies the live blobs of `packs` (sorted) into new packs and indexes them.
/// Returns the number of blobs copied and the stored bytes written.
///
/// Lists the index afresh: this run's compaction may have replaced the
/// deltas it started from (under the lease nothing else deletes deltas).
/// Each pack done advances `work` by one.
pub(crate) async fn repack(
    repo: &Repository,
    packs: &[PackId],
    refs: &std::sync::Arc<RefSet>,
    work: Option<&crate::Work>,
) -> Result<(u64, u64)> {
    let live_deltas = deltas::list(repo).await?;
    let pack_size = repo.config().pack_size as usize;
    let mut builders = [
        (PackKind::Data, PackBuilder::new(PackKind::Data, pack_size)),
        (PackKind::Tree, PackBuilder::new(PackKind::Tree, pack_size)),
    ];
    let mut written: Vec<IndexedPack> = Vec::new();
    let mut copied = 0u64;
    let mut done: std::collections::HashSet<PackId> = std::collections::HashSet::new();
    for delta_id in &live_deltas {
        let delta = deltas::load(repo, delta_id).await?;
        for pack in delta.packs {
            if packs.binary_search(&pack.id).is_err() || !done.insert(pack.id) {
                continue;
            }
            let object = pack_object_key(pack.kind, &pack.id)?;
            let slot = usize::from(pack.kind == PackKind::Tree);
            let live = {
                let refs = refs.clone();
                let blobs = pack.blobs.clone();
                tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
                    let mut live = Vec::new();
                    for entry in blobs {
                        if refs.contains(&entry.id)? {
                            live.push(entry);
                        }
                    }
                    Ok(live)
                })
                .await
                .map_err(|e| Error::Pipeline(e.to_string()))??
            };
            for entry in &live {
                let start = u64::from(entry.offset);
                let sealed = repo
                    .store()
                    .get_range(&object, start..start + u64::from(entry.sealed_len))
                    .await
                    .map_err(Error::store)?;
                let mut blob = SealedBlob {
                    id: entry.id,
                    kind: entry.kind,
                    raw_len: entry.raw_len,
                    sealed: sealed.to_vec(),
                };
                let what = || format!("blob {} in pack {}", blob.id, pack.id);
                let sealer = nfrepo_format::pack_sealer(repo.sealer(), pack.sealing.as_ref())
                    .map_err(|e| Error::decode(what(), e))?;
                crate::codec::with_codec(repo, |codec| {
                    codec
                        .open_with(&sealer, blob.kind, &blob.id, blob.raw_len, &blob.sealed)
                        .map(drop)
                        .map_err(|e| Error::decode(what(), e))
                })?;
                reseal_if_older(repo, &sealer, &mut blob)
                    .map_err(|e| Error::decode(format!("blob {} in pack {}", blob.id, pack.id), e))?;
                let Some((kind, builder)) = builders.get_mut(slot) else {
                    continue;
                };
                if builder.len() + blob.sealed.len() > pack_size && !builder.is_empty() {
                    let full = std::mem::replace(builder, PackBuilder::new(*kind, pack_size));
                    written.push(upload(repo, full).await?);
                }
                builder.add(&blob).map_err(Error::Format)?;
                copied += 1;
            }
            crate::work::advance(work, 1, 0);
        }
    }
    for (_, builder) in builders {
        if !builder.is_empty() {
            written.push(upload(repo, builder).await?);
        }
    }
    let bytes = written.iter().map(|p| p.size).sum();
    if !written.is_empty() {
        let delta = IndexDelta {
            packs: written,
            supersedes: Vec::new(),
        };
        repo.write_index_delta(&delta).await?;
    }
    Ok((copied, bytes))
}

/// Seals a blob of an older key epoch again under the current one, so
/// that a pack's blobs are always of its trailer's epoch (a reseal tells a
/// pack's epoch by its trailer, keys.md); a current blob is copied verbatim.
/// Seals a blob again under the current epoch when it was sealed under an
/// older one or under a put-only session's key (`sealer`, the pack's): a
/// repacked blob lands in a pack sealed under the repository's keys.
fn reseal_if_older(
    repo: &Repository,
    sealer: &nfrepo_format::Sealer,
    blob: &mut SealedBlob,
) -> nfrepo_format::Result<()> {
    let aad = nfrepo_format::Aad::blob(blob.kind.sealed_kind(), &blob.id);
    let (epoch, framed) = sealer.open_epoch("blob", aad, &blob.sealed)?;
    if epoch != repo.epoch() || sealer.reference() != nfrepo_format::KeyRef::Repository {
        let framed = zeroize::Zeroizing::new(framed);
        blob.sealed = repo.sealer().seal(aad, &framed)?;
    }
    Ok(())
}

/// Seals a pack and uploads it through the backup uploader, which verifies
/// it first (decrypts and re-hashes every blob) like every other pack writer.
async fn upload(repo: &Repository, builder: PackBuilder) -> Result<IndexedPack> {
    let finished = builder.finish(repo.sealer(), &repo.id()).map_err(Error::Format)?;
    crate::backup::upload::upload_one(repo, finished).await
}
