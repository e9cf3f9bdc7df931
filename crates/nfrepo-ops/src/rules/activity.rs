//! Rules about what people and hosts did to the repository: suspicious activity.

use std::collections::BTreeMap;

use super::{Alert, At, Rule, rfc3339};
use crate::{AlertsConfig, Facts, OperationFact};

fn recent(facts: &Facts, at: At) -> impl Iterator<Item = &OperationFact> {
    facts.operations.iter().filter(move |o| o.time_ns >= at.window_start_ns)
}

pub(super) fn mass_forget(facts: &Facts, config: &AlertsConfig, at: At) -> Vec<Alert> {
    let mut by: BTreeMap<&str, (u64, usize, i64)> = BTreeMap::new();
    for op in recent(facts, at).filter(|o| o.snapshots_deleted >= config.forget_threshold) {
        let entry = by.entry(op.by.as_str()).or_insert((0, 0, op.time_ns));
        entry.0 += op.snapshots_deleted;
        entry.1 += 1;
    }
    by.into_iter()
        .map(|(who, (deleted, commands, first))| Alert {
            rule: Rule::MassForget,
            subject: who.to_owned(),
            summary: format!(
                "{who} deleted {deleted} snapshots in {commands} command(s) since {} (threshold {} per command)",
                rfc3339(first),
                config.forget_threshold
            ),
            since_ns: Some(first),
        })
        .collect()
}

pub(super) fn gc_deleted_share(facts: &Facts, config: &AlertsConfig, at: At) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    for op in recent(facts, at).filter(|o| o.operation == "gc" && o.data_packs_deleted > 0) {
        // The packs there were before it: those left now and those it deleted.
        let before = facts.storage.data_packs + op.data_packs_deleted;
        #[allow(clippy::cast_precision_loss, reason = "a ratio of pack counts")]
        let share = op.data_packs_deleted as f64 / before as f64;
        if share > config.gc_share && !alerts.iter().any(|a| a.subject == op.by) {
            alerts.push(Alert {
                rule: Rule::GcDeletedShare,
                subject: op.by.clone(),
                summary: format!(
                    "gc at {} by {} deleted {} of about {before} data packs ({:.0}%, threshold {:.0}%)",
                    rfc3339(op.time_ns),
                    op.by,
                    op.data_packs_deleted,
                    share * 100.0,
                    config.gc_share * 100.0
                ),
                since_ns: Some(op.time_ns),
            });
        }
    }
    alerts
}

pub(super) fn auth_failures(facts: &Facts, config: &AlertsConfig, at: At) -> Vec<Alert> {
    let denied: Vec<&OperationFact> = recent(facts, at).filter(|o| o.code == "PERMISSION_DENIED").collect();
    if (denied.len() as u64) < config.denied_threshold {
        return Vec::new();
    }
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &denied {
        *by.entry(op.by.as_str()).or_default() += 1;
    }
    let mut who: Vec<(&str, usize)> = by.into_iter().collect();
    who.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let who: Vec<String> = who.iter().take(3).map(|(w, n)| format!("{w} ×{n}")).collect();
    vec![Alert {
        rule: Rule::AuthFailures,
        subject: "repository".into(),
        summary: format!(
            "{} PERMISSION_DENIED entries (wrong password or refused access) within {}: {}",
            denied.len(),
            config.window,
            who.join(", ")
        ),
        since_ns: denied.first().map(|o| o.time_ns),
    }]
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a panic is a test failure"
    )]
    use super::super::test_support::{ns, op};
    use crate::rules::{Rule, Watch, evaluate};
    use crate::{AlertsConfig, Facts};

    fn fired(facts: &Facts, time: &str) -> Vec<(Rule, String)> {
        super::super::test_support::fired(facts, &Watch::default(), time)
    }

    #[test]
    fn mass_forget_by_one_command() {
        let mut facts = Facts::default();
        let mut forget = op("forget", "2026-12-02T09:00:00Z", "");
        forget.snapshots_deleted = 19;
        facts.operations.push(forget.clone());
        assert!(fired(&facts, "2026-12-02T10:00:00Z").is_empty());
        forget.snapshots_deleted = 20;
        facts.operations.push(forget);
        assert_eq!(
            fired(&facts, "2026-12-02T10:00:00Z"),
            [(Rule::MassForget, "ops@db1".into())]
        );
        assert!(fired(&facts, "2026-12-03T09:00:01Z").is_empty(), "out of the window");
    }

    #[test]
    fn gc_deleting_a_large_share() {
        let mut facts = Facts::default();
        facts.storage.data_packs = 70;
        let mut gc = op("gc", "2026-12-02T09:00:00Z", "");
        gc.data_packs_deleted = 30; // 30 of 100: exactly the threshold
        facts.operations.push(gc.clone());
        assert!(fired(&facts, "2026-12-02T10:00:00Z").is_empty());
        gc.data_packs_deleted = 31;
        facts.operations.push(gc);
        let alerts = evaluate(
            &facts,
            &Watch::default(),
            &AlertsConfig::default(),
            ns("2026-12-02T10:00:00Z"),
        );
        assert_eq!(alerts[0].rule, Rule::GcDeletedShare);
        assert!(
            alerts[0].summary.contains("deleted 31 of about 101 data packs (31%"),
            "{}",
            alerts[0].summary
        );
    }

    #[test]
    fn repeated_permission_denied() {
        let mut facts = Facts::default();
        for minute in 0..4 {
            let mut o = op(
                "snapshots",
                &format!("2026-12-02T09:0{minute}:00Z"),
                "PERMISSION_DENIED",
            );
            o.detail = "WRONG_PASSWORD".into();
            o.by = "mallory@web3".into();
            facts.operations.push(o);
        }
        assert!(fired(&facts, "2026-12-02T10:00:00Z").is_empty());
        facts
            .operations
            .push(op("key list", "2026-12-02T09:30:00Z", "PERMISSION_DENIED"));
        let alerts = evaluate(
            &facts,
            &Watch::default(),
            &AlertsConfig::default(),
            ns("2026-12-02T10:00:00Z"),
        );
        assert_eq!(
            (alerts[0].rule, alerts[0].subject.as_str()),
            (Rule::AuthFailures, "repository")
        );
        assert!(
            alerts[0].summary.starts_with("5 PERMISSION_DENIED entries"),
            "{}",
            alerts[0].summary
        );
        assert!(
            alerts[0].summary.contains("mallory@web3 ×4, ops@db1 ×1"),
            "{}",
            alerts[0].summary
        );
    }
}
