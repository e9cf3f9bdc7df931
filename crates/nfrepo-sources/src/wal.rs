//! PostgreSQL WAL in the repository: archiving (`wal-push`), fetching
//! (`wal-fetch`) and the catalog both use.
//!
//! **Representation.** WAL files are ordinary snapshots, so every existing
//! protocol (commit, check, replication, forget, gc) covers them unchanged:
//! the agent commits each batch of files PostgreSQL hands it as one
//! snapshot of the stream `<source>.wal` ([`wal_stream`], kind
//! [`WAL_KIND`]), whose root tree holds the files by their WAL names
//! (`000000010000000000000016`, `00000002.history`,
//! `000000010000000000000016.partial`, backup history files). Each
//! snapshot also records, per file, `wal.file.<name> = <size> <blake3>`
//! among its facts, so the name → content mapping of every archived file
//! is known from the snapshot listing alone ([`WalCatalog::load`]), with no
//! tree read: that is what `wal-fetch`, the duplicate check of `wal-push`
//! and retention look up.
//!
//! **Never overwrite.** A name already archived with the same size and
//! BLAKE3 is acknowledged without storing anything; with other bytes it is
//! refused ([`Error::WalConflict`], `BACKUP_FAILED/WAL_CONFLICT`), and
//! PostgreSQL keeps the segment and retries, so an operator sees the
//! failing `archive_command` (usually two clusters archiving into one
//! source).
//!
//! **Timelines.** The timeline is part of every name, so segments of
//! different timelines never collide; history files are archived and
//! fetched like segments (recovery asks for them to follow a timeline
//! switch), and `.partial` segments a promotion leaves are kept under
//! their own name (PostgreSQL never asks for them; an operator may).
//!
//! **Retention** (the engine's `forget`): a WAL snapshot is kept while any of
//! its segments is at or after the start segment of the oldest base backup
//! of the source that is kept, or while it holds a history file; with no
//! base backup kept at all, every WAL snapshot is kept (a base backup in
//! progress needs the WAL archived before it commits).
//!
//! The agent ([`serve_agent`]) and the clients ([`push_wal`],
//! [`fetch_wal_via_agent`]) are in `wal/agent.rs` and `wal/client.rs`;
//! MySQL binlog streaming can add its own stream kind beside this one and
//! reuse the agent's socket, batching and commit loop.

mod agent;
mod client;
mod protocol;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use nfrepo_engine::{Reader, Repository, SnapshotEntry};

use crate::stream::hex;
use crate::{Error, Result};

pub use agent::{AgentOptions, default_socket, serve_agent};
pub use client::{PushOutcome, fetch_wal_via_agent, push_wal, write_whole};

/// The snapshot kind of a batch of archived WAL files.
pub const WAL_KIND: &str = nfrepo_engine::WAL_KIND;
/// The fact prefix naming each archived file: `wal.file.<name>` = `<size> <blake3 hex>`.
pub const FILE_FACT: &str = nfrepo_engine::WAL_FILE_FACT;
/// The fact naming the base backup source a WAL stream belongs to.
pub const SOURCE_FACT: &str = "wal.source";

/// The stream (snapshot source name) WAL of `source` is archived under.
#[must_use]
pub fn wal_stream(source: &str) -> String {
    format!("{source}{}", nfrepo_engine::WAL_STREAM_SUFFIX)
}

/// A WAL position, `X/Y` in PostgreSQL's notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `X/Y` (hexadecimal halves).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Self((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The name of a file PostgreSQL archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WalName {
    /// A whole segment, `TTTTTTTTLLLLLLLLSSSSSSSS`.
    Segment {
        /// Its timeline.
        timeline: u32,
        /// The high half of its position.
        log: u32,
        /// The segment within `log`.
        seg: u32,
    },
    /// The last, incomplete segment of a timeline, archived at a promotion.
    Partial {
        /// Its timeline.
        timeline: u32,
        /// The high half of its position.
        log: u32,
        /// The segment within `log`.
        seg: u32,
    },
    /// A timeline history file, `TTTTTTTT.history`.
    History {
        /// The timeline it describes.
        timeline: u32,
    },
    /// A backup history file, `TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup`.
    BackupHistory {
        /// Its timeline.
        timeline: u32,
        /// The high half of its position.
        log: u32,
        /// The segment within `log`.
        seg: u32,
        /// The start offset within the segment.
        offset: u32,
    },
}

