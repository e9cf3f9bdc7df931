//! `replicate status`: how far behind a replica is, live or from its state.

use std::time::SystemTime;

use nfrepo_format::{PassResult, SnapshotId};
use nfrepo_store::Store;

use super::listing::{self, Listings};
use super::{from_nanos, state};
use crate::{Error, Result};

/// How far behind one replica is.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// The replica's location.
    pub target: String,
    /// The source named by the replica's state (or the one given).
    pub source: Option<String>,
    /// Whether the figures below come from listing the source now (`true`) or
    /// from the state the last pass wrote (`false`: the source could not be listed).
    pub live: bool,
    /// Why the source could not be listed, when it could not.
    pub source_error: Option<String>,
    /// Seconds since the oldest source snapshot the replica lacks was
    /// written; 0 when in sync. From the state alone and in sync at the last
    /// pass, it is the time since that pass (an upper bound, see `lag_is_bound`).
    pub lag_seconds: u64,
    /// Whether `lag_seconds` is only an upper bound (no live listing, in sync at the last pass).
    pub lag_is_bound: bool,
    /// Snapshots the source lists that the replica lacks.
    pub snapshots_behind: u64,
    /// Objects the source lists that the replica lacks (or holds damaged).
    pub objects_behind: u64,
    /// Their bytes.
    pub bytes_behind: u64,
    /// The newest snapshot on the replica, by storage time.
    pub newest_snapshot: Option<SnapshotId>,
    /// When the last pass ended.
    pub last_pass: Option<SystemTime>,
    /// How it ended.
    pub last_result: Option<PassResult>,
    /// Objects gone from the source that wait for their grace period on the replica.
    pub pending_deletions: u64,
    /// Objects the last verification found damaged, not yet copied again.
    pub damaged: u64,
}

/// The status of the replica on `target`: live when `source` can be listed,
/// else from the replica's state.
///
/// # Errors
/// The target cannot be read; neither the source nor a state is available
/// ([`Error::Missing`] naming `replica/state`).
pub async fn replica_status(source: Option<&dyn Store>, target: &dyn Store, now: SystemTime) -> Result<ReplicaStatus> {
    let saved = state::read(target).await?;
    let mut status = ReplicaStatus {
        target: target.location().to_owned(),
        source: saved.as_ref().map(|s| s.source.clone()),
        live: false,
        source_error: None,
        lag_seconds: 0,
        lag_is_bound: false,
        snapshots_behind: 0,
        objects_behind: 0,
        bytes_behind: 0,
        newest_snapshot: saved.as_ref().and_then(|s| s.newest_snapshot),
        last_pass: saved.as_ref().map(|s| from_nanos(s.pass_finished_ns)),
        last_result: saved.as_ref().map(|s| s.result),
        pending_deletions: saved.as_ref().map_or(0, |s| s.missing_since.len() as u64),
        damaged: saved.as_ref().map_or(0, |s| s.damaged.len() as u64),
    };
    if let Some(source) = source {
        status.source = Some(source.location().to_owned());
        let live = async {
            let listings = Listings::take(source, target).await?;
            listing::behind(&listings).await
        };
        match live.await {
            Ok((behind, newest)) => {
                status.live = true;
                status.snapshots_behind = behind.snapshots;
                status.objects_behind = behind.objects;
                status.bytes_behind = behind.bytes;
                status.lag_seconds = behind.oldest_snapshot_ns.map_or(0, |ns| state::age(now, ns).as_secs());
                status.newest_snapshot = newest.or(status.newest_snapshot);
                return Ok(status);
            }
            Err(e) => status.source_error = Some(e.to_string()),
        }
    }
    let Some(saved) = saved else {
        return Err(Error::Missing {
            object: format!("{}/replica/state", target.location().trim_end_matches('/')),
            detail: match status.source_error {
                Some(e) => format!("no replication pass has written a state, and the source cannot be listed: {e}"),
                None => "no replication pass has written a state on this target".into(),
            },
        });
    };
    status.snapshots_behind = saved.behind.snapshots;
    status.objects_behind = saved.behind.objects;
    status.bytes_behind = saved.behind.bytes;
    (status.lag_seconds, status.lag_is_bound) = match saved.behind.oldest_snapshot_ns {
        Some(ns) => (state::age(now, ns).as_secs(), false),
        None => (state::age(now, saved.pass_started_ns).as_secs(), true),
    };
    Ok(status)
}
