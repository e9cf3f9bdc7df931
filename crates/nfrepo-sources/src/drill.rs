//! Disaster-recovery drills: prove that a snapshot restores into a working
//! service, and measure how long that takes.
//!
//! [`drill`] selects the snapshot (the source's latest, or a given one),
//! then, by the snapshot's source kind:
//!
//! - **mysql / postgres**: starts a throwaway server of the same kind
//!   (`mariadbd`, PostgreSQL's `postgres`) on a free loopback port in a
//!   private temporary directory, restores every dump of the snapshot into
//!   it with the staged database restore (which verifies the dump-time row
//!   counts `dump.<stream>.rows.<table>`), then runs the configured sanity
//!   queries, each of which must return a true value;
//! - **redis**: restores the snapshot into a temporary directory, starts
//!   `redis-server` on its `dump.rdb` and compares the key count with the
//!   one recorded at backup time ([`REDIS_KEYS_FACT`]);
//! - **every other kind** (bucket, files, config, logs, …): restores the
//!   snapshot into a temporary directory, verifying every file's hash.
//!
//! The throwaway server runs with settings that trade crash safety for load
//! speed, which is safe only because it is deleted afterwards (see
//! `drill/tuning.rs` for each setting and why).
//!
//! The server is killed and the directory deleted whatever happens (a guard
//! does it on drop, so also when the drill's future is dropped on Ctrl-C).
//! Each phase is timed; the RTO is the time from the start of the drill to
//! a verified, query-ready service, the RPO the age of the snapshot when
//! the drill started. The outcome, passed or failed, is written to the
//! repository as a drill record (`format-spec/drill.md`) and returned; a
//! failure names its code and the check that failed first.

mod database;
mod mysql;
mod postgres;
mod redis;
mod server;
mod tuning;

pub use redis::KEYS_FACT as REDIS_KEYS_FACT;
pub(crate) use redis::keyspace_total;

use std::path::{Path, PathBuf};
use std::time::Instant;

use nfrepo_engine::{ErrorCode, Operation, Reader, Repository, SnapshotEntry};
use nfrepo_format::{DrillCheck, DrillId, DrillPhase, DrillRecord};

use crate::{Error, RestoreOptions, Result};
use server::Throwaway;

/// What a drill runs.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DrillOptions {
    /// The configured source drilled.
    pub source: String,
    /// The snapshot to restore; `None` for the source's latest.
    pub snapshot: Option<String>,
    /// Sanity queries (mysql, postgres), each of which must return a true value.
    pub queries: Vec<String>,
    /// Where the server binaries are (`mariadbd`, PostgreSQL's, `redis-server`),
    /// if not the default places.
    pub bin_dir: Option<PathBuf>,
    /// Where the temporary directory is made (default: the system's).
    pub temp_root: Option<PathBuf>,
    /// MySQL/MariaDB: connections loading the dump (as
    /// [`DatabaseRestoreOptions::jobs`](crate::DatabaseRestoreOptions::jobs); 0: the default).
    pub load_jobs: usize,
}

impl DrillOptions {
    /// A drill of the latest snapshot of `source`.
    #[must_use]
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            ..Self::default()
        }
    }
}

/// A failed check: its name, the error code and what went wrong.
struct Failed {
    check: String,
    code: ErrorCode,
    message: String,
}

impl Failed {
    fn new(check: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            code,
            message: message.into(),
        }
    }

    /// A library error met during `check`: damaged or missing data keeps
    /// its code, anything else is a failed restore.
    fn of(check: impl Into<String>, error: &Error) -> Self {
        let code = match error.code(Operation::Restore) {
            code @ (ErrorCode::BackupCorrupted | ErrorCode::BackupNotFound) => code,
            _ => ErrorCode::RestoreFailed,
        };
        Self::new(check, code, one_line(error))
    }
}

/// The error and its causes on one line.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The record being filled in while the drill runs.
struct Log {
    started: Instant,
    phases: Vec<DrillPhase>,
    checks: Vec<DrillCheck>,
    ready: Option<Instant>,
}

impl Log {
    fn phase(&mut self, name: &str, since: Instant) {
        self.phases.push(DrillPhase {
            name: name.to_owned(),
            ms: millis(since.elapsed()),
        });
    }

