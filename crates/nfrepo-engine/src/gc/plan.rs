//! The plan half of a GC round: everything decided, nothing written.
//!
//! [`Repository::plan_gc`] reads sessions, plans, snapshots, the index and
//! the pack listing (in that order, format-spec/gc.md) and returns a
//! [`GcPlan`]: the packs to delete now, the plans resolved, the new plan,
//! the packs to repack, whether the index is compacted. A dry run reports
//! the plan; a real run hands the same value to [`super::apply`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt};
use nfrepo_format::{BlobId, IndexId, PackId, PackKind, PlanReason, PlannedPack};
use nfrepo_store::{ObjectKey, ObjectKind};

use super::refs::RefSet;
use super::{GcOptions, GcReport, Listed, PackUsage, ScannedDelta, deltas, plans, renew, walk};
use crate::index::Index;
use crate::lease::GcLease;
use crate::read::Reader;
use crate::session::{SeenSession, live_sessions};
use crate::{Error, Repository, Result};

/// One GC round, decided: what `apply` deletes, writes and
/// repacks, and the report of it. Computed under the GC lease for a real
/// run, so nothing else changes the plans, the index or the packs it names
/// before it is applied (backups only add).
#[derive(Debug)]
pub struct GcPlan {
    /// The report as planned; applying fills in what was written.
    pub(crate) report: GcReport,
    /// Packs of earlier plans to delete now: id, kind, size.
    pub(crate) doomed: Vec<(PackId, PackKind, u64)>,
    /// Earlier plans fully resolved by this round.
    pub(crate) resolved_plans: Vec<ObjectKey>,
    /// The new plan: unreferenced and old unindexed packs (repacked ones are added when applied).
    pub(crate) new_plan: nfrepo_format::GcPlan,
    /// Partly used packs whose live blobs are copied, then planned.
    pub(crate) repack: Vec<PlannedPack>,
    /// Indexed packs the compacted index leaves out (the doomed ones).
    pub(crate) drop_from_index: HashSet<PackId>,
    /// Whether the index is rewritten.
    pub(crate) compact: bool,
    pub(crate) all_deltas: Vec<IndexId>,
    pub(crate) live_deltas: Vec<IndexId>,
    /// Every referenced blob (by prefix), for the repack.
    pub(crate) refs: Arc<RefSet>,
    /// Markers of crashed backups to remove.
    pub(crate) expired: Vec<ObjectKey>,
}

impl GcPlan {
    /// What the round found and decided (for a dry run, the whole result).
    #[must_use]
    pub const fn report(&self) -> &GcReport {
        &self.report
    }

    /// The packs this round deletes (of plans past their grace period), by id.
    pub fn packs_to_delete(&self) -> impl Iterator<Item = &PackId> {
        self.doomed.iter().map(|(id, _, _)| id)
    }

    /// The packs this round puts in a new plan, with why.
    pub fn packs_to_plan(&self) -> impl Iterator<Item = &PlannedPack> {
        self.new_plan.packs.iter().chain(&self.repack)
    }
}

