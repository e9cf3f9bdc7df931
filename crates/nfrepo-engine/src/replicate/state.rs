//! The replica state object, and the deletions it times.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nfrepo_format::{Backlog, ReplicaObject, ReplicaState, RepoId};
use nfrepo_store::{ErrorKind, ObjectInfo, ObjectKey, ObjectKind, PutMode, Store};

use super::listing::{Behind, Listings};
use super::{COPY_ORDER, Pass, ReplicaProblem, ReplicateReport, from_nanos, nanos};
use crate::{Error, Result};

/// The state object's key, `replica/state`.
pub(crate) fn key() -> Result<ObjectKey> {
    ObjectKey::new(ObjectKind::Replica, "state").map_err(Error::store)
}

/// Reads the state on `target`. A missing state is `None`; so is a damaged
/// one or one of another repository (logged): losing it only restarts the
/// grace periods of pending deletions, which errs on the side of keeping.
///
/// # Errors
/// Storage failures other than a missing object.
pub(crate) async fn load(target: &dyn Store, repo: &RepoId) -> Result<Option<ReplicaState>> {
    let bytes = match target.get(&key()?).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store(e)),
    };
    match ReplicaState::decode(&bytes) {
        Ok(state) if state.repo == *repo => Ok(Some(state)),
        Ok(state) => {
            tracing::warn!(found = %state.repo.short(), "ignoring a replica state of another repository");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a damaged replica state; pending deletions start their grace period again");
            Ok(None)
        }
    }
}

/// Reads the state on `target` whatever repository it names.
///
/// # Errors
/// Storage failures other than a missing object; a damaged state.
pub(crate) async fn read(target: &dyn Store) -> Result<Option<ReplicaState>> {
    let key = key()?;
    match target.get(&key).await {
        Ok(bytes) => ReplicaState::decode(&bytes)
            .map(Some)
            .map_err(|e| Error::decode(key.path(), e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::store(e)),
    }
}

/// Writes the state (the one object a pass overwrites).
///
/// # Errors
/// Storage failures.
pub(crate) async fn save(target: &dyn Store, state: &ReplicaState) -> Result<()> {
    let bytes = state.encode().map_err(Error::Format)?;
    target
        .put(&key()?, Bytes::from(bytes), PutMode::Overwrite)
        .await
        .map_err(Error::store)
}

/// The state a pass starts from: the previous one's bookkeeping, this pass's times.
pub(crate) fn fresh(pass: &Pass<'_>, previous: Option<&ReplicaState>, started: SystemTime) -> ReplicaState {
    ReplicaState {
        repo: pass.repo,
        source: pass.source.location().to_owned(),
        pass_started_ns: nanos(started),
        pass_finished_ns: nanos(started),
        result: nfrepo_format::PassResult::Partial,
        newest_snapshot: None,
        copied_objects: 0,
        copied_bytes: 0,
        behind: Backlog::default(),
        missing_since: previous.map(|s| s.missing_since.clone()).unwrap_or_default(),
        damaged: previous.map(|s| s.damaged.clone()).unwrap_or_default(),
        verify_cursor: previous.and_then(|s| s.verify_cursor.clone()),
    }
}

fn object(kind: ObjectKind, name: &str) -> ReplicaObject {
    ReplicaObject {
        kind: kind.prefix().to_owned(),
        name: name.to_owned(),
    }
}

/// Deletes on the replica what the source has not listed for longer than
/// the grace period, snapshots and markers first, packs last; records when
/// the rest was first seen missing. A failed deletion stops the deletions
/// of later kinds, so a pack never goes before a snapshot that may need it.
pub(crate) async fn delete_expired(
    pass: &Pass<'_>,
    listings: &Listings<'_>,
    extra: &[ObjectInfo],
    previous: Option<&ReplicaState>,
    now: SystemTime,
    next: &mut ReplicaState,
    report: &mut ReplicateReport,
) {
    let seen: BTreeMap<&ReplicaObject, i64> = previous
        .map(|s| s.missing_since.iter().map(|(o, t)| (o, *t)).collect())
        .unwrap_or_default();
    let mut pending = Vec::new();
    let mut stopped = false;
    let keys_in_sync = keys_in_sync(listings, report);
    for kind in COPY_ORDER.iter().rev().copied() {
        // The config, and audit entries: the replica keeps every entry the
        // source ever had, so a log cut on the source stays whole here (audit.md).
        if kind == ObjectKind::Config || kind == ObjectKind::Audit {
            continue;
        }
        for info in extra.iter().filter(|info| info.key.kind() == kind) {
            let obj = object(kind, info.key.name());
            let first = seen.get(&obj).copied().unwrap_or_else(|| nanos(now));
            let due = if kind == ObjectKind::Key && keys_in_sync {
                now
            } else {
                from_nanos(first) + pass.options.delete_after
            };
            if stopped || due > now {
                pending.push((obj, first));
                continue;
            }
            match pass.target.delete(&info.key).await {
                Ok(()) => report.deleted.push(info.key.path()),
                Err(e) => {
                    stopped = true;
                    report.problems.push(ReplicaProblem {
                        object: info.key.path(),
                        error: Error::store(e),
                    });
                    pending.push((obj, first));
                }
            }
        }
    }
    report.pending_deletions = pending.len() as u64;
    report.next_deletion = pending
        .iter()
        .map(|(_, first)| from_nanos(*first) + pass.options.delete_after)
        .min();
    pending.sort();
    next.missing_since = pending;
}

/// Whether every key slot the source lists is on the replica after the copy
/// phase (and there is at least one). Then a key slot removed on the source
/// (`key remove`, `key passwd`) is removed from the replica at once: a
/// retired password must not keep opening the replica for the grace period,
/// and the replica still opens with the source's current slots. Otherwise
/// key slot removals wait like everything else, so a source that lost every
/// slot never leaves the replica unopenable.
fn keys_in_sync(listings: &Listings<'_>, report: &ReplicateReport) -> bool {
    let prefix = format!("{}/", ObjectKind::Key.prefix());
    !listings.source(ObjectKind::Key).is_empty() && !report.problems.iter().any(|p| p.object.starts_with(&prefix))
}

/// Fills in what the replica still lacks and its newest snapshot, after the pass.
pub(crate) fn finish(listings: &Listings<'_>, behind: Behind, next: &mut ReplicaState) {
    let (behind, newest) = behind.finish(listings);
    next.behind = behind;
    next.newest_snapshot = newest;
}

/// How long ago `ns` was, at `now`; 0 for the future.
pub(crate) fn age(now: SystemTime, ns: i64) -> Duration {
    now.duration_since(from_nanos(ns)).unwrap_or_default()
}
