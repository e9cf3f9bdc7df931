//! Alert rules: each a function of [`Facts`], the [`Watch`] (what the
//! configuration expects), the thresholds and the time now.
//!
//! Nothing here reads a clock, a file or the network: [`evaluate`] is
//! deterministic, so tests drive it with a fake time and hand-made facts.
//!
//! | rule | fires while | subject |
//! |---|---|---|
//! | `missed_backup` | a watched source's newest snapshot is older than its next scheduled run plus the grace (or than its `rpo`), or it has none | source |
//! | `corruption` | the last run of `check`, `verify`, `restore`, `rollback`, `drill` or `replicate` ended `BACKUP_CORRUPTED` or `SNAPSHOT_INVALID`; or the audit log itself is damaged | operation, or `audit-log` |
//! | `restore_failed` | the last `restore` or `rollback` within the window failed | operation |
//! | `drill_failed` | a source's last drill failed | source |
//! | `replication_lag` | a replica with `max_lag` is further behind, or its status cannot be read | replica |
//! | `persistent_errors` | a source's last `failures_in_a_row` snapshot runs all failed | source |
//! | `high_latency` | a backup, drill or restore within the window took more than `latency_factor` times the median of the five or more before it (restores: the newest successful `restore`/`serve restore` naming the source, by the duration in its audit entry) | source, `SOURCE/drill` or `SOURCE/restore` |
//! | `mass_forget` | a command within the window deleted `forget_threshold` snapshots or more | `user@host` |
//! | `gc_deleted_share` | a gc within the window deleted more than `gc_share` of the data packs | `user@host` |
//! | `auth_failures` | `denied_threshold` or more `PERMISSION_DENIED` entries within the window | `repository` |
//! | `binlog_gap` | a binlog was purged on the server before it was copied (the copy's own record), or a binlog file is missing after the newest dump (`nfrepo status`), and no dump was taken since | source |
//! | `wal_gap` | a WAL segment is missing after the newest base backup while later WAL is archived, or the newest base backup lacks its own WAL (`nfrepo status`) | source |
//! | `size_change` | a snapshot within the window grew or shrank by `size_factor`, or most of its bytes (`new_share`) were new where they usually are not | source |

mod activity;
mod backup;
mod integrity;

use std::fmt;

use nfrepo_engine::Span;
use serde::{Deserialize, Serialize};

use crate::{AlertsConfig, Facts, Schedule};

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// A backup did not happen when its schedule said.
    MissedBackup,
    /// Stored data or the audit log is damaged.
    Corruption,
    /// A restore failed.
    RestoreFailed,
    /// A disaster-recovery drill failed.
    DrillFailed,
    /// A replica is too far behind.
    ReplicationLag,
    /// A source keeps failing.
    PersistentErrors,
    /// A run took far longer than usual.
    HighLatency,
    /// Many snapshots were deleted at once.
    MassForget,
    /// A gc deleted a large share of the repository.
    GcDeletedShare,
    /// Repeated wrong passwords or refused access.
    AuthFailures,
    /// A source's size or share of new data changed suddenly.
    SizeChange,
    /// A binlog was purged before it was copied, and no dump was taken since:
    /// point-in-time restore past it is impossible.
    BinlogGap,
    /// A WAL segment is missing after the newest base backup while later WAL
    /// is archived: point-in-time restore past it is impossible.
    WalGap,
    /// A test notice from `nfrepo alerts test`.
    Test,
}

impl Rule {
    /// The rule's name (`missed_backup`…), as in output, state and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissedBackup => "missed_backup",
            Self::Corruption => "corruption",
            Self::RestoreFailed => "restore_failed",
            Self::DrillFailed => "drill_failed",
            Self::ReplicationLag => "replication_lag",
            Self::PersistentErrors => "persistent_errors",
            Self::HighLatency => "high_latency",
            Self::MassForget => "mass_forget",
            Self::GcDeletedShare => "gc_deleted_share",
            Self::AuthFailures => "auth_failures",
            Self::SizeChange => "size_change",
            Self::BinlogGap => "binlog_gap",
            Self::WalGap => "wal_gap",
            Self::Test => "test",
        }
    }

    /// How urgent the rule is.
    #[must_use]
    pub const fn severity(self) -> Severity {
        match self {
            Self::MissedBackup
            | Self::Corruption
            | Self::RestoreFailed
            | Self::DrillFailed
            | Self::SizeChange
            | Self::BinlogGap
            | Self::WalGap => Severity::Critical,
            _ => Severity::Warning,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Someone should look soon.
    Warning,
    /// Backups or restores are at risk now.
    Critical,
}

impl Severity {
    /// `warning` or `critical`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A condition a rule found, true at the time of evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule.
    pub rule: Rule,
    /// What it is about: a source, a replica, an operation, `user@host`.
    pub subject: String,
    /// One line for a human.
    pub summary: String,
    /// When the condition began, nanoseconds since the Unix epoch, when known.
    pub since_ns: Option<i64>,
}

impl Alert {
    /// `rule:subject`, the alert's identity across runs.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}:{}", self.rule, self.subject)
    }
}