impl Repository {
    /// Computes what one GC round does (see [`GcPlan`]); writes nothing.
    /// Under `lease` for a real run (renewed after the long tree walk).
    pub(crate) async fn plan_gc(
        &self,
        options: &GcOptions,
        now: SystemTime,
        lease: &mut Option<&mut GcLease>,
    ) -> Result<GcPlan> {
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        // Order matters (format-spec/gc.md): sessions, plans, snapshots, index, packs.
        let (sessions, expired) = live_sessions(self, now).await?;
        report.live_sessions = sessions.len();
        let mut stored_plans = plans::read_plans(self).await?;
        stored_plans.sort_by_key(|p| p.written);
        let snapshots = self.snapshots().await?;
        report.snapshots = snapshots.len();
        let all_deltas = deltas::list(self).await?;
        report.deltas_before = all_deltas.len();

        // Pass 1 over the index: the tree packs (to read trees) and the pack catalogue.
        let (tree_index, mut usage, live_deltas) = self.scan_index(&all_deltas).await?;
        let reader = Reader::new(self.clone(), Arc::new(tree_index));
        let mut refs = RefSet::new(self.index_cache_dir());
        let roots = snapshots
            .iter()
            .map(|e| e.snapshot.root)
            .chain(sessions.iter().filter_map(|s| s.marker.as_ref()?.parent_root));
        report.trees_read = walk::walk(&reader, roots, &mut refs, options.work.as_deref()).await?;
        report.referenced_blobs = refs.len();
        let refs = Arc::new(refs);
        drop(reader);
        renew(lease).await?;

        // Pass 2: how much of each pack is referenced.
        let planned_before: HashSet<PackId> = stored_plans
            .iter()
            .flat_map(|p| p.plan.packs.iter().map(|pack| pack.id))
            .collect();
        let mut planned_refs = self
            .measure_usage(&live_deltas, &refs, &planned_before, &mut usage)
            .await?;
        let covered = self
            .covered_elsewhere(&live_deltas, &planned_before, &mut planned_refs)
            .await?;
        let listed = self.list_packs().await?;
        for (_, size, _) in listed.values() {
            report.total.add(*size);
        }
        let mut to_repack: Vec<PackId> = Vec::new();
        for (id, u) in &usage {
            if u.used_blobs == 0 || u.used_blobs >= u.blobs || planned_before.contains(id) || !listed.contains_key(id) {
                continue;
            }
            let unused = u.size.saturating_sub(u.used_bytes);
            #[expect(clippy::cast_precision_loss, reason = "a ratio of byte counts")]
            let wasteful = unused as f64 > options.max_unused * u.size as f64;
            if wasteful {
                report.repacked.add(u.size);
                to_repack.push(*id);
            } else {
                report.partly_used.add(u.size);
                report.partly_used_unused_bytes += unused;
            }
        }
        to_repack.sort_unstable();

        // Sweep decisions for packs of earlier plans.
        let mut decided: HashSet<PackId> = HashSet::new();
        let mut doomed: Vec<(PackId, PackKind, u64)> = Vec::new();
        let mut resolved_plans = Vec::new();
        for stored in &stored_plans {
            let mut pending = false;
            let age = stored
                .written
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::ZERO);
            let blockers = blocking_sessions(&sessions, &stored.id);
            for pack in &stored.plan.packs {
                if !decided.insert(pack.id) {
                    continue;
                }
                let Some(&(kind, size, _)) = listed.get(&pack.id) else {
                    continue; // already gone
                };
                if usage.get(&pack.id).is_some_and(|u| u.used_blobs > 0) && !covered.contains(&pack.id) {
                    report.unmarked.add(size);
                    continue;
                }
                if age < options.grace {
                    let left = options.grace.saturating_sub(age);
                    report
                        .waiting
                        .entry(format!(
                            "grace period ends in {}",
                            crate::Span::from_secs(left.as_secs().max(1))
                        ))
                        .or_default()
                        .add(size);
                    pending = true;
                } else if let Some(blocker) = &blockers {
                    report.waiting.entry(blocker.clone()).or_default().add(size);
                    pending = true;
                } else {
                    report.deleted.add(size);
                    doomed.push((pack.id, kind, size));
                }
            }
            if !pending {
                resolved_plans.push(stored.key.clone());
            }
        }

