//! Good markers: which deployment snapshots passed their checks.
//!
//! `mark_good` writes a sealed marker `good/<snapshot id>` (see
//! `format-spec/good.md`) beside a snapshot; `rollback --to last-good` goes
//! back to the newest snapshot of a source that has one, and `forget` keeps
//! that snapshot whatever the policy says (older good snapshots follow the
//! policy, and their markers go with them).
//!
//! A marker that does not open never makes a snapshot a rollback target
//! (rolling back to a state nobody vouched for is worse than refusing), but
//! it does keep its snapshot from `forget`: forgetting too little is
//! recoverable, too much is not.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_format::{GoodMarker, SnapshotId};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind};

use crate::read::SnapshotEntry;
use crate::{Error, Repository, Result};

/// The good markers of a repository.
#[derive(Clone, Debug, Default)]
pub struct GoodMarkers {
    /// Markers that opened, by snapshot.
    pub good: BTreeMap<SnapshotId, GoodMarker>,
    /// Snapshots whose marker does not open (damaged, or renamed from
    /// another snapshot's): not rollback targets, but kept by `forget`.
    pub damaged: Vec<SnapshotId>,
}

impl GoodMarkers {
    /// The newest of `snapshots` (in time order, oldest first) with a good marker.
    #[must_use]
    pub fn newest<'a>(&self, snapshots: &'a [SnapshotEntry]) -> Option<&'a SnapshotEntry> {
        snapshots
            .iter()
            .filter(|s| self.good.get(&s.id).is_some_and(|m| m.source == s.snapshot.source))
            .max_by_key(|s| s.snapshot.time_ns)
    }
}

impl Repository {
    /// Marks a snapshot good: a deployment made from it passed its checks.
    /// Marking twice is harmless (the first marker stays).
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] and friends for a bad spec; storage errors.
    pub async fn mark_good(&self, spec: &str, note: &str) -> Result<SnapshotEntry> {
        self.require_keys("mark good")?;
        let entry = self.find_snapshot(spec).await?;
        let marker = GoodMarker {
            snapshot: entry.id,
            source: entry.snapshot.source.clone(),
            created_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            by: crate::host::user_at_host(),
            note: note.to_owned(),
        };
        let bytes = marker.encode(self.sealer(), &self.id()).map_err(Error::Format)?;
        self.put_marker(&good_key(&entry.id)?, bytes).await?;
        Ok(entry)
    }

    /// Removes a snapshot's good marker. Returns whether it had one.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] and friends for a bad spec; storage errors.
    pub async fn unmark_good(&self, spec: &str) -> Result<(SnapshotId, bool)> {
        self.require_keys("mark good")?;
        let entry = self.find_snapshot(spec).await?;
        let was = self.remove_good_marker(&entry.id).await?;
        Ok((entry.id, was))
    }

    /// Deletes the good marker of `id`, if any; returns whether there was one.
    pub(crate) async fn remove_good_marker(&self, id: &SnapshotId) -> Result<bool> {
        let key = good_key(id)?;
        let was = match self.store().stat(&key).await {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(Error::store(e)),
        };
        if was {
            self.store().delete(&key).await.map_err(Error::store)?;
        }
        Ok(was)
    }

    /// Whether `id` has a good marker now (one written after a listing).
    pub(crate) async fn has_good_marker(&self, id: &SnapshotId) -> Result<bool> {
        match self.store().stat(&good_key(id)?).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::store(e)),
        }
    }

    /// Every good marker, opened.
    ///
    /// # Errors
    /// Storage errors (a marker that does not open is listed in
    /// [`GoodMarkers::damaged`], not an error).
    pub async fn good_markers(&self) -> Result<GoodMarkers> {
        self.require_keys("mark good")?;
        let listed = self.store().list(ObjectKind::Good).await.map_err(Error::store)?;
        let ids: Vec<(SnapshotId, ObjectKey)> = listed
            .into_iter()
            .filter_map(|info| Some((info.key.name().parse::<SnapshotId>().ok()?, info.key)))
            .collect();
        let opened: Vec<(SnapshotId, Option<GoodMarker>)> = stream::iter(ids)
            .map(|(id, key)| async move {
                let bytes = match self.store().get(&key).await {
                    Ok(bytes) => bytes,
                    // Removed (by forget or unmark) since the listing.
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::store(e)),
                };
                let marker = match GoodMarker::decode(&id, &bytes, self.sealer(), &self.id()) {
                    Ok(marker) => Some(marker),
                    Err(e) => {
                        tracing::warn!(marker = %key, error = %e, "a good marker does not open; its snapshot is no rollback target");
                        None
                    }
                };
                Ok::<_, Error>(Some((id, marker)))
            })
            .buffer_unordered(8)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        let mut markers = GoodMarkers::default();
        for (id, marker) in opened {
            match marker {
                Some(marker) => {
                    markers.good.insert(id, marker);
                }
                None => markers.damaged.push(id),
            }
        }
        markers.damaged.sort();
        Ok(markers)
    }
}

fn good_key(id: &SnapshotId) -> Result<ObjectKey> {
    ObjectKey::new(ObjectKind::Good, id.to_hex()).map_err(Error::store)
}
