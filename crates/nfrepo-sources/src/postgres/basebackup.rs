//! A physical base backup of a PostgreSQL cluster: `pg_basebackup` in tar
//! format on standard output, unpacked on the fly into the snapshot's tree.
//!
//! The snapshot holds the data directory as files (each relation file
//! chunked on its own, so an unchanged table is stored once across base
//! backups), never staged on disk. `-X none`: the WAL written during the
//! backup is not in the tar stream; it reaches the repository through WAL
//! archiving (`archive_command = 'nfrepo wal-push %p'`, see
//! [`crate::wal`]), and a restore fetches it from there. `pg_basebackup`
//! waits until the last WAL segment the backup needs has been archived
//! (it fails if archiving is broken), so a committed base backup always
//! has its WAL in the repository.
//!
//! As the stream passes, `backup_label` (start position, start timeline,
//! start time) and the tail of `backup_manifest` (its `WAL-Ranges`: the
//! stop position) are read, and recorded as the snapshot's facts
//! ([`START_LSN`], [`START_WAL`], [`TIMELINE`], [`STOP_LSN`],
//! [`STOP_TIMELINE`], [`STOP_TIME`]) that a point-in-time restore and WAL
//! retention read back. A stream without both is refused: the snapshot
//! would be unusable for recovery.
//!
//! Only clusters without extra tablespaces can be written to standard
//! output (`pg_basebackup` refuses otherwise, and so the backup fails).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use nfrepo_engine::{BackupWriter, CommitDetails};
use nfrepo_format::{BlobId, CommandRecord, Metadata, Node, NodeKind, Tree};

use super::{client_args, client_auth, maintenance_db, query};
use crate::connection::Connection;
use crate::dump::{find_tool, tool_version};
use crate::source::{Source, SourceOutcome};
use crate::stream::{redact_argv, run_piped};
use crate::wal::{Lsn, WalName};
use crate::{Error, Result};

/// Fact: the base backup's start position (`X/Y`).
pub const START_LSN: &str = "postgres.basebackup.start_lsn";
/// Fact: the WAL segment the start position is in: the oldest segment a
/// restore of this backup needs.
pub const START_WAL: &str = nfrepo_engine::BASEBACKUP_START_WAL_FACT;
/// Fact: the timeline the backup started on (decimal).
pub const TIMELINE: &str = "postgres.basebackup.timeline";
/// Fact: the position from which the restored cluster is consistent (`X/Y`).
pub const STOP_LSN: &str = "postgres.basebackup.stop_lsn";
/// Fact: the timeline of the stop position (decimal).
pub const STOP_TIMELINE: &str = "postgres.basebackup.stop_timeline";
/// Fact: when `pg_basebackup` had finished (RFC 3339, UTC): a recovery
/// target before it cannot be reached from this backup.
pub const STOP_TIME: &str = "postgres.basebackup.stop_time";
/// Fact: the cluster's system identifier, which its WAL carries too.
pub const SYSTEM_ID: &str = "postgres.system_identifier";
/// The snapshot kind of a base backup.
pub const BASEBACKUP_KIND: &str = nfrepo_engine::BASEBACKUP_KIND;

/// The most of `backup_manifest`'s end kept to read its `WAL-Ranges`.
const MANIFEST_TAIL: usize = 64 * 1024;
/// `backup_label` is a few hundred bytes; more is not a label.
const LABEL_MAX: u64 = 64 * 1024;

/// A PostgreSQL cluster backed up physically by `pg_basebackup`.
#[derive(Clone, Debug)]
pub struct BaseBackupSource {
    /// The server (its database, if any, is only used for the planning queries).
    pub connection: Connection,
    /// Where `pg_basebackup` and `psql` are.
    pub bin_dir: Option<PathBuf>,
    facts: Vec<(String, String)>,
}

