//! What the repository records, gathered once per evaluation.
//!
//! [`Facts`] is plain data: the rules and the metrics are functions of it
//! and of a clock, and tests build it by hand. [`gather`] fills it from an
//! open repository: the snapshots, the audit log (its recent entries and the
//! last entry of each operation), the drill records, the pack listing and
//! the status of each replica.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nfrepo_engine::{Repository, read_audit};
use nfrepo_store::{ObjectKind, Store};
use serde::Serialize;

use crate::Result;

/// One snapshot, as the rules and metrics see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotFact {
    /// The snapshot id, hex.
    pub id: String,
    /// The source it belongs to.
    pub source: String,
    /// When the backup started, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Content bytes the snapshot covers.
    pub bytes: u64,
    /// Plaintext bytes of the blobs it added (new data).
    pub bytes_added: u64,
    /// Stored bytes of the packs it added.
    pub bytes_added_stored: u64,
    /// How long the backup took, in milliseconds.
    pub duration_ms: u64,
    /// A binlog stream's gap record: the first file purged on the server
    /// before it was copied (fact `binlog.gap`); empty otherwise.
    pub binlog_gap: String,
}

/// How far a source can be recovered ([`nfrepo_sources::RecoveryWindow`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryFact {
    /// The source.
    pub source: String,
    /// Its change log: `wal`, `binlog`, or empty for a source without one.
    pub log: String,
    /// The newest moment a restore can reach, nanoseconds since the epoch.
    pub newest_recoverable_ns: Option<i64>,
    /// A gap in the change log after the newest base backup or dump:
    /// `CODE/DETAIL: message`; empty when there is none.
    pub gap: String,
}

/// One command, as its audit entry records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OperationFact {
    /// When it ended, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The operation (`snapshot`, `check`, `restore`, `gc`…).
    pub operation: String,
    /// The sources it named.
    pub sources: Vec<String>,
    /// `user@host`.
    pub by: String,
    /// Its error code; empty on success.
    pub code: String,
    /// Its finer code (`WRONG_PASSWORD`…); empty if none.
    pub detail: String,
    /// Its error message (already redacted by the writer).
    pub message: String,
    /// Snapshots it deleted.
    pub snapshots_deleted: u64,
    /// Data packs it deleted.
    pub data_packs_deleted: u64,
    /// How long it ran, milliseconds, when its entry records it (restores
    /// do; entries of earlier builds do not).
    pub duration_ms: Option<u64>,
}

/// The audit operations that restore a snapshot: `nfrepo restore` (into a
/// directory, `--into` a database or bucket) and the panel's.
pub const RESTORE_OPERATIONS: &[&str] = &["restore", "serve restore"];

/// The timed restores of a source kept beyond the audit window, so that
/// `high_latency` has a median even for sources restored weekly.
const RESTORES_KEPT: usize = 11;

impl OperationFact {
    /// Whether the command succeeded.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.code.is_empty()
    }

    /// Whether it restored a snapshot ([`RESTORE_OPERATIONS`]).
    #[must_use]
    pub fn is_restore(&self) -> bool {
        RESTORE_OPERATIONS.contains(&self.operation.as_str())
    }
}

/// One disaster-recovery drill.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DrillFact {
    /// The source drilled.
    pub source: String,
    /// When it started, nanoseconds since the Unix epoch.
    pub started_ns: i64,
    /// Whether every check passed.
    pub passed: bool,
    /// Its error code when it failed.
    pub code: String,
    /// What went wrong, one line.
    pub message: String,
    /// Time to a verified, query-ready service, in milliseconds.
    pub rto_ms: Option<u64>,
}

/// One replica, as `replicate status` sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaFact {
    /// The `[replication.NAME]`.
    pub name: String,
    /// Seconds since the oldest snapshot the replica lacks was written; 0 in sync.
    pub lag_seconds: Option<u64>,
    /// Snapshots it lacks.
    pub snapshots_behind: u64,
    /// Why its status could not be read, when it could not.
    pub error: Option<String>,
}

/// The size of the repository's storage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StorageFact {
    /// Data packs.
    pub data_packs: u64,
    /// Tree packs.
    pub tree_packs: u64,
    /// Bytes of all packs.
    pub pack_bytes: u64,
    /// Distinct blobs (chunks and trees) the index holds.
    pub blobs: u64,
}

/// Everything the rules and metrics read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotFact>,
    /// Audit entries, oldest first: those of the audit window, and the last
    /// one of every operation whatever its age.
    pub operations: Vec<OperationFact>,
    /// Problems `audit verify` would report (a removed, altered or forged entry).
    pub audit_problems: Vec<String>,
    /// Drills, oldest first.
    pub drills: Vec<DrillFact>,
    /// Replicas, in configuration order.
    pub replicas: Vec<ReplicaFact>,
    /// Storage.
    pub storage: StorageFact,
    /// How far each source can be recovered, by source.
    pub recovery: Vec<RecoveryFact>,
}

/// A replica to look at.
#[derive(Clone, Debug)]
pub struct ReplicaTarget {
    /// Its `[replication.NAME]`.
    pub name: String,
    /// Its store.
    pub store: Arc<dyn Store>,
}

