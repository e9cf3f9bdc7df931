//! MySQL/MariaDB binary logs in the repository: streaming them from the
//! server (the agent, `binlog/copy.rs`), the catalog of what is archived,
//! and replaying them after a dump restore (`binlog/replay.rs`).
//!
//! **Representation.** As for PostgreSQL WAL (`wal.rs`), archived binlogs
//! are ordinary snapshots, so commit, check, replication, forget and gc
//! cover them unchanged: snapshots of the stream `<source>.binlog`
//! ([`binlog_stream`], kind [`BINLOG_KIND`]) whose root tree holds binlog
//! files by their server names (`binlog.000007`). A file the server is
//! still writing is committed again, whole, each time it grew: a later
//! snapshot holding a longer version of a file *supersedes* the earlier
//! ones (the content-defined chunks of the unchanged prefix are stored
//! once). Each snapshot records, per file, `binlog.file.<name> = <size>
//! <blake3>[ complete]` (`complete`: the file ends with the server's
//! rotate or stop event, nothing more comes), and `binlog.newest_event`,
//! the newest event time it holds (RFC 3339, seconds), so the catalog
//! ([`BinlogCatalog::load`]) is read from the snapshot listing alone.
//!
//! **Never lose or duplicate an event.** Every committed version of a file
//! ends at an event boundary and is byte for byte the server's file (as
//! `mariadb-binlog --raw` writes it; only the format description's
//! "in use" flag differs), and a longer version is committed only after its
//! first bytes hashed to the archived shorter version. Files follow each
//! other by number with none missing; a file the server purged before it
//! was copied is a gap ([`Error::BinlogGap`], `BACKUP_FAILED/BINLOG_GAP`),
//! recorded as a snapshot of the stream with the fact `binlog.gap =
//! <first missing file>`.

mod copy;
mod events;
mod replay;

use std::collections::BTreeMap;
use std::sync::Arc;

use nfrepo_engine::{Repository, SnapshotEntry, binlog_order};

use crate::{Error, Result};

pub use copy::BinlogOptions;
pub(crate) use copy::supervise;
pub use replay::{BinlogReplay, choose_dump, plan_replay};
pub(crate) use replay::{ReplayDir, dump_finished_ns, materialize, replay_into};

/// The snapshot kind of a batch of archived binlog files.
pub const BINLOG_KIND: &str = nfrepo_engine::BINLOG_KIND;
/// The fact prefix naming each archived file.
pub const BINLOG_FILE_FACT: &str = nfrepo_engine::BINLOG_FILE_FACT;
/// The fact of a gap record: the first file the server purged before it was copied.
pub const BINLOG_GAP_FACT: &str = nfrepo_engine::BINLOG_GAP_FACT;
/// The fact naming the dump source a binlog stream belongs to.
pub const BINLOG_SOURCE_FACT: &str = "binlog.source";
/// The fact giving the newest event time a binlog snapshot holds.
pub const BINLOG_NEWEST_EVENT_FACT: &str = "binlog.newest_event";
/// The dump facts of the position to replay from.
const DUMP_FILE_FACT: &str = nfrepo_engine::DUMP_BINLOG_FILE_FACT;
const DUMP_POSITION_FACT: &str = "mysql.binlog_position";
/// The snapshot kind of a MySQL/MariaDB dump.
pub(crate) const DUMP_KIND: &str = "mysql";

/// The stream (snapshot source name) the binlogs of `source` are archived under.
#[must_use]
pub fn binlog_stream(source: &str) -> String {
    format!("{source}{}", nfrepo_engine::BINLOG_STREAM_SUFFIX)
}

/// A binlog file name, `<base>.<number>`, ordered by base then number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BinlogName {
    text: String,
    base_len: usize,
    number: u64,
}

impl BinlogName {
    /// Parses `binlog.000007`; anything else (a path, a name without its
    /// number) is `None`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        if text.contains('/') || text.len() > 255 {
            return None;
        }
        let (base, number) = binlog_order(text)?;
        Some(Self {
            text: text.to_owned(),
            base_len: base.len(),
            number,
        })
    }

    /// The name as the server writes it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn base(&self) -> &str {
        self.text.get(..self.base_len).unwrap_or_default()
    }

    /// The file the server writes after this one.
    #[must_use]
    pub fn next(&self) -> Self {
        let width = self.text.len() - self.base_len - 1;
        let number = self.number + 1;
        Self {
            text: format!("{}.{number:0width$}", self.base()),
            base_len: self.base_len,
            number,
        }
    }
}

