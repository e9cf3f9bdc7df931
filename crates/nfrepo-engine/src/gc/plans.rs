//! Reading and writing GC plans (`gc/<id>`).

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_format::{GcPlan, PackId};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode};

use crate::{Error, Repository, Result};

/// A plan as found in the repository.
#[derive(Clone, Debug)]
pub(crate) struct StoredPlan {
    pub(crate) id: [u8; 32],
    pub(crate) key: ObjectKey,
    pub(crate) plan: GcPlan,
    /// The store's modification time: when the plan became visible. Grace periods count from it.
    pub(crate) written: Option<SystemTime>,
}

/// Every plan. A plan that does not open is an error: ignoring it could let a
/// backup deduplicate against packs a later GC deletes.
pub(crate) async fn read_plans(repo: &Repository) -> Result<Vec<StoredPlan>> {
    let listed = repo.store().list(ObjectKind::Gc).await.map_err(Error::store)?;
    let named: Vec<_> = listed
        .into_iter()
        .filter_map(|info| {
            let id: [u8; 32] = hex_id(info.key.name())?;
            Some((id, info))
        })
        .collect();
    let plans: Vec<Option<StoredPlan>> = stream::iter(named)
        .map(|(id, info)| async move {
            let bytes = match repo.store().get(&info.key).await {
                Ok(bytes) => bytes,
                // Resolved by a GC between the listing and the read.
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::store(e)),
            };
            let plan = GcPlan::decode(&id, &bytes, repo.sealer(), &repo.id())
                .map_err(|e| Error::decode(info.key.to_string(), e))?;
            Ok::<_, Error>(Some(StoredPlan {
                id,
                key: info.key,
                plan,
                written: info.last_modified,
            }))
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(plans.into_iter().flatten().collect())
}

fn hex_id(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    name.parse::<PackId>().ok().map(|p| p.0)
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
pub(crate) fn plan_name(id: &[u8; 32]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new plan; returns its id.
pub(crate) async fn write_plan(repo: &Repository, plan: &GcPlan) -> Result<[u8; 32]> {
    let (id, bytes) = plan.encode(repo.sealer(), &repo.id()).map_err(Error::Format)?;
    let key = ObjectKey::new(ObjectKind::Gc, plan_name(&id)).map_err(Error::store)?;
    repo.store()
        .put(&key, Bytes::from(bytes), PutMode::CreateNew)
        .await
        .map_err(Error::store)?;
    Ok(id)
}
