//! Retention of archived MySQL/MariaDB binary logs: kept while a kept dump
//! needs them, and no longer.
//!
//! Binlogs are archived as snapshots of the stream `<source>.binlog` (kind
//! [`BINLOG_KIND`]); each names the files it holds in facts
//! `binlog.file.<name>` ([`BINLOG_FILE_FACT`]), and a file that grew is
//! committed again whole, so a later snapshot holding a longer version of a
//! file *supersedes* the earlier ones for that file. A dump of `<source>`
//! (kind `mysql`) records the file its replay starts in
//! ([`DUMP_BINLOG_FILE_FACT`]). No retention policy applies to a binlog
//! stream; once its dump source's snapshots are decided, a binlog snapshot
//! is kept when
//! - it holds the longest archived version of a file at or after the start
//!   file of the oldest dump kept (every kept dump can then be replayed from
//!   its position to any later moment), or
//! - it records a gap (`binlog.gap`, a few bytes: the evidence that point-in-time
//!   recovery across it is impossible), or
//! - no dump of the source recording a binlog position is kept (the agent
//!   streams from the newest dump's position; a stream without one is not
//!   judged), or
//! - it is protected.
//!
//! A snapshot whose files all have longer versions in later snapshots goes
//! even when its files are needed: the longer version holds every event it did.

use std::collections::{BTreeMap, HashMap};

use nfrepo_format::SnapshotId;

use crate::read::SnapshotEntry;
use crate::retention::KeepReason;

/// The snapshot kind of a batch of archived binlog files.
pub const BINLOG_KIND: &str = "mysql-binlog";
/// The fact prefix naming each archived binlog file: `<size> <blake3 hex>[ complete]`.
pub const BINLOG_FILE_FACT: &str = "binlog.file.";
/// The fact of a binlog snapshot that records a gap (the first missing file).
pub const BINLOG_GAP_FACT: &str = "binlog.gap";
/// What a binlog stream's name adds to its dump source's.
pub const BINLOG_STREAM_SUFFIX: &str = ".binlog";
/// The fact of a MySQL dump naming the binlog file its position is in.
pub const DUMP_BINLOG_FILE_FACT: &str = "mysql.binlog_file";
/// The snapshot kind of a MySQL/MariaDB dump.
const DUMP_KIND: &str = "mysql";

/// A binlog file name, `<base>.<number>`, as its order key: the base and the
/// number (`binlog.000009` < `binlog.000010` < `binlog.1000000`).
#[must_use]
pub fn binlog_order(name: &str) -> Option<(&str, u64)> {
    let (base, number) = name.rsplit_once('.')?;
    if base.is_empty() || number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, number.parse().ok()?))
}

/// The dump source of a binlog snapshot, if `entry` is one.
pub(super) fn binlog_base_source(entry: &SnapshotEntry) -> Option<&str> {
    (entry.snapshot.source_kind == BINLOG_KIND)
        .then(|| entry.snapshot.source.strip_suffix(BINLOG_STREAM_SUFFIX))
        .flatten()
}

/// The oldest start file over the dumps kept.
pub(super) fn oldest_needed<'a>(kept_dumps: impl IntoIterator<Item = &'a SnapshotEntry>) -> Option<(String, u64)> {
    kept_dumps
        .into_iter()
        .filter(|e| e.snapshot.source_kind == DUMP_KIND)
        .filter_map(|e| {
            let file = e.snapshot.fact(DUMP_BINLOG_FILE_FACT)?;
            binlog_order(file).map(|(base, n)| (base.to_owned(), n))
        })
        .min()
}

fn file_size(value: &str) -> u64 {
    value.split(' ').next().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
}

