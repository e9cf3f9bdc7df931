//! Retention policies: which snapshots of a source to keep.
//!
//! A [`RetentionPolicy`] is a set of rules, each of which *keeps* snapshots;
//! a snapshot no rule keeps is forgotten. The rules are those restic and
//! rustic users know, so existing policies carry over:
//!
//! - `keep-last = n`: the `n` newest snapshots;
//! - `keep-hourly/daily/weekly/monthly/yearly = n`: the newest snapshot of each
//!   of the `n` newest hours, days, ISO weeks, months or years that have one;
//! - `keep-within = "24h"`: everything no older than that before the newest snapshot;
//! - `keep-within-hourly/daily/weekly/monthly/yearly = "7d"`: the newest snapshot
//!   of every hour (day, ...) within that span before the newest snapshot,
//!   which is how DESIGN.md's tiers are written ("dailies for 7 d");
//! - `keep-tag = ["key=value", "key"]`: every snapshot carrying such a tag;
//! - `keep-forever = true`: everything (audit logs).
//!
//! Spans are measured back from the **newest snapshot of the group**, not from
//! the clock: if backups stop, nothing more expires until they resume, so a
//! broken cron job never empties a repository. Calendar buckets are in UTC.
//! Protected snapshots (see [`crate::Repository::protect`]) are kept whatever
//! the policy says.
//!
//! A policy deserializes with serde from a table such as
//! `{ keep-daily = 7, keep-within = "24h" }` (the `[retention.NAME]` tables of
//! `nfrepo.toml`), and [`RetentionPolicy::class`] returns the built-in named
//! classes of DESIGN.md §1.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A length of time such as `24h` or `7d`, in whole seconds.
///
/// Written as one or more `<number><unit>` groups, units `s`, `m` (minutes),
/// `h`, `d`, `w` and `y` (365 days): `90m`, `1d12h`, `2w`. Calendar months
/// are not a fixed length; write `30d` or use `keep-within-monthly`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(u64);

impl Span {
    /// A span of `seconds`.
    #[must_use]
    pub const fn from_secs(seconds: u64) -> Self {
        Self(seconds)
    }

    /// The span in seconds.
    #[must_use]
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// The span in nanoseconds, saturating.
    #[must_use]
    pub fn as_nanos(self) -> i64 {
        i64::try_from(u128::from(self.0) * 1_000_000_000).unwrap_or(i64::MAX)
    }

    /// Parses `24h`, `7d`, `1d12h`...
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the text.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = || {
            Error::Invalid(format!(
                "cannot read duration {text:?}: use a number and a unit s, m, h, d, w or y, like 24h or 7d"
            ))
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
            if digits == 0 {
                return Err(invalid());
            }
            let (number, tail) = rest.split_at(digits);
            let n: u64 = number.parse().map_err(|_| invalid())?;
            let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            let scale = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                "y" => 365 * 86_400,
                _ => return Err(invalid()),
            };
            total = n
                .checked_mul(scale)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(invalid)?;
            rest = next;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, scale) in [
            ("y", 365 * 86_400),
            ("w", 7 * 86_400),
            ("d", 86_400),
            ("h", 3600),
            ("m", 60),
        ] {
            if s >= scale && s.is_multiple_of(scale) {
                return write!(f, "{}{unit}", s / scale);
            }
        }
        write!(f, "{s}s")
    }
}

impl std::str::FromStr for Span {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Calendar buckets for the `keep-hourly` ... `keep-yearly` rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// Calendar hours (UTC).
    Hourly,
    /// Calendar days (UTC).
    Daily,
    /// ISO 8601 weeks (Monday to Sunday, UTC).
    Weekly,
    /// Calendar months.
    Monthly,
    /// Calendar years.
    Yearly,
}

impl Bucket {
    const ALL: [Self; 5] = [Self::Hourly, Self::Daily, Self::Weekly, Self::Monthly, Self::Yearly];

    /// The name used in rules (`daily`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }

    /// A number naming the bucket `time_ns` falls in; equal numbers, same bucket.
    fn key(self, time_ns: i64) -> i64 {
        let t: DateTime<Utc> = DateTime::from_timestamp_nanos(time_ns);
        let (year, month, day, hour) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Self::Hourly => ((year * 100 + month) * 100 + day) * 100 + hour,
            Self::Daily => (year * 100 + month) * 100 + day,
            Self::Weekly => {
                let week = t.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Self::Monthly => year * 100 + month,
            Self::Yearly => year,
        }
    }
}

