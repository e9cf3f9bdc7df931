//! S3 Object Lock for a repository: the policy its config names, and the two
//! passes gc runs on an object-locked repository (format-spec/object-lock.md).
//!
//! - **Renew.** Every live write-once object whose retention may lapse within
//!   half its period gets a new one, dated a whole period from now. "May
//!   lapse" is judged from the object's write time alone (the retention it got
//!   when written), so renewing needs no read of the current retention: an
//!   object older than half its period is renewed on every run. Packs named
//!   by a gc plan are not live and are left to lapse.
//! - **Purge.** A delete on a versioned bucket only hides an object behind a
//!   delete marker; its versions stay. Gc frees the versions of every hidden
//!   or overwritten object, and a version the server refuses to delete
//!   because its retention holds is reported as retained until its date, not
//!   as an error. A later gc after that date frees it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_format::ObjectLock;
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, ObjectLockPolicy, ObjectLockStore, RetentionMode, Store};

use crate::{Error, Repository, Result};

/// The store policy a config's object lock names.
#[must_use]
pub(crate) fn policy(lock: &ObjectLock) -> ObjectLockPolicy {
    let mode = if lock.mode == ObjectLock::GOVERNANCE {
        RetentionMode::Governance
    } else {
        RetentionMode::Compliance
    };
    ObjectLockPolicy::new(
        mode,
        Duration::from_secs(lock.retain_secs),
        Duration::from_secs(lock.audit_retain_secs),
    )
}

/// `store`, wrapped so that every write-once object gets its retention when
/// the repository has object lock.
pub(crate) fn wrap(store: Arc<dyn Store>, lock: Option<&ObjectLock>) -> Arc<dyn Store> {
    match lock {
        Some(lock) => Arc::new(ObjectLockStore::new(store, policy(lock))),
        None => store,
    }
}

/// What the object-lock passes of one gc did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockReport {
    /// Live objects whose retention was extended.
    pub renewed: u64,
    /// Renewals the server refused (a compliance retention already later than
    /// the new date, set by a host whose clock runs ahead).
    pub renew_refused: u64,
    /// Deleted or overwritten objects whose stored versions were freed.
    pub purged: u64,
    /// Bytes those versions held.
    pub purged_bytes: u64,
    /// Deleted objects whose versions stay under retention.
    pub retained: u64,
    /// Bytes those versions hold.
    pub retained_bytes: u64,
    /// When the first of those retentions lapses: a gc after it frees something.
    pub retained_first_lapse: Option<SystemTime>,
    /// When the last one lapses: a gc after it frees them all.
    pub retained_until: Option<SystemTime>,
}

/// How many object-lock requests gc keeps in flight.
const IN_FLIGHT: usize = 8;

impl Repository {
    /// The object-lock policy, if the repository has one.
    #[must_use]
    pub fn object_lock(&self) -> Option<ObjectLockPolicy> {
        self.config().object_lock.as_ref().map(policy)
    }

    /// Extends the retention of live objects (module docs). `planned` are the
    /// packs gc plans name, which are not live.
    pub(crate) async fn renew_retention(
        &self,
        policy: &ObjectLockPolicy,
        now: SystemTime,
        planned: &HashSet<ObjectKey>,
        report: &mut LockReport,
    ) -> Result<()> {
        for &kind in ObjectKind::all() {
            let Some(period) = policy.period(kind) else {
                continue;
            };
            let due: Vec<ObjectKey> = self
                .store()
                .list(kind)
                .await
                .map_err(Error::store)?
                .into_iter()
                .filter(|info| !planned.contains(&info.key))
                .filter(|info| {
                    let written = info.last_modified.unwrap_or(SystemTime::UNIX_EPOCH);
                    written + period <= now + period / 2
                })
                .map(|info| info.key)
                .collect();
            let Some(retention) = policy.retention_at(kind, now) else {
                continue;
            };
            let outcomes: Vec<bool> = stream::iter(due)
                .map(|key| async move {
                    match self.store().set_retention(&key, retention).await {
                        Ok(()) => Ok(true),
                        // Already retained longer (compliance cannot be shortened), or
                        // the object went away since the listing.
                        Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::NotFound) => {
                            tracing::warn!(key = %key, error = %e, "retention not extended");
                            Ok(false)
                        }
                        Err(e) => Err(Error::store(e)),
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect()
                .await?;
            for renewed in outcomes {
                if renewed {
                    report.renewed += 1;
                } else {
                    report.renew_refused += 1;
                }
            }
        }
        Ok(())
    }

    /// Frees the versions of deleted and overwritten objects (module docs).
    pub(crate) async fn purge_versions(&self, report: &mut LockReport) -> Result<()> {
        for &kind in ObjectKind::all() {
            let purgeable = self.store().list_purgeable(kind).await.map_err(Error::store)?;
            let outcomes: Vec<(u64, Option<SystemTime>)> = stream::iter(purgeable)
                .map(|info| async move {
                    match self.store().purge(&info.key).await {
                        Ok(()) => Ok((info.size, None)),
                        Err(e) if e.kind() == ErrorKind::Retained => {
                            Ok((info.size, Some(e.retained_until().unwrap_or(SystemTime::UNIX_EPOCH))))
                        }
                        Err(e) => Err(Error::store(e)),
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect()
                .await?;
            for (size, retained) in outcomes {
                match retained {
                    None => {
                        report.purged += 1;
                        report.purged_bytes += size;
                    }
                    Some(until) => {
                        report.retained += 1;
                        report.retained_bytes += size;
                        report.retained_first_lapse = Some(report.retained_first_lapse.map_or(until, |t| t.min(until)));
                        report.retained_until = report.retained_until.max(Some(until));
                    }
                }
            }
        }
        Ok(())
    }
}
