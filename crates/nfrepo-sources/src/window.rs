//! How far back and how far forward each source can be recovered, and
//! whether its change log is whole: what `nfrepo status`, the alert rules
//! and the metrics report.
//!
//! Everything is read from the snapshot listing (headers and their facts);
//! no tree, pack or server is touched, so a status costs one listing.
//!
//! **A source without a change log** recovers to its snapshots: from the
//! oldest to the newest (the moment each backup started).
//!
//! **PostgreSQL with WAL archiving** (base backups of kind
//! `postgres-basebackup`, WAL in the stream `<source>.wal`). A base backup
//! is usable when every segment from its start segment to the segment of
//! its stop position is archived; it then recovers to any moment from its
//! finish (`pg_basebackup`'s stop time) to the archive time of the last
//! segment of the unbroken run that follows its start. Positions continue
//! across timelines, so the run follows them whatever the timeline (a
//! promotion archives the old timeline's last segment as `.partial` and the
//! new timeline's segment at the same position). Segments are counted in
//! the size PostgreSQL archived (16 MiB unless `initdb --wal-segsize`).
//!
//! **MySQL/MariaDB with binlog streaming** (dumps of kind `mysql` recording
//! a binlog position, binlogs in the stream `<source>.binlog`). A dump
//! recovers from its finish to the newest event of the unbroken run of
//! binlog files from its position ([`crate::BinlogCatalog::run_from`], the
//! same run a replay reads).
//!
//! **A gap** is judged from the newest base backup or dump only, because
//! that is where recovery to "now" starts: a segment or binlog file missing
//! after it, while later ones are archived (or a gap the binlog copy
//! recorded), or a segment the base backup itself needs. It is an error
//! ([`Error::WalGap`] `BACKUP_FAILED/WAL_GAP`, [`Error::BinlogGap`]
//! `BACKUP_FAILED/BINLOG_GAP`) until a new base backup or dump is taken. A
//! run that simply ends is no gap: the next segment or file has not been
//! archived yet, which the age of the newest recoverable moment shows.
//! A hole before the newest base backup only narrows what older moments can
//! be reached, so it is left to the restore that would need it.
//!
//! The newest recoverable moment of a WAL run is the time its last segment
//! was committed to the repository: PostgreSQL closed the segment at or
//! before that, and every transaction in it committed before it closed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nfrepo_engine::{BINLOG_STREAM_SUFFIX, SnapshotEntry, WAL_STREAM_SUFFIX};

use crate::binlog::{BINLOG_KIND, BinlogCatalog, DUMP_KIND, dump_finished_ns, dump_position};
use crate::postgres::{BASEBACKUP_KIND, RecoveryTarget, START_WAL, STOP_LSN, base_finished_ns};
use crate::wal::{Lsn, WAL_KIND, WalCatalog, WalName};
use crate::{Error, Result};

/// PostgreSQL's WAL segment size unless `initdb --wal-segsize` chose another.
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// The change log a source archives beside its snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogKind {
    /// PostgreSQL WAL segments.
    Wal,
    /// MySQL/MariaDB binary logs.
    Binlog,
}

impl LogKind {
    /// `wal` or `binlog`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Wal => "wal",
            Self::Binlog => "binlog",
        }
    }
}

/// A source's archived change log, as far as recovery is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStatus {
    /// Which log.
    pub kind: LogKind,
    /// Files archived (segments, or binlog files).
    pub files: usize,
    /// The newest file archived.
    pub newest_file: Option<String>,
    /// The first file missing where recovery to now needs it, with what it
    /// costs ([`RecoveryWindow::gap_error`]); `None` when the log is whole.
    pub gap: Option<LogGap>,
}

/// A file missing from a change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogGap {
    /// The first file missing.
    pub missing: String,
    /// One line: what is missing, where recovery stops, what to do.
    pub message: String,
}

/// How far one source can be recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryWindow {
    /// The source (a change log's stream is folded into its source).
    pub source: String,
    /// The kind of its newest snapshot (`files`, `postgres-basebackup`, `mysql`…).
    pub kind: String,
    /// Snapshots of the source itself (base backups and dumps included, log batches not).
    pub snapshots: usize,
    /// The oldest moment a restore can reach, nanoseconds since the epoch.
    pub oldest_ns: Option<i64>,
    /// The newest moment a restore can reach, nanoseconds since the epoch.
    pub newest_ns: Option<i64>,
    /// The change log, for a source that archives one.
    pub log: Option<LogStatus>,
}

