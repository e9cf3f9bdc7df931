//! What a command did to the repository, measured at the storage.
//!
//! [`ActivityStore`] wraps the repository's store and records every
//! successful put and delete by kind, and the ids of snapshots written and
//! deleted. The audit entry of the command is filled from it, so no command
//! has to report its own effects (and none can forget to).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nfrepo_format::{ObjectCount, SnapshotId};
use nfrepo_store::{ByteStream, ListStream, ObjectInfo, ObjectKey, ObjectKind, Pieces, PutMode, Result, Store};

/// The effects recorded so far; cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Activity(Arc<Mutex<Recorded>>);

#[derive(Debug, Default)]
struct Recorded {
    counts: BTreeMap<&'static str, (u64, u64)>,
    created: Vec<SnapshotId>,
    deleted: Vec<SnapshotId>,
}

/// A copy of the recorded effects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivitySummary {
    /// Objects created and deleted, by kind prefix.
    pub objects: Vec<ObjectCount>,
    /// Snapshots written.
    pub snapshots_created: Vec<SnapshotId>,
    /// Snapshots deleted.
    pub snapshots_deleted: Vec<SnapshotId>,
}

impl Activity {
    fn record(&self, key: &ObjectKey, created: bool) {
        // Audit entries are the log itself, not what a command did.
        if key.kind() == ObjectKind::Audit {
            return;
        }
        let Ok(mut recorded) = self.0.lock() else {
            return;
        };
        let count = recorded.counts.entry(key.kind().prefix()).or_default();
        if created {
            count.0 += 1;
        } else {
            count.1 += 1;
        }
        if key.kind() == ObjectKind::Snapshot
            && let Ok(id) = key.name().parse::<SnapshotId>()
        {
            if created {
                recorded.created.push(id);
            } else {
                recorded.deleted.push(id);
            }
        }
    }

    /// What was recorded until now.
    #[must_use]
    pub fn summary(&self) -> ActivitySummary {
        let Ok(recorded) = self.0.lock() else {
            return ActivitySummary::default();
        };
        ActivitySummary {
            objects: recorded
                .counts
                .iter()
                .map(|(kind, (created, deleted))| ObjectCount {
                    kind: (*kind).to_owned(),
                    created: *created,
                    deleted: *deleted,
                })
                .collect(),
            snapshots_created: recorded.created.clone(),
            snapshots_deleted: recorded.deleted.clone(),
        }
    }
}

/// A store that records into an [`Activity`] what was written and deleted through it.
#[derive(Debug)]
pub struct ActivityStore {
    inner: Arc<dyn Store>,
    activity: Activity,
}

impl ActivityStore {
    /// Wraps `inner`, recording into `activity`.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

#[async_trait::async_trait]
impl Store for ActivityStore {
    fn location(&self) -> &str {
        self.inner.location()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        self.inner.put(key, data, mode).await?;
        self.activity.record(key, true);
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.inner.get(key).await
    }

    async fn get_range_stream(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteStream<'static>> {
        self.inner.get_range_stream(key, range).await
    }

    fn streams_ranges(&self) -> bool {
        self.inner.streams_ranges()
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream<'static>> {
        self.inner.get_stream(key).await
    }

    async fn put_stream(&self, key: &ObjectKey, body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
        let len = self.inner.put_stream(key, body, mode).await?;
        self.activity.record(key, true);
        Ok(len)
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        self.inner.get_range_pieces(key, range).await
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.inner.stat(key).await
    }

    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
        self.inner.list_stream(kind)
    }

    async fn list_names(&self, kind: ObjectKind) -> Result<Vec<ObjectKey>> {
        self.inner.list_names(kind).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await?;
        self.activity.record(key, false);
        Ok(())
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.inner.object_lock_enabled().await
    }

    async fn set_retention(&self, key: &ObjectKey, retention: nfrepo_store::Retention) -> Result<()> {
        self.inner.set_retention(key, retention).await
    }

    async fn purge(&self, key: &ObjectKey) -> Result<()> {
        self.inner.purge(key).await
    }

    async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list_purgeable(kind).await
    }
}