fn hex8(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

fn segment_parts(text: &str) -> Option<(u32, u32, u32)> {
    if text.len() != 24 {
        return None;
    }
    Some((hex8(text.get(..8)?)?, hex8(text.get(8..16)?)?, hex8(text.get(16..)?)?))
}

impl WalName {
    /// Parses a name PostgreSQL gives `archive_command` (`%f`) or
    /// `restore_command`; anything else (a path, `RECOVERYXLOG`) is `None`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(timeline) = name.strip_suffix(".history") {
            return Some(Self::History {
                timeline: hex8(timeline)?,
            });
        }
        if let Some(segment) = name.strip_suffix(".partial") {
            let (timeline, log, seg) = segment_parts(segment)?;
            return Some(Self::Partial { timeline, log, seg });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.')?;
            let (timeline, log, seg) = segment_parts(segment)?;
            return Some(Self::BackupHistory {
                timeline,
                log,
                seg,
                offset: hex8(offset)?,
            });
        }
        let (timeline, log, seg) = segment_parts(name)?;
        Some(Self::Segment { timeline, log, seg })
    }

    /// The position of the segment it is or belongs to, for ordering
    /// (timeline left out: a later timeline continues an earlier one's positions).
    #[must_use]
    pub const fn position(&self) -> Option<(u32, u32)> {
        match *self {
            Self::Segment { log, seg, .. } | Self::Partial { log, seg, .. } | Self::BackupHistory { log, seg, .. } => {
                Some((log, seg))
            }
            Self::History { .. } => None,
        }
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Segment { timeline, log, seg } => write!(f, "{timeline:08X}{log:08X}{seg:08X}"),
            Self::Partial { timeline, log, seg } => write!(f, "{timeline:08X}{log:08X}{seg:08X}.partial"),
            Self::History { timeline } => write!(f, "{timeline:08X}.history"),
            Self::BackupHistory {
                timeline,
                log,
                seg,
                offset,
            } => write!(f, "{timeline:08X}{log:08X}{seg:08X}.{offset:08X}.backup"),
        }
    }
}

/// One archived file: where it is and what it holds.
#[derive(Clone, Debug)]
pub struct Archived {
    /// The WAL snapshot holding it.
    pub entry: Arc<SnapshotEntry>,
    /// Its size.
    pub size: u64,
    /// BLAKE3 of its bytes.
    pub blake3: [u8; 32],
}

/// The fact value recording one archived file.
pub(crate) fn file_fact(size: u64, blake3: &[u8; 32]) -> String {
    format!("{size} {}", hex(blake3))
}

/// Fact `key` of `entry` read as an RFC 3339 time, nanoseconds since the epoch.
pub(crate) fn fact_time_ns(entry: &SnapshotEntry, key: &str) -> Option<i64> {
    let text = entry.snapshot.fact(key)?;
    chrono::DateTime::parse_from_rfc3339(text).ok()?.timestamp_nanos_opt()
}

pub(crate) fn parse_file_fact(value: &str) -> Option<(u64, [u8; 32])> {
    let (size, digest) = value.split_once(' ')?;
    let size = size.parse().ok()?;
    let mut blake3 = [0u8; 32];
    if digest.len() != 64 {
        return None;
    }
    for (i, byte) in blake3.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digest.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((size, blake3))
}

/// Every archived WAL file of one source, by name, read from the snapshot
/// listing (facts only, no tree).
#[derive(Clone, Debug, Default)]
pub struct WalCatalog {
    files: HashMap<String, Archived>,
}

