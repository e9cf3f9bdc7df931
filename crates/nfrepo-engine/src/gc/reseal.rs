//! Resealing: everything sealed under an older key epoch is sealed again
//! under the current one, then the older epochs are dropped from the key
//! history (format-spec/keys.md, "Reseal").
//!
//! One run, under the maintenance lease, in this order:
//!
//! 1. a GC round: deletes the packs an earlier run resealed once their
//!    plan's grace period is over (and every live backup has seen it);
//! 2. packs ([`packs`]): every indexed, unplanned pack whose trailer does
//!    not open under the current epoch is read, each blob opened, verified
//!    and sealed again (same blob ids, same compressed bytes), in new packs.
//!    Per batch: a GC plan naming the old packs (reason `Resealed`) first,
//!    then the new packs, then their index delta;
//! 3. small objects ([`objects`]): the index compacted into deltas sealed
//!    under the current epoch, GC plans written again, snapshots written
//!    again under new ids (`resealed_from` in `extra`) with their protect
//!    and good markers moved, remaining markers, drill records and the
//!    config rewritten in place;
//! 4. a GC round again (with a zero grace period, the packs resealed in
//!    step 2 go now);
//! 5. [`finish`]: when nothing older is left waiting, every object is read
//!    and checked to open under the current epoch alone; only then is the
//!    key history rewritten without the older epochs (their audit keys
//!    kept, retired) and the histories of older epochs deleted.
//!
//! Every step is idempotent, so a run killed anywhere is finished by the
//! next (`nfrepo gc --reseal`): a plan written before its copies is
//! resolved by GC (its packs referenced, not covered, stay), copies that
//! were never indexed are collected as unindexed packs, and a snapshot
//! written again is found by its `resealed_from`. Memory: one old pack, the
//! two packs being filled, and the list of indexed pack ids.

mod finish;
mod objects;
mod packs;

use std::collections::BTreeMap;
use std::time::SystemTime;

use nfrepo_format::SnapshotId;

use super::{GcOptions, GcReport, PackCount};
use crate::lease::GcLease;
use crate::{Repository, Result};

/// The `extra` key of a snapshot written again by a reseal; its value is
/// the id (hex) the snapshot had before.
pub const RESEALED_FROM: &str = "resealed_from";

/// Options for [`Repository::reseal`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ResealOptions {
    /// The GC rounds' options: the grace period before old packs are
    /// deleted, the lease TTL, progress counters; `dry_run` surveys what
    /// is sealed under older epochs and writes nothing.
    pub gc: GcOptions,
    /// Old packs per batch: one GC plan and one index delta each.
    pub batch_packs: usize,
}

impl Default for ResealOptions {
    fn default() -> Self {
        Self {
            gc: GcOptions::default(),
            batch_packs: 16,
        }
    }
}

impl ResealOptions {
    /// Sets the GC options.
    #[must_use]
    pub fn gc(mut self, gc: GcOptions) -> Self {
        self.gc = gc;
        self
    }

    /// Sets the batch size (at least one pack).
    #[must_use]
    pub const fn batch_packs(mut self, packs: usize) -> Self {
        self.batch_packs = if packs == 0 { 1 } else { packs };
        self
    }
}

/// What [`Repository::reseal`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ResealReport {
    /// Whether this was a dry run (then "resealed" means "would be").
    pub dry_run: bool,
    /// The key epoch everything is sealed under now.
    pub epoch: u32,
    /// The older live epochs when the run started.
    pub older_epochs: Vec<u32>,
    /// The epochs this run dropped from the key history: nothing sealed
    /// under them is left, and their keys open nothing.
    pub dropped_epochs: Vec<u32>,
    /// Whether only the current epoch is live now.
    pub finished: bool,
    /// Indexed packs looked at.
    pub packs_checked: u64,
    /// Of those, packs already sealed under the current epoch.
    pub packs_current: u64,
    /// Old packs whose blobs were sealed again (planned for deletion).
    pub resealed: PackCount,
    /// New packs written.
    pub written: PackCount,
    /// Blobs sealed again.
    pub blobs: u64,
    /// Index deltas merged into deltas sealed under the current epoch.
    pub deltas_compacted: usize,
    /// Snapshots written again: old id, new id.
    pub snapshots: Vec<(SnapshotId, SnapshotId)>,
    /// Protect and good markers moved to a snapshot's new id.
    pub markers_moved: u64,
    /// Other objects written again, by kind ("gc plan", "drill record", "config"…).
    pub rewritten: BTreeMap<&'static str, u64>,
    /// Objects checked to open under the current epoch alone at the end.
    pub verified_objects: u64,
    /// Why the older epochs were not dropped yet, one line each.
    pub pending: Vec<String>,
    /// The last GC round of the run.
    pub gc: Option<GcReport>,
}

impl Repository {
    /// Seals everything sealed under an older key epoch again under the
    /// current one and, once nothing older is left, drops the older epochs
    /// (see the module docs). Run it again (`gc --reseal`) until
    /// [`ResealReport::finished`]: old packs wait for the grace period.
    ///
    /// # Errors
    /// [`crate::Error::StaleKeySlot`]; [`crate::Error::LeaseHeld`]; storage
    /// errors; [`crate::Error::Corrupted`] for an object that opens under no
    /// live epoch (nothing is dropped then).
    pub async fn reseal(&self, options: &ResealOptions) -> Result<ResealReport> {
        self.require_keys("reseal")?;
        self.require_current_ring()?;
        let mut report = ResealReport {
            dry_run: options.gc.dry_run,
            epoch: self.epoch(),
            older_epochs: self.keys().older_sealing_keys.iter().map(|(e, _)| *e).collect(),
            ..ResealReport::default()
        };
        report.older_epochs.sort_unstable();
        if options.gc.dry_run {
            packs::survey(self, &mut report).await?;
            objects::survey(self, &mut report).await?;
            return Ok(report);
        }
        let mut lease = GcLease::acquire(self, options.gc.lease_ttl, SystemTime::now()).await?;
        let result = self.reseal_under_lease(options, &mut lease, &mut report).await;
        lease.release().await;
        result.map(|()| report)
    }

    async fn reseal_under_lease(
        &self,
        options: &ResealOptions,
        lease: &mut GcLease,
        report: &mut ResealReport,
    ) -> Result<()> {
        if report.older_epochs.is_empty() {
            // Only leftovers of a run killed after it dropped the epochs.
            finish::delete_older_histories(self, lease).await?;
            report.finished = true;
            return Ok(());
        }
        let current = self.current_epoch_only();
        let gc = options.gc.clone();
        self.gc_under_lease(&gc, SystemTime::now(), Some(&mut *lease)).await?;
        packs::reseal_packs(self, &current, options, lease, report).await?;
        objects::reseal_objects(self, &current, lease, report).await?;
        let swept = self.gc_under_lease(&gc, SystemTime::now(), Some(&mut *lease)).await?;
        for (why, count) in &swept.waiting {
            report.pending.push(format!(
                "{} planned packs ({} bytes) are not deleted yet: {why}; run `nfrepo gc --reseal` again then",
                count.packs, count.bytes
            ));
        }
        report.gc = Some(swept);
        finish::finish(self, &current, options, lease, report).await
    }
}
