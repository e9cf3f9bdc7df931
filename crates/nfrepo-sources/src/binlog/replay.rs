//! Replaying archived binlogs into a restored database: `restore --into
//! mysql://… --at TIME`.
//!
//! The dump restored is the newest that had finished by the target (its
//! recorded position is then before it); the staged restore
//! (`database.rs`) loads and verifies it in the staging database, and
//! before the switch the binlogs from the dump's file and position on are
//! replayed into that staging database: the archived files (each one's
//! longest version, read verified from the repository into a private
//! directory, mode 0700, removed afterwards) go through `mariadb-binlog
//! --start-position=<dump position> --stop-datetime=<target>
//! --database=<dumped database> --rewrite-db=<dumped database>-><staging>`
//! into the `mysql` client (`--binary-mode`). The live database is switched
//! only after the replay succeeded.
//!
//! **Time resolution.** Binlog events carry whole seconds: every event
//! stamped before the target second is replayed, none stamped at or after
//! it (a fraction of a second in the target is dropped). The time is given
//! to `mariadb-binlog` in UTC (`TZ=UTC`).
//!
//! **GTIDs.** The replayed events keep their GTIDs, as with `mariadb-binlog |
//! mysql` by hand: the server logs them again under those GTIDs (a server
//! with `gtid_strict_mode = ON` that already logged them refuses them, and
//! the restore fails before the switch). Reading, `mariadb-binlog` is told
//! not to insist on ordered GTIDs (`--skip-gtid-strict-mode`): an archive
//! holding events a restore logged again is still replayed.
//!
//! **What is replayed** is what `mariadb-binlog --database` selects: row
//! events on the database's tables and statements run with it as the
//! default database. With `binlog_format = ROW` that is every change to
//! its rows; in STATEMENT or MIXED format, a statement that names its
//! tables with another database (`other.t`), or with its own database
//! while another is the default, is not rewritten to the staging copy.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nfrepo_engine::{Reader, SnapshotEntry};

use super::{ArchivedBinlog, BinlogCatalog, BinlogName, dump_position};
use crate::RecoveryTarget;
use crate::{Error, Result};

/// The binlogs to replay after a dump, and how far.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BinlogReplay {
    /// The archived files, from the dump's on, in order.
    pub files: Vec<(BinlogName, ArchivedBinlog)>,
    /// The dump's position in the first file.
    pub start_position: u64,
    /// Replay events stamped before this second (Unix time, UTC); `None`: all.
    pub stop: Option<i64>,
    /// The newest event time archived (nanoseconds), if known.
    pub newest_event: Option<i64>,
    /// Where `mariadb-binlog` is, if not on `PATH`.
    pub bin_dir: Option<PathBuf>,
}

/// The dump of `source` to restore for `target`: the newest that recorded
/// a binlog position and had finished at or before the target time.
///
/// # Errors
/// [`Error::Invalid`] when the source has no such dump.
pub fn choose_dump(snapshots: &[SnapshotEntry], source: &str, target: RecoveryTarget) -> Result<SnapshotEntry> {
    let finished = dump_finished_ns;
    snapshots
        .iter()
        .filter(|e| e.snapshot.source == source && e.snapshot.source_kind == super::DUMP_KIND)
        .filter(|e| dump_position(e).is_some())
        .filter(|e| match target {
            RecoveryTarget::Latest => true,
            RecoveryTarget::Time(at) => finished(e) <= at,
        })
        .max_by_key(|e| finished(e))
        .cloned()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "source {source:?} has no dump with a binlog position finished before the recovery target"
            ))
        })
}

/// When a dump finished: the first moment a replay after it can reach.
pub(crate) fn dump_finished_ns(entry: &SnapshotEntry) -> i64 {
    let ms = i64::try_from(entry.snapshot.summary.duration_ms).unwrap_or(i64::MAX);
    entry.snapshot.time_ns.saturating_add(ms.saturating_mul(1_000_000))
}

/// The replay after `dump` up to `stop_ns` (`None`: everything archived).
///
/// # Errors
/// [`Error::Invalid`] when the dump recorded no binlog position;
/// [`Error::BinlogGap`] when a file the replay needs is not archived.
pub fn plan_replay(catalog: &BinlogCatalog, dump: &SnapshotEntry, stop_ns: Option<i64>) -> Result<BinlogReplay> {
    let (file, start_position) = dump_position(dump).ok_or_else(|| {
        Error::Invalid(format!(
            "snapshot {} recorded no binlog position (was the binary log on when it was dumped?)",
            dump.id.short()
        ))
    })?;
    let files = catalog.files_from(&file, stop_ns)?;
    Ok(BinlogReplay {
        files,
        start_position,
        stop: stop_ns.map(|ns| ns.div_euclid(1_000_000_000)),
        newest_event: catalog.newest_event(),
        bin_dir: None,
    })
}