/// A configured source the rules watch.
#[derive(Clone, Debug)]
pub struct SourceWatch {
    /// Its name.
    pub name: String,
    /// Its cron schedule.
    pub schedule: Option<Schedule>,
    /// Its own recovery point objective: the newest snapshot may be at most
    /// this old (overrides the schedule).
    pub rpo: Option<Span>,
}

impl SourceWatch {
    /// When a snapshot taken at `newest_ns` stops being recent enough: its
    /// `rpo` later, else the schedule's next run after it plus `grace`.
    #[must_use]
    pub fn due_ns(&self, newest_ns: i64, grace: Span, utc_offset_secs: i32) -> Option<i64> {
        if let Some(rpo) = self.rpo {
            return Some(newest_ns.saturating_add(rpo.as_nanos()));
        }
        let next = self.schedule.as_ref()?.next_after(newest_ns, utc_offset_secs)?;
        Some(next.saturating_add(grace.as_nanos()))
    }

    /// Whether the source has anything to be late against.
    #[must_use]
    pub fn is_watched(&self) -> bool {
        self.rpo.is_some() || self.schedule.as_ref().is_some_and(|s| s.next_after(0, 0).is_some())
    }
}

/// A configured replica the rules watch.
#[derive(Clone, Debug)]
pub struct ReplicaWatch {
    /// Its `[replication.NAME]`.
    pub name: String,
    /// The lag above which it alerts; `None` watches nothing.
    pub max_lag: Option<Span>,
}

/// What the configuration expects of the repository.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// Configured sources.
    pub sources: Vec<SourceWatch>,
    /// Configured replicas.
    pub replicas: Vec<ReplicaWatch>,
    /// The offset from UTC schedules are read in (the host's local time).
    pub utc_offset_secs: i32,
}

/// Every alert true at `now_ns`, ordered by rule then subject.
#[must_use]
pub fn evaluate(facts: &Facts, watch: &Watch, config: &AlertsConfig, now_ns: i64) -> Vec<Alert> {
    let at = At {
        now_ns,
        window_start_ns: now_ns.saturating_sub(config.window.as_nanos()),
    };
    let mut alerts = Vec::new();
    alerts.extend(backup::missed_backup(facts, watch, config, at));
    alerts.extend(integrity::corruption(facts));
    alerts.extend(integrity::restore_failed(facts, at));
    alerts.extend(integrity::drill_failed(facts));
    alerts.extend(integrity::replication_lag(facts, watch));
    alerts.extend(integrity::binlog_gap(facts));
    alerts.extend(integrity::log_gap(facts));
    alerts.extend(backup::persistent_errors(facts, config));
    alerts.extend(backup::high_latency(facts, config, at));
    alerts.extend(activity::mass_forget(facts, config, at));
    alerts.extend(activity::gc_deleted_share(facts, config, at));
    alerts.extend(activity::auth_failures(facts, config, at));
    alerts.extend(backup::size_change(facts, config, at));
    alerts.sort_by(|a, b| (a.rule, &a.subject).cmp(&(b.rule, &b.subject)));
    alerts.dedup_by(|a, b| a.rule == b.rule && a.subject == b.subject);
    alerts
}

/// The time of an evaluation.
#[derive(Clone, Copy, Debug)]
struct At {
    now_ns: i64,
    /// Events at or after this are recent enough to alert.
    window_start_ns: i64,
}

/// `time_ns` as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(time_ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(time_ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `seconds` as `1d2h`, `5m`, `30s`.
#[must_use]
pub fn age(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() || (s > 0 && d == 0 && h == 0) {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The median of `values` (the lower middle for an even count).
fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    values.get((values.len() - 1) / 2).copied()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders of facts for the rule tests.
    use super::{Rule, Watch, evaluate};
    use crate::{AlertsConfig, Facts, OperationFact, SnapshotFact};

    /// The `(rule, subject)` of every alert the rules raise at `time`.
    pub fn fired(facts: &Facts, watch: &Watch, time: &str) -> Vec<(Rule, String)> {
        evaluate(facts, watch, &AlertsConfig::default(), ns(time))
            .into_iter()
            .map(|a| (a.rule, a.subject))
            .collect()
    }

    /// Nanoseconds of an RFC 3339 time.
    pub fn ns(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or_default()
    }

    pub fn snapshot(source: &str, time: &str) -> SnapshotFact {
        SnapshotFact {
            id: format!("{source}-{time}"),
            source: source.to_owned(),
            time_ns: ns(time),
            bytes: 100 << 20,
            bytes_added: 1 << 20,
            bytes_added_stored: 1 << 19,
            duration_ms: 60_000,
            binlog_gap: String::new(),
        }
    }

    pub fn op(operation: &str, time: &str, code: &str) -> OperationFact {
        OperationFact {
            time_ns: ns(time),
            operation: operation.to_owned(),
            by: "ops@db1".to_owned(),
            code: code.to_owned(),
            ..OperationFact::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_as_an_operator_writes_them() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(15 * 60), "15m");
        assert_eq!(age(90 * 60 + 5), "1h30m");
        assert_eq!(age(86_400 * 2 + 3600), "2d1h");
    }
}
