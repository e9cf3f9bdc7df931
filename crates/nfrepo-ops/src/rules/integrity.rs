//! Rules about whether what is stored can be trusted and restored.

use std::collections::BTreeMap;

use super::{Alert, At, Rule, Watch, age, rfc3339};
use crate::{Facts, OperationFact};

/// Operations whose last run decides whether the repository is known damaged.
const VERIFYING: [&str; 6] = ["check", "verify", "restore", "rollback", "drill", "replicate"];
/// Codes that mean stored data is damaged.
const CORRUPTION_CODES: [&str; 2] = ["BACKUP_CORRUPTED", "SNAPSHOT_INVALID"];
/// Operations that restore.
const RESTORING: [&str; 2] = ["restore", "rollback"];

/// The last entry of each of `names`.
fn last_of<'a>(facts: &'a Facts, names: &[&str]) -> BTreeMap<&'a str, &'a OperationFact> {
    let mut last = BTreeMap::new();
    for op in facts
        .operations
        .iter()
        .filter(|o| names.contains(&o.operation.as_str()))
    {
        last.insert(op.operation.as_str(), op);
    }
    last
}

fn code_of(op: &OperationFact) -> String {
    if op.detail.is_empty() {
        op.code.clone()
    } else {
        format!("{}/{}", op.code, op.detail)
    }
}

/// A binlog stream's newest gap record with no dump of its source after
/// it: the gap lies between every dump and now.
pub(super) fn binlog_gap(facts: &Facts) -> Vec<Alert> {
    let mut newest_gap: BTreeMap<&str, &crate::SnapshotFact> = BTreeMap::new();
    for snapshot in facts.snapshots.iter().filter(|s| !s.binlog_gap.is_empty()) {
        let base = snapshot
            .source
            .strip_suffix(nfrepo_engine::BINLOG_STREAM_SUFFIX)
            .unwrap_or(&snapshot.source);
        let slot = newest_gap.entry(base).or_insert(snapshot);
        if snapshot.time_ns > slot.time_ns {
            *slot = snapshot;
        }
    }
    newest_gap
        .into_iter()
        .filter(|(base, gap)| {
            !facts
                .snapshots
                .iter()
                .any(|s| s.source == *base && s.time_ns > gap.time_ns)
        })
        .map(|(base, gap)| Alert {
            rule: Rule::BinlogGap,
            subject: base.to_owned(),
            summary: format!(
                "source {base}: BACKUP_FAILED/BINLOG_GAP: binlog {} was purged before it was copied; take a new dump",
                gap.binlog_gap
            ),
            since_ns: Some(gap.time_ns),
        })
        .collect()
}

/// A change log with a gap after its source's newest base backup or dump
/// ([`nfrepo_sources::RecoveryWindow`]): recovery to now is impossible
/// until a new one is taken.
pub(super) fn log_gap(facts: &Facts) -> Vec<Alert> {
    facts
        .recovery
        .iter()
        .filter(|r| !r.gap.is_empty())
        .filter_map(|r| {
            let rule = match r.log.as_str() {
                "wal" => Rule::WalGap,
                "binlog" => Rule::BinlogGap,
                _ => return None,
            };
            Some(Alert {
                rule,
                subject: r.source.clone(),
                summary: r.gap.clone(),
                since_ns: None,
            })
        })
        .collect()
}

pub(super) fn corruption(facts: &Facts) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = last_of(facts, &VERIFYING)
        .into_iter()
        .filter(|(_, op)| CORRUPTION_CODES.contains(&op.code.as_str()))
        .map(|(name, op)| Alert {
            rule: Rule::Corruption,
            subject: name.to_owned(),
            summary: format!(
                "the last {name} ({} by {}) ended {}: {}",
                rfc3339(op.time_ns),
                op.by,
                code_of(op),
                op.message
            ),
            since_ns: Some(op.time_ns),
        })
        .collect();
    if let Some(first) = facts.audit_problems.first() {
        alerts.push(Alert {
            rule: Rule::Corruption,
            subject: "audit-log".into(),
            summary: format!(
                "the audit log has {} problem(s) (`nfrepo audit verify`): {first}",
                facts.audit_problems.len()
            ),
            since_ns: None,
        });
    }
    alerts
}

pub(super) fn restore_failed(facts: &Facts, at: At) -> Vec<Alert> {
    last_of(facts, &RESTORING)
        .into_iter()
        .filter(|(_, op)| !op.succeeded() && op.time_ns >= at.window_start_ns)
        .map(|(name, op)| Alert {
            rule: Rule::RestoreFailed,
            subject: name.to_owned(),
            summary: format!(
                "{name} at {} by {} failed with {}: {}",
                rfc3339(op.time_ns),
                op.by,
                code_of(op),
                op.message
            ),
            since_ns: Some(op.time_ns),
        })
        .collect()
}

