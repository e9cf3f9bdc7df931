//! Point-in-time restore of a PostgreSQL cluster: the newest base backup
//! before the target, restored into an empty data directory with the
//! settings that make PostgreSQL replay archived WAL up to the target and
//! open.
//!
//! The data directory is written by the ordinary tree restore
//! ([`crate::restore`]: every path relative to a directory descriptor, no
//! link followed that the snapshot does not hold). Then, relative to a
//! descriptor of the data directory opened with `O_NOFOLLOW`:
//! `recovery.signal` is created, and the recovery settings are appended to
//! `postgresql.auto.conf` (which PostgreSQL reads last, so they win):
//! `restore_command` (the caller's `nfrepo … wal-fetch %f %p`),
//! `recovery_target_time` and `recovery_target_action = 'promote'` for a
//! time, or neither for `latest` (replay all archived WAL, then open), and
//! `recovery_target_timeline = 'latest'`. The directory is made mode 0700,
//! as PostgreSQL demands.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nfrepo_engine::{Reader, SnapshotEntry};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use super::basebackup::{BASEBACKUP_KIND, STOP_TIME};
use crate::{Error, RestoreOptions, RestoreReport, Result};

/// How far recovery replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryTarget {
    /// Every archived WAL file, then open.
    Latest,
    /// Up to this moment (nanoseconds since the Unix epoch, UTC), then open.
    Time(i64),
}

/// A point-in-time restore into a PostgreSQL data directory.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PitrRestoreOptions {
    /// The empty (or missing) data directory.
    pub data_dir: PathBuf,
    /// How far to replay.
    pub target: RecoveryTarget,
    /// The `restore_command` PostgreSQL runs (`%f` and `%p` in it).
    pub restore_command: String,
    /// Options of the tree restore.
    pub restore: RestoreOptions,
}

impl PitrRestoreOptions {
    /// A restore into `data_dir` replaying to `target` with `restore_command`.
    #[must_use]
    pub fn new(data_dir: PathBuf, target: RecoveryTarget, restore_command: String) -> Self {
        Self {
            data_dir,
            target,
            restore_command,
            restore: RestoreOptions::default(),
        }
    }
}

/// What a point-in-time restore did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PitrRestoreReport {
    /// The base backup restored.
    pub base: SnapshotEntry,
    /// The tree restore's report.
    pub restore: RestoreReport,
    /// The lines appended to `postgresql.auto.conf`.
    pub settings: Vec<String>,
}

/// The base backup of `source` to restore for `target`: the newest whose
/// `pg_basebackup` had finished at or before the target time.
///
/// # Errors
/// [`Error::Invalid`] when the source has no base backup old enough.
pub fn choose_base(snapshots: &[SnapshotEntry], source: &str, target: RecoveryTarget) -> Result<SnapshotEntry> {
    snapshots
        .iter()
        .filter(|e| e.snapshot.source == source && e.snapshot.source_kind == BASEBACKUP_KIND)
        .filter_map(|e| base_finished_ns(e).map(|t| (t, e)))
        .filter(|(t, _)| match target {
            RecoveryTarget::Latest => true,
            RecoveryTarget::Time(at) => *t <= at,
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, e)| e.clone())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "source {source:?} has no base backup finished before the recovery target"
            ))
        })
}

/// When a base backup's `pg_basebackup` finished (its [`STOP_TIME`]): the
/// first moment it can be recovered to.
pub(crate) fn base_finished_ns(entry: &SnapshotEntry) -> Option<i64> {
    crate::wal::fact_time_ns(entry, STOP_TIME)
}

/// A PostgreSQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The settings appended to `postgresql.auto.conf`.
#[must_use]
pub fn recovery_settings(restore_command: &str, target: RecoveryTarget) -> Vec<String> {
    let mut lines = vec![
        "# nfrepo point-in-time restore".to_owned(),
        format!("restore_command = {}", literal(restore_command)),
        "recovery_target_timeline = 'latest'".to_owned(),
    ];
    if let RecoveryTarget::Time(ns) = target {
        let time = chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%d %H:%M:%S%.6f+00");
        lines.push(format!("recovery_target_time = '{time}'"));
        lines.push("recovery_target_action = 'promote'".to_owned());
    }
    lines
}

/// Restores the base backup `base` into `options.data_dir` and writes the
/// recovery settings; the directory must be empty or missing.
///
/// # Errors
/// [`Error::TargetNotEmpty`] for a directory that holds anything; the tree
/// restore's errors; [`Error::Io`] writing the settings.
pub async fn restore_postgres_data(
    reader: &Reader,
    base: SnapshotEntry,
    options: &PitrRestoreOptions,
) -> Result<PitrRestoreReport> {
    let dir = &options.data_dir;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty(dir.display().to_string()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir)(e)),
    }
    let restored = crate::restore(reader, &base, "", dir, &options.restore).await?;
    let settings = recovery_settings(&options.restore_command, options.target);
    let dir_fd: OwnedFd = nix::fcntl::open(
        dir.as_path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(dir)(e.into()))?;
    nix::sys::stat::fchmod(&dir_fd, Mode::from_bits_truncate(0o700)).map_err(|e| io(dir)(e.into()))?;
    match nix::sys::stat::mkdirat(&dir_fd, "pg_wal", Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(io(&dir.join("pg_wal"))(e.into())),
    }
    let open_file = |name: &str, flags: OFlag| -> Result<std::fs::File> {
        openat(
            &dir_fd,
            name,
            flags | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map(std::fs::File::from)
        .map_err(|e| io(&dir.join(name))(e.into()))
    };
    let signal = open_file("recovery.signal", OFlag::O_CREAT | OFlag::O_EXCL)?;
    signal.sync_all().map_err(io(&dir.join("recovery.signal")))?;
    let mut conf = open_file("postgresql.auto.conf", OFlag::O_CREAT | OFlag::O_APPEND)?;
    let mut text = String::from("\n");
    for line in &settings {
        text.push_str(line);
        text.push('\n');
    }
    conf.write_all(text.as_bytes())
        .and_then(|()| conf.sync_all())
        .map_err(io(&dir.join("postgresql.auto.conf")))?;
    std::fs::File::from(dir_fd).sync_all().map_err(io(dir))?;
    Ok(PitrRestoreReport {
        base,
        restore: restored,
        settings,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn settings_quote_the_command_and_name_the_target_in_utc() {
        let lines = recovery_settings(
            "/usr/bin/nfrepo --config '/etc/x.toml' wal-fetch %f %p",
            RecoveryTarget::Time(1_764_592_496_500_000_000),
        );
        assert_eq!(
            lines,
            [
                "# nfrepo point-in-time restore",
                "restore_command = '/usr/bin/nfrepo --config ''/etc/x.toml'' wal-fetch %f %p'",
                "recovery_target_timeline = 'latest'",
                "recovery_target_time = '2025-12-01 12:34:56.500000+00'",
                "recovery_target_action = 'promote'",
            ]
        );
        assert_eq!(recovery_settings("x", RecoveryTarget::Latest).len(), 3);
    }
}