/// Why each binlog snapshot of one stream is kept, given the oldest needed
/// file (`None`: no dump with a position kept, so everything is); an
/// empty list means it goes.
pub(super) fn decide(entries: &[SnapshotEntry], oldest: Option<&(String, u64)>) -> Vec<Vec<KeepReason>> {
    let Some((oldest_base, oldest_n)) = oldest else {
        return vec![vec![KeepReason::BinlogNeeded]; entries.len()];
    };
    // The snapshot holding the longest version of each file (the earliest of equals).
    let mut longest: HashMap<&str, (u64, i64, SnapshotId)> = HashMap::new();
    for entry in entries {
        for (key, value) in &entry.snapshot.extra {
            let Some(name) = key.strip_prefix(BINLOG_FILE_FACT) else {
                continue;
            };
            let candidate = (file_size(value), -entry.snapshot.time_ns, entry.id);
            let best = longest.entry(name).or_insert(candidate);
            if (candidate.0, candidate.1) > (best.0, best.1) {
                *best = candidate;
            }
        }
    }
    entries
        .iter()
        .map(|entry| {
            let mut files = entry
                .snapshot
                .extra
                .iter()
                .filter_map(|(k, _)| k.strip_prefix(BINLOG_FILE_FACT))
                .peekable();
            let gap = entry.snapshot.extra.iter().any(|(k, _)| k == BINLOG_GAP_FACT);
            let unknown = files.peek().is_none() && !gap;
            let needed = files.any(|name| {
                let wanted = match binlog_order(name) {
                    Some((base, n)) => base != oldest_base || n >= *oldest_n,
                    None => true,
                };
                wanted && longest.get(name).is_some_and(|(_, _, id)| *id == entry.id)
            });
            if needed || gap || unknown {
                vec![KeepReason::BinlogNeeded]
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// Splits binlog snapshots (by dump source) from the others.
pub(super) fn split(entries: Vec<SnapshotEntry>) -> (Vec<SnapshotEntry>, BTreeMap<String, Vec<SnapshotEntry>>) {
    super::wal::split_by(entries, binlog_base_source)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn entry(id: u8, kind: &str, source: &str, extra: &[(&str, &str)]) -> SnapshotEntry {
        let mut snapshot = nfrepo_testing::header::snapshot(source, kind, i64::from(id));
        snapshot.extra = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        SnapshotEntry {
            id: SnapshotId([id; 32]),
            snapshot,
        }
    }

    #[test]
    fn names_order_by_number_not_text() {
        assert_eq!(binlog_order("binlog.000009"), Some(("binlog", 9)));
        assert!(binlog_order("binlog.000009") < binlog_order("binlog.000010"));
        assert!(binlog_order("binlog.999999") < binlog_order("binlog.1000000"));
        assert_eq!(binlog_order("binlog"), None);
        assert_eq!(binlog_order("binlog.00a1"), None);
        assert_eq!(binlog_order(".000001"), None);
    }

    // Issue 16: a longer version of a file supersedes the shorter ones, and
    // files before the oldest kept dump's start go.
    #[test]
    fn superseded_and_unneeded_binlog_snapshots_go() {
        let dump = entry(1, DUMP_KIND, "m", &[(DUMP_BINLOG_FILE_FACT, "binlog.000002")]);
        let oldest = oldest_needed([&dump]).unwrap();
        assert_eq!(oldest, ("binlog".to_owned(), 2));
        let f = |name: &str| format!("{BINLOG_FILE_FACT}{name}");
        let stream = "m.binlog";
        let before = entry(2, BINLOG_KIND, stream, &[(&f("binlog.000001"), "900 x complete")]);
        let short = entry(3, BINLOG_KIND, stream, &[(&f("binlog.000002"), "100 x")]);
        let longer = entry(
            4,
            BINLOG_KIND,
            stream,
            &[(&f("binlog.000002"), "400 x complete"), (&f("binlog.000003"), "50 x")],
        );
        let grown = entry(5, BINLOG_KIND, stream, &[(&f("binlog.000003"), "80 x")]);
        let gap = entry(6, BINLOG_KIND, stream, &[(BINLOG_GAP_FACT, "binlog.000004")]);
        let all = vec![before, short, longer, grown, gap];
        let decided = decide(&all, Some(&oldest));
        let kept: Vec<bool> = decided.iter().map(|r| !r.is_empty()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
        assert!(
            decide(&all, None).iter().all(|r| r == &[KeepReason::BinlogNeeded]),
            "no dump kept: nothing goes"
        );
        let (others, binlog) = split(vec![dump, all[0].clone()]);
        assert_eq!(others.len(), 1);
        assert_eq!(binlog["m"].len(), 1);
    }
}