impl WalCatalog {
    /// The catalog of `source`'s WAL stream.
    ///
    /// # Errors
    /// Engine errors listing the snapshots.
    pub async fn load(repo: &Repository, source: &str) -> Result<Self> {
        let stream = wal_stream(source);
        let mut catalog = Self::default();
        for entry in repo.readable_snapshots().await? {
            if entry.snapshot.source == stream && entry.snapshot.source_kind == WAL_KIND {
                catalog.add(Arc::new(entry));
            }
        }
        Ok(catalog)
    }

    /// Records the files of one WAL snapshot (a later one wins a name
    /// only if the earlier one is gone: names are never archived twice).
    pub fn add(&mut self, entry: Arc<SnapshotEntry>) {
        for (key, value) in &entry.snapshot.extra {
            let Some(name) = key.strip_prefix(FILE_FACT) else {
                continue;
            };
            let Some((size, blake3)) = parse_file_fact(value) else {
                tracing::warn!(snapshot = %entry.id, fact = %key, "unreadable WAL file fact");
                continue;
            };
            self.files.entry(name.to_owned()).or_insert_with(|| Archived {
                entry: Arc::clone(&entry),
                size,
                blake3,
            });
        }
    }

    /// Where `name` is archived.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Archived> {
        self.files.get(name)
    }

    /// Every archived file by name, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Archived)> {
        self.files.iter().map(|(name, archived)| (name.as_str(), archived))
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
}

/// Writes archived file `name` to `out`, verified (its size and hashes are
/// checked before its last bytes are handed out).
///
/// # Errors
/// [`Error::WalNotFound`] when the snapshot no longer holds it; engine
/// errors for damaged or missing data.
pub async fn write_wal(reader: &Reader, archived: &Archived, name: &str, out: impl std::io::Write) -> Result<u64> {
    let node = reader
        .resolve(&archived.entry, name)
        .await?
        .ok_or_else(|| Error::WalNotFound(name.to_owned()))?;
    crate::write_content(reader, &node, out).await
}

/// The `wal.file.*` facts of a batch, sorted by name.
pub(crate) fn batch_facts(source: &str, files: &BTreeMap<String, (u64, [u8; 32])>) -> Vec<(String, String)> {
    let mut facts = vec![(SOURCE_FACT.to_owned(), source.to_owned())];
    facts.extend(
        files
            .iter()
            .map(|(name, (size, blake3))| (format!("{FILE_FACT}{name}"), file_fact(*size, blake3))),
    );
    facts
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn wal_names_round_trip_and_order_by_position() {
        for name in [
            "000000010000000000000016",
            "00000002.history",
            "0000000100000000000000A3.partial",
            "000000010000000000000016.00000028.backup",
        ] {
            assert_eq!(WalName::parse(name).unwrap().to_string(), name);
        }
        for bad in [
            "RECOVERYXLOG",
            "00000001000000000000001",
            "../000000010000000000000016",
            "0000000g.history",
        ] {
            assert_eq!(WalName::parse(bad), None, "{bad}");
        }
        let a = WalName::parse("0000000200000000000000FF").unwrap();
        let b = WalName::parse("000000010000000100000000").unwrap();
        assert!(a.position() < b.position());
    }

    #[test]
    fn lsns_parse_as_postgres_prints_them() {
        let lsn = Lsn::parse("1/16000028").unwrap();
        assert_eq!(lsn.0, 0x1_1600_0028);
        assert_eq!(lsn.to_string(), "1/16000028");
        assert_eq!(Lsn::parse("16000028"), None);
    }

    proptest::proptest! {
        // The names and facts come from snapshots (repository bytes): any
        // text parses or is refused, never panics, and what parses prints back.
        #[test]
        fn any_name_or_fact_parses_or_is_refused(text in "\\PC{0,80}") {
            if let Some(name) = WalName::parse(&text) {
                proptest::prop_assert_eq!(name.to_string().to_ascii_uppercase(), text.to_ascii_uppercase());
            }
            let _ = parse_file_fact(&text);
        }
    }

    #[test]
    fn file_facts_round_trip() {
        let digest = [7u8; 32];
        assert_eq!(parse_file_fact(&file_fact(16 << 20, &digest)), Some((16 << 20, digest)));
        assert_eq!(parse_file_fact("12 abc"), None);
    }
}
