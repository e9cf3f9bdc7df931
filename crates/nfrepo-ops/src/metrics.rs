//! Prometheus metrics in the text exposition format, for node_exporter's
//! textfile collector (`nfrepo metrics --textfile PATH`) and, later, `/metrics`.
//!
//! Every metric is a gauge computed from [`Facts`] at one instant; times
//! are Unix seconds (`_timestamp_seconds`), sizes bytes. Sources are those
//! configured and those with snapshots; a metric without a value (a source
//! never backed up has no last snapshot time) is left out, not written as 0.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `nfrepo_source_last_snapshot_timestamp_seconds` | source | start of the newest snapshot |
//! | `nfrepo_source_last_success_timestamp_seconds` | source | end of the last successful backup (audit log), else the newest snapshot's start |
//! | `nfrepo_source_rpo_target_seconds` | source | the age the newest snapshot may reach (`rpo`, or up to the next scheduled run plus grace) |
//! | `nfrepo_source_snapshots` | source | snapshots kept |
//! | `nfrepo_source_size_bytes` | source | content bytes of the newest snapshot |
//! | `nfrepo_source_last_added_bytes` | source | stored bytes the newest snapshot added |
//! | `nfrepo_source_last_duration_seconds` | source | how long the newest snapshot took |
//! | `nfrepo_source_consecutive_failures` | source | failed backup runs since the last success |
//! | `nfrepo_source_recoverable_timestamp_seconds` | source | the newest moment a restore can reach (the newest WAL segment or binlog event archived after a usable base backup or dump; else the newest snapshot) |
//! | `nfrepo_source_log_gap` | source, log | 1 while the source's WAL or binlog has a gap after its newest base backup or dump |
//! | `nfrepo_repository_size_bytes` | | bytes of all packs |
//! | `nfrepo_repository_packs` | kind (`data`, `tree`) | packs |
//! | `nfrepo_repository_blobs` | | distinct blobs (chunks and trees) in the index |
//! | `nfrepo_repository_snapshots` | | snapshots |
//! | `nfrepo_check_last_timestamp_seconds` | | end of the last `check` |
//! | `nfrepo_check_last_success` | | 1 if it found nothing wrong, else 0 |
//! | `nfrepo_replication_lag_seconds` | replica | age of the oldest snapshot the replica lacks (0 in sync) |
//! | `nfrepo_replication_up` | replica | 1 if the replica's status could be read |
//! | `nfrepo_drill_last_timestamp_seconds` | source | start of the last drill |
//! | `nfrepo_drill_last_success` | source | 1 if it passed |
//! | `nfrepo_drill_last_rto_seconds` | source | its time to a working service |
//! | `nfrepo_alerts_firing` | rule | alerts of the rule true now |
//! | `nfrepo_alert_firing` | rule, subject, severity | 1 per alert true now |
//! | `nfrepo_metrics_timestamp_seconds` | | when these figures were computed |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::{Alert, AlertsConfig, Error, Facts, Result, Watch};

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

fn family<'a>(out: &'a mut String, name: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    Family { out }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

#[allow(clippy::cast_precision_loss, reason = "seconds and byte counts as Prometheus floats")]
fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

#[allow(clippy::cast_precision_loss, reason = "counts as Prometheus floats")]
fn float(n: u64) -> f64 {
    n as f64
}