/// Which snapshots of one group to keep. See the module docs for the rules.
///
/// Unknown keys are refused, so a misspelt rule is an error rather than a
/// policy that silently keeps less.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Keep the `n` newest snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the `n` newest hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the `n` newest days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the `n` newest ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the `n` newest months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the `n` newest years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this span before the newest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Span>,
    /// Keep the newest snapshot of each hour within this span before the newest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<Span>,
    /// Keep the newest snapshot of each day within this span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<Span>,
    /// Keep the newest snapshot of each ISO week within this span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<Span>,
    /// Keep the newest snapshot of each month within this span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<Span>,
    /// Keep the newest snapshot of each year within this span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<Span>,
    /// Keep snapshots with any of these tags: `key=value`, or `key` for any value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tag: Vec<String>,
    /// Keep everything (audit logs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_forever: bool,
}

/// The built-in classes, as `(name, what it implements)`.
pub const BUILT_IN_CLASSES: [(&str, &str); 10] = [
    ("hot", "hot tier: everything from the last 24 h, plus dailies for 7 d"),
    ("warm", "hot, plus weeklies for 30 d"),
    ("cold", "warm, plus monthlies for 180 d"),
    ("db-full", "database full dumps: dailies for 30 d"),
    ("db-incremental", "database incrementals: everything for 7 d"),
    ("files", "file storage and buckets: dailies for 30 d"),
    ("config", "config files: every change for 90 d"),
    ("audit-logs", "audit logs: kept permanently"),
    ("security-logs", "security logs: hourlies for 1 y"),
    ("analytics", "analytics exports: dailies for 90 d"),
];

const DAY: u64 = 86_400;

impl RetentionPolicy {
    /// A built-in class by name (see [`BUILT_IN_CLASSES`]), implementing DESIGN.md §1's defaults.
    ///
    /// # Errors
    /// [`Error::Invalid`] listing the known names.
    pub fn class(name: &str) -> Result<Self> {
        let days = |n: u64| Some(Span::from_secs(n * DAY));
        let hot = Self {
            keep_within: days(1),
            keep_within_daily: days(7),
            ..Self::default()
        };
        let warm = Self {
            keep_within_weekly: days(30),
            ..hot.clone()
        };
        let policy = match name {
            "hot" => hot,
            "warm" => warm,
            "cold" => Self {
                keep_within_monthly: days(180),
                ..warm
            },
            "db-full" | "files" => Self {
                keep_within_daily: days(30),
                ..Self::default()
            },
            "db-incremental" => Self {
                keep_within: days(7),
                ..Self::default()
            },
            "config" => Self {
                keep_within: days(90),
                ..Self::default()
            },
            "audit-logs" => Self {
                keep_forever: true,
                ..Self::default()
            },
            "security-logs" => Self {
                keep_within_hourly: days(365),
                ..Self::default()
            },
            "analytics" => Self {
                keep_within_daily: days(90),
                ..Self::default()
            },
            other => {
                let names: Vec<&str> = BUILT_IN_CLASSES.iter().map(|(n, _)| *n).collect();
                return Err(Error::Invalid(format!(
                    "unknown retention class {other:?}; built-in classes: {}",
                    names.join(", ")
                )));
            }
        };
        Ok(policy)
    }

