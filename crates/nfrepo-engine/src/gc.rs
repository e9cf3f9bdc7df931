//! Garbage collection: two-phase, time-based, and never a lock on backups.
//!
//! One [`Repository::gc`] run does both phases:
//!
//! 1. **Plan.** Every pack that no snapshot references (or that no index
//!    lists, and is older than the grace period) and that no earlier plan
//!    names goes into a new sealed plan `gc/<id>`. Nothing is deleted.
//! 2. **Sweep.** A pack named by a plan is deleted when it is *still*
//!    unreferenced, the plan is older than the grace period, and every live
//!    backup session has seen the plan (so it does not deduplicate against the
//!    pack). Packs referenced again are unmarked; everything else waits, and
//!    the report says why.
//!
//! Before packs are deleted, the index deltas are rewritten without them
//! (merged deltas first, old deltas deleted after; [`compact`]). The protocol
//! with backups, and why it never deletes a blob a backup relies on, is in
//! `format-spec/gc.md`.
//!
//! GC reads snapshots, index deltas and tree packs only, never a data pack,
//! except the live blobs of the partly used packs it repacks
//! (`GcOptions::max_unused`; [`repack`]). Its memory is bounded by 8 bytes per referenced blob ([`refs::RefSet`]),
//! the index of tree packs, and a few dozen bytes per pack: index deltas are
//! streamed one at a time. One GC runs at a time, under the lease of
//! [`crate::lease`].

mod compact;
mod deltas;
mod plans;
mod refs;
mod repack;
mod walk;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_format::{BlobId, GcPlan, IndexId, PackId, PackKind, PlanReason, PlannedPack};
use nfrepo_store::ObjectKind;

pub(crate) use self::plans::{planned_packs, read_plans};
use self::refs::RefSet;
use crate::index::Index;
use crate::lease::GcLease;
use crate::read::{Reader, pack_object_key};
use crate::session::{SeenSession, live_sessions};
use crate::{Error, Repository, Result};

/// Options for [`Repository::gc`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GcOptions {
    /// How long a plan must be visible before its packs may be deleted, and
    /// how old an unindexed pack must be before it is planned.
    pub grace: Duration,
    /// Merge the index when it has at least this many deltas (it is always
    /// rewritten when packs are deleted).
    pub compact_deltas: usize,
    /// How long the GC lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Decide and report, but write and delete nothing (and take no lease).
    pub dry_run: bool,
    /// Repack a partly used pack when more than this fraction of its bytes
    /// is unused (0.0 to 1.0; 1.0 never repacks).
    pub max_unused: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(24 * 3600),
            compact_deltas: 32,
            lease_ttl: Duration::from_secs(3600),
            dry_run: false,
            max_unused: 0.1,
        }
    }
}

impl GcOptions {
    /// Sets the grace period.
    #[must_use]
    pub const fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets dry-run.
    #[must_use]
    pub const fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// Packs and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackCount {
    /// Packs.
    pub packs: u64,
    /// Their stored bytes.
    pub bytes: u64,
}

impl PackCount {
    fn add(&mut self, bytes: u64) {
        self.packs += 1;
        self.bytes += bytes;
    }
}

/// What a GC run found and did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GcReport {
    /// Whether this was a dry run (then "deleted" means "would be deleted").
    pub dry_run: bool,
    /// Snapshots whose trees were walked.
    pub snapshots: usize,
    /// Live backup sessions seen.
    pub live_sessions: usize,
    /// Tree and content-list blobs read.
    pub trees_read: u64,
    /// Distinct referenced blob ids (by 8-byte prefix).
    pub referenced_blobs: usize,
    /// Every pack in the repository.
    pub total: PackCount,
    /// Packs deleted now: reclaimed.
    pub deleted: PackCount,
    /// Packs put in a new plan: reclaimable after the grace period.
    pub planned: PackCount,
    /// Packs in earlier plans that are not deleted yet, by reason.
    pub waiting: BTreeMap<String, PackCount>,
    /// Planned packs that a snapshot references again, now unmarked.
    pub unmarked: PackCount,
    /// Packs partly used, and an estimate of their unused bytes (reclaimable only by a repack).
    pub partly_used: PackCount,
    /// Sum of the unused bytes in partly used packs (those not repacked).
    pub partly_used_unused_bytes: u64,
    /// Partly used packs whose live blobs were copied (or, in a dry run, would be),
    /// now planned for deletion.
    pub repacked: PackCount,
    /// Blobs copied by the repack.
    pub repack_copied_blobs: u64,
    /// Stored bytes of the new packs the repack wrote.
    pub repack_written_bytes: u64,
    /// Index deltas before and after the run.
    pub deltas_before: usize,
    /// Index deltas after the run.
    pub deltas_after: usize,
    /// The new plan's id, when one was written.
    pub new_plan: Option<String>,
    /// Plans fully resolved and removed.
    pub plans_removed: usize,
    /// Markers of crashed backups removed.
    pub expired_sessions_removed: usize,
}

impl GcReport {
    /// Bytes reclaimed now (or, in a dry run, that would be).
    #[must_use]
    pub const fn reclaimable_now(&self) -> u64 {
        self.deleted.bytes
    }

    /// Bytes that later runs will reclaim if nothing references them again.
    #[must_use]
    pub fn reclaimable_later(&self) -> u64 {
        self.planned.bytes + self.repacked.bytes + self.waiting.values().map(|c| c.bytes).sum::<u64>()
    }
}

