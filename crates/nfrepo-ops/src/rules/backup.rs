//! Rules about backups themselves: missed, failing, slow, suspiciously changed.

use std::collections::BTreeMap;

use super::{Alert, At, Rule, Watch, age, median, rfc3339};
use crate::{AlertsConfig, Facts, SnapshotFact};

/// Runs of a source compared against for latency and size.
const HISTORY_RUNS: usize = 10;
/// Runs needed before a median means anything.
const MIN_HISTORY: usize = 5;
/// Backups shorter than this are never `high_latency` (jitter dominates).
const MIN_LATENCY_MS: u64 = 10_000;
/// Sources smaller than this are never `size_change`.
const MIN_SIZE_BYTES: u64 = 1 << 20;

/// Snapshots by source, oldest first.
fn by_source(facts: &Facts) -> BTreeMap<&str, Vec<&SnapshotFact>> {
    let mut map: BTreeMap<&str, Vec<&SnapshotFact>> = BTreeMap::new();
    for s in &facts.snapshots {
        map.entry(s.source.as_str()).or_default().push(s);
    }
    for list in map.values_mut() {
        list.sort_by_key(|s| s.time_ns);
    }
    map
}

pub(super) fn missed_backup(facts: &Facts, watch: &Watch, config: &AlertsConfig, at: At) -> Vec<Alert> {
    let sources = by_source(facts);
    let mut alerts = Vec::new();
    for source in watch.sources.iter().filter(|s| s.is_watched()) {
        let newest = sources.get(source.name.as_str()).and_then(|l| l.last());
        let Some(newest) = newest else {
            alerts.push(Alert {
                rule: Rule::MissedBackup,
                subject: source.name.clone(),
                summary: format!("source {} has no snapshot at all", source.name),
                since_ns: None,
            });
            continue;
        };
        let Some(due) = source.due_ns(newest.time_ns, config.grace, watch.utc_offset_secs) else {
            continue;
        };
        if at.now_ns > due {
            let late = u64::try_from((at.now_ns - newest.time_ns) / 1_000_000_000).unwrap_or(0);
            let rule = match (&source.rpo, &source.schedule) {
                (Some(rpo), _) => format!("rpo {rpo}"),
                (None, Some(schedule)) => format!("schedule {schedule}, grace {}", config.grace),
                (None, None) => String::new(),
            };
            alerts.push(Alert {
                rule: Rule::MissedBackup,
                subject: source.name.clone(),
                summary: format!(
                    "source {}: newest snapshot is {} old (taken {}; {rule}; due by {})",
                    source.name,
                    age(late),
                    rfc3339(newest.time_ns),
                    rfc3339(due)
                ),
                since_ns: Some(due),
            });
        }
    }
    alerts
}

pub(super) fn persistent_errors(facts: &Facts, config: &AlertsConfig) -> Vec<Alert> {
    let mut runs: BTreeMap<&str, Vec<&crate::OperationFact>> = BTreeMap::new();
    for op in facts.operations.iter().filter(|o| o.operation == "snapshot") {
        for source in &op.sources {
            runs.entry(source.as_str()).or_default().push(op);
        }
    }
    let n = config.failures_in_a_row as usize;
    let mut alerts = Vec::new();
    for (source, runs) in runs {
        let failing: Vec<_> = runs.iter().rev().take_while(|o| !o.succeeded()).collect();
        if failing.len() >= n
            && let (Some(last), Some(first)) = (failing.first(), failing.last())
        {
            alerts.push(Alert {
                rule: Rule::PersistentErrors,
                subject: source.to_owned(),
                summary: format!(
                    "source {source}: the last {} runs failed, the latest with {}{}: {}",
                    failing.len(),
                    last.code,
                    if last.detail.is_empty() {
                        String::new()
                    } else {
                        format!("/{}", last.detail)
                    },
                    last.message
                ),
                since_ns: Some(first.time_ns),
            });
        }
    }
    alerts
}