    fn passed(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(DrillCheck {
            name: name.into(),
            passed: true,
            detail: detail.into(),
        });
    }

    /// Records the failed check and returns it as the drill's failure.
    fn failed(&mut self, failed: Failed) -> Failed {
        self.checks.push(DrillCheck {
            name: failed.check.clone(),
            passed: false,
            detail: failed.message.clone(),
        });
        failed
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Runs a drill (see the module docs), records its outcome in `repo` and
/// returns the record; a failed drill is a record with `passed == false`,
/// not an error. Ctrl-C stops the drill (its server and files go) and
/// records it as failed.
///
/// # Errors
/// Only when the record cannot be written (storage errors), or no random id
/// can be drawn.
pub async fn drill(repo: &Repository, options: &DrillOptions) -> Result<DrillRecord> {
    let id = DrillId::random().map_err(|e| Error::Engine(nfrepo_engine::Error::Format(e)))?;
    let started_ns = now_ns();
    let mut log = Log {
        started: Instant::now(),
        phases: Vec::new(),
        checks: Vec::new(),
        ready: None,
    };
    let mut snapshot = None;
    let outcome = tokio::select! {
        outcome = run(repo, options, &mut log, &mut snapshot) => outcome,
        _ = tokio::signal::ctrl_c() => Err(Failed::new("interrupted", ErrorCode::RestoreFailed, "the drill was interrupted (Ctrl-C)")),
    };
    let (passed, code, failed_check, message) = match outcome {
        Ok(()) => (true, String::new(), String::new(), String::new()),
        Err(failed) => (false, failed.code.as_str().to_owned(), failed.check, failed.message),
    };
    let snapshot: Option<&SnapshotEntry> = snapshot.as_ref();
    let snapshot_time_ns = snapshot.map_or(0, |s| s.snapshot.time_ns);
    let record = DrillRecord {
        id,
        source: options.source.clone(),
        source_kind: snapshot.map(|s| s.snapshot.source_kind.clone()).unwrap_or_default(),
        snapshot: snapshot.map(|s| s.id),
        snapshot_time_ns,
        started_ns,
        by: nfrepo_engine::user_at_host(),
        passed,
        code,
        failed_check,
        message,
        rto_ms: if passed {
            log.ready.map(|ready| millis(ready.duration_since(log.started)))
        } else {
            None
        },
        rpo_ms: snapshot.map(|_| u64::try_from(started_ns.saturating_sub(snapshot_time_ns) / 1_000_000).unwrap_or(0)),
        phases: log.phases,
        checks: log.checks,
    };
    repo.record_drill(&record).await?;
    Ok(record)
}

async fn run(
    repo: &Repository,
    options: &DrillOptions,
    log: &mut Log,
    chosen: &mut Option<SnapshotEntry>,
) -> std::result::Result<(), Failed> {
    let spec = options
        .snapshot
        .clone()
        .unwrap_or_else(|| format!("{}@latest", options.source));
    let snapshot = repo
        .find_snapshot(&spec)
        .await
        .map_err(|e| log.failed(Failed::of("snapshot", &Error::Engine(e))))?;
    if snapshot.snapshot.source != options.source {
        return Err(log.failed(Failed::new(
            "snapshot",
            ErrorCode::BackupNotFound,
            format!(
                "snapshot {} is of source {}, not {}",
                snapshot.id.short(),
                snapshot.snapshot.source,
                options.source
            ),
        )));
    }
    log.passed("snapshot", snapshot.id.to_hex());
    *chosen = Some(snapshot.clone());
    let reader = repo
        .reader()
        .await
        .map_err(|e| log.failed(Failed::of("restore", &Error::Engine(e))))?;
    match snapshot.snapshot.source_kind.as_str() {
        "mysql" | "postgres" => database::drill(&reader, &snapshot, options, log).await,
        "redis" => redis_drill(&reader, &snapshot, options, log).await,
        _ => files(&reader, &snapshot, options, log).await,
    }
}

/// Runs blocking work (starting servers, queries) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    check: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Failed> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failed::of(check, &e)),
        Err(e) => Err(Failed::new(
            check,
            ErrorCode::RestoreFailed,
            format!("worker failed: {e}"),
        )),
    }
}