impl Ord for BinlogName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.base(), self.number).cmp(&(other.base(), other.number))
    }
}

impl PartialOrd for BinlogName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for BinlogName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The archived version of one binlog file (the longest committed).
#[derive(Clone, Debug)]
pub struct ArchivedBinlog {
    /// The snapshot holding it.
    pub entry: Arc<SnapshotEntry>,
    /// Its size.
    pub size: u64,
    /// BLAKE3 of its bytes.
    pub blake3: [u8; 32],
    /// It ends with the server's rotate or stop event.
    pub complete: bool,
}

/// The fact value recording one archived file (the WAL fact's, plus
/// ` complete` for a file the server finished).
pub(crate) fn file_fact(size: u64, blake3: &[u8; 32], complete: bool) -> String {
    let mut value = crate::wal::file_fact(size, blake3);
    if complete {
        value.push_str(" complete");
    }
    value
}

fn parse_file_fact(value: &str) -> Option<(u64, [u8; 32], bool)> {
    let (rest, complete) = value
        .strip_suffix(" complete")
        .map_or((value, false), |rest| (rest, true));
    let (size, blake3) = crate::wal::parse_file_fact(rest)?;
    Some((size, blake3, complete))
}

/// Every archived binlog file of one source (its longest version), and the
/// gaps recorded, read from the snapshot listing (facts only, no tree).
#[derive(Clone, Debug, Default)]
pub struct BinlogCatalog {
    files: BTreeMap<BinlogName, ArchivedBinlog>,
    gaps: Vec<String>,
    newest_event: Option<i64>,
}

impl BinlogCatalog {
    /// The catalog of `source`'s binlog stream.
    ///
    /// # Errors
    /// Engine errors listing the snapshots.
    pub async fn load(repo: &Repository, source: &str) -> Result<Self> {
        let stream = binlog_stream(source);
        let mut catalog = Self::default();
        let mut entries: Vec<SnapshotEntry> = repo
            .readable_snapshots()
            .await?
            .into_iter()
            .filter(|e| e.snapshot.source == stream && e.snapshot.source_kind == BINLOG_KIND)
            .collect();
        entries.sort_by_key(|e| e.snapshot.time_ns);
        for entry in entries {
            catalog.add(Arc::new(entry));
        }
        Ok(catalog)
    }

    /// Records the files of one binlog snapshot: a longer version of a
    /// file supersedes a shorter one (equal sizes keep the first seen).
    pub fn add(&mut self, entry: Arc<SnapshotEntry>) {
        self.newest_event = self.newest_event.max(newest_event(&entry));
        for (key, value) in &entry.snapshot.extra {
            if key == BINLOG_GAP_FACT {
                self.gaps.push(value.clone());
                continue;
            }
            if key == BINLOG_NEWEST_EVENT_FACT {
                continue;
            }
            let Some(name) = key.strip_prefix(BINLOG_FILE_FACT) else {
                continue;
            };
            let (Some(name), Some((size, blake3, complete))) = (BinlogName::parse(name), parse_file_fact(value)) else {
                tracing::warn!(snapshot = %entry.id, fact = %key, "unreadable binlog file fact");
                continue;
            };
            let longer = self.files.get(&name).is_none_or(|a| size > a.size);
            if longer {
                self.files.insert(
                    name,
                    ArchivedBinlog {
                        entry: Arc::clone(&entry),
                        size,
                        blake3,
                        complete,
                    },
                );
            }
        }
    }

    /// The archived version of `name`.
    #[must_use]
    pub fn get(&self, name: &BinlogName) -> Option<&ArchivedBinlog> {
        self.files.get(name)
    }

    /// How many files are archived.
    #[must_use]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is archived.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The newest archived file.
    #[must_use]
    pub fn newest(&self) -> Option<(&BinlogName, &ArchivedBinlog)> {
        self.files.iter().next_back()
    }