        // New plan: unreferenced indexed packs, and old unindexed ones.
        let mut new_plan = nfrepo_format::GcPlan {
            created_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            packs: Vec::new(),
        };
        for (id, u) in &usage {
            if u.used_blobs == 0 && !decided.contains(id) && listed.contains_key(id) {
                new_plan
                    .packs
                    .push(planned(*id, u.kind, u.size, PlanReason::Unreferenced));
            }
        }
        for (id, (kind, size, modified)) in &listed {
            let old_enough = modified
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= options.grace);
            if !usage.contains_key(id) && !decided.contains(id) && old_enough {
                new_plan.packs.push(planned(*id, *kind, *size, PlanReason::Unindexed));
            }
        }
        for p in &new_plan.packs {
            report.planned.add(p.size);
        }

        report.deltas_after = report.deltas_before;
        let drop_from_index: HashSet<PackId> = doomed
            .iter()
            .filter(|(id, _, _)| usage.contains_key(id))
            .map(|(id, _, _)| *id)
            .collect();
        let compact = !drop_from_index.is_empty() || live_deltas.len() >= options.compact_deltas.max(2);
        // The plan names the packs to repack before their copies exist: if the
        // repack dies half-way, the next run finds them referenced and not
        // copied, and unmarks them; nothing is lost and nothing leaks.
        let repack: Vec<PlannedPack> = to_repack
            .iter()
            .filter_map(|id| {
                usage
                    .get(id)
                    .map(|u| planned(*id, u.kind, u.size, PlanReason::Repacked))
            })
            .collect();
        Ok(GcPlan {
            report,
            doomed,
            resolved_plans,
            new_plan,
            repack,
            drop_from_index,
            compact,
            all_deltas,
            live_deltas,
            refs,
            expired,
        })
    }

    /// Streams every delta once: keeps tree packs (to read trees) and a
    /// catalogue of all packs, and finds the deltas no other supersedes.
    async fn scan_index(&self, all: &[IndexId]) -> Result<(Index, HashMap<PackId, PackUsage>, Vec<IndexId>)> {
        let mut superseded: HashSet<IndexId> = HashSet::new();
        let mut per_delta: Vec<ScannedDelta> = Vec::new();
        let mut loads = stream::iter(all.iter().copied())
            .map(|id| async move { deltas::load(self, &id).await.map(|d| (id, d)) })
            .buffer_unordered(4);
        while let Some(loaded) = loads.next().await {
            let (id, delta) = loaded?;
            superseded.extend(delta.supersedes.iter().copied());
            let mut trees = Vec::new();
            let mut packs = Vec::with_capacity(delta.packs.len());
            for pack in delta.packs {
                packs.push((pack.id, pack.kind, pack.size, pack.blobs.len() as u64));
                if pack.kind == PackKind::Tree {
                    trees.push(pack);
                }
            }
            per_delta.push((id, trees, packs));
        }
        let live = deltas::live(all, &superseded);
        let mut index = Index::default();
        let mut usage = HashMap::new();
        for (id, trees, packs) in per_delta {
            if superseded.contains(&id) {
                continue;
            }
            for pack in &trees {
                index.add_pack(pack);
            }
            for (pack, kind, size, blobs) in packs {
                usage.entry(pack).or_insert(PackUsage {
                    kind,
                    size,
                    blobs,
                    used_blobs: 0,
                    used_bytes: 0,
                });
            }
        }
        index.finish();
        Ok((index, usage, live))
    }

    /// Counts the referenced blobs of each pack, and returns the referenced
    /// blob ids of the packs in `planned`. Each delta is looked up in `refs`
    /// off the runtime (a spilled set reads local disk).
    async fn measure_usage(
        &self,
        live: &[IndexId],
        refs: &Arc<RefSet>,
        planned: &HashSet<PackId>,
        usage: &mut HashMap<PackId, PackUsage>,
    ) -> Result<HashMap<PackId, Vec<BlobId>>> {
        let mut planned_refs: HashMap<PackId, Vec<BlobId>> = HashMap::new();
        let planned = Arc::new(planned.clone());
        let mut loads = stream::iter(live.iter().copied())
            .map(|id| {
                let refs = refs.clone();
                let planned = planned.clone();
                async move {
                    let delta = deltas::load(self, &id).await?;
                    tokio::task::spawn_blocking(move || used_in(&delta, &refs, &planned))
                        .await
                        .map_err(|e| Error::Pipeline(e.to_string()))?
                }
            })
            .buffer_unordered(4);
        while let Some(counted) = loads.next().await {
            for (pack, used, bytes, ids) in counted? {
                if !ids.is_empty() {
                    planned_refs.entry(pack).or_default().extend(ids);
                }
                if let Some(u) = usage.get_mut(&pack) {
                    u.used_blobs = u.used_blobs.max(used);
                    u.used_bytes = u.used_bytes.max(bytes);
                }
            }
        }
        Ok(planned_refs)
    }

    /// The planned packs whose referenced blobs all have a copy (same full
    /// id) in a pack that is not planned: a backup that saw the plan stored
    /// them again. Those packs may go although their blob ids are referenced.
    /// Streams the index once more, only when some planned pack is referenced.
    async fn covered_elsewhere(
        &self,
        live: &[IndexId],
        planned: &HashSet<PackId>,
        planned_refs: &mut HashMap<PackId, Vec<BlobId>>,
    ) -> Result<HashSet<PackId>> {
        if planned_refs.is_empty() {
            return Ok(HashSet::new());
        }
        let mut wanted: HashSet<BlobId> = planned_refs.values().flatten().copied().collect();
        let mut loads = stream::iter(live.iter().copied())
            .map(|id| async move { deltas::load(self, &id).await })
            .buffer_unordered(4);
        while let Some(delta) = loads.next().await {
            for pack in delta?.packs {
                if planned.contains(&pack.id) {
                    continue;
                }
                for blob in &pack.blobs {
                    wanted.remove(&blob.id);
                }
            }
        }
        Ok(planned_refs
            .iter()
            .filter(|(_, blobs)| blobs.iter().all(|b| !wanted.contains(b)))
            .map(|(pack, _)| *pack)
            .collect())
    }

    async fn list_packs(&self) -> Result<Listed> {
        let mut listed = HashMap::new();
        for (kind, pack_kind) in [(ObjectKind::Data, PackKind::Data), (ObjectKind::Tree, PackKind::Tree)] {
            for info in self.store().list(kind).await.map_err(Error::store)? {
                if let Ok(id) = info.key.name().parse::<PackId>() {
                    listed.insert(id, (pack_kind, info.size, info.last_modified));
                }
            }
        }
        Ok(listed)
    }
}