/// Nanoseconds since the Unix epoch of `time` (saturating).
#[must_use]
pub fn unix_ns(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Reads the facts of `repo` at `now_ns`; audit entries older than
/// `audit_window` are kept only as the last of their operation.
///
/// # Errors
/// Storage errors of the repository; a replica that cannot be read is
/// recorded in its [`ReplicaFact::error`] instead.
pub async fn gather(
    repo: &Repository,
    replicas: &[ReplicaTarget],
    now_ns: i64,
    audit_window: Duration,
) -> Result<Facts> {
    let entries = repo.readable_snapshots().await?;
    let recovery = nfrepo_sources::recovery_windows(&entries)
        .into_iter()
        .map(|w| RecoveryFact {
            gap: w
                .gap_error()
                .map(|e| {
                    let during = nfrepo_engine::Operation::Inspect;
                    let code = e.code(during).as_str();
                    e.detail_code()
                        .map_or_else(|| format!("{code}: {e}"), |detail| format!("{code}/{detail}: {e}"))
                })
                .unwrap_or_default(),
            log: w.log.map(|l| l.kind.as_str().to_owned()).unwrap_or_default(),
            newest_recoverable_ns: w.newest_ns,
            source: w.source,
        })
        .collect();
    let snapshots = entries
        .into_iter()
        .map(|e| SnapshotFact {
            id: e.id.to_hex(),
            source: e.snapshot.source.clone(),
            time_ns: e.snapshot.time_ns,
            bytes: e.snapshot.summary.bytes,
            bytes_added: e.snapshot.summary.bytes_added_raw,
            bytes_added_stored: e.snapshot.summary.bytes_added_stored,
            duration_ms: e.snapshot.summary.duration_ms,
            binlog_gap: e
                .snapshot
                .fact(nfrepo_engine::BINLOG_GAP_FACT)
                .unwrap_or_default()
                .to_owned(),
        })
        .collect();
    let audit = read_audit(repo, None).await?;
    let since = now_ns.saturating_sub(i64::try_from(audit_window.as_nanos()).unwrap_or(i64::MAX));
    let mut all: Vec<OperationFact> = audit
        .entries
        .iter()
        .map(|e| {
            let r = &e.record;
            OperationFact {
                time_ns: r.time_ns,
                operation: r.operation.clone(),
                sources: r.sources.clone(),
                by: format!("{}@{}", r.user, r.host),
                code: r.code.clone(),
                detail: r.detail.clone(),
                message: r.message.clone(),
                snapshots_deleted: r.snapshots_deleted.len() as u64,
                data_packs_deleted: r.objects.iter().filter(|o| o.kind == "data").map(|o| o.deleted).sum(),
                duration_ms: r.duration_ms,
            }
        })
        .collect();
    all.sort_by_key(|o| o.time_ns);
    let mut last_of_each = std::collections::BTreeMap::new();
    for (i, op) in all.iter().enumerate() {
        last_of_each.insert(op.operation.as_str(), i);
    }
    let mut keep: std::collections::BTreeSet<usize> = last_of_each.into_values().collect();
    let mut restores_of: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (i, op) in all.iter().enumerate().rev() {
        if op.is_restore() && op.duration_ms.is_some() {
            for source in &op.sources {
                let seen = restores_of.entry(source.as_str()).or_default();
                if *seen < RESTORES_KEPT {
                    *seen += 1;
                    keep.insert(i);
                }
            }
        }
    }
    let operations = all
        .iter()
        .enumerate()
        .filter(|(i, op)| op.time_ns >= since || keep.contains(i))
        .map(|(_, op)| op.clone())
        .collect();
    let mut audit_problems: Vec<String> = audit
        .problems
        .iter()
        .map(|p| format!("{}: {} ({})", p.object, p.kind.as_str(), p.detail))
        .collect();
    audit_problems.extend(audit.public_key_problem.clone());
    let history = repo.drill_history().await?;
    let drills = history
        .records
        .iter()
        .map(|r| DrillFact {
            source: r.source.clone(),
            started_ns: r.started_ns,
            passed: r.passed,
            code: r.code.clone(),
            message: r.message.clone(),
            rto_ms: r.rto_ms,
        })
        .collect();
    let mut storage = StorageFact::default();
    for (kind, count) in [
        (ObjectKind::Data, &mut storage.data_packs),
        (ObjectKind::Tree, &mut storage.tree_packs),
    ] {
        let listed = repo.store().list(kind).await?;
        *count = listed.len() as u64;
        storage.pack_bytes += listed.iter().map(|o| o.size).sum::<u64>();
    }
    // Through the local index cache when the repository has one: only
    // deltas not seen before are fetched.
    storage.blobs = repo.load_index().await?.len() as u64;
    let now = UNIX_EPOCH + Duration::from_nanos(u64::try_from(now_ns).unwrap_or(0));
    let mut replica_facts = Vec::with_capacity(replicas.len());
    for target in replicas {
        let fact = match nfrepo_engine::replica_status(Some(repo.store().as_ref()), target.store.as_ref(), now).await {
            Ok(status) => ReplicaFact {
                name: target.name.clone(),
                lag_seconds: Some(status.lag_seconds),
                snapshots_behind: status.snapshots_behind,
                error: None,
            },
            Err(e) => ReplicaFact {
                name: target.name.clone(),
                lag_seconds: None,
                snapshots_behind: 0,
                error: Some(e.to_string()),
            },
        };
        replica_facts.push(fact);
    }
    Ok(Facts {
        snapshots,
        operations,
        audit_problems,
        drills,
        replicas: replica_facts,
        storage,
        recovery,
    })
}
