//! The replica state object, and the deletions it times.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nfrepo_format::{Backlog, ReplicaObject, ReplicaState, RepoId, SnapshotId};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode, Store};

use super::listing::Listings;
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
    listings: &Listings,
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
        for info in listings.diff(kind).extra {
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
fn keys_in_sync(listings: &Listings, report: &ReplicateReport) -> bool {
    let prefix = format!("{}/", ObjectKind::Key.prefix());
    !listings.source(ObjectKind::Key).is_empty() && !report.problems.iter().any(|p| p.object.starts_with(&prefix))
}

/// Fills in what the replica still lacks and its newest snapshot, after the pass.
pub(crate) fn finish(listings: &Listings, report: &ReplicateReport, next: &mut ReplicaState) {
    let not_copied: BTreeSet<String> = report
        .problems
        .iter()
        .map(|p| p.object.clone())
        .chain(report.held_back.iter().cloned())
        .collect();
    let verify_only = next.result == nfrepo_format::PassResult::Verified;
    let (behind, newest) = backlog(listings, &|key| verify_only || not_copied.contains(&key.path()));
    next.behind = behind;
    next.newest_snapshot = newest;
}

/// What the replica lacks of the source's listing, counting only the missing
/// objects for which `still_missing` holds (the others were copied since the
/// listings were taken), and the newest snapshot (by storage time) on the replica.
pub(crate) fn backlog(
    listings: &Listings,
    still_missing: &dyn Fn(&ObjectKey) -> bool,
) -> (Backlog, Option<SnapshotId>) {
    let mut behind = Backlog::default();
    let mut newest: Option<(SystemTime, SnapshotId)> = None;
    for kind in COPY_ORDER {
        let diff = listings.diff(kind);
        let mut lacking = BTreeSet::new();
        for info in diff.missing.iter().chain(&diff.wrong_size) {
            // Every replicate run logs an audit entry on the source after
            // its pass: the log is always one entry ahead, which is no lag.
            if !still_missing(&info.key) || kind == ObjectKind::Audit {
                continue;
            }
            lacking.insert(info.key.name());
            behind.objects += 1;
            behind.bytes += info.size;
            if kind == ObjectKind::Snapshot {
                behind.snapshots += 1;
                let ns = info.last_modified.map(nanos);
                behind.oldest_snapshot_ns = match (behind.oldest_snapshot_ns, ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        if kind == ObjectKind::Snapshot {
            for info in listings.source(kind) {
                let (Some(time), Ok(id)) = (info.last_modified, info.key.name().parse::<SnapshotId>()) else {
                    continue;
                };
                if !lacking.contains(info.key.name()) && newest.is_none_or(|(t, _)| time > t) {
                    newest = Some((time, id));
                }
            }
        }
    }
    (behind, newest.map(|(_, id)| id))
}

/// How long ago `ns` was, at `now`; 0 for the future.
pub(crate) fn age(now: SystemTime, ns: i64) -> Duration {
    now.duration_since(from_nanos(ns)).unwrap_or_default()
}