    /// Whether the policy has no rule at all (it would forget everything).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds every rule of `other` to this policy (the larger count or span wins).
    #[must_use]
    pub fn merged(mut self, other: &Self) -> Self {
        fn max<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            a.max(b).or(a)
        }
        self.keep_last = max(self.keep_last, other.keep_last);
        self.keep_hourly = max(self.keep_hourly, other.keep_hourly);
        self.keep_daily = max(self.keep_daily, other.keep_daily);
        self.keep_weekly = max(self.keep_weekly, other.keep_weekly);
        self.keep_monthly = max(self.keep_monthly, other.keep_monthly);
        self.keep_yearly = max(self.keep_yearly, other.keep_yearly);
        self.keep_within = max(self.keep_within, other.keep_within);
        self.keep_within_hourly = max(self.keep_within_hourly, other.keep_within_hourly);
        self.keep_within_daily = max(self.keep_within_daily, other.keep_within_daily);
        self.keep_within_weekly = max(self.keep_within_weekly, other.keep_within_weekly);
        self.keep_within_monthly = max(self.keep_within_monthly, other.keep_within_monthly);
        self.keep_within_yearly = max(self.keep_within_yearly, other.keep_within_yearly);
        for tag in &other.keep_tag {
            if !self.keep_tag.contains(tag) {
                self.keep_tag.push(tag.clone());
            }
        }
        self.keep_forever |= other.keep_forever;
        self
    }

    fn bucket_count(&self, bucket: Bucket) -> Option<u32> {
        match bucket {
            Bucket::Hourly => self.keep_hourly,
            Bucket::Daily => self.keep_daily,
            Bucket::Weekly => self.keep_weekly,
            Bucket::Monthly => self.keep_monthly,
            Bucket::Yearly => self.keep_yearly,
        }
    }

    fn bucket_span(&self, bucket: Bucket) -> Option<Span> {
        match bucket {
            Bucket::Hourly => self.keep_within_hourly,
            Bucket::Daily => self.keep_within_daily,
            Bucket::Weekly => self.keep_within_weekly,
            Bucket::Monthly => self.keep_within_monthly,
            Bucket::Yearly => self.keep_within_yearly,
        }
    }

    /// Decides for one group of snapshots, given as `(time_ns, tags)` in any
    /// order. Returns, for each input in the same order, the rules that keep it
    /// (empty: forget it).
    #[must_use]
    pub fn apply(&self, snapshots: &[(i64, &[(String, String)])]) -> Vec<Vec<KeepReason>> {
        let mut reasons = vec![Vec::new(); snapshots.len()];
        // Newest first; ties broken by input position for determinism.
        let mut order: Vec<usize> = (0..snapshots.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(snapshots.get(i).map_or(0, |s| s.0)), i));
        let Some(newest) = order.first().and_then(|&i| snapshots.get(i)).map(|s| s.0) else {
            return reasons;
        };
        let within = |span: Span, t: i64| newest.saturating_sub(t) <= span.as_nanos();
        let mut last_left = self.keep_last.unwrap_or(0);
        let mut counts: Vec<(Bucket, u32, Option<i64>)> = Bucket::ALL
            .iter()
            .filter_map(|&b| self.bucket_count(b).map(|n| (b, n, None)))
            .collect();
        let mut spans: Vec<(Bucket, Span, Option<i64>)> = Bucket::ALL
            .iter()
            .filter_map(|&b| self.bucket_span(b).map(|s| (b, s, None)))
            .collect();
        for &i in &order {
            let (Some((time, tags)), Some(out)) = (snapshots.get(i), reasons.get_mut(i)) else {
                continue;
            };
            if self.keep_forever {
                out.push(KeepReason::Forever);
            }
            if last_left > 0 {
                last_left -= 1;
                out.push(KeepReason::Last);
            }
            if let Some(span) = self.keep_within
                && within(span, *time)
            {
                out.push(KeepReason::Within(span));
            }
            for (bucket, left, last) in &mut counts {
                let key = bucket.key(*time);
                if *left > 0 && *last != Some(key) {
                    *left -= 1;
                    *last = Some(key);
                    out.push(KeepReason::Bucket(*bucket));
                }
            }
            for (bucket, span, last) in &mut spans {
                let key = bucket.key(*time);
                if within(*span, *time) && *last != Some(key) {
                    *last = Some(key);
                    out.push(KeepReason::BucketWithin(*bucket, *span));
                }
            }
            for wanted in &self.keep_tag {
                let hit = match wanted.split_once('=') {
                    Some((k, v)) => tags.iter().any(|(tk, tv)| tk == k && tv == v),
                    None => tags.iter().any(|(tk, _)| tk == wanted),
                };
                if hit {
                    out.push(KeepReason::Tag(wanted.clone()));
                }
            }
        }
        reasons
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepReason {
    /// `keep-last`.
    Last,
    /// `keep-hourly` ... `keep-yearly`.
    Bucket(Bucket),
    /// `keep-within`.
    Within(Span),
    /// `keep-within-hourly` ... `keep-within-yearly`.
    BucketWithin(Bucket, Span),
    /// `keep-tag`, with the tag that matched.
    Tag(String),
    /// `keep-forever`.
    Forever,
    /// A protection marker.
    Protected,
    /// The newest snapshot of its source marked good (`mark-good`), the
    /// target of `rollback --to last-good`.
    LastGood,
    /// No policy applies to the snapshot's source, so it is left alone.
    NoPolicy,
    /// Archived WAL that a kept base backup (or one in progress) needs.
    WalNeeded,
    /// An archived binlog that a kept dump needs (or a gap record).
    BinlogNeeded,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Last => f.write_str("last"),
            Self::Bucket(b) => f.write_str(b.name()),
            Self::Within(span) => write!(f, "within {span}"),
            Self::BucketWithin(b, span) => write!(f, "{} within {span}", b.name()),
            Self::Tag(tag) => write!(f, "tag {tag}"),
            Self::Forever => f.write_str("forever"),
            Self::Protected => f.write_str("protected"),
            Self::LastGood => f.write_str("last good"),
            Self::NoPolicy => f.write_str("no policy"),
            Self::WalNeeded => f.write_str("WAL of a kept base backup"),
            Self::BinlogNeeded => f.write_str("binlog of a kept dump"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn t(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    /// Applies `policy` to `times` (no tags) and returns the kept times.
    fn kept(policy: &RetentionPolicy, times: &[&str]) -> Vec<String> {
        let parsed: Vec<(i64, &[(String, String)])> = times.iter().map(|s| (t(s), &[][..])).collect();
        policy
            .apply(&parsed)
            .iter()
            .zip(times)
            .filter(|(r, _)| !r.is_empty())
            .map(|(_, s)| (*s).to_owned())
            .collect()
    }

    const TIMES: [&str; 14] = [
        "2026-01-01T10:00:00Z",
        "2026-01-01T11:30:00Z",
        "2026-01-01T11:45:00Z",
        "2026-01-02T09:00:00Z",
        "2026-01-05T09:00:00Z",
        "2026-01-05T23:59:59Z",
        "2026-01-12T00:00:00Z",
        "2026-02-01T12:00:00Z",
        "2026-02-28T12:00:00Z",
        "2026-03-01T00:00:00Z",
        "2026-03-01T00:05:00Z",
        "2026-03-01T00:10:00Z",
        "2026-03-02T08:00:00Z",
        "2027-01-01T00:00:00Z",
    ];

    fn policy(toml_like: &[(&str, &str)]) -> RetentionPolicy {
        let mut map = serde_json::Map::new();
        for (k, v) in toml_like {
            let value = v
                .parse::<u64>()
                .map_or_else(|_| serde_json::json!(v), |n| serde_json::json!(n));
            map.insert((*k).to_owned(), value);
        }
        serde_json::from_value(serde_json::Value::Object(map)).unwrap()
    }

    #[test]
    fn policy_table() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            (
                &[("keep-last", "3")],
                vec!["2026-03-01T00:10:00Z", "2026-03-02T08:00:00Z", "2027-01-01T00:00:00Z"],
            ),
            (
                &[("keep-daily", "4")],
                vec![
                    "2026-02-28T12:00:00Z",
                    "2026-03-01T00:10:00Z",
                    "2026-03-02T08:00:00Z",
                    "2027-01-01T00:00:00Z",
                ],
            ),
            (
                &[("keep-hourly", "3")],
                vec!["2026-03-01T00:10:00Z", "2026-03-02T08:00:00Z", "2027-01-01T00:00:00Z"],
            ),
            (
                &[("keep-weekly", "3")],
                // ISO weeks: 2026-W53 (2027-01-01 is a Friday of 2026-W53), 2026-W10 (from
                // Monday 2026-03-02), 2026-W09 (whose newest is Sunday 2026-03-01 00:10).
                vec!["2026-03-01T00:10:00Z", "2026-03-02T08:00:00Z", "2027-01-01T00:00:00Z"],
            ),
            (
                &[("keep-monthly", "12")],
                vec![
                    "2026-01-12T00:00:00Z",
                    "2026-02-28T12:00:00Z",
                    "2026-03-02T08:00:00Z",
                    "2027-01-01T00:00:00Z",
                ],
            ),
            (
                &[("keep-yearly", "5")],
                vec!["2026-03-02T08:00:00Z", "2027-01-01T00:00:00Z"],
            ),
            // 360 days before 2027-01-01 is 2026-01-06T00:00Z.
            (&[("keep-within", "360d")], TIMES[6..].to_vec()),
            (&[("keep-within", "1h")], vec!["2027-01-01T00:00:00Z"]),
            (
                &[("keep-within-daily", "360d")],
                vec![
                    "2026-01-12T00:00:00Z",
                    "2026-02-01T12:00:00Z",
                    "2026-02-28T12:00:00Z",
                    "2026-03-01T00:10:00Z",
                    "2026-03-02T08:00:00Z",
                    "2027-01-01T00:00:00Z",
                ],
            ),
            (
                &[("keep-last", "1"), ("keep-monthly", "2"), ("keep-yearly", "2")],
                vec!["2026-03-02T08:00:00Z", "2027-01-01T00:00:00Z"],
            ),
            (
                &[("keep-daily", "2"), ("keep-weekly", "2")],
                vec!["2026-03-02T08:00:00Z", "2027-01-01T00:00:00Z"],
            ),
        ];
        for (rules, expected) in cases {
            let p = policy(rules);
            assert_eq!(kept(&p, &TIMES), expected, "{rules:?}");
        }
    }

    #[test]
    fn reasons_and_tags() {
        let tags = [("release".to_owned(), "v1".to_owned())];
        let input: Vec<(i64, &[(String, String)])> = vec![
            (t("2026-01-01T00:00:00Z"), &tags[..]),
            (t("2026-01-02T00:00:00Z"), &[]),
            (t("2026-01-03T00:00:00Z"), &[]),
        ];
        let p = RetentionPolicy {
            keep_last: Some(1),
            keep_daily: Some(2),
            keep_tag: vec!["release".into()],
            ..RetentionPolicy::default()
        };
        let reasons = p.apply(&input);
        assert_eq!(reasons[0], vec![KeepReason::Tag("release".into())]);
        assert_eq!(reasons[1], vec![KeepReason::Bucket(Bucket::Daily)]);
        assert_eq!(reasons[2], vec![KeepReason::Last, KeepReason::Bucket(Bucket::Daily)]);
        assert_eq!(reasons[2][1].to_string(), "daily");
        let p = RetentionPolicy {
            keep_tag: vec!["release=v2".into()],
            ..RetentionPolicy::default()
        };
        assert!(p.apply(&input).iter().all(Vec::is_empty));
    }

    #[test]
    fn hot_warm_cold_tiers() {
        // One snapshot every 6 hours for a year, newest 2026-12-31T18:00Z.
        let start = t("2026-01-01T00:00:00Z");
        let times: Vec<i64> = (0..365 * 4).map(|i| start + i * 6 * 3600 * 1_000_000_000).collect();
        let input: Vec<(i64, &[(String, String)])> = times.iter().map(|&t| (t, &[][..])).collect();
        let count = |name: &str| {
            RetentionPolicy::class(name)
                .unwrap()
                .apply(&input)
                .iter()
                .filter(|r| !r.is_empty())
                .count()
        };
        // hot: the 5 snapshots within 24 h (18:00 back to 18:00 the day before), plus
        // one per day for the days within 7 d not already counted (6 more).
        assert_eq!(count("hot"), 5 + 6);
        // warm adds the newest of each ISO week within 30 d (back to 12-01T18:00) not
        // already kept: W51, W50 and W49 (W53 and W52 end on days hot keeps).
        assert_eq!(count("warm"), 11 + 3);
        // cold adds the newest of each month within 180 d (back to 07-04T18:00):
        // the ends of July to November; December's newest is already kept.
        assert_eq!(count("cold"), 14 + 5);
        assert_eq!(count("audit-logs"), times.len());
        assert_eq!(count("db-incremental"), 7 * 4 + 1);
        assert!(RetentionPolicy::class("nope").is_err());
    }

    #[test]
    fn deserializes_from_a_table() {
        let p: RetentionPolicy =
            serde_json::from_value(serde_json::json!({"keep-daily": 7, "keep-within": "24h"})).unwrap();
        assert_eq!(p.keep_daily, Some(7));
        assert_eq!(p.keep_within, Some(Span::from_secs(86_400)));
        assert!(serde_json::from_value::<RetentionPolicy>(serde_json::json!({"keep-dayly": 7})).is_err());
        assert!(serde_json::from_value::<RetentionPolicy>(serde_json::json!({"keep-within": "7x"})).is_err());
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back, serde_json::json!({"keep-daily": 7, "keep-within": "1d"}));
    }

    #[test]
    fn spans() {
        assert_eq!(Span::parse("24h").unwrap().as_secs(), 86_400);
        assert_eq!(Span::parse("1d12h").unwrap().as_secs(), 129_600);
        assert_eq!(Span::parse("90m").unwrap().to_string(), "90m");
        assert_eq!(Span::parse("2w").unwrap().to_string(), "2w");
        for bad in ["", "h", "7", "7x", "-1d", "99999999999999999999y"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
        assert!(RetentionPolicy::default().is_empty());
        let merged = RetentionPolicy::class("hot").unwrap().merged(&RetentionPolicy {
            keep_last: Some(2),
            ..RetentionPolicy::default()
        });
        assert_eq!(merged.keep_last, Some(2));
        assert_eq!(merged.keep_within_daily, Some(Span::from_secs(7 * DAY)));
    }
}