impl RecoveryWindow {
    /// The error a gap in the change log is: [`Error::WalGap`] or [`Error::BinlogGap`].
    #[must_use]
    pub fn gap_error(&self) -> Option<Error> {
        let log = self.log.as_ref()?;
        let gap = log.gap.as_ref()?;
        let message = format!("source {}: {}", self.source, gap.message);
        Some(match log.kind {
            LogKind::Wal => Error::WalGap(message),
            LogKind::Binlog => Error::BinlogGap(message),
        })
    }
}

/// The recovery window of every source in `entries` (a snapshot listing),
/// by source name.
#[must_use]
pub fn recovery_windows(entries: &[SnapshotEntry]) -> Vec<RecoveryWindow> {
    let mut own: BTreeMap<&str, Vec<&SnapshotEntry>> = BTreeMap::new();
    let mut wal: BTreeMap<&str, Vec<&SnapshotEntry>> = BTreeMap::new();
    let mut binlog: BTreeMap<&str, Vec<&SnapshotEntry>> = BTreeMap::new();
    for entry in entries {
        let s = &entry.snapshot;
        if let Some(base) = s
            .source
            .strip_suffix(WAL_STREAM_SUFFIX)
            .filter(|_| s.source_kind == WAL_KIND)
        {
            wal.entry(base).or_default().push(entry);
        } else if let Some(base) = s
            .source
            .strip_suffix(BINLOG_STREAM_SUFFIX)
            .filter(|_| s.source_kind == BINLOG_KIND)
        {
            binlog.entry(base).or_default().push(entry);
        } else {
            own.entry(&s.source).or_default().push(entry);
        }
    }
    let names: BTreeSet<&str> = own.keys().chain(wal.keys()).chain(binlog.keys()).copied().collect();
    names
        .into_iter()
        .map(|source| {
            let snapshots = own.remove(source).unwrap_or_default();
            let kind = snapshots
                .iter()
                .max_by_key(|e| e.snapshot.time_ns)
                .map(|e| e.snapshot.source_kind.clone())
                .unwrap_or_default();
            let (oldest_ns, newest_ns, log) = if let Some(log) = wal.remove(source) {
                postgres_window(&snapshots, &log)
            } else if let Some(log) = binlog.remove(source) {
                mysql_window(&snapshots, log)
            } else if snapshots.iter().any(|e| e.snapshot.source_kind == BASEBACKUP_KIND) {
                postgres_window(&snapshots, &[])
            } else {
                plain_window(&snapshots)
            };
            RecoveryWindow {
                source: source.to_owned(),
                kind,
                snapshots: snapshots.len(),
                oldest_ns,
                newest_ns,
                log,
            }
        })
        .collect()
}

/// How far a source reaches: its oldest and newest recoverable moments, and its change log.
type Reach = (Option<i64>, Option<i64>, Option<LogStatus>);

fn plain_window(snapshots: &[&SnapshotEntry]) -> Reach {
    (
        snapshots.iter().map(|e| e.snapshot.time_ns).min(),
        snapshots.iter().map(|e| e.snapshot.time_ns).max(),
        None,
    )
}

/// One archived WAL position: the highest timeline archived there and when.
#[derive(Clone, Copy)]
struct Archived {
    timeline: u32,
    time_ns: i64,
}

/// A base backup, in segment numbers.
struct Base {
    finished_ns: i64,
    start: u64,
    stop: u64,
}

/// The archived WAL segments of one source, by position.
struct WalRuns {
    segment_size: u64,
    per_log: u64,
    present: BTreeMap<u64, Archived>,
    newest_file: Option<String>,
}

