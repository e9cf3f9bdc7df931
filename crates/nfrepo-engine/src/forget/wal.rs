//! Retention of archived PostgreSQL WAL: kept while a kept base backup
//! needs it, and no longer.
//!
//! WAL is archived as snapshots of the stream `<source>.wal` (kind
//! [`WAL_KIND`]), each naming its files in facts `wal.file.<name>`
//! ([`WAL_FILE_FACT`]); a base backup of `<source>` (kind
//! [`BASEBACKUP_KIND`]) records the segment its WAL starts in
//! ([`BASEBACKUP_START_WAL_FACT`]). No retention policy applies to a WAL
//! stream; instead, once its base source's snapshots are decided, a WAL
//! snapshot is kept when
//! - it holds a segment at or after the start segment of the oldest base
//!   backup kept (every kept base backup can then be replayed from its
//!   start to any later moment), or
//! - it holds a timeline history file (a few bytes; recovery asks for them
//!   to follow timeline switches), or
//! - no base backup of the source is kept at all (WAL archived for a base
//!   backup still running must not go: its snapshot commits only at the end), or
//! - it is protected.
//!
//! A batch is forgotten as a whole, so at most one batch's worth of
//! segments before the oldest needed one is kept beyond the need.

use std::collections::BTreeMap;

use crate::read::SnapshotEntry;
use crate::retention::KeepReason;

/// The snapshot kind of a batch of archived WAL files.
pub const WAL_KIND: &str = "postgres-wal";
/// The snapshot kind of a PostgreSQL base backup.
pub const BASEBACKUP_KIND: &str = "postgres-basebackup";
/// The fact prefix naming each archived WAL file.
pub const WAL_FILE_FACT: &str = "wal.file.";
/// The fact of a base backup naming the WAL segment its start position is in.
pub const BASEBACKUP_START_WAL_FACT: &str = "postgres.basebackup.start_wal";
/// What a WAL stream's name adds to its base source's.
pub const WAL_STREAM_SUFFIX: &str = ".wal";

/// The base source of a WAL snapshot, if `entry` is one.
pub(super) fn wal_base_source(entry: &SnapshotEntry) -> Option<&str> {
    (entry.snapshot.source_kind == WAL_KIND)
        .then(|| entry.snapshot.source.strip_suffix(WAL_STREAM_SUFFIX))
        .flatten()
}

/// The position part of a segment name (`LLLLLLLLSSSSSSSS`, upper-case hex
/// of fixed width, so it orders as text), leaving the timeline out: a later
/// timeline continues the positions of an earlier one.
fn position(name: &str) -> Option<&str> {
    let segment = name.get(..24)?;
    (segment.bytes().all(|b| b.is_ascii_hexdigit()) && !name.ends_with(".history")).then(|| segment.get(8..))?
}

/// The oldest start position over the base backups kept.
pub(super) fn oldest_needed<'a>(kept_bases: impl IntoIterator<Item = &'a SnapshotEntry>) -> Option<String> {
    kept_bases
        .into_iter()
        .filter(|e| e.snapshot.source_kind == BASEBACKUP_KIND)
        .filter_map(|e| {
            e.snapshot
                .fact(BASEBACKUP_START_WAL_FACT)
                .and_then(|v| position(v).map(|p| p.to_ascii_uppercase()))
        })
        .min()
}

/// Why `entry`, a WAL snapshot, is kept given the oldest needed position
/// (`None`: no base backup kept, so everything is); empty when it goes.
pub(super) fn decide(entry: &SnapshotEntry, oldest: Option<&str>) -> Vec<KeepReason> {
    let Some(oldest) = oldest else {
        return vec![KeepReason::WalNeeded];
    };
    let names: Vec<&str> = entry
        .snapshot
        .extra
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(WAL_FILE_FACT))
        .collect();
    let needed = names.is_empty()
        || names.iter().any(|name| match position(name) {
            Some(p) => p.to_ascii_uppercase().as_str() >= oldest,
            None => true,
        });
    if needed {
        vec![KeepReason::WalNeeded]
    } else {
        Vec::new()
    }
}

/// Splits WAL snapshots (by base source) from the others.
pub(super) fn split(entries: Vec<SnapshotEntry>) -> (Vec<SnapshotEntry>, BTreeMap<String, Vec<SnapshotEntry>>) {
    split_by(entries, wal_base_source)
}

/// Splits the snapshots of the streams `base_of` recognises (by their base
/// source) from the others.
pub(super) fn split_by(
    entries: Vec<SnapshotEntry>,
    base_of: fn(&SnapshotEntry) -> Option<&str>,
) -> (Vec<SnapshotEntry>, BTreeMap<String, Vec<SnapshotEntry>>) {
    let mut others = Vec::with_capacity(entries.len());
    let mut streams: BTreeMap<String, Vec<SnapshotEntry>> = BTreeMap::new();
    for entry in entries {
        match base_of(&entry).map(str::to_owned) {
            Some(base) => streams.entry(base).or_default().push(entry),
            None => others.push(entry),
        }
    }
    (others, streams)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use nfrepo_format::SnapshotId;

    fn entry(id: u8, kind: &str, source: &str, extra: &[(&str, &str)]) -> SnapshotEntry {
        let mut snapshot = nfrepo_testing::header::snapshot(source, kind, i64::from(id));
        snapshot.extra = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        SnapshotEntry {
            id: SnapshotId([id; 32]),
            snapshot,
        }
    }

    #[test]
    fn wal_before_the_oldest_kept_base_backup_goes_and_history_stays() {
        let base_old = entry(
            1,
            BASEBACKUP_KIND,
            "pg",
            &[(BASEBACKUP_START_WAL_FACT, "000000010000000000000010")],
        );
        let base_new = entry(
            2,
            BASEBACKUP_KIND,
            "pg",
            &[(BASEBACKUP_START_WAL_FACT, "000000020000000000000020")],
        );
        let oldest = oldest_needed([&base_new, &base_old]).unwrap();
        assert_eq!(oldest, "0000000000000010");
        let f = |name: &str| format!("{WAL_FILE_FACT}{name}");
        let before = entry(3, WAL_KIND, "pg.wal", &[(&f("00000001000000000000000F"), "1 x")]);
        let straddling = entry(
            4,
            WAL_KIND,
            "pg.wal",
            &[
                (&f("00000001000000000000000F"), "1 x"),
                (&f("000000010000000000000010"), "1 x"),
            ],
        );
        let history = entry(5, WAL_KIND, "pg.wal", &[(&f("00000002.history"), "1 x")]);
        let later_timeline = entry(6, WAL_KIND, "pg.wal", &[(&f("0000000200000000000000A0"), "1 x")]);
        assert!(decide(&before, Some(&oldest)).is_empty());
        assert_eq!(decide(&straddling, Some(&oldest)), [KeepReason::WalNeeded]);
        assert_eq!(decide(&history, Some(&oldest)), [KeepReason::WalNeeded]);
        assert_eq!(decide(&later_timeline, Some(&oldest)), [KeepReason::WalNeeded]);
        assert_eq!(
            decide(&before, None),
            [KeepReason::WalNeeded],
            "no base kept: nothing goes"
        );
        let (others, wal) = split(vec![base_old, before, history]);
        assert_eq!(others.len(), 1);
        assert_eq!(wal["pg"].len(), 2);
    }
}
