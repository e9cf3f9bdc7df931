//! Cron schedules: what `schedule = "*/5 * * * *"` accepts, and when it fires next.
//!
//! The same five fields cron reads (minute, hour, day of month, month, day
//! of week, with `*`, ranges, lists, steps and month/day names) and its
//! `@hourly`-style names. As in cron, when both the day of month and the
//! day of week are restricted, a day matching either fires.
//!
//! Times are evaluated at a fixed offset from UTC (the caller's local
//! offset): across a daylight-saving change a fire time can be an hour off,
//! which the missed-backup grace absorbs.

use std::fmt;

/// A parsed cron schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Both day fields restricted: a day matching either fires.
    either_day: bool,
    /// `@reboot`: no time of its own.
    reboot: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead a next fire time is looked for (`0 0 29 2 *` fires once in
/// up to eight years).
const SEARCH_DAYS: i64 = 9 * 366;

impl Schedule {
    /// Parses what cron accepts.
    ///
    /// # Errors
    /// One line naming the field and what it accepts.
    pub fn parse(schedule: &str) -> Result<Self, String> {
        let schedule = schedule.trim();
        let expanded = match schedule {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            "@reboot" => {
                return Ok(Self {
                    text: schedule.to_owned(),
                    minutes: 0,
                    hours: 0,
                    days: 0,
                    months: 0,
                    weekdays: 0,
                    either_day: false,
                    reboot: true,
                });
            }
            other if other.starts_with('@') => return Err(format!("unknown schedule {schedule:?}")),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "schedule {schedule:?} needs five fields (minute hour day month weekday)"
            ));
        };
        let field = |text: &str, what: &str, low: u32, high: u32, names: &[&str], first: u32| {
            parse_field(text, low, high, names, first)
                .ok_or_else(|| format!("schedule {schedule:?}: {text:?} is not a valid {what} ({low}-{high})"))
        };
        let minutes = field(minute, "minute", 0, 59, &[], 0)?;
        let hours = field(hour, "hour", 0, 23, &[], 0)?;
        let days = field(day, "day of month", 1, 31, &[], 0)?;
        let months = field(month, "month", 1, 12, MONTHS, 1)?;
        let mut weekdays = field(weekday, "day of week", 0, 7, DAYS, 0)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Self {
            text: schedule.split_whitespace().collect::<Vec<_>>().join(" "),
            minutes,
            hours: u32::try_from(hours).unwrap_or(u32::MAX),
            days: u32::try_from(days).unwrap_or(u32::MAX),
            months: u16::try_from(months).unwrap_or(u16::MAX),
            weekdays: u8::try_from(weekdays & 0x7f).unwrap_or(u8::MAX),
            either_day: !day.starts_with('*') && !weekday.starts_with('*'),
            reboot: false,
        })
    }

    /// The first fire time strictly after `after_ns` (nanoseconds since the
    /// Unix epoch), in the same unit; `None` for `@reboot` or when none
    /// falls within nine years.
    #[must_use]
    pub fn next_after(&self, after_ns: i64, utc_offset_secs: i32) -> Option<i64> {
        use chrono::{Datelike, Duration, NaiveTime, Timelike};
        if self.reboot {
            return None;
        }
        let local =
            chrono::DateTime::from_timestamp_nanos(after_ns).naive_utc() + Duration::seconds(utc_offset_secs.into());
        let start_day = local.date();
        let start_minute = local.hour() * 60 + local.minute();
        for offset in 0..SEARCH_DAYS {
            let date = start_day + Duration::days(offset);
            if self.months & (1 << date.month()) == 0
                || !self.day_matches(date.day(), date.weekday().num_days_from_sunday())
            {
                continue;
            }
            for minute_of_day in 0..24 * 60 {
                if offset == 0 && minute_of_day <= start_minute {
                    continue;
                }
                let (hour, minute) = (minute_of_day / 60, minute_of_day % 60);
                if self.hours & (1 << hour) == 0 || self.minutes & (1 << minute) == 0 {
                    continue;
                }
                let time = NaiveTime::from_hms_opt(hour, minute, 0)?;
                let at = date.and_time(time) - Duration::seconds(utc_offset_secs.into());
                return at.and_utc().timestamp_nanos_opt();
            }
        }
        None
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        if self.either_day {
            by_day || by_weekday
        } else {
            by_day && by_weekday
        }
    }
}

/// The set of values a field names, as bits; `None` if it is not valid.
fn parse_field(field: &str, low: u32, high: u32, names: &[&str], first: u32) -> Option<u64> {
    let value = |text: &str| -> Option<u32> {
        let lower = text.to_ascii_lowercase();
        let named = names
            .iter()
            .position(|n| *n == lower)
            .and_then(|i| u32::try_from(i).ok());
        let n = named.map(|i| i + first).or_else(|| text.parse().ok())?;
        (low..=high).contains(&n).then_some(n)
    };
    let mut bits = 0u64;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step = match step {
            Some(step) => step.parse::<u32>().ok().filter(|s| *s != 0 && *s <= high)?,
            None => 1,
        };
        let (from, to) = match range.split_once('-') {
            _ if range == "*" => (low, high),
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return None;
                }
                (a, b)
            }
            // `5/15` runs from 5 to the end, as in cron.
            None if step > 1 => (value(range)?, high),
            None => {
                let v = value(range)?;
                (v, v)
            }
        };
        let mut at = from;
        while at <= to {
            bits |= 1 << at;
            at += step;
        }
    }
    Some(bits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::Schedule;

    fn ns(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn accepts_what_cron_accepts() {
        for good in [
            "*/5 * * * *",
            "0 3 * * 1-5",
            "15,45 */2 1 jan-jun sun",
            "@daily",
            "0 0 * * 7",
            "@reboot",
        ] {
            assert!(Schedule::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "99 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "a b c d e",
            "*/0 * * * *",
            "5-1 * * * *",
            "@often",
            "* * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Schedule::parse("* * * *").unwrap_err().contains("five fields"));
    }

    #[test]
    fn next_fire_times() {
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            every5.next_after(ns("2026-12-02T10:00:00Z"), 0),
            Some(ns("2026-12-02T10:05:00Z"))
        );
        assert_eq!(
            every5.next_after(ns("2026-12-02T10:03:59Z"), 0),
            Some(ns("2026-12-02T10:05:00Z"))
        );
        // Weekdays at 03:00: Friday's run is followed by Monday's.
        let weekdays = Schedule::parse("0 3 * * 1-5").unwrap();
        assert_eq!(
            weekdays.next_after(ns("2026-12-04T03:00:10Z"), 0),
            Some(ns("2026-12-07T03:00:00Z"))
        );
        // At UTC+2, 03:00 local is 01:00 UTC.
        assert_eq!(
            weekdays.next_after(ns("2026-12-02T12:00:00Z"), 7200),
            Some(ns("2026-12-03T01:00:00Z"))
        );
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(
            daily.next_after(ns("2026-12-31T23:59:59Z"), 0),
            Some(ns("2027-01-01T00:00:00Z"))
        );
        // Day of month or Sunday, as cron reads both restricted.
        let either = Schedule::parse("0 0 15 * sun").unwrap();
        assert_eq!(
            either.next_after(ns("2026-12-02T00:00:00Z"), 0),
            Some(ns("2026-12-06T00:00:00Z"))
        );
        let leap = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.next_after(ns("2026-12-02T00:00:00Z"), 0),
            Some(ns("2028-02-29T00:00:00Z"))
        );
        assert_eq!(Schedule::parse("@reboot").unwrap().next_after(0, 0), None);
    }
}