impl WalRuns {
    fn new(log: &[&SnapshotEntry]) -> Self {
        let mut catalog = WalCatalog::default();
        for entry in log {
            catalog.add(Arc::new((*entry).clone()));
        }
        let mut names = Vec::new();
        for (name, archived) in catalog.iter() {
            match WalName::parse(name) {
                Some(WalName::Segment { timeline, log, seg }) => names.push((timeline, log, seg, archived, false)),
                Some(WalName::Partial { timeline, log, seg }) => names.push((timeline, log, seg, archived, true)),
                _ => {}
            }
        }
        let segment_size = names
            .iter()
            .find(|(.., partial)| !partial)
            .map(|(_, _, _, a, _)| a.size)
            .filter(|size| size.is_power_of_two() && (1 << 20..=1 << 30).contains(size))
            .unwrap_or(DEFAULT_SEGMENT_SIZE);
        let mut runs = Self {
            segment_size,
            per_log: (1u64 << 32) / segment_size,
            present: BTreeMap::new(),
            newest_file: None,
        };
        for (timeline, log, seg, archived, _) in &names {
            let at = Archived {
                timeline: *timeline,
                time_ns: archived.entry.snapshot.time_ns,
            };
            runs.present
                .entry(runs.number(*log, *seg))
                .and_modify(|a| {
                    a.timeline = a.timeline.max(at.timeline);
                    a.time_ns = a.time_ns.max(at.time_ns);
                })
                .or_insert(at);
        }
        runs.newest_file = names
            .iter()
            .filter(|(.., partial)| !partial)
            .map(|(timeline, log, seg, ..)| (runs.number(*log, *seg), *timeline))
            .max()
            .map(|(n, timeline)| runs.name_of(timeline, n));
        runs
    }

    fn number(&self, log: u32, seg: u32) -> u64 {
        u64::from(log) * self.per_log + u64::from(seg)
    }

    fn name_of(&self, timeline: u32, n: u64) -> String {
        format!("{timeline:08X}{:08X}{:08X}", n / self.per_log, n % self.per_log)
    }

    /// `entry` as a base backup, when it records its WAL positions.
    fn base(&self, entry: &SnapshotEntry) -> Option<Base> {
        if entry.snapshot.source_kind != BASEBACKUP_KIND {
            return None;
        }
        let finished_ns = base_finished_ns(entry)?;
        let start = match WalName::parse(entry.snapshot.fact(START_WAL)?)? {
            WalName::Segment { log, seg, .. } => self.number(log, seg),
            _ => return None,
        };
        let stop = entry
            .snapshot
            .fact(STOP_LSN)
            .and_then(Lsn::parse)
            .map_or(start, |lsn| lsn.0.saturating_sub(1) / self.segment_size)
            .max(start);
        Some(Base {
            finished_ns,
            start,
            stop,
        })
    }

    /// The unbroken run from `start`: its last segment and when that was archived.
    fn run(&self, start: u64) -> Option<(u64, Archived)> {
        let mut last = None;
        let mut n = start;
        while let Some(a) = self.present.get(&n) {
            last = Some((n, *a));
            n += 1;
        }
        last
    }

    /// Whether every segment `base` needs to be consistent is archived.
    fn usable(&self, base: &Base) -> bool {
        self.run(base.start).is_some_and(|(end, _)| end >= base.stop)
    }

    /// The newest moment `base` recovers to (when usable).
    fn reach(&self, base: &Base) -> i64 {
        self.run(base.start)
            .map_or(base.finished_ns, |(_, a)| a.time_ns)
            .max(base.finished_ns)
    }

    /// The first segment missing after `base` that recovery needs: one of
    /// its own, or one followed by archived WAL. `which` names the base backup.
    fn gap_after(&self, base: &Base, which: &str) -> Option<(LogGap, bool)> {
        let end = self.run(base.start);
        let first_missing = end.map_or(base.start, |(n, _)| n + 1);
        let later = self.present.range(first_missing..).next().map(|(n, _)| *n);
        let own = first_missing <= base.stop;
        if !own && later.is_none() {
            return None;
        }
        let timeline = end
            .map(|(_, a)| a.timeline)
            .or_else(|| later.and_then(|n| self.present.get(&n)).map(|a| a.timeline))
            .unwrap_or(1);
        let missing = self.name_of(timeline, first_missing);
        let stops = end.map_or_else(
            || format!("{which} cannot be recovered at all"),
            |(n, a)| {
                format!(
                    "recovery from {which} stops after {} (archived {})",
                    self.name_of(a.timeline, n),
                    rfc3339(a.time_ns)
                )
            },
        );
        let message = if own {
            format!("WAL segment {missing}, which {which} needs, is not archived: {stops}")
        } else {
            format!("WAL segment {missing} is not archived, yet later WAL is: {stops}")
        };
        Some((LogGap { missing, message }, own))
    }
}

