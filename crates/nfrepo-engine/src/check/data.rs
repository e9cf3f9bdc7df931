//! The read-data pass of a check: download packs, check their BLAKE3 name,
//! and open, decompress and re-hash every blob in them.
//!
//! Which packs are read: all, a fixed part by pack id (`n/t`), or a share
//! or byte budget taken least-recently-verified first, using the local
//! cache's record of clean verifications. So a daily `--read-data-subset 5%`
//! reads every pack once in 20 days before it reads any twice.
//!
//! No blob list is held for the whole pass (issue 14): a pack's entries
//! come from its own trailer when it is read, compared with the index's
//! through the digest of its entries the load pass kept
//! ([`PackSummary::entries`]), and the index's list is read again from the
//! pack's delta only when the two disagree or the pack does not read. So
//! memory is the packs in flight ([`CONCURRENCY`], each whole) and their
//! entries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use nfrepo_format::{BlobId, IndexDelta, PackEntry, PackId};
use nfrepo_store::Cache;

use super::load::{Loaded, object_problem, pack_path};
use super::{CheckOptions, Findings, ReadDataSubset};
use crate::index::{PackSummary, entries_digest};
use crate::{Error, ErrorCode, Repository, Result};

/// Packs downloaded and verified at once (each is held in memory whole).
const CONCURRENCY: usize = 4;

/// What the read-data pass did.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub packs: u64,
    pub bytes: u64,
    pub fresh: u64,
}

/// What verifying one pack found.
#[derive(Debug, Default)]
struct PackVerdict {
    /// Problems with the pack as a whole.
    pack: Vec<String>,
    /// Blobs that fail, with why.
    blobs: Vec<(BlobId, String)>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
}

/// Chooses the packs to read, in order.
fn select<'a>(
    candidates: Vec<&'a PackSummary>,
    subset: ReadDataSubset,
    last_checked: &HashMap<String, i64>,
    fresh_after: Option<i64>,
) -> (Vec<&'a PackSummary>, u64) {
    let total = candidates.len();
    let is_fresh = |p: &PackSummary| {
        fresh_after.is_some_and(|after| last_checked.get(&p.id.to_hex()).is_some_and(|t| *t >= after))
    };
    let mut fresh = 0u64;
    let mut eligible: Vec<(usize, &PackSummary)> = Vec::new();
    for (i, pack) in candidates.into_iter().enumerate() {
        if is_fresh(pack) {
            fresh += 1;
        } else {
            eligible.push((i, pack));
        }
    }
    let chosen = match subset {
        ReadDataSubset::All => eligible.into_iter().map(|(_, p)| p).collect(),
        ReadDataSubset::Part { n, of } => eligible
            .into_iter()
            .filter(|(i, _)| *i as u64 % u64::from(of) == u64::from(n - 1))
            .map(|(_, p)| p)
            .collect(),
        ReadDataSubset::Percent(_) | ReadDataSubset::Bytes(_) => {
            // Never-verified packs first, then the longest ago; ties by id.
            eligible.sort_by_key(|(i, p)| (last_checked.get(&p.id.to_hex()).copied().unwrap_or(i64::MIN), *i));
            let mut out = Vec::new();
            match subset {
                ReadDataSubset::Percent(share) => {
                    let count = ((total as f64) * share / 100.0).ceil() as usize;
                    out.extend(eligible.into_iter().take(count.max(1)).map(|(_, p)| p));
                }
                ReadDataSubset::Bytes(budget) => {
                    let mut sum = 0u64;
                    for (_, pack) in eligible {
                        if sum >= budget {
                            break;
                        }
                        sum += pack.size;
                        out.push(pack);
                    }
                }
                _ => {}
            }
            out
        }
    };
    (chosen, fresh)
}

