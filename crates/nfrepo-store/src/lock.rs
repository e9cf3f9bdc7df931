//! S3 Object Lock: retention modes, the per-kind policy, and [`ObjectLockStore`].
//!
//! How S3 object lock really behaves, and so what this crate relies on:
//! - Object lock needs a versioned bucket (enabling it at bucket creation
//!   enables versioning). A retention protects one *version* of an object.
//! - `DELETE` without a version id never touches a version: it adds a delete
//!   marker, the object disappears from listings and reads, and the locked
//!   version stays. Only deleting a specific version is refused
//!   (`403 AccessDenied`) before its retain-until date.
//! - A retention can be extended at any time; in compliance mode it can be
//!   shortened or removed by no one, in governance mode by a principal with
//!   `s3:BypassGovernanceRetention`.
//!
//! So on such a store [`Store::delete`] hides an object and [`Store::purge`]
//! frees its versions, reporting [`ErrorKind::Retained`](crate::ErrorKind::Retained)
//! while a retention holds them. `format-spec/object-lock.md` gives the rules.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::Result;
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};
use crate::pieces::Pieces;
use crate::store::{ByteStream, ListStream, PutMode, Store};

/// The S3 Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetentionMode {
    /// Principals with `s3:BypassGovernanceRetention` may shorten or remove it.
    Governance,
    /// Nobody, the bucket's root account included, can shorten or remove it.
    Compliance,
}

/// A retention to set on an object version: the server refuses to delete the
/// version before `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Who may lift it early.
    pub mode: RetentionMode,
    /// When it lapses.
    pub until: SystemTime,
}

/// How long each kind of object is retained in an object-locked repository.
///
/// Every write-once object gets a retention when it is written: audit entries
/// and the config the longest (`audit_retain`, at least `retain`), everything
/// else `retain`. Objects that are rewritten in place (session markers,
/// leases, the replica state) get none: a lock on them would block the very
/// writes that keep backups and gc running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectLockPolicy {
    /// The retention mode of every retained object.
    pub mode: RetentionMode,
    /// Retention of packs, index deltas, snapshots, key slots and the other write-once objects.
    pub retain: Duration,
    /// Retention of audit entries and the config.
    pub audit_retain: Duration,
}

impl ObjectLockPolicy {
    /// A policy; `audit_retain` below `retain` is raised to `retain`.
    #[must_use]
    pub fn new(mode: RetentionMode, retain: Duration, audit_retain: Duration) -> Self {
        Self {
            mode,
            retain,
            audit_retain: audit_retain.max(retain),
        }
    }

    /// The retention period of objects of `kind`, `None` for kinds never retained.
    #[must_use]
    pub fn period(&self, kind: ObjectKind) -> Option<Duration> {
        match kind {
            ObjectKind::Session | ObjectKind::Lease | ObjectKind::Replica | ObjectKind::Tombstone => None,
            ObjectKind::Audit | ObjectKind::Config => Some(self.audit_retain),
            _ => Some(self.retain),
        }
    }

    /// The retention an object of `kind` written or renewed at `now` gets.
    #[must_use]
    pub fn retention_at(&self, kind: ObjectKind, now: SystemTime) -> Option<Retention> {
        self.period(kind).map(|period| Retention {
            mode: self.mode,
            until: now + period,
        })
    }
}

/// A [`Store`] wrapper that gives every write-once object its retention.
///
/// A [`PutMode::CreateNew`] put that succeeds is followed by
/// [`Store::set_retention`] on the new version, dated by
/// [`ObjectLockPolicy::retention_at`] with this host's clock. If that second
/// request fails, the put reports the failure (the object exists, unretained,
/// until the next gc renews it). Everything else passes through.
#[derive(Debug)]
pub struct ObjectLockStore<S> {
    inner: S,
    policy: ObjectLockPolicy,
}

impl<S: Store> ObjectLockStore<S> {
    /// Wraps `inner`, which must be a store with object lock enabled.
    pub fn new(inner: S, policy: ObjectLockPolicy) -> Self {
        Self { inner, policy }
    }

    /// The policy applied.
    pub fn policy(&self) -> &ObjectLockPolicy {
        &self.policy
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for ObjectLockStore<S> {
    fn location(&self) -> &str {
        self.inner.location()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        self.inner.put(key, data, mode).await?;
        if mode == PutMode::CreateNew
            && let Some(retention) = self.policy.retention_at(key.kind(), SystemTime::now())
        {
            self.inner.set_retention(key, retention).await?;
        }
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

    /// As [`Store::put`]: the retention is set once the streamed object is stored.
    async fn put_stream(&self, key: &ObjectKey, body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
        let len = self.inner.put_stream(key, body, mode).await?;
        if mode == PutMode::CreateNew
            && let Some(retention) = self.policy.retention_at(key.kind(), SystemTime::now())
        {
            self.inner.set_retention(key, retention).await?;
        }
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
        self.inner.delete(key).await
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.inner.object_lock_enabled().await
    }

    async fn set_retention(&self, key: &ObjectKey, retention: Retention) -> Result<()> {
        self.inner.set_retention(key, retention).await
    }

    async fn purge(&self, key: &ObjectKey) -> Result<()> {
        self.inner.purge(key).await
    }

    async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list_purgeable(kind).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_is_retained_longest_and_mutable_kinds_never() {
        let day = Duration::from_secs(86_400);
        let policy = ObjectLockPolicy::new(RetentionMode::Compliance, 30 * day, 10 * day);
        assert_eq!(policy.audit_retain, 30 * day, "raised to the base period");
        let policy = ObjectLockPolicy::new(RetentionMode::Compliance, 30 * day, 400 * day);
        for kind in ObjectKind::all() {
            let expected = match kind {
                ObjectKind::Session | ObjectKind::Lease | ObjectKind::Replica | ObjectKind::Tombstone => None,
                ObjectKind::Audit | ObjectKind::Config => Some(400 * day),
                _ => Some(30 * day),
            };
            assert_eq!(policy.period(*kind), expected, "{kind:?}");
        }
        let now = SystemTime::UNIX_EPOCH + day;
        assert_eq!(
            policy.retention_at(ObjectKind::Snapshot, now),
            Some(Retention {
                mode: RetentionMode::Compliance,
                until: now + 30 * day
            })
        );
    }
}