#[derive(Clone, Copy, Debug)]
struct PackUsage {
    kind: PackKind,
    size: u64,
    blobs: u64,
    used_blobs: u64,
    used_bytes: u64,
}

/// One delta as pass 1 keeps it: its tree packs, and `(pack, kind, size, blobs)` of every pack.
type ScannedDelta = (
    IndexId,
    Vec<nfrepo_format::IndexedPack>,
    Vec<(PackId, PackKind, u64, u64)>,
);

/// The packs a store listing shows, with kind, size and age.
type Listed = HashMap<PackId, (PackKind, u64, Option<SystemTime>)>;

impl Repository {
    /// Runs one GC round (see the module docs).
    ///
    /// # Errors
    /// [`Error::LeaseHeld`] if another GC runs; storage errors; [`Error::Corrupted`]
    /// or [`Error::Missing`] if a snapshot's trees cannot be read (GC then deletes nothing).
    pub async fn gc(&self, options: &GcOptions) -> Result<GcReport> {
        let now = SystemTime::now();
        let mut lease = if options.dry_run {
            None
        } else {
            Some(GcLease::acquire(self, options.lease_ttl, now).await?)
        };
        let result = self.gc_under_lease(options, now, lease.as_mut()).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    async fn gc_under_lease(
        &self,
        options: &GcOptions,
        now: SystemTime,
        mut lease: Option<&mut GcLease>,
    ) -> Result<GcReport> {
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
        let mut refs = RefSet::default();
        let roots = snapshots
            .iter()
            .map(|e| e.snapshot.root)
            .chain(sessions.iter().filter_map(|s| s.marker.as_ref()?.parent_root));
        report.trees_read = walk::walk(&reader, roots, &mut refs).await?;
        report.referenced_blobs = refs.len();
        drop(reader);
        renew(&mut lease).await?;

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
        let mut new_plan = GcPlan {
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
        if options.dry_run {
            return Ok(report);
        }
        let drop_from_index: HashSet<PackId> = doomed
            .iter()
            .filter(|(id, _, _)| usage.contains_key(id))
            .map(|(id, _, _)| *id)
            .collect();
        if !drop_from_index.is_empty() || live_deltas.len() >= options.compact_deltas.max(2) {
            ensure_held(&lease).await?;
            let done = compact::compact(self, &all_deltas, &live_deltas, &drop_from_index).await?;
            report.deltas_after = done.deltas_after;
            tracing::info!(
                before = done.deltas_before,
                after = done.deltas_after,
                packs_dropped = done.packs_dropped,
                "index compacted"
            );
        }
        ensure_held(&lease).await?;
        stream::iter(doomed)
            .map(|(id, kind, _)| async move {
                let key = pack_object_key(kind, &id)?;
                self.store().delete(&key).await.map_err(Error::store)
            })
            .buffer_unordered(8)
            .try_collect::<()>()
            .await?;
        for key in resolved_plans {
            self.store().delete(&key).await.map_err(Error::store)?;
            report.plans_removed += 1;
        }
        // The plan names the packs to repack before their copies exist: if the
        // repack dies half-way, the next run finds them referenced and not
        // copied, and unmarks them; nothing is lost and nothing leaks.
        for id in &to_repack {
            if let Some(u) = usage.get(id) {
                new_plan.packs.push(planned(*id, u.kind, u.size, PlanReason::Repacked));
            }
        }
        new_plan.packs.sort_by_key(|p| p.id);
        if !new_plan.packs.is_empty() {
            let id = plans::write_plan(self, &new_plan).await?;
            report.new_plan = Some(plans::plan_name(&id));
        }
        if !to_repack.is_empty() {
            ensure_held(&lease).await?;
            let (copied, written) = repack::repack(self, &to_repack, &refs).await?;
            report.repack_copied_blobs = copied;
            report.repack_written_bytes = written;
            report.deltas_after += 1;
        }
        drop(refs);
        for key in expired {
            self.store().delete(&key).await.map_err(Error::store)?;
            report.expired_sessions_removed += 1;
        }
        Ok(report)
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
    /// blob ids of the packs in `planned`.
    async fn measure_usage(
        &self,
        live: &[IndexId],
        refs: &RefSet,
        planned: &HashSet<PackId>,
        usage: &mut HashMap<PackId, PackUsage>,
    ) -> Result<HashMap<PackId, Vec<BlobId>>> {
        let mut planned_refs: HashMap<PackId, Vec<BlobId>> = HashMap::new();
        let mut loads = stream::iter(live.iter().copied())
            .map(|id| async move { deltas::load(self, &id).await })
            .buffer_unordered(4);
        while let Some(delta) = loads.next().await {
            for pack in delta?.packs {
                let (mut used, mut bytes) = (0u64, 0u64);
                for blob in &pack.blobs {
                    if refs.contains(&blob.id) {
                        used += 1;
                        bytes += u64::from(blob.sealed_len);
                        if planned.contains(&pack.id) {
                            planned_refs.entry(pack.id).or_default().push(blob.id);
                        }
                    }
                }
                if let Some(u) = usage.get_mut(&pack.id) {
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

async fn renew(lease: &mut Option<&mut GcLease>) -> Result<()> {
    match lease {
        Some(lease) => lease.renew().await,
        None => Ok(()),
    }
}

async fn ensure_held(lease: &Option<&mut GcLease>) -> Result<()> {
    match lease {
        Some(lease) => lease.ensure_held().await,
        None => Ok(()),
    }
}