/// Runs the read-data pass over the indexed packs (those in `scope`, if given).
pub(crate) async fn read_data(
    repo: &Repository,
    loaded: &Loaded,
    scope: Option<&HashSet<PackId>>,
    subset: ReadDataSubset,
    options: &CheckOptions,
    findings: &mut Findings,
) -> Result<ReadStats> {
    let cache: Option<Arc<Cache>> = options.cache.clone();
    let last_checked: HashMap<String, i64> = match &cache {
        Some(cache) => {
            let cache = cache.clone();
            blocking(move || cache.pack_checks().map_err(Error::store))
                .await?
                .into_iter()
                .collect()
        }
        None => HashMap::new(),
    };
    let now = chrono::Utc::now().timestamp();
    let fresh_after = options
        .max_age_secs
        .map(|age| now.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)));
    let mut candidates: Vec<&PackSummary> = loaded
        .packs
        .values()
        .filter(|p| !loaded.bad_packs.contains_key(&p.id))
        .filter(|p| scope.is_none_or(|s| s.contains(&p.id)))
        .collect();
    candidates.sort_by_key(|p| p.id);
    let (chosen, fresh) = select(candidates, subset, &last_checked, fresh_after);

    let mut stats = ReadStats {
        fresh,
        ..ReadStats::default()
    };
    let work = options.work.as_deref();
    if let Some(work) = work {
        work.phase(
            "reading packs",
            chosen.len() as u64,
            chosen.iter().map(|p| p.size).sum(),
        );
    }
    let mut results = stream::iter(chosen)
        .map(|pack| async move { (pack, verify_one(repo, pack).await) })
        .buffer_unordered(CONCURRENCY);
    while let Some((pack, result)) = results.next().await {
        let path = pack_path(pack.kind, &pack.id);
        crate::work::advance(work, 1, pack.size);
        let verdict = match result {
            Ok(verdict) => verdict,
            Err(e) => {
                let Some(code) = object_problem(&e) else {
                    return Err(e);
                };
                findings.add(
                    code,
                    path,
                    Some(pack.id),
                    None,
                    format!("pack does not read: {}", super::one_line(&e)),
                );
                // Every blob the index lists in it is lost with it.
                let entries = match index_entries(repo, pack).await? {
                    IndexEntries::Listed(entries) => entries,
                    IndexEntries::Unlisted | IndexEntries::DeltaGone(_) => Vec::new(),
                };
                for blob in entries {
                    findings.add(
                        code,
                        pack_path(pack.kind, &pack.id),
                        Some(pack.id),
                        Some(blob.id),
                        String::new(),
                    );
                }
                continue;
            }
        };
        stats.packs += 1;
        stats.bytes += pack.size;
        let clean = verdict.pack.is_empty() && verdict.blobs.is_empty();
        let mut messages = verdict.pack;
        if let Some((_, first)) = verdict.blobs.first() {
            messages.push(format!(
                "{} blob(s) fail verification (first: {first})",
                verdict.blobs.len()
            ));
        }
        if !clean {
            let message = messages.join("; ");
            findings.add(ErrorCode::BackupCorrupted, path.clone(), Some(pack.id), None, message);
            for (blob, _) in &verdict.blobs {
                findings.add(
                    ErrorCode::BackupCorrupted,
                    path.clone(),
                    Some(pack.id),
                    Some(*blob),
                    String::new(),
                );
            }
        }
        if let Some(cache) = &cache {
            let cache = cache.clone();
            let hex = pack.id.to_hex();
            blocking(move || {
                if clean {
                    cache.record_pack_checked(&hex, now)
                } else {
                    cache.forget_pack_check(&hex)
                }
                .map_err(Error::store)
            })
            .await?;
        }
    }
    Ok(stats)
}

/// Downloads one pack and verifies it against its name and its index entries.
async fn verify_one(repo: &Repository, pack: &PackSummary) -> Result<PackVerdict> {
    let key = crate::read::pack_object_key(pack.kind, &pack.id)?;
    let bytes = repo.store().get(&key).await.map_err(Error::store)?;
    let (mut verdict, agreed) = {
        let (repo, bytes, pack) = (repo.clone(), bytes.clone(), *pack);
        blocking(move || Ok(check_trailer(&repo, &bytes, &pack))).await?
    };
    let entries = match agreed {
        Some(entries) => entries,
        // The blobs are opened as the index lists them, as a restore would.
        None => match index_entries(repo, pack).await? {
            IndexEntries::Listed(entries) => entries,
            IndexEntries::Unlisted => return Ok(verdict),
            IndexEntries::DeltaGone(problem) => {
                verdict.pack.push(problem);
                return Ok(verdict);
            }
        },
    };
    let repo = repo.clone();
    let sealing = pack.sealing;
    blocking(move || {
        crate::codec::with_codec(&repo, |codec| {
            let blob_sealer = match nfrepo_format::pack_sealer(repo.sealer(), sealing.as_ref()) {
                Ok(sealer) => sealer,
                Err(e) => {
                    verdict.pack.push(format!("pack key does not resolve: {e}"));
                    return Ok(verdict);
                }
            };
            for entry in &entries {
                let start = entry.offset as usize;
                let sealed = bytes.get(start..start + entry.sealed_len as usize).unwrap_or_default();
                if let Err(e) = codec.open_with(&blob_sealer, entry.kind, &entry.id, entry.raw_len, sealed) {
                    verdict.blobs.push((entry.id, e.to_string()));
                }
            }
            Ok(verdict)
        })
    })
    .await
}