pub(super) fn high_latency(facts: &Facts, config: &AlertsConfig, at: At) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let slow = |history: &[u64], ms: u64| -> Option<u64> {
        let start = history.len().saturating_sub(HISTORY_RUNS);
        let mut before = history.get(start..)?.to_vec();
        if before.len() < MIN_HISTORY || ms < MIN_LATENCY_MS {
            return None;
        }
        let median = median(&mut before)?;
        #[allow(clippy::cast_precision_loss, reason = "durations far below 2^52 ms")]
        let too_slow = ms as f64 > median as f64 * config.latency_factor;
        too_slow.then_some(median)
    };
    for (source, list) in by_source(facts) {
        let durations: Vec<u64> = list.iter().map(|s| s.duration_ms).collect();
        for (i, s) in list
            .iter()
            .enumerate()
            .rev()
            .take_while(|(_, s)| s.time_ns >= at.window_start_ns)
        {
            if let Some(median) = durations.get(..i).and_then(|h| slow(h, s.duration_ms)) {
                alerts.push(Alert {
                    rule: Rule::HighLatency,
                    subject: source.to_owned(),
                    summary: format!(
                        "source {source}: the backup of {} took {} (median {})",
                        rfc3339(s.time_ns),
                        age(s.duration_ms / 1000),
                        age(median / 1000)
                    ),
                    since_ns: Some(s.time_ns),
                });
                break;
            }
        }
    }
    // Restores, by the duration their audit entries record: the newest
    // successful one of each source against the ones before it.
    let mut restores: BTreeMap<&str, Vec<(i64, u64)>> = BTreeMap::new();
    for o in facts.operations.iter().filter(|o| o.is_restore() && o.succeeded()) {
        if let Some(ms) = o.duration_ms {
            for source in &o.sources {
                restores.entry(source.as_str()).or_default().push((o.time_ns, ms));
            }
        }
    }
    for (source, mut list) in restores {
        list.sort_unstable();
        let durations: Vec<u64> = list.iter().map(|(_, ms)| *ms).collect();
        if let Some((i, (time_ns, ms))) = list.iter().enumerate().next_back()
            && *time_ns >= at.window_start_ns
            && let Some(median) = durations.get(..i).and_then(|h| slow(h, *ms))
        {
            alerts.push(Alert {
                rule: Rule::HighLatency,
                subject: format!("{source}/restore"),
                summary: format!(
                    "source {source}: the restore that ended {} took {} (median {})",
                    rfc3339(*time_ns),
                    age(ms / 1000),
                    age(median / 1000)
                ),
                since_ns: Some(*time_ns),
            });
        }
    }
    let mut drills: BTreeMap<&str, Vec<&crate::DrillFact>> = BTreeMap::new();
    for d in &facts.drills {
        drills.entry(d.source.as_str()).or_default().push(d);
    }
    for (source, list) in drills {
        let timed: Vec<(&crate::DrillFact, u64)> = list.iter().filter_map(|d| Some((*d, d.rto_ms?))).collect();
        let rtos: Vec<u64> = timed.iter().map(|(_, ms)| *ms).collect();
        if let Some((i, (d, ms))) = timed.iter().enumerate().next_back()
            && d.started_ns >= at.window_start_ns
            && let Some(median) = rtos.get(..i).and_then(|h| slow(h, *ms))
        {
            alerts.push(Alert {
                rule: Rule::HighLatency,
                subject: format!("{source}/drill"),
                summary: format!(
                    "source {source}: the drill of {} took {} to a working service (median {})",
                    rfc3339(d.started_ns),
                    age(ms / 1000),
                    age(median / 1000)
                ),
                since_ns: Some(d.started_ns),
            });
        }
    }
    alerts
}

