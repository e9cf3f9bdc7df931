//! A moment as an operator types it, for every `--since`/`--until` and the
//! admin panel's filters: RFC 3339, `YYYY-MM-DD` (UTC midnight), or an age
//! like `36h`, `7d`, `30m`.

use chrono::{DateTime, NaiveDate};

/// The moment `text` names, in nanoseconds since the Unix epoch; an age
/// counts back from `now_ns`. `None` for anything else.
#[must_use]
pub fn parse_moment(text: &str, now_ns: i64) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return t.timestamp_nanos_opt();
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt();
    }
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        "w" => n.checked_mul(7 * 86_400)?,
        _ => return None,
    };
    now_ns.checked_sub(seconds.checked_mul(1_000_000_000)?)
}

#[cfg(test)]
mod tests {
    use super::parse_moment;

    const NOW: i64 = 1_800_000_000 * 1_000_000_000;

    #[test]
    fn times_dates_and_ages_parse() {
        assert_eq!(
            parse_moment("2026-12-01T12:00:00Z", NOW),
            Some(1_796_126_400 * 1_000_000_000)
        );
        assert_eq!(parse_moment("2026-12-01", NOW), Some(1_796_083_200 * 1_000_000_000));
        assert_eq!(parse_moment("36h", NOW), Some(NOW - 36 * 3600 * 1_000_000_000));
        assert_eq!(parse_moment("2w", NOW), Some(NOW - 14 * 86_400 * 1_000_000_000));
        for bad in ["", "h", "7", "7y", "-3d", "99999999999999999999d", "yesterday"] {
            assert_eq!(parse_moment(bad, NOW), None, "{bad}");
        }
    }
}