/// Checks a pack's bytes against its name, and its trailer against the
/// index's entries for it (by their digest). Returns the problems, and the
/// trailer's entries if they are the index's.
fn check_trailer(repo: &Repository, bytes: &[u8], pack: &PackSummary) -> (PackVerdict, Option<Vec<PackEntry>>) {
    let mut verdict = PackVerdict::default();
    let actual = PackId(nfrepo_format::content_hash(bytes));
    if actual != pack.id {
        verdict
            .pack
            .push(format!("pack content hashes to {}, not to its name", actual.short()));
    }
    match nfrepo_format::read_pack_entries(bytes, repo.sealer(), &repo.id()) {
        Ok((_, trailer)) if entries_digest(&trailer) == pack.entries => (verdict, Some(trailer)),
        Ok(_) => {
            verdict.pack.push("pack trailer and index disagree".into());
            (verdict, None)
        }
        Err(e) => {
            verdict.pack.push(format!("pack trailer does not open: {e}"));
            (verdict, None)
        }
    }
}

/// What the index's delta says about a pack when it is read again.
#[derive(Debug)]
enum IndexEntries {
    /// The delta lists the pack, with these blob entries.
    Listed(Vec<PackEntry>),
    /// The delta opens but does not list the pack.
    Unlisted,
    /// The delta no longer opens (removed by a compaction since the load
    /// pass): why, as a line for the pack's finding.
    DeltaGone(String),
}

/// The blob entries the index lists for `pack`, read again from the delta
/// the load pass took them from.
///
/// # Errors
/// Storage failures that are not about the delta.
async fn index_entries(repo: &Repository, pack: &PackSummary) -> Result<IndexEntries> {
    match crate::objects::load_one::<IndexDelta>(repo, &pack.delta).await {
        Ok(delta) => Ok(match delta.packs.into_iter().find(|p| p.id == pack.id) {
            Some(listed) => IndexEntries::Listed(listed.blobs),
            None => IndexEntries::Unlisted,
        }),
        Err(e) if object_problem(&e).is_some() => Ok(IndexEntries::DeltaGone(format!(
            "its index delta {} no longer opens: {}",
            pack.delta.short(),
            super::one_line(&e)
        ))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use nfrepo_format::{IndexId, PackKind};

    use super::*;

    fn pack(n: u8) -> PackSummary {
        PackSummary {
            id: PackId([n; 32]),
            kind: PackKind::Data,
            size: 10,
            sealing: None,
            blobs: 0,
            entries: [0; 32],
            delta: IndexId([0; 32]),
        }
    }

    fn ids(chosen: &[&PackSummary]) -> Vec<u8> {
        chosen.iter().map(|p| p.id.0[0]).collect()
    }

    #[test]
    fn shares_rotate_through_every_pack_before_repeating() {
        let packs: Vec<PackSummary> = (1..=10).map(pack).collect();
        let mut checked: HashMap<String, i64> = HashMap::new();
        let mut seen = Vec::new();
        for round in 0..5 {
            let (chosen, _) = select(packs.iter().collect(), ReadDataSubset::Percent(20.0), &checked, None);
            assert_eq!(chosen.len(), 2);
            for p in &chosen {
                checked.insert(p.id.to_hex(), round);
            }
            seen.extend(ids(&chosen));
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=10).collect::<Vec<u8>>());
        // The sixth round starts over with the ones checked longest ago.
        let (chosen, _) = select(packs.iter().collect(), ReadDataSubset::Percent(20.0), &checked, None);
        assert_eq!(ids(&chosen), vec![1, 2]);
    }

    #[test]
    fn parts_fresh_packs_and_byte_budgets() {
        let packs: Vec<PackSummary> = (1..=6).map(pack).collect();
        let none = HashMap::new();
        let mut all = Vec::new();
        for n in 1..=3 {
            all.extend(ids(&select(
                packs.iter().collect(),
                ReadDataSubset::Part { n, of: 3 },
                &none,
                None,
            )
            .0));
        }
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 3, 4, 5, 6]);
        let recent: HashMap<String, i64> = [(PackId([1; 32]).to_hex(), 100)].into();
        let (chosen, fresh) = select(packs.iter().collect(), ReadDataSubset::All, &recent, Some(50));
        assert_eq!((chosen.len(), fresh), (5, 1));
        let (chosen, _) = select(packs.iter().collect(), ReadDataSubset::Bytes(25), &none, None);
        assert_eq!(chosen.len(), 3);
    }
}