/// The metrics of `facts` at `now_ns`; `alerts` are those true now ([`crate::evaluate`]).
#[must_use]
pub fn render(facts: &Facts, watch: &Watch, config: &AlertsConfig, alerts: &[Alert], now_ns: i64) -> String {
    let mut out = String::new();
    let mut sources: BTreeSet<&str> = watch.sources.iter().map(|s| s.name.as_str()).collect();
    sources.extend(facts.snapshots.iter().map(|s| s.source.as_str()));
    let mut newest: BTreeMap<&str, &crate::SnapshotFact> = BTreeMap::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &facts.snapshots {
        *counts.entry(s.source.as_str()).or_default() += 1;
        if newest.get(s.source.as_str()).is_none_or(|n| n.time_ns <= s.time_ns) {
            newest.insert(s.source.as_str(), s);
        }
    }
    let mut last_success: BTreeMap<&str, i64> = BTreeMap::new();
    let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
    for op in facts.operations.iter().filter(|o| o.operation == "snapshot") {
        for source in &op.sources {
            if op.succeeded() {
                last_success.insert(source.as_str(), op.time_ns);
                failures.insert(source.as_str(), 0);
            } else {
                *failures.entry(source.as_str()).or_default() += 1;
            }
        }
    }

    let mut f = family(
        &mut out,
        "nfrepo_source_last_snapshot_timestamp_seconds",
        "Start of the newest snapshot of the source.",
    );
    for source in &sources {
        if let Some(s) = newest.get(source) {
            f.sample(
                "nfrepo_source_last_snapshot_timestamp_seconds",
                &[("source", source)],
                secs(s.time_ns),
            );
        }
    }
    let mut f = family(
        &mut out,
        "nfrepo_source_last_success_timestamp_seconds",
        "End of the last successful backup of the source.",
    );
    for source in &sources {
        let snapshot = newest.get(source).map(|s| s.time_ns);
        if let Some(t) = last_success.get(source).copied().max(snapshot) {
            f.sample(
                "nfrepo_source_last_success_timestamp_seconds",
                &[("source", source)],
                secs(t),
            );
        }
    }
    let mut f = family(
        &mut out,
        "nfrepo_source_rpo_target_seconds",
        "Age the newest snapshot of the source may reach before it is missed.",
    );
    for w in &watch.sources {
        let from = newest.get(w.name.as_str()).map_or(now_ns, |s| s.time_ns);
        if let Some(due) = w.due_ns(from, config.grace, watch.utc_offset_secs) {
            f.sample(
                "nfrepo_source_rpo_target_seconds",
                &[("source", &w.name)],
                secs(due - from),
            );
        }
    }
    type PerSnapshot = fn(&crate::SnapshotFact) -> f64;
    let per_newest: [(&str, &str, PerSnapshot); 3] = [
        (
            "nfrepo_source_size_bytes",
            "Content bytes of the newest snapshot of the source.",
            |s| float(s.bytes),
        ),
        (
            "nfrepo_source_last_added_bytes",
            "Stored bytes the newest snapshot of the source added.",
            |s| float(s.bytes_added_stored),
        ),
        (
            "nfrepo_source_last_duration_seconds",
            "How long the newest snapshot of the source took.",
            |s| float(s.duration_ms) / 1000.0,
        ),
    ];
    for (name, help, value) in per_newest {
        let mut f = family(&mut out, name, help);
        for (source, s) in &newest {
            f.sample(name, &[("source", source)], value(s));
        }
    }
    let mut f = family(&mut out, "nfrepo_source_snapshots", "Snapshots of the source.");
    for source in &sources {
        f.sample(
            "nfrepo_source_snapshots",
            &[("source", source)],
            float(counts.get(source).copied().unwrap_or(0)),
        );
    }
    let mut f = family(
        &mut out,
        "nfrepo_source_consecutive_failures",
        "Failed backup runs of the source since its last success.",
    );
    for source in &sources {
        f.sample(
            "nfrepo_source_consecutive_failures",
            &[("source", source)],
            float(failures.get(source).copied().unwrap_or(0)),
        );
    }

    let mut f = family(
        &mut out,
        "nfrepo_source_recoverable_timestamp_seconds",
        "The newest moment a restore of the source can reach (point-in-time recovery included).",
    );
    for r in &facts.recovery {
        if let Some(ns) = r.newest_recoverable_ns {
            f.sample(
                "nfrepo_source_recoverable_timestamp_seconds",
                &[("source", &r.source)],
                secs(ns),
            );
        }
    }
    let mut f = family(
        &mut out,
        "nfrepo_source_log_gap",
        "1 when the source's WAL or binlog has a gap after its newest base backup or dump, else 0.",
    );
    for r in facts.recovery.iter().filter(|r| !r.log.is_empty()) {
        f.sample(
            "nfrepo_source_log_gap",
            &[("source", &r.source), ("log", &r.log)],
            if r.gap.is_empty() { 0.0 } else { 1.0 },
        );
    }

    family(&mut out, "nfrepo_repository_size_bytes", "Bytes of all packs.").sample(
        "nfrepo_repository_size_bytes",
        &[],
        float(facts.storage.pack_bytes),
    );
    let mut f = family(&mut out, "nfrepo_repository_packs", "Packs by kind.");
    f.sample(
        "nfrepo_repository_packs",
        &[("kind", "data")],
        float(facts.storage.data_packs),
    );
    f.sample(
        "nfrepo_repository_packs",
        &[("kind", "tree")],
        float(facts.storage.tree_packs),
    );
    family(
        &mut out,
        "nfrepo_repository_blobs",
        "Distinct blobs (chunks and trees) in the index.",
    )
    .sample("nfrepo_repository_blobs", &[], float(facts.storage.blobs));
    family(&mut out, "nfrepo_repository_snapshots", "Snapshots.").sample(
        "nfrepo_repository_snapshots",
        &[],
        float(facts.snapshots.len() as u64),
    );

    if let Some(check) = facts.operations.iter().rev().find(|o| o.operation == "check") {
        family(
            &mut out,
            "nfrepo_check_last_timestamp_seconds",
            "End of the last check.",
        )
        .sample("nfrepo_check_last_timestamp_seconds", &[], secs(check.time_ns));
        family(
            &mut out,
            "nfrepo_check_last_success",
            "1 if the last check found nothing wrong.",
        )
        .sample(
            "nfrepo_check_last_success",
            &[],
            if check.succeeded() { 1.0 } else { 0.0 },
        );
    }

    let mut f = family(
        &mut out,
        "nfrepo_replication_lag_seconds",
        "Age of the oldest snapshot the replica lacks; 0 in sync.",
    );
    for r in &facts.replicas {
        if let Some(lag) = r.lag_seconds {
            f.sample("nfrepo_replication_lag_seconds", &[("replica", &r.name)], float(lag));
        }
    }
    let mut f = family(
        &mut out,
        "nfrepo_replication_up",
        "1 if the replica's status could be read.",
    );
    for r in &facts.replicas {
        f.sample(
            "nfrepo_replication_up",
            &[("replica", &r.name)],
            if r.error.is_none() { 1.0 } else { 0.0 },
        );
    }

    let mut last_drill = BTreeMap::new();
    for d in &facts.drills {
        last_drill.insert(d.source.as_str(), d);
    }
    let mut f = family(
        &mut out,
        "nfrepo_drill_last_timestamp_seconds",
        "Start of the last drill of the source.",
    );
    for (source, d) in &last_drill {
        f.sample(
            "nfrepo_drill_last_timestamp_seconds",
            &[("source", source)],
            secs(d.started_ns),
        );
    }
    let mut f = family(
        &mut out,
        "nfrepo_drill_last_success",
        "1 if the last drill of the source passed.",
    );
    for (source, d) in &last_drill {
        f.sample(
            "nfrepo_drill_last_success",
            &[("source", source)],
            if d.passed { 1.0 } else { 0.0 },
        );
    }
    let mut f = family(
        &mut out,
        "nfrepo_drill_last_rto_seconds",
        "Time to a working service in the last drill of the source.",
    );
    for (source, d) in &last_drill {
        if let Some(ms) = d.rto_ms {
            f.sample(
                "nfrepo_drill_last_rto_seconds",
                &[("source", source)],
                float(ms) / 1000.0,
            );
        }
    }

    let mut by_rule: BTreeMap<&str, u64> = BTreeMap::new();
    for a in alerts {
        *by_rule.entry(a.rule.as_str()).or_default() += 1;
    }
    let mut f = family(&mut out, "nfrepo_alerts_firing", "Alerts of the rule true now.");
    for (rule, n) in &by_rule {
        f.sample("nfrepo_alerts_firing", &[("rule", rule)], float(*n));
    }
    let mut f = family(&mut out, "nfrepo_alert_firing", "1 per alert true now.");
    for a in alerts {
        f.sample(
            "nfrepo_alert_firing",
            &[
                ("rule", a.rule.as_str()),
                ("subject", &a.subject),
                ("severity", a.rule.severity().as_str()),
            ],
            1.0,
        );
    }
    family(
        &mut out,
        "nfrepo_metrics_timestamp_seconds",
        "When these figures were computed.",
    )
    .sample("nfrepo_metrics_timestamp_seconds", &[], secs(now_ns));
    out
}