fn postgres_window(snapshots: &[&SnapshotEntry], log: &[&SnapshotEntry]) -> Reach {
    let runs = WalRuns::new(log);
    let bases: Vec<Base> = snapshots.iter().filter_map(|e| runs.base(e)).collect();
    let gap = bases.iter().max_by_key(|b| b.finished_ns).and_then(|newest| {
        let (mut gap, own) = runs.gap_after(newest, "the newest base backup")?;
        gap.message.push_str(if own {
            "; take a new base backup"
        } else {
            "; take a new base backup (and find out why archiving skipped it)"
        });
        Some(gap)
    });
    (
        bases.iter().filter(|b| runs.usable(b)).map(|b| b.finished_ns).min(),
        bases.iter().filter(|b| runs.usable(b)).map(|b| runs.reach(b)).max(),
        Some(LogStatus {
            kind: LogKind::Wal,
            files: runs.present.len(),
            newest_file: runs.newest_file.clone(),
            gap,
        }),
    )
}

/// Refuses, before anything is written, a point-in-time restore from
/// `base` to `target` that the archived WAL of its source cannot reach:
/// a segment the base backup needs is missing, or the target lies beyond a
/// segment missing after it while later WAL is archived (PostgreSQL would
/// stop replaying there; with `latest` it would then open at that point as
/// if it were the end). A target beyond the end of an unbroken archive is
/// left to PostgreSQL, which refuses to open short of it.
///
/// # Errors
/// [`Error::WalGap`] (`RESTORE_FAILED/WAL_GAP` during a restore).
pub fn check_wal_reaches(entries: &[SnapshotEntry], base: &SnapshotEntry, target: RecoveryTarget) -> Result<()> {
    let stream = format!("{}{WAL_STREAM_SUFFIX}", base.snapshot.source);
    let log: Vec<&SnapshotEntry> = entries
        .iter()
        .filter(|e| e.snapshot.source == stream && e.snapshot.source_kind == WAL_KIND)
        .collect();
    let runs = WalRuns::new(&log);
    let Some(b) = runs.base(base) else {
        return Ok(());
    };
    let which = format!("base backup {}", base.id.short());
    let Some((gap, own)) = runs.gap_after(&b, &which) else {
        return Ok(());
    };
    let reach = runs.reach(&b);
    match target {
        RecoveryTarget::Time(at) if !own && at <= reach => Ok(()),
        _ if own => Err(Error::WalGap(format!(
            "{}; restore from another base backup",
            gap.message
        ))),
        _ => Err(Error::WalGap(format!(
            "{}; restore to a time up to {}, or from a base backup taken after the gap",
            gap.message,
            rfc3339(reach)
        ))),
    }
}