/// One pack's referenced blobs, their sealed bytes, and their ids if planned.
type PackUse = (PackId, u64, u64, Vec<BlobId>);

/// Per pack of `delta`: referenced blobs, their sealed bytes, and their
/// ids when the pack is in `planned`.
fn used_in(delta: &nfrepo_format::IndexDelta, refs: &RefSet, planned: &HashSet<PackId>) -> Result<Vec<PackUse>> {
    let mut out = Vec::with_capacity(delta.packs.len());
    for pack in &delta.packs {
        let (mut used, mut bytes, mut ids) = (0u64, 0u64, Vec::new());
        for blob in &pack.blobs {
            if refs.contains(&blob.id)? {
                used += 1;
                bytes += u64::from(blob.sealed_len);
                if planned.contains(&pack.id) {
                    ids.push(blob.id);
                }
            }
        }
        out.push((pack.id, used, bytes, ids));
    }
    Ok(out)
}

const fn planned(id: PackId, kind: PackKind, size: u64, reason: PlanReason) -> PlannedPack {
    PlannedPack { id, kind, size, reason }
}

/// Why live sessions block the packs of plan `plan`, or `None` if none does.
fn blocking_sessions(sessions: &[SeenSession], plan: &[u8; 32]) -> Option<String> {
    let blockers: Vec<String> = sessions
        .iter()
        .filter(|s| !s.marker.as_ref().is_some_and(|m| m.has_seen(plan)))
        .map(|s| match &s.marker {
            Some(m) => format!("{} pid {} ({})", m.hostname, m.pid, m.source),
            None => s.key.to_string(),
        })
        .collect();
    (!blockers.is_empty()).then(|| {
        format!(
            "a backup that started before the plan is still running: {}",
            blockers.join(", ")
        )
    })
}
