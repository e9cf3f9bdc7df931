//! Reading and writing GC plans (`gc/<id>`).

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use nfrepo_format::{GcPlan, PackId};
use nfrepo_store::{ObjectKey, PutMode};

use crate::objects::{self, PlanId, RepoObject};
use crate::{Error, Repository, Result};

/// A plan as found in the repository.
#[derive(Clone, Debug)]
pub(crate) struct StoredPlan {
    pub(crate) id: PlanId,
    pub(crate) key: ObjectKey,
    pub(crate) plan: GcPlan,
    /// The store's modification time: when the plan became visible. Grace periods count from it.
    pub(crate) written: Option<SystemTime>,
}

/// Every plan. A plan that does not open is an error: ignoring it could let a
/// backup deduplicate against packs a later GC deletes. A plan resolved by a
/// GC between the listing and the read is simply gone.
pub(crate) async fn read_plans(repo: &Repository) -> Result<Vec<StoredPlan>> {
    let loaded = objects::load_all::<GcPlan>(repo).await?;
    if let Some(damaged) = loaded.damaged.into_iter().next() {
        return Err(damaged.error);
    }
    Ok(loaded
        .good
        .into_iter()
        .map(|stored| StoredPlan {
            id: stored.id,
            key: stored.key,
            plan: stored.object,
            written: stored.written,
        })
        .collect())
}

/// What a starting backup needs: the ids of the plans it saw, and their packs,
/// which it must neither deduplicate against nor adopt.
///
/// # Errors
/// Storage errors, or a plan that does not open.
pub(crate) async fn planned_packs(repo: &Repository) -> Result<(Vec<[u8; 32]>, HashSet<PackId>)> {
    let plans = read_plans(repo).await?;
    let ids = plans.iter().map(|p| p.id).collect();
    let packs = plans
        .iter()
        .flat_map(|p| p.plan.packs.iter().map(|pack| pack.id))
        .collect();
    Ok((ids, packs))
}

/// The object name of plan `id`: lowercase hex.
pub(crate) fn plan_name(id: &PlanId) -> String {
    <GcPlan as RepoObject>::name(id)
}

/// Writes a new plan; returns its id.
pub(crate) async fn write_plan(repo: &Repository, plan: &GcPlan) -> Result<[u8; 32]> {
    let (id, bytes) = plan.encode(repo.sealer(), &repo.id()).map_err(Error::Format)?;
    let key = objects::key::<GcPlan>(&id)?;
    repo.store()
        .put(&key, Bytes::from(bytes), PutMode::CreateNew)
        .await
        .map_err(Error::store)?;
    Ok(id)
}