impl BaseBackupSource {
    /// A base backup of the cluster at `connection`.
    #[must_use]
    pub fn new(connection: Connection, bin_dir: Option<PathBuf>) -> Self {
        Self {
            connection,
            bin_dir,
            facts: Vec::new(),
        }
    }

    fn argv(&self) -> Vec<String> {
        let mut argv = vec![find_tool("pg_basebackup", self.bin_dir.as_deref())];
        argv.extend(client_args(&self.connection));
        argv.extend([
            "--pgdata=-".into(),
            "--format=tar".into(),
            "--wal-method=none".into(),
            "--checkpoint=fast".into(),
            "--label=nfrepo base backup".into(),
        ]);
        argv
    }
}

impl Source for BaseBackupSource {
    fn kind(&self) -> &str {
        BASEBACKUP_KIND
    }

    fn default_profile(&self) -> &str {
        "files"
    }

    fn prepare(&mut self) -> Result<Vec<String>> {
        let bin = self.bin_dir.as_deref();
        let home = maintenance_db(&self.connection);
        let answer = query(
            &self.connection,
            bin,
            &home,
            "SELECT current_setting('server_version'), (SELECT system_identifier FROM pg_control_system()), \
             current_setting('archive_mode')",
        )?;
        let fields: Vec<&str> = answer.trim().split('|').collect();
        let [version, system_id, archive_mode] = fields.as_slice() else {
            return Err(Error::CommandFailed(format!(
                "unexpected answer from psql: {:?}",
                answer.trim()
            )));
        };
        if *archive_mode == "off" {
            return Err(Error::CommandFailed(
                "archive_mode is off on the server: a base backup without archived WAL cannot be restored \
                 (set archive_mode = on and archive_command = 'nfrepo wal-push %p')"
                    .into(),
            ));
        }
        self.facts = vec![
            ("postgres.method".to_owned(), "basebackup".to_owned()),
            ("postgres.server_version".to_owned(), (*version).to_owned()),
            (SYSTEM_ID.to_owned(), (*system_id).to_owned()),
            (
                "tool.pg_basebackup".to_owned(),
                tool_version(&find_tool("pg_basebackup", bin)),
            ),
        ];
        Ok(vec!["PGDATA".to_owned()])
    }

    fn back_up(&mut self, writer: &BackupWriter) -> Result<SourceOutcome> {
        let argv = self.argv();
        let auth = client_auth(&self.connection)?;
        tracing::info!(argv = ?redact_argv(&argv), "base backup");
        let (unpacked, status) = run_piped(&argv, &auth, |stdout| {
            let unpacked = unpack(writer, &mut *stdout)?;
            // The end-of-archive padding the tar reader stopped before.
            std::io::copy(stdout, &mut std::io::sink()).map_err(|e| tar_error(&e))?;
            Ok(unpacked)
        })?;
        let stop_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut facts = self.facts.clone();
        facts.extend(unpacked.positions.facts()?);
        facts.push((STOP_TIME.to_owned(), stop_time));
        facts.sort();
        let details = CommitDetails {
            files: unpacked.files,
            dirs: unpacked.dirs,
            others: unpacked.others,
            bytes: unpacked.bytes,
            command: Some(CommandRecord {
                argv: redact_argv(&argv),
                exit_code: status.code().unwrap_or(0),
            }),
            extra: facts,
            ..CommitDetails::default()
        };
        Ok(SourceOutcome {
            root: unpacked.root,
            details,
            warnings: Vec::new(),
        })
    }
}

/// What the tar stream held.
struct Unpacked {
    root: BlobId,
    files: u64,
    dirs: u64,
    others: u64,
    bytes: u64,
    positions: Positions,
}

/// A directory being assembled from tar entries, which come in any order.
#[derive(Default)]
struct DirBuild {
    meta: Metadata,
    entries: BTreeMap<Vec<u8>, Pending>,
}

enum Pending {
    Leaf(Node),
    Dir(DirBuild),
}

