//! Rewriting the index: dropping deleted packs and merging deltas.
//!
//! The new deltas are written before the old ones are deleted, and only the
//! **last** new delta names the old ones in `supersedes`. A crash before that
//! last write leaves extra deltas that repeat packs (harmless: readers keep one
//! copy of each blob); after it, readers ignore the old deltas even before they
//! are deleted. Packs are streamed one delta at a time and written out in
//! deltas of at most [`BLOBS_PER_DELTA`] blobs, so memory stays bounded
//! however large the index.

use std::collections::HashSet;

use nfrepo_format::{IndexDelta, IndexId, PackId};

use super::deltas;
use crate::objects;
use crate::{Error, Repository, Result};

/// Blobs per merged delta (about 3 MB sealed).
pub(crate) const BLOBS_PER_DELTA: usize = 50_000;

/// What a compaction did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Compaction {
    pub(crate) deltas_before: usize,
    pub(crate) deltas_after: usize,
    pub(crate) packs_dropped: usize,
}

/// Replaces the deltas `old` (all of them, superseded ones included) by
/// merged deltas of the packs of `live` (those of `old` no other supersedes)
/// without the packs in `drop`.
pub(crate) async fn compact(
    repo: &Repository,
    old: &[IndexId],
    live: &[IndexId],
    drop: &HashSet<PackId>,
) -> Result<Compaction> {
    let mut out = IndexDelta::default();
    let mut blobs = 0usize;
    let mut written: Vec<IndexId> = Vec::new();
    let mut seen_packs: HashSet<PackId> = HashSet::new();
    let mut dropped = 0usize;
    for id in live {
        let delta = deltas::load(repo, id).await?;
        for pack in delta.packs {
            if drop.contains(&pack.id) {
                dropped += 1;
                continue;
            }
            if !seen_packs.insert(pack.id) {
                continue;
            }
            blobs += pack.blobs.len();
            out.packs.push(pack);
            if blobs >= BLOBS_PER_DELTA {
                written.push(write(repo, &std::mem::take(&mut out)).await?);
                blobs = 0;
            }
        }
    }
    // The last delta carries the supersedes list, even if it has no packs.
    out.supersedes = old.to_vec();
    written.push(write(repo, &out).await?);
    for id in old {
        let key = objects::key::<IndexDelta>(id)?;
        repo.store().delete(&key).await.map_err(Error::store)?;
    }
    Ok(Compaction {
        deltas_before: old.len(),
        deltas_after: written.len(),
        packs_dropped: dropped,
    })
}

async fn write(repo: &Repository, delta: &IndexDelta) -> Result<IndexId> {
    repo.write_index_delta(delta).await
}