    /// The gaps recorded (the first missing file of each).
    #[must_use]
    pub fn gaps(&self) -> &[String] {
        &self.gaps
    }

    /// The newest event time archived, nanoseconds since the epoch.
    #[must_use]
    pub fn newest_event(&self) -> Option<i64> {
        self.newest_event
    }

    /// The run of archived files that follow `start` with none missing,
    /// and the first file missing after it: absent between two archived
    /// files, or recorded as a gap at or after the run's last file (the
    /// run's last file itself when its tail was purged). A run that simply
    /// ends (nothing archived after it, no gap recorded) misses nothing:
    /// the copy has not got further yet.
    #[must_use]
    pub fn run_from(&self, start: &BinlogName) -> BinlogRun {
        let mut files: Vec<(BinlogName, ArchivedBinlog)> = Vec::new();
        let mut expected = start.clone();
        let mut missing = None;
        for (name, archived) in self.files.range(start.clone()..) {
            if *name != expected {
                missing = Some(expected.to_string());
                break;
            }
            files.push((name.clone(), archived.clone()));
            expected = name.next();
        }
        let from = files.last().map_or(start, |(name, _)| name);
        let missing = missing.or_else(|| {
            self.gaps
                .iter()
                .filter(|g| BinlogName::parse(g).is_some_and(|g| g >= *from))
                .min()
                .cloned()
        });
        BinlogRun { files, missing }
    }