impl DirBuild {
    /// The directory at `components`, made (mode 0700) where missing.
    fn dir_mut(&mut self, components: &[&[u8]]) -> Result<&mut Self> {
        let mut dir = self;
        for name in components {
            let pending = dir
                .entries
                .entry(name.to_vec())
                .or_insert_with(|| Pending::Dir(Self::new_dir()));
            dir = match pending {
                Pending::Dir(d) => d,
                Pending::Leaf(_) => {
                    return Err(Error::CommandFailed(format!(
                        "pg_basebackup's tar stream holds {:?} both as a file and as a directory",
                        String::from_utf8_lossy(name)
                    )));
                }
            };
        }
        Ok(dir)
    }

    fn new_dir() -> Self {
        Self {
            meta: Metadata {
                mode: 0o700,
                ..Metadata::default()
            },
            entries: BTreeMap::new(),
        }
    }

    /// Stores the subtrees bottom-up; returns this directory's tree.
    fn store(self, writer: &BackupWriter) -> Result<BlobId> {
        let mut nodes = Vec::with_capacity(self.entries.len());
        for (name, pending) in self.entries {
            nodes.push(match pending {
                Pending::Leaf(node) => node,
                Pending::Dir(dir) => {
                    let meta = dir.meta.clone();
                    Node {
                        name,
                        kind: NodeKind::Dir {
                            tree: dir.store(writer)?,
                        },
                        meta,
                    }
                }
            });
        }
        Ok(writer.store_tree(&Tree { nodes })?)
    }
}

/// The path of a tar entry as components, refusing anything that could
/// leave the directory (`..`, an absolute path).
fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path.first() == Some(&b'/') {
        return Err(Error::CommandFailed(format!(
            "pg_basebackup's tar stream holds an absolute path {:?}",
            String::from_utf8_lossy(path)
        )));
    }
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.iter().any(|c| *c == b"..") {
        return Err(Error::CommandFailed(format!(
            "pg_basebackup's tar stream holds a path with '..': {:?}",
            String::from_utf8_lossy(path)
        )));
    }
    Ok(parts)
}

fn metadata(header: &tar::Header) -> Metadata {
    let name = |n: std::io::Result<Option<&str>>| n.ok().flatten().filter(|s| !s.is_empty()).map(str::to_owned);
    Metadata {
        mode: header.mode().unwrap_or(0o600) & 0o7777,
        uid: header.uid().ok().and_then(|u| u32::try_from(u).ok()).unwrap_or(0),
        gid: header.gid().ok().and_then(|g| u32::try_from(g).ok()).unwrap_or(0),
        user: name(header.username().map_err(std::io::Error::other)),
        group: name(header.groupname().map_err(std::io::Error::other)),
        mtime_ns: header
            .mtime()
            .ok()
            .and_then(|s| i64::try_from(s).ok())
            .map_or(0, |s| s.saturating_mul(1_000_000_000)),
        ..Metadata::default()
    }
}

fn tar_error(e: &std::io::Error) -> Error {
    Error::CommandFailed(format!("reading pg_basebackup's tar stream: {e}"))
}