pub(super) fn drill_failed(facts: &Facts) -> Vec<Alert> {
    let mut last = BTreeMap::new();
    for d in &facts.drills {
        last.insert(d.source.as_str(), d);
    }
    last.into_iter()
        .filter(|(_, d)| !d.passed)
        .map(|(source, d)| Alert {
            rule: Rule::DrillFailed,
            subject: source.to_owned(),
            summary: format!(
                "source {source}: the drill of {} failed with {}: {}",
                rfc3339(d.started_ns),
                d.code,
                d.message
            ),
            since_ns: Some(d.started_ns),
        })
        .collect()
}

pub(super) fn replication_lag(facts: &Facts, watch: &Watch) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for replica in &watch.replicas {
        let Some(max_lag) = replica.max_lag else {
            continue;
        };
        let Some(fact) = facts.replicas.iter().find(|r| r.name == replica.name) else {
            continue;
        };
        let summary = match (&fact.error, fact.lag_seconds) {
            (Some(error), _) => Some(format!("replica {}: status cannot be read: {error}", replica.name)),
            (None, Some(lag)) if lag > max_lag.as_secs() => Some(format!(
                "replica {}: {} behind ({} snapshot(s)), max_lag {max_lag}",
                replica.name,
                age(lag),
                fact.snapshots_behind
            )),
            _ => None,
        };
        if let Some(summary) = summary {
            alerts.push(Alert {
                rule: Rule::ReplicationLag,
                subject: replica.name.clone(),
                summary,
                since_ns: None,
            });
        }
    }
    alerts
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a panic is a test failure"
    )]
    use nfrepo_engine::Span;

    use super::super::test_support::{ns, op};
    use crate::rules::{ReplicaWatch, Rule, Watch, evaluate};
    use crate::{AlertsConfig, DrillFact, Facts, ReplicaFact};

    use super::super::test_support::fired;

    // Issue 16: a binlog purged before it was copied fires until a new dump.
    #[test]
    fn a_binlog_gap_fires_until_the_next_dump() {
        use super::super::test_support::snapshot;
        let mut facts = Facts::default();
        facts.snapshots.push(snapshot("m", "2026-12-02T03:00:00Z"));
        facts.snapshots.push(snapshot("m.binlog", "2026-12-02T04:00:00Z"));
        let now = "2026-12-02T10:00:00Z";
        assert!(fired(&facts, &Watch::default(), now).is_empty());
        let mut gap = snapshot("m.binlog", "2026-12-02T05:00:00Z");
        gap.binlog_gap = "binlog.000007".into();
        facts.snapshots.push(gap);
        let alerts = evaluate(&facts, &Watch::default(), &AlertsConfig::default(), ns(now));
        assert_eq!((alerts[0].rule, alerts[0].subject.as_str()), (Rule::BinlogGap, "m"));
        assert!(
            alerts[0].summary.contains("BINLOG_GAP: binlog binlog.000007"),
            "{}",
            alerts[0].summary
        );
        facts.snapshots.push(snapshot("m", "2026-12-02T06:00:00Z"));
        assert!(
            fired(&facts, &Watch::default(), now).is_empty(),
            "a new dump resolves it"
        );
    }

    // Issue 16: a WAL gap after the newest base backup fires while `status` reports it.
    #[test]
    fn a_log_gap_fires_as_its_log_kind() {
        use crate::RecoveryFact;
        let now = "2026-12-02T10:00:00Z";
        let mut facts = Facts::default();
        facts.recovery.push(RecoveryFact {
            source: "pg".into(),
            log: "wal".into(),
            newest_recoverable_ns: Some(ns("2026-12-02T09:00:00Z")),
            gap: String::new(),
        });
        facts.recovery.push(RecoveryFact {
            source: "files".into(),
            gap: "ignored: no log".into(),
            ..RecoveryFact::default()
        });
        assert!(fired(&facts, &Watch::default(), now).is_empty());
        facts.recovery[0].gap = "BACKUP_FAILED/WAL_GAP: WAL gap: source pg: WAL segment 000000010000000000000005 \
                                 is not archived"
            .into();
        let alerts = evaluate(&facts, &Watch::default(), &AlertsConfig::default(), ns(now));
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].rule, alerts[0].subject.as_str()), (Rule::WalGap, "pg"));
        assert_eq!(alerts[0].rule.severity(), crate::Severity::Critical);
        assert!(alerts[0].summary.contains("000000010000000000000005"));
    }

    #[test]
    fn corruption_lasts_until_the_same_operation_succeeds() {
        let mut facts = Facts::default();
        let mut check = op("check", "2026-11-01T03:00:00Z", "BACKUP_CORRUPTED");
        check.message = "pack 1f2e… does not hash to its name".into();
        facts.operations.push(check);
        // A month later, still firing: corruption does not age out.
        let now = "2026-12-02T10:00:00Z";
        let alerts = evaluate(&facts, &Watch::default(), &AlertsConfig::default(), ns(now));
        assert_eq!(
            (alerts[0].rule, alerts[0].subject.as_str()),
            (Rule::Corruption, "check")
        );
        assert!(
            alerts[0].summary.contains("BACKUP_CORRUPTED: pack 1f2e"),
            "{}",
            alerts[0].summary
        );
        facts.operations.push(op("snapshot", "2026-12-02T04:00:00Z", ""));
        assert_eq!(
            fired(&facts, &Watch::default(), now).len(),
            1,
            "another operation does not resolve it"
        );
        facts.operations.push(op("check", "2026-12-02T05:00:00Z", ""));
        assert!(fired(&facts, &Watch::default(), now).is_empty());
        facts
            .audit_problems
            .push("audit/ab-3: missing (a later entry needs it)".into());
        assert_eq!(
            fired(&facts, &Watch::default(), now),
            [(Rule::Corruption, "audit-log".into())]
        );
    }

    #[test]
    fn restore_and_drill_failures() {
        let mut facts = Facts::default();
        facts
            .operations
            .push(op("restore", "2026-12-02T09:00:00Z", "RESTORE_FAILED"));
        facts.drills.push(DrillFact {
            source: "db".into(),
            started_ns: ns("2026-12-02T08:00:00Z"),
            passed: false,
            code: "RESTORE_FAILED".into(),
            message: "query returned false".into(),
            ..DrillFact::default()
        });
        let now = "2026-12-02T10:00:00Z";
        assert_eq!(
            fired(&facts, &Watch::default(), now),
            [
                (Rule::RestoreFailed, "restore".into()),
                (Rule::DrillFailed, "db".into())
            ]
        );
        // A failed restore is an event: it ages out of the window; a failed
        // drill lasts until the next drill passes.
        assert_eq!(
            fired(&facts, &Watch::default(), "2026-12-03T09:00:01Z"),
            [(Rule::DrillFailed, "db".into())]
        );
        facts.drills.push(DrillFact {
            source: "db".into(),
            started_ns: ns("2026-12-02T09:30:00Z"),
            passed: true,
            ..DrillFact::default()
        });
        facts.operations.push(op("restore", "2026-12-02T09:40:00Z", ""));
        assert!(fired(&facts, &Watch::default(), now).is_empty());
    }

    #[test]
    fn replication_lag_above_max_lag_or_unreadable() {
        let watch = Watch {
            replicas: vec![
                ReplicaWatch {
                    name: "dr".into(),
                    max_lag: Some(Span::parse("5m").unwrap()),
                },
                ReplicaWatch {
                    name: "cold".into(),
                    max_lag: None,
                },
            ],
            ..Watch::default()
        };
        let mut facts = Facts::default();
        let replica = |name: &str, lag: u64| ReplicaFact {
            name: name.into(),
            lag_seconds: Some(lag),
            snapshots_behind: 2,
            error: None,
        };
        facts.replicas = vec![replica("dr", 300), replica("cold", 90_000)];
        let now = "2026-12-02T10:00:00Z";
        assert!(
            fired(&facts, &watch, now).is_empty(),
            "at max_lag exactly, and cold is not watched"
        );
        facts.replicas[0].lag_seconds = Some(301);
        let alerts = evaluate(&facts, &watch, &AlertsConfig::default(), ns(now));
        assert_eq!(
            (alerts[0].rule, alerts[0].subject.as_str()),
            (Rule::ReplicationLag, "dr")
        );
        assert!(
            alerts[0].summary.contains("5m1s behind (2 snapshot(s)), max_lag 5m"),
            "{}",
            alerts[0].summary
        );
        facts.replicas[0] = ReplicaFact {
            name: "dr".into(),
            error: Some("connection refused".into()),
            ..ReplicaFact::default()
        };
        assert!(
            evaluate(&facts, &watch, &AlertsConfig::default(), ns(now))[0]
                .summary
                .contains("connection refused")
        );
    }
}