    /// The archived files a replay from `start` up to `stop_ns` (`None`:
    /// to the end) needs, in order: [`Self::run_from`]'s run. A file
    /// missing after the run is fine only for a stop no later than the
    /// newest event archived with the run's last file: every event before
    /// the stop is then in the run.
    ///
    /// # Errors
    /// [`Error::BinlogGap`] naming the first file missing, when the replay needs it.
    pub fn files_from(&self, start: &BinlogName, stop_ns: Option<i64>) -> Result<Vec<(BinlogName, ArchivedBinlog)>> {
        let run = self.run_from(start);
        let Some((last, _)) = run.files.last() else {
            return Err(Error::BinlogGap(format!("{start} is not archived")));
        };
        if let Some(missing) = &run.missing {
            let run_end = run.end_ns();
            let covered = matches!((stop_ns, run_end), (Some(stop), Some(end)) if stop <= end);
            if !covered {
                return Err(Error::BinlogGap(format!(
                    "{missing} is not archived (purged before it was copied): the archive from {start} ends with {last}{}; \
                     restore to a time before that, or from a dump taken after the gap",
                    run_end.map_or_else(String::new, |ns| format!(
                        " at {}",
                        chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                )));
            }
        }
        Ok(run.files)
    }
}

/// Archived binlog files that follow each other with none missing
/// ([`BinlogCatalog::run_from`]).
#[derive(Clone, Debug)]
pub struct BinlogRun {
    /// The files, in order.
    pub files: Vec<(BinlogName, ArchivedBinlog)>,
    /// The first file missing after them, when one is known to be.
    pub missing: Option<String>,
}

impl BinlogRun {
    /// The newest event archived with the run's last file, nanoseconds
    /// since the epoch: every event up to it is in the run.
    #[must_use]
    pub fn end_ns(&self) -> Option<i64> {
        let (_, last) = self.files.last()?;
        newest_event(&last.entry)
    }
}

/// The newest event time a binlog snapshot records (`binlog.newest_event`).
pub(crate) fn newest_event(entry: &SnapshotEntry) -> Option<i64> {
    crate::wal::fact_time_ns(entry, BINLOG_NEWEST_EVENT_FACT)
}

/// The binlog position a dump snapshot recorded: its file and offset.
#[must_use]
pub fn dump_position(entry: &SnapshotEntry) -> Option<(BinlogName, u64)> {
    let fact = |name: &str| entry.snapshot.fact(name);
    let file = BinlogName::parse(fact(DUMP_FILE_FACT)?)?;
    let position = fact(DUMP_POSITION_FACT)?.parse().ok()?;
    Some((file, position))
}

/// Where the copy of a source's binlogs starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// From the start of this file (a file partly archived is copied again
    /// whole; what was archived must be its prefix).
    From {
        /// The file.
        file: BinlogName,
        /// A gap left behind: the first file purged before it was copied.
        gap: Option<String>,
    },
    /// No dump records a position, and nothing is archived: nothing to start from yet.
    Wait,
}

/// Where to resume: after the newest archived file if it is complete, else
/// at it; with nothing archived, at the newest dump's file. The file must
/// still be on the server (`listed`, from `SHOW BINARY LOGS`); if it is
/// not, a newer dump whose file is there lets the copy go on from it, the
/// gap recorded; otherwise it is [`Error::BinlogGap`].
pub(crate) fn resume_point(
    catalog: &BinlogCatalog,
    dump: Option<&BinlogName>,
    listed: &[BinlogName],
) -> Result<Resume> {
    let want = match catalog.newest() {
        Some((name, archived)) if archived.complete => name.next(),
        Some((name, _)) => name.clone(),
        None => match dump {
            Some(file) => file.clone(),
            None => return Ok(Resume::Wait),
        },
    };
    if listed.contains(&want) {
        return Ok(Resume::From { file: want, gap: None });
    }
    let oldest = listed.iter().min();
    if let Some(file) = dump.filter(|d| **d > want && listed.contains(d)) {
        return Ok(Resume::From {
            file: file.clone(),
            gap: Some(want.to_string()),
        });
    }
    Err(Error::BinlogGap(match oldest {
        Some(oldest) => format!(
            "{want} is no longer on the server (its oldest binlog is {oldest}): it was purged before it was copied; take a new dump"
        ),
        None => format!("{want} is not on the server, which lists no binary log (is log_bin off?)"),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use nfrepo_format::SnapshotId;

    use super::*;

    fn name(text: &str) -> BinlogName {
        BinlogName::parse(text).unwrap()
    }

    fn entry(id: u8, extra: &[(String, String)]) -> Arc<SnapshotEntry> {
        let mut snapshot = nfrepo_testing::header::snapshot("m.binlog", BINLOG_KIND, i64::from(id));
        snapshot.extra = extra.to_vec();
        Arc::new(SnapshotEntry {
            id: SnapshotId([id; 32]),
            snapshot,
        })
    }

    fn file(n: &str, size: u64, complete: bool) -> (String, String) {
        (
            format!("{BINLOG_FILE_FACT}{n}"),
            file_fact(size, &[u8::try_from(size % 256).unwrap(); 32], complete),
        )
    }

    #[test]
    fn names_follow_each_other_by_number() {
        assert_eq!(name("binlog.000009").next().as_str(), "binlog.000010");
        assert_eq!(name("mysql-bin.999999").next().as_str(), "mysql-bin.1000000");
        assert!(name("binlog.000010") > name("binlog.000009"));
        assert_eq!(BinlogName::parse("../binlog.000001"), None);
        assert_eq!(BinlogName::parse("binlog.index"), None);
        assert_eq!(parse_file_fact(&file_fact(7, &[1; 32], true)), Some((7, [1; 32], true)));
        assert_eq!(parse_file_fact("7 ab"), None);
        assert_eq!(parse_file_fact(&format!("7 {} open", "0".repeat(64))), None);
    }

    // Issue 16: a longer version supersedes, whatever order snapshots come in,
    // and a missing file between the start and the newest is a gap.
    #[test]
    fn the_catalog_keeps_the_longest_version_and_finds_gaps() {
        let mut catalog = BinlogCatalog::default();
        catalog.add(entry(1, &[file("binlog.000002", 100, false)]));
        catalog.add(entry(
            3,
            &[file("binlog.000002", 300, true), file("binlog.000003", 10, false)],
        ));
        catalog.add(entry(2, &[file("binlog.000002", 200, false)]));
        let archived = catalog.get(&name("binlog.000002")).unwrap();
        assert_eq!((archived.size, archived.complete), (300, true));
        assert_eq!(archived.entry.id, SnapshotId([3; 32]));
        let (newest, _) = catalog.newest().unwrap();
        assert_eq!(newest.as_str(), "binlog.000003");
        let files = catalog.files_from(&name("binlog.000002"), None).unwrap();
        assert_eq!(files.len(), 2);
        assert!(matches!(
            catalog.files_from(&name("binlog.000001"), None),
            Err(Error::BinlogGap(_))
        ));
        catalog.add(entry(
            4,
            &[
                file("binlog.000003", 20, true),
                (BINLOG_NEWEST_EVENT_FACT.to_owned(), "2026-12-01T12:00:10Z".to_owned()),
            ],
        ));
        catalog.add(entry(5, &[file("binlog.000005", 10, false)]));
        let gap = catalog.files_from(&name("binlog.000002"), None).unwrap_err();
        assert!(gap.to_string().contains("binlog.000004"), "{gap}");
        assert!(
            gap.to_string()
                .contains("ends with binlog.000003 at 2026-12-01T12:00:10Z"),
            "{gap}"
        );
        assert_eq!(gap.detail_code(), Some("BINLOG_GAP"));
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_nanos_opt();
        let before = catalog
            .files_from(&name("binlog.000002"), at("2026-12-01T12:00:10Z"))
            .unwrap();
        assert_eq!(before.len(), 2, "a moment before the gap needs no file after it");
        assert!(
            catalog
                .files_from(&name("binlog.000002"), at("2026-12-01T12:00:11Z"))
                .is_err()
        );
        let mut recorded = BinlogCatalog::default();
        recorded.add(entry(1, &[file("binlog.000002", 100, false)]));
        recorded.add(entry(2, &[(BINLOG_GAP_FACT.to_owned(), "binlog.000002".to_owned())]));
        let tail = recorded.files_from(&name("binlog.000002"), None).unwrap_err();
        assert!(
            tail.to_string().contains("binlog.000002 is not archived"),
            "the tail of the run's last file was purged: {tail}"
        );
        let mut older = BinlogCatalog::default();
        older.add(entry(1, &[(BINLOG_GAP_FACT.to_owned(), "binlog.000001".to_owned())]));
        older.add(entry(2, &[file("binlog.000002", 100, false)]));
        assert!(
            older.files_from(&name("binlog.000002"), None).is_ok(),
            "a gap before the run is not in the way"
        );
    }

    // Issue 16: where the copy resumes, and when that is a gap.
    #[test]
    fn the_copy_resumes_where_the_archive_ends_or_reports_a_gap() {
        let listed = |names: &[&str]| names.iter().map(|n| name(n)).collect::<Vec<_>>();
        let from = |n: &str, gap: Option<&str>| Resume::From {
            file: name(n),
            gap: gap.map(str::to_owned),
        };
        let empty = BinlogCatalog::default();
        let dump = name("binlog.000002");
        assert_eq!(
            resume_point(&empty, None, &listed(&["binlog.000001"])).unwrap(),
            Resume::Wait
        );
        let on_server = listed(&["binlog.000002", "binlog.000003"]);
        assert_eq!(
            resume_point(&empty, Some(&dump), &on_server).unwrap(),
            from("binlog.000002", None)
        );
        let mut open = BinlogCatalog::default();
        open.add(entry(1, &[file("binlog.000002", 100, false)]));
        assert_eq!(
            resume_point(&open, Some(&dump), &on_server).unwrap(),
            from("binlog.000002", None),
            "a file still growing is copied again from its start"
        );
        let mut done = BinlogCatalog::default();
        done.add(entry(1, &[file("binlog.000002", 100, true)]));
        assert_eq!(
            resume_point(&done, Some(&dump), &listed(&["binlog.000003"])).unwrap(),
            from("binlog.000003", None),
            "a complete file may be purged: the next one follows"
        );
        let purged = resume_point(&open, Some(&dump), &listed(&["binlog.000003"])).unwrap_err();
        assert_eq!(purged.detail_code(), Some("BINLOG_GAP"));
        assert!(purged.to_string().contains("binlog.000002"), "{purged}");
        let newer_dump = name("binlog.000004");
        assert_eq!(
            resume_point(&open, Some(&newer_dump), &listed(&["binlog.000004"])).unwrap(),
            from("binlog.000004", Some("binlog.000002")),
            "a newer dump restarts the copy; the gap is recorded"
        );
    }
}
