//! Each source's standing against its RPO: what the panel colours and
//! `/api/sources` returns.

use std::collections::BTreeMap;

use nfrepo_ops::{AlertsConfig, Facts, SnapshotFact, Watch};
use serde::Serialize;

/// Share of the allowed age after which a source turns amber.
const AMBER_SHARE: f64 = 0.75;

/// Green: well within its RPO; amber: past three quarters of it; red:
/// past it (or never backed up); unwatched: no schedule and no `rpo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Standing {
    Green,
    Amber,
    Red,
    Unwatched,
}

impl Standing {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Amber => "amber",
            Self::Red => "red",
            Self::Unwatched => "unwatched",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct SourceRow {
    pub(crate) name: String,
    pub(crate) standing: Standing,
    pub(crate) snapshots: usize,
    pub(crate) last_snapshot_ns: Option<i64>,
    pub(crate) last_snapshot_id: Option<String>,
    /// Seconds since the newest snapshot.
    pub(crate) age_seconds: Option<i64>,
    /// Seconds the newest snapshot may be old (its RPO), for watched sources.
    pub(crate) allowed_seconds: Option<i64>,
    /// When the source turns (or turned) red.
    pub(crate) due_ns: Option<i64>,
    pub(crate) bytes: Option<u64>,
    /// The newest snapshot's size against the one before, `+12%`.
    pub(crate) trend: Option<String>,
}

/// A row per configured source and per source that has snapshots, by name.
pub(crate) fn rows(facts: &Facts, watch: &Watch, config: &AlertsConfig, now_ns: i64) -> Vec<SourceRow> {
    let mut by_source: BTreeMap<&str, Vec<&SnapshotFact>> = BTreeMap::new();
    for s in &facts.snapshots {
        by_source.entry(s.source.as_str()).or_default().push(s);
    }
    for w in &watch.sources {
        by_source.entry(w.name.as_str()).or_default();
    }
    by_source
        .into_iter()
        .map(|(name, mut snaps)| {
            snaps.sort_by_key(|s| s.time_ns);
            let newest = snaps.last().copied();
            let before = snaps.len().checked_sub(2).and_then(|i| snaps.get(i)).copied();
            let source_watch = watch.sources.iter().find(|w| w.name == name).filter(|w| w.is_watched());
            let (standing, due_ns) = match (source_watch, newest) {
                (None, _) => (Standing::Unwatched, None),
                (Some(_), None) => (Standing::Red, None),
                (Some(w), Some(newest)) => match w.due_ns(newest.time_ns, config.grace, watch.utc_offset_secs) {
                    None => (Standing::Unwatched, None),
                    Some(due) if now_ns > due => (Standing::Red, Some(due)),
                    Some(due) => {
                        let allowed = (due - newest.time_ns) as f64;
                        let used = (now_ns - newest.time_ns) as f64;
                        let standing = if used > allowed * AMBER_SHARE {
                            Standing::Amber
                        } else {
                            Standing::Green
                        };
                        (standing, Some(due))
                    }
                },
            };
            let seconds = |ns: i64| ns / 1_000_000_000;
            SourceRow {
                name: name.to_owned(),
                standing,
                snapshots: snaps.len(),
                last_snapshot_ns: newest.map(|s| s.time_ns),
                last_snapshot_id: newest.map(|s| s.id.clone()),
                age_seconds: newest.map(|s| seconds(now_ns - s.time_ns)),
                allowed_seconds: newest.zip(due_ns).map(|(s, due)| seconds(due - s.time_ns)),
                due_ns,
                bytes: newest.map(|s| s.bytes),
                trend: newest.zip(before).and_then(|(n, b)| trend(b.bytes, n.bytes)),
            }
        })
        .collect()
}

fn trend(before: u64, now: u64) -> Option<String> {
    if before == 0 {
        return None;
    }
    let change = (now as f64 - before as f64) / before as f64 * 100.0;
    Some(format!("{change:+.0}%"))
}

#[cfg(test)]
mod tests {
    use nfrepo_engine::Span;
    use nfrepo_ops::SourceWatch;

    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn snapshot(source: &str, time_ns: i64, bytes: u64) -> SnapshotFact {
        SnapshotFact {
            id: format!("{source}{time_ns}"),
            source: source.into(),
            time_ns,
            bytes,
            ..SnapshotFact::default()
        }
    }

    #[test]
    fn standing_follows_the_age_against_the_rpo() {
        let watch = Watch {
            sources: ["db", "never"]
                .iter()
                .map(|name| SourceWatch {
                    name: (*name).into(),
                    schedule: None,
                    rpo: Some(Span::from_secs(4 * 3600)),
                })
                .collect(),
            ..Watch::default()
        };
        let mut facts = Facts::default();
        facts.snapshots.push(snapshot("db", 0, 100));
        facts.snapshots.push(snapshot("db", HOUR, 150));
        facts.snapshots.push(snapshot("adhoc", 0, 1));
        let config = AlertsConfig::default();
        let at = |hours: i64| -> Vec<(String, Standing)> {
            rows(&facts, &watch, &config, hours * HOUR)
                .into_iter()
                .map(|r| (r.name, r.standing))
                .collect()
        };
        let expect = |db: Standing| {
            vec![
                ("adhoc".to_owned(), Standing::Unwatched),
                ("db".to_owned(), db),
                ("never".to_owned(), Standing::Red),
            ]
        };
        assert_eq!(at(2), expect(Standing::Green));
        assert_eq!(at(5), expect(Standing::Amber));
        assert_eq!(at(6), expect(Standing::Red));
        let db = rows(&facts, &watch, &config, 2 * HOUR).remove(1);
        assert_eq!(db.trend.as_deref(), Some("+50%"));
        assert_eq!(db.age_seconds, Some(3600));
        assert_eq!(db.allowed_seconds, Some(4 * 3600));
    }
}
