//! Garbage collection: two-phase, time-based, and never a lock on backups.
//!
//! One [`Repository::gc`] run does both phases, in two steps: a [`GcPlan`]
//! is computed first (`plan`: everything decided, nothing written) and then
//! applied (`apply`); a dry run reports the plan and stops. Both phases:
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
//! (`GcOptions::max_unused`; [`repack`]). Its memory is bounded by the
//! referenced-blob set's budget (8 MiB in memory; past it the set goes to
//! sorted runs on local disk, [`refs::RefSet`]), the index of tree packs,
//! and a few dozen bytes per pack: index deltas are streamed one at a time. One GC runs at a time, and never beside
//! another bulk maintenance command, under the maintenance lease of
//! [`crate::lease`].

mod apply;
mod compact;
mod deltas;
mod plan;
mod plans;
mod refs;
mod repack;
mod reseal;
mod walk;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use nfrepo_format::{IndexId, PackId, PackKind};

pub use self::plan::GcPlan;
pub(crate) use self::plans::{planned_packs, read_plans};
pub use self::reseal::{RESEALED_FROM, ResealOptions, ResealReport};
use crate::lease::{GcLease, LeaseRequest, MaintenanceLease, ReplacedLease};
use crate::{Repository, Result};

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
    /// How long the maintenance lease lasts without renewal (it is renewed
    /// every quarter of it while GC works).
    pub lease_ttl: Duration,
    /// Take the maintenance lease even if another holder's is still valid
    /// (the operator knows that holder is dead); the report names it.
    pub break_lease: bool,
    /// Decide and report, but write and delete nothing (and take no lease).
    pub dry_run: bool,
    /// Repack a partly used pack when more than this fraction of its bytes
    /// is unused (0.0 to 1.0; 1.0 never repacks).
    pub max_unused: f64,
    /// Progress counters: trees marked, then packs deleted and repacked.
    pub work: Option<std::sync::Arc<crate::Work>>,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(24 * 3600),
            compact_deltas: 32,
            lease_ttl: crate::DEFAULT_LEASE_TERM,
            break_lease: false,
            dry_run: false,
            max_unused: 0.1,
            work: None,
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

    /// Sets whether to break another holder's valid lease.
    #[must_use]
    pub const fn break_lease(mut self, break_lease: bool) -> Self {
        self.break_lease = break_lease;
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
    /// On an object-locked repository (not in a dry run): retentions
    /// extended, versions freed, and what stays retained until when.
    pub object_lock: Option<crate::LockReport>,
    /// The lease of another holder this run replaced (expired, its process
    /// gone, or broken on request), if any.
    pub replaced_lease: Option<ReplacedLease>,
    /// What this run did with the tombstones a killed `forget` left
    /// (format-spec/protect.md); settled before the snapshots are walked.
    pub settled: crate::SettledForgets,
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
    /// [`Error::LeaseHeld`](crate::Error::LeaseHeld) if another maintenance command runs;
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) if this run's lease passed to another;
    /// storage errors; [`Error::Corrupted`](crate::Error::Corrupted)
    /// or [`Error::Missing`](crate::Error::Missing) if a snapshot's trees cannot be read (GC then deletes nothing).
    pub async fn gc(&self, options: &GcOptions) -> Result<GcReport> {
        self.require_keys("gc")?;
        let now = SystemTime::now();
        let mut lease = if options.dry_run {
            None
        } else {
            let mut request = LeaseRequest::new("gc", options.lease_ttl);
            request.break_lease = options.break_lease;
            Some(MaintenanceLease::acquire_for(self, &request, now).await?)
        };
        let replaced = lease.as_ref().and_then(|l| l.replaced().cloned());
        let result = self.gc_under_lease(options, now, lease.as_mut()).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result.map(|mut report| {
            report.replaced_lease = replaced;
            report
        })
    }

    /// Plans a round and, unless this is a dry run, applies that same plan.
    async fn gc_under_lease(
        &self,
        options: &GcOptions,
        now: SystemTime,
        lease: Option<&mut GcLease>,
    ) -> Result<GcReport> {
        let mut lease = lease;
        // A killed forget's tombstone: its snapshot is either put back
        // before the walk below sees the snapshots, or gone for good.
        let settled = match lease {
            Some(_) => self.settle_forgets().await?,
            None => crate::SettledForgets::default(),
        };
        let plan = self.plan_gc(options, now, &mut lease).await?;
        if options.dry_run {
            return Ok(plan.report);
        }
        let mut report = self.apply_gc(plan, &lease, options.work.as_deref()).await?;
        report.settled = settled;
        if let Some(policy) = self.object_lock() {
            let mut locked = crate::LockReport::default();
            ensure_held(&lease).await?;
            let (_, planned) = planned_packs(self).await?;
            let planned = planned
                .iter()
                .flat_map(|id| {
                    [nfrepo_format::PackKind::Data, nfrepo_format::PackKind::Tree]
                        .into_iter()
                        .filter_map(move |kind| crate::read::pack_object_key(kind, id).ok())
                })
                .collect();
            self.renew_retention(&policy, now, &planned, &mut locked).await?;
            ensure_held(&lease).await?;
            self.purge_versions(&mut locked).await?;
            report.object_lock = Some(locked);
        }
        Ok(report)
    }
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
