//! The apply half of a GC round: executes a [`GcPlan`] exactly.
//!
//! Order (format-spec/gc.md): the index is compacted without the doomed
//! packs first, then the packs are deleted, the resolved plans removed, the
//! new plan written (naming the packs to repack before their copies exist),
//! the repack run, and the markers of crashed backups removed. The lease is
//! checked before each step that deletes or writes (and the background
//! renewals stop once it is lost: [`crate::lease`]).

use futures::stream::{self, StreamExt, TryStreamExt};

use super::plan::GcPlan;
use super::{GcReport, compact, ensure_held, plans, repack};
use crate::lease::GcLease;
use crate::read::pack_object_key;
use crate::{Error, Repository, Result};

impl Repository {
    /// Applies `plan` (see the module docs) and returns its report, completed.
    pub(crate) async fn apply_gc(
        &self,
        plan: GcPlan,
        lease: &Option<&mut GcLease>,
        work: Option<&crate::Work>,
    ) -> Result<GcReport> {
        let GcPlan {
            mut report,
            doomed,
            resolved_plans,
            mut new_plan,
            repack,
            drop_from_index,
            compact,
            all_deltas,
            live_deltas,
            refs,
            expired,
        } = plan;
        if compact {
            ensure_held(lease).await?;
            let done = compact::compact(self, &all_deltas, &live_deltas, &drop_from_index).await?;
            report.deltas_after = done.deltas_after;
            tracing::info!(
                before = done.deltas_before,
                after = done.deltas_after,
                packs_dropped = done.packs_dropped,
                "index compacted"
            );
        }
        ensure_held(lease).await?;
        if let Some(work) = work {
            work.phase(
                "deleting packs",
                doomed.len() as u64,
                doomed.iter().map(|(_, _, size)| *size).sum(),
            );
        }
        stream::iter(doomed.into_iter().enumerate())
            .map(|(step, (id, kind, size))| async move {
                let key = pack_object_key(kind, &id)?;
                crate::failpoint::step(crate::failpoint::GC_SWEEP, u64::try_from(step).unwrap_or(u64::MAX));
                self.store().delete(&key).await.map_err(Error::store)?;
                crate::work::advance(work, 1, size);
                Ok(())
            })
            .buffer_unordered(8)
            .try_collect::<()>()
            .await?;
        // A lease lost during the deletes (a stall, a --break-lease) stops
        // this run before it touches the plans the next holder works from.
        ensure_held(lease).await?;
        for key in resolved_plans {
            self.store().delete(&key).await.map_err(Error::store)?;
            report.plans_removed += 1;
        }
        let to_repack: Vec<_> = repack.iter().map(|p| p.id).collect();
        new_plan.packs.extend(repack);
        new_plan.packs.sort_by_key(|p| p.id);
        if !new_plan.packs.is_empty() {
            let id = plans::write_plan(self, &new_plan).await?;
            report.new_plan = Some(plans::plan_name(&id));
        }
        if !to_repack.is_empty() {
            ensure_held(lease).await?;
            if let Some(work) = work {
                work.phase("repacking", to_repack.len() as u64, 0);
            }
            let (copied, written) = repack::repack(self, &to_repack, &refs, work).await?;
            report.repack_copied_blobs = copied;
            report.repack_written_bytes = written;
            report.deltas_after += 1;
        }
        drop(refs);
        ensure_held(lease).await?;
        for key in expired {
            self.store().delete(&key).await.map_err(Error::store)?;
            report.expired_sessions_removed += 1;
        }
        Ok(report)
    }
}