/// Writes `text` to `path` atomically (a temporary file in the same
/// directory, synced, renamed over it), readable by the collector (0644).
///
/// # Errors
/// [`Error::Metrics`] naming the file.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    crate::state::write_atomic(path, text.as_bytes(), 0o644).map_err(|source| Error::Metrics {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a panic is a test failure"
    )]
    use std::collections::BTreeMap;

    use nfrepo_engine::Span;

    use super::render;
    use crate::rules::test_support::{ns, op, snapshot};
    use crate::{AlertsConfig, DrillFact, Facts, RecoveryFact, ReplicaFact, Schedule, SourceWatch, Watch, evaluate};

    /// Parses the text format: `name{labels} value` by name and label text; checks every family has HELP and TYPE.
    pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(kind, "gauge");
                typed.insert(name.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE line");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
            samples.insert(series.to_owned(), value.parse().unwrap());
        }
        samples
    }

    #[test]
    fn metrics_reflect_the_facts() {
        let mut facts = Facts::default();
        facts.snapshots.push(snapshot("db", "2026-12-02T09:00:00Z"));
        facts.snapshots.push(snapshot("db", "2026-12-02T10:00:00Z"));
        let mut run = op("snapshot", "2026-12-02T10:01:00Z", "");
        run.sources = vec!["db".into()];
        facts.operations.push(run.clone());
        run.code = "BACKUP_FAILED".into();
        run.time_ns = ns("2026-12-02T10:06:00Z");
        facts.operations.push(run.clone());
        facts.operations.push(run);
        facts
            .operations
            .push(op("check", "2026-12-02T03:00:00Z", "BACKUP_CORRUPTED"));
        facts.storage.data_packs = 7;
        facts.storage.tree_packs = 2;
        facts.storage.pack_bytes = 123_456_789;
        facts.storage.blobs = 4_321;
        facts.replicas.push(ReplicaFact {
            name: "dr".into(),
            lag_seconds: Some(42),
            ..ReplicaFact::default()
        });
        facts.replicas.push(ReplicaFact {
            name: "cold \"b\"".into(),
            error: Some("down".into()),
            ..ReplicaFact::default()
        });
        facts.drills.push(DrillFact {
            source: "db".into(),
            started_ns: ns("2026-12-01T01:00:00Z"),
            passed: true,
            rto_ms: Some(93_500),
            ..DrillFact::default()
        });
        facts.recovery.push(RecoveryFact {
            source: "db".into(),
            log: "wal".into(),
            newest_recoverable_ns: Some(ns("2026-12-02T10:29:00Z")),
            gap: String::new(),
        });
        facts.recovery.push(RecoveryFact {
            source: "m".into(),
            log: "binlog".into(),
            newest_recoverable_ns: None,
            gap: "BACKUP_FAILED/BINLOG_GAP: binlog gap: source m: …".into(),
        });
        let watch = Watch {
            sources: vec![
                SourceWatch {
                    name: "db".into(),
                    schedule: Some(Schedule::parse("0 * * * *").unwrap()),
                    rpo: None,
                },
                SourceWatch {
                    name: "web".into(),
                    schedule: None,
                    rpo: Some(Span::parse("10m").unwrap()),
                },
            ],
            ..Watch::default()
        };
        let config = AlertsConfig::default();
        let now = ns("2026-12-02T10:30:00Z");
        let alerts = evaluate(&facts, &watch, &config, now);
        let m = parse(&render(&facts, &watch, &config, &alerts, now));
        let at = |t: &str| f64::from(u32::try_from(ns(t) / 1_000_000_000).unwrap());
        assert_eq!(
            m["nfrepo_source_last_snapshot_timestamp_seconds{source=\"db\"}"],
            at("2026-12-02T10:00:00Z")
        );
        assert_eq!(
            m["nfrepo_source_last_success_timestamp_seconds{source=\"db\"}"],
            at("2026-12-02T10:01:00Z")
        );
        // Hourly: 10:00 → next run 11:00, plus 10 minutes of grace.
        assert_eq!(m["nfrepo_source_rpo_target_seconds{source=\"db\"}"], 4200.0);
        assert_eq!(m["nfrepo_source_rpo_target_seconds{source=\"web\"}"], 600.0);
        assert!(!m.contains_key("nfrepo_source_last_snapshot_timestamp_seconds{source=\"web\"}"));
        assert_eq!(m["nfrepo_source_snapshots{source=\"web\"}"], 0.0);
        assert_eq!(m["nfrepo_source_snapshots{source=\"db\"}"], 2.0);
        assert_eq!(m["nfrepo_source_size_bytes{source=\"db\"}"], f64::from(100u32 << 20));
        assert_eq!(
            m["nfrepo_source_last_added_bytes{source=\"db\"}"],
            f64::from(1u32 << 19)
        );
        assert_eq!(m["nfrepo_source_last_duration_seconds{source=\"db\"}"], 60.0);
        assert_eq!(m["nfrepo_source_consecutive_failures{source=\"db\"}"], 2.0);
        assert_eq!(m["nfrepo_repository_size_bytes"], 123_456_789.0);
        assert_eq!(m["nfrepo_repository_packs{kind=\"data\"}"], 7.0);
        assert_eq!(m["nfrepo_repository_packs{kind=\"tree\"}"], 2.0);
        assert_eq!(m["nfrepo_repository_snapshots"], 2.0);
        assert_eq!(m["nfrepo_repository_blobs"], 4_321.0);
        assert_eq!(m["nfrepo_check_last_timestamp_seconds"], at("2026-12-02T03:00:00Z"));
        assert_eq!(m["nfrepo_check_last_success"], 0.0);
        assert_eq!(m["nfrepo_replication_lag_seconds{replica=\"dr\"}"], 42.0);
        assert_eq!(m["nfrepo_replication_up{replica=\"cold \\\"b\\\"\"}"], 0.0);
        assert_eq!(m["nfrepo_drill_last_rto_seconds{source=\"db\"}"], 93.5);
        assert_eq!(m["nfrepo_drill_last_success{source=\"db\"}"], 1.0);
        assert_eq!(
            m["nfrepo_source_recoverable_timestamp_seconds{source=\"db\"}"],
            at("2026-12-02T10:29:00Z")
        );
        assert!(!m.contains_key("nfrepo_source_recoverable_timestamp_seconds{source=\"m\"}"));
        assert_eq!(m["nfrepo_source_log_gap{source=\"db\",log=\"wal\"}"], 0.0);
        assert_eq!(m["nfrepo_source_log_gap{source=\"m\",log=\"binlog\"}"], 1.0);
        assert_eq!(m["nfrepo_alerts_firing{rule=\"binlog_gap\"}"], 1.0);
        // web was never backed up (missed), the check found corruption.
        assert_eq!(m["nfrepo_alerts_firing{rule=\"missed_backup\"}"], 1.0);
        assert_eq!(m["nfrepo_alerts_firing{rule=\"corruption\"}"], 1.0);
        assert_eq!(
            m["nfrepo_alert_firing{rule=\"missed_backup\",subject=\"web\",severity=\"critical\"}"],
            1.0
        );
        assert_eq!(m["nfrepo_metrics_timestamp_seconds"], at("2026-12-02T10:30:00Z"));
    }

    #[test]
    fn textfile_is_replaced_whole_and_readable_by_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nfrepo.prom");
        super::write_textfile(&path, "a 1\n").unwrap();
        super::write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