/// Reads the tar stream into the repository. Blocks.
fn unpack(writer: &BackupWriter, stream: impl Read) -> Result<Unpacked> {
    let mut archive = tar::Archive::new(stream);
    let mut root = DirBuild::new_dir();
    let (mut files, mut dirs, mut others, mut bytes) = (0, 0, 0, 0);
    let mut positions = Positions::default();
    for entry in archive.entries().map_err(|e| tar_error(&e))? {
        let mut entry = entry.map_err(|e| tar_error(&e))?;
        let path = entry.path_bytes().into_owned();
        let parts = components(&path)?;
        let meta = metadata(entry.header());
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            dirs += 1;
            root.dir_mut(&parts)?.meta = meta;
            continue;
        }
        let Some((name, parent)) = parts.split_last() else {
            return Err(Error::CommandFailed(
                "pg_basebackup's tar stream holds an empty name".into(),
            ));
        };
        let node_kind = if kind.is_file() {
            let stored = match path.as_slice() {
                b"backup_label" => {
                    let mut label = Vec::new();
                    (&mut entry)
                        .take(LABEL_MAX)
                        .read_to_end(&mut label)
                        .map_err(|e| tar_error(&e))?;
                    positions.label(&String::from_utf8_lossy(&label))?;
                    writer.store_stream(label.as_slice(), false)?
                }
                b"backup_manifest" => {
                    let mut tail = Tail::new(&mut entry);
                    let stored = writer.store_stream(&mut tail, false)?;
                    positions.manifest(&String::from_utf8_lossy(&tail.kept))?;
                    stored
                }
                _ => writer.store_stream(&mut entry, false)?,
            };
            files += 1;
            bytes += stored.size;
            stored.file_kind()
        } else if kind.is_symlink() {
            others += 1;
            let target = entry.link_name_bytes().ok_or_else(|| {
                Error::CommandFailed(format!("symlink {:?} without a target", String::from_utf8_lossy(&path)))
            })?;
            NodeKind::Symlink {
                target: target.into_owned(),
            }
        } else {
            return Err(Error::CommandFailed(format!(
                "pg_basebackup's tar stream holds {:?} of an unexpected type",
                String::from_utf8_lossy(&path)
            )));
        };
        let dir = root.dir_mut(parent)?;
        dir.entries.insert(
            name.to_vec(),
            Pending::Leaf(Node {
                name: name.to_vec(),
                kind: node_kind,
                meta,
            }),
        );
    }
    let root = root.store(writer)?;
    Ok(Unpacked {
        root,
        files,
        dirs,
        others,
        bytes,
        positions,
    })
}

/// Passes bytes through, keeping the last `MANIFEST_TAIL` of them.
struct Tail<R> {
    inner: R,
    kept: Vec<u8>,
}

impl<R: Read> Tail<R> {
    const fn new(inner: R) -> Self {
        Self {
            inner,
            kept: Vec::new(),
        }
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or_default();
        self.kept.extend_from_slice(read);
        if self.kept.len() > 2 * MANIFEST_TAIL {
            let cut = self.kept.len() - MANIFEST_TAIL;
            self.kept.drain(..cut);
        }
        Ok(n)
    }
}

/// The WAL positions of a base backup, from its label and manifest.
#[derive(Debug, Default, PartialEq, Eq)]
struct Positions {
    start: Option<(Lsn, WalName, u32)>,
    stop: Option<(Lsn, u32)>,
}