impl BinlogReplay {
    /// The target second as `mariadb-binlog --stop-datetime` reads it in UTC.
    fn stop_datetime(&self) -> Option<String> {
        let stop = chrono::DateTime::from_timestamp(self.stop?, 0)?;
        Some(stop.format("%Y-%m-%d %H:%M:%S").to_string())
    }

    /// Names of the files replayed.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.files.iter().map(|(n, _)| n.to_string()).collect()
    }
}

/// A private directory (0700) removed with its content on drop.
pub(crate) struct ReplayDir {
    path: PathBuf,
}

impl ReplayDir {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReplayDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove the binlog replay directory");
        }
    }
}

/// Writes every file of `replay` (verified) into a new private directory.
///
/// # Errors
/// [`Error::Io`] for the directory or a file; engine errors for missing or
/// damaged data; [`Error::BinlogGap`] when a snapshot no longer holds its file.
pub(crate) async fn materialize(reader: &Reader, replay: &BinlogReplay) -> Result<ReplayDir> {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let path = std::env::temp_dir().join(format!("nfrepo-binlog-{}", crate::stream::hex(&random)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    let dir = ReplayDir { path };
    for (name, archived) in &replay.files {
        let node = reader.resolve(&archived.entry, name.as_str()).await?.ok_or_else(|| {
            Error::BinlogGap(format!("{name} is missing from snapshot {}", archived.entry.id.short()))
        })?;
        let out_path = dir.path.join(name.as_str());
        let (reader, handle) = (reader.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            let io = |source| Error::Io {
                path: out_path.clone(),
                source,
            };
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out_path)
                .map_err(io)?;
            let mut out = std::io::BufWriter::new(file);
            handle.block_on(crate::write_content(&reader, &node, &mut out))?;
            out.flush().map_err(io)
        })
        .await
        .map_err(|e| Error::RestoreCommandFailed(format!("a binlog writer failed: {e}")))??;
    }
    Ok(dir)
}

/// Replays the files in `dir` into `staging`, keeping the events of
/// `database` (the dumped one). `client` is the `mysql` command with its
/// connection flags and password file. Blocks.
///
/// # Errors
/// [`Error::RestoreCommandFailed`] when `mariadb-binlog` or the client fails.
pub(crate) fn replay_into(
    replay: &BinlogReplay,
    dir: &Path,
    client: (Vec<String>, crate::ChildAuth),
    database: &str,
    staging: &str,
) -> Result<()> {
    let mut argv = vec![
        super::copy::binlog_tool(replay.bin_dir.as_deref()),
        "--no-defaults".to_owned(),
        // A binlog may hold GTIDs out of order (a server without
        // gtid_strict_mode, or events an earlier replay logged again).
        "--skip-gtid-strict-mode".to_owned(),
        format!("--start-position={}", replay.start_position),
        format!("--database={database}"),
        format!("--rewrite-db={database}->{staging}"),
    ];
    if let Some(stop) = replay.stop_datetime() {
        argv.push(format!("--stop-datetime={stop}"));
    }
    argv.extend(
        replay
            .files
            .iter()
            .map(|(n, _)| dir.join(n.as_str()).display().to_string()),
    );
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no binlog command".into()))?;
    let failed = |what: &str, e: std::io::Error| Error::RestoreCommandFailed(format!("{what}: {e}"));
    let mut binlog = crate::child::command(program, &crate::ChildAuth::none())
        .args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(&format!("cannot start {program:?}"), e))?;
    let events = binlog
        .stdout
        .take()
        .ok_or_else(|| Error::RestoreCommandFailed("no pipe from mariadb-binlog".into()))?;
    let (mut client_argv, auth) = client;
    client_argv.extend([
        "--binary-mode".to_owned(),
        "--skip-reconnect".to_owned(),
        staging.to_owned(),
    ]);
    let (client_program, client_args) = client_argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no client command".into()))?;
    let mut binlog_stderr = binlog.stderr.take();
    let binlog_errors = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(err) = binlog_stderr.as_mut() {
            let _ = err.read_to_end(&mut buf);
        }
        buf
    });
    let loaded = crate::child::command(client_program, &auth)
        .args(client_args)
        .stdin(Stdio::from(events))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let binlog_status = binlog.wait().map_err(|e| failed("waiting for mariadb-binlog", e))?;
    let binlog_stderr = binlog_errors.join().unwrap_or_default();
    let loaded = loaded.map_err(|e| failed(&format!("cannot run {client_program:?}"), e))?;
    if !loaded.status.success() {
        return Err(Error::RestoreCommandFailed(format!(
            "replaying the binlogs failed: {}",
            crate::database::client_error(&loaded.stderr)
        )));
    }
    if !binlog_status.success() {
        return Err(Error::RestoreCommandFailed(format!(
            "mariadb-binlog failed: {}",
            crate::dump::last_line(&binlog_stderr)
        )));
    }
    Ok(())
}