/// Runs blocking work on a worker handle of the throwaway (see
/// [`Throwaway::worker`]): dropping the drill's future meanwhile still
/// stops the server and removes its files at once.
async fn with_guard<T: Send + 'static>(
    check: &str,
    guard: &Throwaway,
    work: impl FnOnce(&Throwaway) -> Result<T> + Send + 'static,
) -> std::result::Result<T, Failed> {
    let worker = guard.worker();
    blocking(check, move || work(&worker)).await
}

/// Restores the whole snapshot into `dir`, verifying every file's hash.
async fn restore_into(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    dir: &Path,
    log: &mut Log,
) -> std::result::Result<crate::RestoreReport, Failed> {
    let options = RestoreOptions {
        verify: true,
        ..RestoreOptions::default()
    };
    crate::restore(reader, snapshot, "", dir, &options)
        .await
        .map_err(|e| log.failed(Failed::of("restore", &e)))
}

async fn redis_drill(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    options: &DrillOptions,
    log: &mut Log,
) -> std::result::Result<(), Failed> {
    let expected = match snapshot.snapshot.fact(REDIS_KEYS_FACT) {
        Some(value) => Some(value.trim().parse::<u64>().map_err(|_| {
            log.failed(Failed::new(
                "redis keys",
                ErrorCode::BackupCorrupted,
                format!("snapshot fact {REDIS_KEYS_FACT} = {value:?} is not a count"),
            ))
        })?),
        None => None,
    };
    let since = Instant::now();
    let guard = Throwaway::new(options.temp_root.as_deref(), "redis-server")
        .map_err(|e| log.failed(Failed::of("restore", &e)))?;
    let data = guard.dir().join("data");
    let report = restore_into(reader, snapshot, &data, log).await?;
    if !data.join(crate::RDB_STREAM).is_file() {
        return Err(log.failed(Failed::new(
            "restore",
            ErrorCode::BackupNotFound,
            format!("snapshot {} holds no {}", snapshot.id.short(), crate::RDB_STREAM),
        )));
    }
    log.phase("restore", since);
    log.passed(
        "restore",
        format!("{} files, {} bytes, hashes verified", report.files, report.bytes),
    );

    let since = Instant::now();
    let bin_dir = options.bin_dir.clone();
    let start_dir = data.clone();
    let port = with_guard("server start", &guard, move |g| {
        redis::start(g, &start_dir, bin_dir.as_deref())
    })
    .await
    .map_err(|f| log.failed(f))?;
    log.phase("server start", since);
    log.passed("server start", format!("redis-server on 127.0.0.1:{port}"));

    let since = Instant::now();
    let bin_dir = options.bin_dir.clone();
    let found = blocking("redis keys", move || redis::keys(port, bin_dir.as_deref()))
        .await
        .map_err(|f| log.failed(f))?;
    match expected {
        Some(expected) if expected != found => {
            return Err(log.failed(Failed::new(
                "redis keys",
                ErrorCode::RestoreFailed,
                format!("{found} keys after restore, {expected} at backup time"),
            )));
        }
        Some(_) => log.passed("redis keys", format!("{found} keys, as at backup time")),
        None => log.passed(
            "redis keys",
            format!("{found} keys (the snapshot predates the {REDIS_KEYS_FACT} fact: nothing to compare)"),
        ),
    }
    log.phase("checks", since);
    log.ready = Some(Instant::now());
    drop(guard);
    Ok(())
}

async fn files(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    options: &DrillOptions,
    log: &mut Log,
) -> std::result::Result<(), Failed> {
    let since = Instant::now();
    let guard =
        Throwaway::new(options.temp_root.as_deref(), "restore").map_err(|e| log.failed(Failed::of("restore", &e)))?;
    let report = restore_into(reader, snapshot, &guard.dir().join("data"), log).await?;
    log.phase("restore", since);
    if !report.skipped.is_empty() || !report.warnings.is_empty() {
        let first = report
            .skipped
            .first()
            .map(|(path, why)| format!("{}: {why}", path.display()))
            .or_else(|| report.warnings.first().cloned())
            .unwrap_or_default();
        return Err(log.failed(Failed::new("files", ErrorCode::RestoreFailed, first)));
    }
    log.passed(
        "files",
        format!(
            "{} files ({} bytes) restored, every hash verified",
            report.files, report.bytes
        ),
    );
    log.ready = Some(Instant::now());
    drop(guard);
    Ok(())
}