impl Positions {
    /// `START WAL LOCATION: 0/16000028 (file 000000010000000000000016)` and
    /// `START TIMELINE: 1`.
    fn label(&mut self, text: &str) -> Result<()> {
        let bad = || {
            Error::CommandFailed(format!(
                "pg_basebackup wrote a backup_label nfrepo cannot read: {text:?}"
            ))
        };
        let mut location = None;
        let mut timeline = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
                let (lsn, file) = rest.split_once(" (file ").ok_or_else(bad)?;
                let file = file.strip_suffix(')').ok_or_else(bad)?;
                location = Some((Lsn::parse(lsn).ok_or_else(bad)?, WalName::parse(file).ok_or_else(bad)?));
            } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
                timeline = Some(rest.trim().parse::<u32>().map_err(|_| bad())?);
            }
        }
        let ((lsn, file), timeline) = location.zip(timeline).ok_or_else(bad)?;
        self.start = Some((lsn, file, timeline));
        Ok(())
    }

    /// The last `{ "Timeline": 1, "Start-LSN": "…", "End-LSN": "…" }` of
    /// the manifest's `WAL-Ranges` (a JSON object per line, as
    /// `pg_basebackup` writes it).
    fn manifest(&mut self, tail: &str) -> Result<()> {
        let ranges = tail
            .rfind("\"WAL-Ranges\"")
            .and_then(|at| tail.get(at..))
            .ok_or_else(|| Error::CommandFailed("backup_manifest has no WAL-Ranges".into()))?;
        let mut stop = None;
        for line in ranges.lines() {
            let field = |name: &str| {
                let key = format!("\"{name}\": ");
                let at = line.find(&key)? + key.len();
                let rest = line.get(at..)?.trim_start_matches('"');
                let end = rest.find(['"', ',', ' ', '}'])?;
                rest.get(..end).map(str::to_owned)
            };
            if let (Some(timeline), Some(end)) = (field("Timeline"), field("End-LSN")) {
                let timeline = timeline.parse::<u32>().ok();
                let end = Lsn::parse(&end);
                stop = Some(timeline.zip(end).ok_or_else(|| {
                    Error::CommandFailed(format!("backup_manifest has a WAL range nfrepo cannot read: {line:?}"))
                })?);
            }
        }
        let (timeline, end) =
            stop.ok_or_else(|| Error::CommandFailed("backup_manifest's WAL-Ranges is empty".into()))?;
        self.stop = Some((end, timeline));
        Ok(())
    }

    fn facts(&self) -> Result<Vec<(String, String)>> {
        let (Some((start, file, timeline)), Some((stop, stop_timeline))) = (&self.start, &self.stop) else {
            return Err(Error::CommandFailed(
                "pg_basebackup's stream lacked backup_label or backup_manifest: no WAL positions to record".into(),
            ));
        };
        Ok(vec![
            (START_LSN.to_owned(), start.to_string()),
            (START_WAL.to_owned(), file.to_string()),
            (TIMELINE.to_owned(), timeline.to_string()),
            (STOP_LSN.to_owned(), stop.to_string()),
            (STOP_TIMELINE.to_owned(), stop_timeline.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/16000028 (file 000000010000000000000016)\n\
        CHECKPOINT LOCATION: 0/16000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
        START TIME: 2026-12-02 21:04:38 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";
    const MANIFEST_END: &str = "{ \"Path\": \"global/pg_control\", \"Size\": 8192 }\n],\n\"WAL-Ranges\": [\n\
        { \"Timeline\": 1, \"Start-LSN\": \"0/16000028\", \"End-LSN\": \"0/16000100\" }\n],\n\
        \"Manifest-Checksum\": \"75ba\"}\n";

    #[test]
    fn label_and_manifest_give_the_positions() {
        let mut p = Positions::default();
        p.label(LABEL).unwrap();
        p.manifest(MANIFEST_END).unwrap();
        let facts = p.facts().unwrap();
        let get = |k: &str| facts.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get(START_LSN), Some("0/16000028"));
        assert_eq!(get(START_WAL), Some("000000010000000000000016"));
        assert_eq!(get(TIMELINE), Some("1"));
        assert_eq!(get(STOP_LSN), Some("0/16000100"));
        assert_eq!(get(STOP_TIMELINE), Some("1"));
    }

    #[test]
    fn a_stream_without_label_or_manifest_is_refused() {
        let mut p = Positions::default();
        assert!(matches!(p.facts(), Err(Error::CommandFailed(m)) if m.contains("backup_label")));
        assert!(matches!(p.label("START TIMELINE: 1\n"), Err(Error::CommandFailed(m)) if m.contains("backup_label")));
        assert!(matches!(p.manifest("{}"), Err(Error::CommandFailed(m)) if m.contains("WAL-Ranges")));
    }

    #[test]
    fn tar_paths_never_leave_the_directory() {
        assert_eq!(components(b"base/1/2").unwrap(), [b"base".as_slice(), b"1", b"2"]);
        assert_eq!(components(b"./global/").unwrap(), [b"global".as_slice()]);
        assert!(matches!(components(b"/etc/passwd"), Err(Error::CommandFailed(_))));
        assert!(matches!(components(b"base/../../x"), Err(Error::CommandFailed(_))));
    }
}