fn mysql_window(snapshots: &[&SnapshotEntry], mut log: Vec<&SnapshotEntry>) -> Reach {
    log.sort_by_key(|e| e.snapshot.time_ns);
    let mut catalog = BinlogCatalog::default();
    for entry in &log {
        catalog.add(Arc::new((*entry).clone()));
    }
    let dumps: Vec<(&SnapshotEntry, i64)> = snapshots
        .iter()
        .filter(|e| e.snapshot.source_kind == DUMP_KIND && dump_position(e).is_some())
        .map(|e| (*e, dump_finished_ns(e)))
        .collect();
    let newest = dumps.iter().max_by_key(|(_, finished)| *finished);
    let mut newest_ns = None;
    let mut gap = None;
    if let Some((dump, finished)) = newest {
        let start = dump_position(dump).map(|(file, _)| file);
        let run = start.as_ref().map(|start| catalog.run_from(start));
        newest_ns = Some(
            run.as_ref()
                .and_then(|r| r.end_ns())
                .unwrap_or(*finished)
                .max(*finished),
        );
        if let (Some(start), Some(run)) = (start, run)
            && let Some(missing) = run.missing.clone()
        {
            let stops = run.files.last().map_or_else(
                || format!("nothing is archived from {start}, the newest dump's file"),
                |(last, _)| {
                    format!(
                        "replay after the newest dump stops with {last}{}",
                        run.end_ns()
                            .map(|ns| format!(" at {}", rfc3339(ns)))
                            .unwrap_or_default()
                    )
                },
            );
            gap = Some(LogGap {
                message: format!("binlog {missing} was purged before it was copied: {stops}; take a new dump"),
                missing,
            });
        }
    }
    (
        dumps.iter().map(|(_, finished)| *finished).min(),
        newest_ns,
        Some(LogStatus {
            kind: LogKind::Binlog,
            files: catalog.len(),
            newest_file: catalog.newest().map(|(name, _)| name.to_string()),
            gap,
        }),
    )
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::binlog::BINLOG_NEWEST_EVENT_FACT;
    use crate::postgres::STOP_TIME;
    use nfrepo_engine::{BINLOG_FILE_FACT, BINLOG_GAP_FACT, DUMP_BINLOG_FILE_FACT, WAL_FILE_FACT};
    use nfrepo_format::SnapshotId;

    const SEC: i64 = 1_000_000_000;
    const SEGMENT: u64 = 16 << 20;

    fn entry(id: u8, source: &str, kind: &str, time_s: i64, facts: &[(String, String)]) -> SnapshotEntry {
        let mut snapshot = nfrepo_testing::header::snapshot(source, kind, time_s * SEC);
        snapshot.extra = facts.to_vec();
        SnapshotEntry {
            id: SnapshotId([id; 32]),
            snapshot,
        }
    }

    fn base(id: u8, time_s: i64, start: &str, stop_lsn: &str) -> SnapshotEntry {
        entry(
            id,
            "pg",
            BASEBACKUP_KIND,
            time_s,
            &[
                (START_WAL.into(), start.into()),
                (STOP_LSN.into(), stop_lsn.into()),
                (STOP_TIME.into(), rfc3339(time_s * SEC)),
            ],
        )
    }

    fn wal(id: u8, time_s: i64, names: &[&str]) -> SnapshotEntry {
        let facts: Vec<(String, String)> = names
            .iter()
            .map(|n| (format!("{WAL_FILE_FACT}{n}"), format!("{SEGMENT} {}", "0".repeat(64))))
            .collect();
        entry(id, "pg.wal", WAL_KIND, time_s, &facts)
    }

    fn window(entries: &[SnapshotEntry], source: &str) -> RecoveryWindow {
        recovery_windows(entries)
            .into_iter()
            .find(|w| w.source == source)
            .unwrap()
    }

    #[test]
    fn a_whole_wal_run_recovers_to_its_last_segment() {
        let entries = [
            base(1, 100, "000000010000000000000002", "0/3000100"),
            wal(2, 90, &["000000010000000000000001"]),
            wal(3, 110, &["000000010000000000000002", "000000010000000000000003"]),
            wal(4, 170, &["000000010000000000000004", "00000002.history"]),
            wal(5, 230, &["0000000100000000000000FF", "000000020000000100000000"]),
        ];
        let w = window(&entries[..4], "pg");
        assert_eq!((w.snapshots, w.kind.as_str()), (1, BASEBACKUP_KIND));
        assert_eq!(w.oldest_ns, Some(100 * SEC));
        assert_eq!(w.newest_ns, Some(170 * SEC), "the archive time of segment 4");
        let log = w.log.as_ref().unwrap();
        assert_eq!((log.kind, log.files), (LogKind::Wal, 4));
        assert_eq!(log.newest_file.as_deref(), Some("000000010000000000000004"));
        assert_eq!(log.gap, None);
        assert!(w.gap_error().is_none());

        // Segments 5..FE never archived while FF and the next log's first are: a gap at 5.
        let w = window(&entries, "pg");
        let gap = w.log.as_ref().unwrap().gap.clone().unwrap();
        assert_eq!(gap.missing, "000000010000000000000005");
        assert!(
            gap.message.contains("stops after 000000010000000000000004"),
            "{}",
            gap.message
        );
        assert_eq!(w.newest_ns, Some(170 * SEC), "recovery stops before the gap");
        let error = w.gap_error().unwrap();
        assert_eq!(error.detail_code(), Some("WAL_GAP"));
        assert_eq!(
            error.code(nfrepo_engine::Operation::Inspect),
            nfrepo_engine::ErrorCode::BackupFailed
        );
        assert!(
            error
                .to_string()
                .starts_with("WAL gap: source pg: WAL segment 000000010000000000000005")
        );
    }

    #[test]
    fn positions_continue_across_timelines_and_segment_sizes() {
        // A promotion: timeline 1 ends in a partial segment 3, timeline 2 goes on from 3.
        let entries = [
            base(1, 100, "000000010000000000000002", "0/2000100"),
            wal(
                2,
                110,
                &["000000010000000000000002", "000000010000000000000003.partial"],
            ),
            wal(
                3,
                120,
                &[
                    "00000002.history",
                    "000000020000000000000003",
                    "000000020000000000000004",
                ],
            ),
        ];
        let w = window(&entries, "pg");
        assert_eq!(w.log.as_ref().unwrap().gap, None);
        assert_eq!(w.newest_ns, Some(120 * SEC));
        assert_eq!(
            w.log.as_ref().unwrap().newest_file.as_deref(),
            Some("000000020000000000000004")
        );

        // 64 MiB segments: a log holds 64 of them, so 0x3F is followed by the next log's 0.
        let big = |id, t, names: &[&str]| {
            let mut e = wal(id, t, names);
            for (_, v) in &mut e.snapshot.extra {
                *v = format!("{} {}", 64u64 << 20, "0".repeat(64));
            }
            e
        };
        let entries = [
            base(1, 100, "00000001000000000000003F", "0/FC000100"),
            big(2, 110, &["00000001000000000000003F", "000000010000000100000000"]),
        ];
        let w = window(&entries, "pg");
        assert_eq!(w.log.as_ref().unwrap().gap, None, "{w:?}");
        assert_eq!(w.newest_ns, Some(110 * SEC));
    }

    #[test]
    fn a_base_backup_missing_its_own_wal_is_a_gap_and_unusable() {
        let entries = [
            base(1, 100, "000000010000000000000002", "0/3000100"),
            wal(2, 110, &["000000010000000000000002"]),
        ];
        let w = window(&entries, "pg");
        let gap = w.log.as_ref().unwrap().gap.clone().unwrap();
        assert_eq!(gap.missing, "000000010000000000000003");
        assert!(
            gap.message.contains("which the newest base backup needs"),
            "{}",
            gap.message
        );
        assert_eq!((w.oldest_ns, w.newest_ns), (None, None), "nothing can be recovered");

        // A newer base backup whose WAL is whole ends the gap; the older one stays usable.
        let entries = [
            base(1, 100, "000000010000000000000002", "0/2000100"),
            wal(2, 110, &["000000010000000000000002", "000000010000000000000004"]),
            base(3, 200, "000000010000000000000004", "0/4000100"),
        ];
        let w = window(&entries, "pg");
        assert_eq!(
            w.log.as_ref().unwrap().gap,
            None,
            "the hole lies before the newest base backup"
        );
        assert_eq!((w.oldest_ns, w.newest_ns), (Some(100 * SEC), Some(200 * SEC)));
    }

    #[test]
    fn a_restore_across_a_wal_gap_is_refused_before_anything_is_written() {
        let entries = [
            base(1, 100, "000000010000000000000002", "0/2000100"),
            wal(2, 110, &["000000010000000000000002", "000000010000000000000003"]),
            wal(3, 300, &["000000010000000000000005"]),
        ];
        let reaches = |target| check_wal_reaches(&entries, &entries[0], target);
        reaches(RecoveryTarget::Time(105 * SEC)).unwrap();
        reaches(RecoveryTarget::Time(110 * SEC)).unwrap();
        for target in [RecoveryTarget::Time(200 * SEC), RecoveryTarget::Latest] {
            let error = reaches(target).unwrap_err();
            assert_eq!(error.detail_code(), Some("WAL_GAP"));
            assert_eq!(
                error.code(nfrepo_engine::Operation::Restore),
                nfrepo_engine::ErrorCode::RestoreFailed
            );
            let text = error.to_string();
            assert!(
                text.contains("WAL segment 000000010000000000000004 is not archived"),
                "{text}"
            );
            assert!(text.contains("restore to a time up to 1970-01-01T00:01:50Z"), "{text}");
        }
        // A base backup missing its own WAL is refused whatever the target.
        let entries = [
            base(1, 100, "000000010000000000000002", "0/3000100"),
            wal(2, 110, &["000000010000000000000002"]),
        ];
        let error = check_wal_reaches(&entries, &entries[0], RecoveryTarget::Time(100 * SEC)).unwrap_err();
        assert!(
            error.to_string().contains("restore from another base backup"),
            "{error}"
        );
        // No gap: nothing to refuse (a target beyond the archive is PostgreSQL's to refuse).
        let entries = [
            base(1, 100, "000000010000000000000002", "0/2000100"),
            wal(2, 110, &["000000010000000000000002"]),
        ];
        check_wal_reaches(&entries, &entries[0], RecoveryTarget::Latest).unwrap();
    }

    fn binlog_file(name: &str, newest_event_s: i64, id: u8, time_s: i64) -> SnapshotEntry {
        entry(
            id,
            "db.binlog",
            BINLOG_KIND,
            time_s,
            &[
                (
                    format!("{BINLOG_FILE_FACT}{name}"),
                    format!("100 {} complete", "0".repeat(64)),
                ),
                (BINLOG_NEWEST_EVENT_FACT.into(), rfc3339(newest_event_s * SEC)),
            ],
        )
    }

    fn dump(id: u8, time_s: i64, file: &str) -> SnapshotEntry {
        entry(
            id,
            "db",
            DUMP_KIND,
            time_s,
            &[
                (DUMP_BINLOG_FILE_FACT.into(), file.into()),
                ("mysql.binlog_position".into(), "4".into()),
            ],
        )
    }

    #[test]
    fn binlogs_recover_to_the_newest_event_of_the_run_after_the_newest_dump() {
        let entries = [
            dump(1, 100, "binlog.000002"),
            binlog_file("binlog.000002", 150, 2, 160),
            binlog_file("binlog.000003", 210, 3, 220),
            entry(9, "files", "files", 50, &[]),
        ];
        let w = window(&entries, "db");
        assert_eq!((w.kind.as_str(), w.snapshots), (DUMP_KIND, 1));
        assert_eq!((w.oldest_ns, w.newest_ns), (Some(100 * SEC), Some(210 * SEC)));
        let log = w.log.as_ref().unwrap();
        assert_eq!((log.kind, log.files, log.gap.as_ref()), (LogKind::Binlog, 2, None));
        assert_eq!(log.newest_file.as_deref(), Some("binlog.000003"));
        let files = window(&entries, "files");
        assert_eq!((files.newest_ns, files.log), (Some(50 * SEC), None));

        // binlog.000004 purged before it was copied, .000005 copied: a gap.
        let mut broken = entries.to_vec();
        broken.push(binlog_file("binlog.000005", 400, 4, 410));
        let w = window(&broken, "db");
        let error = w.gap_error().unwrap();
        assert_eq!(error.detail_code(), Some("BINLOG_GAP"));
        assert!(error.to_string().contains("binlog binlog.000004 was purged"), "{error}");
        assert_eq!(w.newest_ns, Some(210 * SEC), "the replay stops before the gap");

        // The copy's own gap record counts too; a dump after it heals it.
        let mut recorded = entries.to_vec();
        recorded.push(entry(
            5,
            "db.binlog",
            BINLOG_KIND,
            300,
            &[(BINLOG_GAP_FACT.into(), "binlog.000004".into())],
        ));
        assert_eq!(
            window(&recorded, "db").log.unwrap().gap.unwrap().missing,
            "binlog.000004"
        );
        recorded.push(dump(6, 500, "binlog.000006"));
        let w = window(&recorded, "db");
        assert_eq!(w.log.as_ref().unwrap().gap, None);
        assert_eq!(
            w.newest_ns,
            Some(500 * SEC),
            "the new dump, nothing archived after it yet"
        );
    }
}