pub(super) fn size_change(facts: &Facts, config: &AlertsConfig, at: At) -> Vec<Alert> {
    #[allow(clippy::cast_precision_loss, reason = "a ratio of byte counts")]
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let mut alerts = Vec::new();
    for (source, list) in by_source(facts) {
        for (i, s) in list
            .iter()
            .enumerate()
            .rev()
            .take_while(|(_, s)| s.time_ns >= at.window_start_ns)
        {
            let Some(previous) = i.checked_sub(1).and_then(|p| list.get(p)) else {
                continue;
            };
            let mut why = None;
            if previous.bytes >= MIN_SIZE_BYTES || s.bytes >= MIN_SIZE_BYTES {
                let grew = ratio(s.bytes, previous.bytes);
                if grew >= config.size_factor || grew * config.size_factor <= 1.0 {
                    why = Some(format!("size went from {} to {} bytes", previous.bytes, s.bytes));
                }
            }
            let history = &list[i.saturating_sub(HISTORY_RUNS)..i];
            if why.is_none() && s.bytes >= MIN_SIZE_BYTES && history.len() >= MIN_HISTORY.min(3) {
                let share = ratio(s.bytes_added, s.bytes);
                let mut usual: Vec<u64> = history
                    .iter()
                    .map(|h| (ratio(h.bytes_added, h.bytes) * 1e6) as u64)
                    .collect();
                #[allow(clippy::cast_precision_loss, reason = "a share in millionths")]
                let usual = median(&mut usual).map_or(1.0, |m| m as f64 / 1e6);
                if share >= config.new_share && usual < config.new_share / 2.0 {
                    why = Some(format!(
                        "{:.0}% of its bytes are new (usually {:.0}%): data rewritten or encrypted?",
                        share * 100.0,
                        usual * 100.0
                    ));
                }
            }
            if let Some(why) = why {
                alerts.push(Alert {
                    rule: Rule::SizeChange,
                    subject: source.to_owned(),
                    summary: format!("source {source}: snapshot of {}: {why}", rfc3339(s.time_ns)),
                    since_ns: Some(s.time_ns),
                });
                break;
            }
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

    use super::super::test_support::{ns, op, snapshot};
    use crate::rules::{Rule, SourceWatch, Watch, evaluate};
    use crate::{AlertsConfig, DrillFact, Facts, Schedule};

    fn watch(schedule: &str, rpo: Option<&str>) -> Watch {
        Watch {
            sources: vec![SourceWatch {
                name: "db".into(),
                schedule: Some(Schedule::parse(schedule).unwrap()),
                rpo: rpo.map(|r| Span::parse(r).unwrap()),
            }],
            ..Watch::default()
        }
    }

    use super::super::test_support::fired as rules_at;

    #[test]
    fn missed_backup_fires_at_the_minute_the_grace_ends_and_resolves_with_the_next_snapshot() {
        // Every 5 minutes; the cron stops after the 10:00 run.
        let mut facts = Facts::default();
        facts.snapshots.push(snapshot("db", "2026-12-02T10:00:02Z"));
        let watch = watch("*/5 * * * *", None);
        // Due at 10:05, plus 10 minutes of grace: quiet up to 10:15:00 ...
        assert!(rules_at(&facts, &watch, "2026-12-02T10:15:00Z").is_empty());
        // ... firing one second later.
        let alerts = evaluate(&facts, &watch, &AlertsConfig::default(), ns("2026-12-02T10:15:01Z"));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].rule, Rule::MissedBackup);
        assert_eq!(alerts[0].subject, "db");
        assert_eq!(alerts[0].since_ns, Some(ns("2026-12-02T10:15:00Z")));
        assert!(alerts[0].summary.contains("14m59s old"), "{}", alerts[0].summary);
        // The next snapshot resolves it.
        facts.snapshots.push(snapshot("db", "2026-12-02T10:20:01Z"));
        assert!(rules_at(&facts, &watch, "2026-12-02T10:21:00Z").is_empty());
    }

    #[test]
    fn rpo_overrides_the_schedule_and_a_source_without_snapshots_is_missed() {
        let mut facts = Facts::default();
        facts.snapshots.push(snapshot("db", "2026-12-02T10:00:00Z"));
        let watch = watch("@daily", Some("10m"));
        assert!(rules_at(&facts, &watch, "2026-12-02T10:10:00Z").is_empty());
        assert_eq!(
            rules_at(&facts, &watch, "2026-12-02T10:10:01Z"),
            [(Rule::MissedBackup, "db".into())]
        );
        let alerts = evaluate(
            &Facts::default(),
            &watch,
            &AlertsConfig::default(),
            ns("2026-12-02T10:00:00Z"),
        );
        assert!(alerts[0].summary.contains("no snapshot at all"));
        // Another source's snapshots are not this one's.
        let mut other = Facts::default();
        other.snapshots.push(snapshot("web", "2026-12-02T10:00:00Z"));
        assert_eq!(rules_at(&other, &watch, "2026-12-02T10:01:00Z").len(), 1);
    }

    #[test]
    fn persistent_errors_need_n_failures_in_a_row() {
        let mut facts = Facts::default();
        let mut run = |time: &str, code: &str| {
            let mut o = op("snapshot", time, code);
            o.sources = vec!["db".into()];
            facts.operations.push(o);
        };
        run("2026-12-02T10:00:00Z", "BACKUP_FAILED");
        run("2026-12-02T10:05:00Z", "");
        run("2026-12-02T10:10:00Z", "BACKUP_FAILED");
        run("2026-12-02T10:15:00Z", "BACKUP_FAILED");
        let now = "2026-12-02T10:16:00Z";
        assert!(rules_at(&facts, &Watch::default(), now).is_empty());
        let mut third = op("snapshot", "2026-12-02T10:20:00Z", "BACKUP_FAILED");
        third.sources = vec!["db".into()];
        third.message = "mysqldump exited with status 2".into();
        facts.operations.push(third);
        let alerts = evaluate(&facts, &Watch::default(), &AlertsConfig::default(), ns(now));
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].rule, alerts[0].subject.as_str()),
            (Rule::PersistentErrors, "db")
        );
        assert_eq!(alerts[0].since_ns, Some(ns("2026-12-02T10:10:00Z")));
        assert!(
            alerts[0].summary.contains("last 3 runs failed"),
            "{}",
            alerts[0].summary
        );
        assert!(alerts[0].summary.contains("mysqldump exited"), "{}", alerts[0].summary);
    }

    #[test]
    fn high_latency_compares_with_the_median() {
        let mut facts = Facts::default();
        for hour in 0..6 {
            facts
                .snapshots
                .push(snapshot("db", &format!("2026-12-02T0{hour}:00:00Z")));
        }
        let now = "2026-12-02T06:30:00Z";
        assert!(rules_at(&facts, &Watch::default(), now).is_empty());
        let mut slow = snapshot("db", "2026-12-02T06:00:00Z");
        slow.duration_ms = 181_000; // > 3 × 60 s
        facts.snapshots.push(slow);
        assert_eq!(
            rules_at(&facts, &Watch::default(), now),
            [(Rule::HighLatency, "db".into())]
        );
        // A day later it has left the window.
        assert!(rules_at(&facts, &Watch::default(), "2026-12-03T06:30:00Z").is_empty());
        // Drills too, by their time to a working service.
        let mut facts = Facts::default();
        for (i, rto) in [60_000, 61_000, 59_000, 60_000, 62_000, 300_000]
            .into_iter()
            .enumerate()
        {
            facts.drills.push(DrillFact {
                source: "db".into(),
                started_ns: ns(&format!("2026-12-0{}T01:00:00Z", i + 1)),
                passed: true,
                rto_ms: Some(rto),
                ..DrillFact::default()
            });
        }
        assert_eq!(
            rules_at(&facts, &Watch::default(), "2026-12-06T02:00:00Z"),
            [(Rule::HighLatency, "db/drill".into())]
        );
    }

    /// Issue 13: restores record their duration in the audit log; the
    /// newest is compared with the median of the ones before it.
    #[test]
    fn high_latency_of_a_restore_compares_with_the_median_of_its_source() {
        let restore = |operation: &str, time: &str, ms: u64, code: &str| {
            let mut o = op(operation, time, code);
            o.sources = vec!["db".into()];
            o.duration_ms = Some(ms);
            o
        };
        let mut facts = Facts::default();
        for (day, ms) in [(1, 120_000), (2, 118_000), (3, 125_000), (4, 121_000)] {
            let operation = if day % 2 == 0 { "serve restore" } else { "restore" };
            facts
                .operations
                .push(restore(operation, &format!("2026-12-0{day}T03:00:00Z"), ms, ""));
        }
        // Four restores before it are not enough for a median.
        facts
            .operations
            .push(restore("restore", "2026-12-05T03:00:00Z", 900_000, ""));
        let now = "2026-12-05T03:30:00Z";
        assert!(rules_at(&facts, &Watch::default(), now).is_empty());
        // With five: 900 s against a median of 121 s fires, for SOURCE/restore.
        facts.operations.pop();
        facts
            .operations
            .push(restore("restore", "2026-12-05T03:00:00Z", 119_000, ""));
        facts
            .operations
            .push(restore("serve restore", "2026-12-06T03:00:00Z", 900_000, ""));
        let now = "2026-12-06T03:30:00Z";
        let alerts = evaluate(&facts, &Watch::default(), &AlertsConfig::default(), ns(now));
        assert_eq!(
            alerts.iter().map(|a| (a.rule, a.subject.as_str())).collect::<Vec<_>>(),
            [(Rule::HighLatency, "db/restore")]
        );
        assert_eq!(alerts[0].since_ns, Some(ns("2026-12-06T03:00:00Z")));
        assert!(
            alerts[0].summary.contains("took 15m (median 2m)"),
            "{}",
            alerts[0].summary
        );
        // Three times the median is not more than three times: quiet.
        facts.operations.pop();
        facts
            .operations
            .push(restore("restore", "2026-12-06T03:00:00Z", 3 * 120_000, ""));
        assert!(rules_at(&facts, &Watch::default(), now).is_empty());
        // A failed restore and one without a recorded duration are not timed.
        facts
            .operations
            .push(restore("restore", "2026-12-06T04:00:00Z", 900_000, "RESTORE_FAILED"));
        let mut untimed = restore("restore", "2026-12-06T05:00:00Z", 0, "");
        untimed.duration_ms = None;
        facts.operations.push(untimed);
        assert!(rules_at(&facts, &Watch::default(), "2026-12-06T05:30:00Z").is_empty());
        // A day later the slow one has left the window.
        facts
            .operations
            .push(restore("restore", "2026-12-07T03:00:00Z", 900_000, ""));
        assert!(!rules_at(&facts, &Watch::default(), "2026-12-07T03:30:00Z").is_empty());
        assert!(rules_at(&facts, &Watch::default(), "2026-12-08T04:00:00Z").is_empty());
    }

    #[test]
    fn size_change_catches_a_shrink_and_a_source_whose_bytes_all_became_new() {
        let mut facts = Facts::default();
        for hour in 0..5 {
            facts
                .snapshots
                .push(snapshot("bucket", &format!("2026-12-02T0{hour}:00:00Z")));
        }
        let now = "2026-12-02T05:30:00Z";
        assert!(rules_at(&facts, &Watch::default(), now).is_empty());
        // Same size, but every byte new: what encrypting the bucket looks like.
        let mut encrypted = snapshot("bucket", "2026-12-02T05:00:00Z");
        encrypted.bytes_added = encrypted.bytes;
        facts.snapshots.push(encrypted);
        let alerts = evaluate(&facts, &Watch::default(), &AlertsConfig::default(), ns(now));
        assert_eq!(
            (alerts[0].rule, alerts[0].subject.as_str()),
            (Rule::SizeChange, "bucket")
        );
        assert!(
            alerts[0].summary.contains("100% of its bytes are new"),
            "{}",
            alerts[0].summary
        );
        // Half the bytes gone.
        facts.snapshots.pop();
        let mut shrunk = snapshot("bucket", "2026-12-02T05:00:00Z");
        shrunk.bytes = 40 << 20;
        facts.snapshots.push(shrunk);
        let alerts = evaluate(&facts, &Watch::default(), &AlertsConfig::default(), ns(now));
        assert!(
            alerts[0].summary.contains("size went from 104857600 to 41943040"),
            "{}",
            alerts[0].summary
        );
    }
}
