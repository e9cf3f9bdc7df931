//! Restores and single-file downloads through the panel. Each needs a
//! fresh TOTP code (checked by the handler before anything here runs), goes
//! only into a configured target directory or database server, and is
//! written to the repository's audit log and the access log with the user
//! who approved it.
//!
//! A database restore (`restore/database.rs`) loads one dump of a
//! `mysql`/`postgres` snapshot through `nfrepo_sources`' staged restore:
//! into a new database, verified, then switched in.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use nfrepo_engine::{AuditEvent, ErrorCode, Operation, Work};
use nfrepo_format::NodeKind;
use serde::Serialize;

use crate::reply::{Refused, engine_failure, refused};
use crate::state::Shared;

mod database;

pub(crate) use database::DatabaseChoice;

/// Finished restores remembered for the panel.
const KEPT_JOBS: usize = 50;
/// Restores running at once; more are refused until one ends.
const MAX_RUNNING: usize = 2;

/// What a restore asked for and how it went.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) by: String,
    pub(crate) snapshot: String,
    pub(crate) source: String,
    pub(crate) path: String,
    pub(crate) target: String,
    /// The directory written (empty for a database restore).
    pub(crate) dir: PathBuf,
    /// A database restore: the dump's database and where it goes
    /// (`scheme://user@host:port/db`, never a password).
    pub(crate) database: Option<(String, String)>,
    pub(crate) started_ns: i64,
    work: Arc<Work>,
    outcome: Mutex<Option<Outcome>>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    /// The error code, empty on success.
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) finished_ns: i64,
    /// Files written (a database restore: databases switched in).
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    /// How long it ran, milliseconds (also in its audit entry).
    pub(crate) duration_ms: u64,
}

/// A job as `/api/restores` shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct JobView {
    pub(crate) id: u64,
    pub(crate) approved_by: String,
    pub(crate) snapshot: String,
    pub(crate) source: String,
    pub(crate) path: String,
    pub(crate) target: String,
    pub(crate) directory: String,
    /// The database dumped, for a database restore.
    pub(crate) database: Option<String>,
    /// Where it goes (`scheme://user@host:port/db`), for a database restore.
    pub(crate) into: Option<String>,
    pub(crate) started_ns: i64,
    pub(crate) phase: Option<&'static str>,
    pub(crate) items_done: u64,
    pub(crate) items_total: u64,
    /// `items_total` counts what was planned so far (a part of a snapshot).
    pub(crate) totals_growing: bool,
    pub(crate) bytes_done: u64,
    pub(crate) outcome: Option<Outcome>,
}

impl Job {
    pub(crate) fn view(&self) -> JobView {
        let counts = self.work.counts();
        JobView {
            id: self.id,
            approved_by: self.by.clone(),
            snapshot: self.snapshot.clone(),
            source: self.source.clone(),
            path: self.path.clone(),
            target: self.target.clone(),
            directory: self.dir.display().to_string(),
            database: self.database.as_ref().map(|(db, _)| db.clone()),
            into: self.database.as_ref().map(|(_, into)| into.clone()),
            started_ns: self.started_ns,
            phase: counts.map(|c| c.phase),
            items_done: counts.map_or(0, |c| c.items_done),
            items_total: counts.map_or(0, |c| c.items_total),
            totals_growing: counts.is_some_and(|c| c.growing),
            bytes_done: counts.map_or(0, |c| c.bytes_done),
            outcome: self.outcome(),
        }
    }

    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[derive(Default)]
pub(crate) struct Jobs {
    list: Mutex<VecDeque<Arc<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    /// Newest first.
    pub(crate) fn all(&self) -> Vec<Arc<Job>> {
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    fn add(&self, job: Arc<Job>) -> Result<(), Refused> {
        let mut list = self.list.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if list.iter().filter(|j| j.outcome().is_none()).count() >= MAX_RUNNING {
            return Err(refused(
                StatusCode::TOO_MANY_REQUESTS,
                "two restores are running: wait for one to finish",
            ));
        }
        while list.len() >= KEPT_JOBS {
            let Some(done) = list.iter().position(|j| j.outcome().is_some()) else {
                break;
            };
            list.remove(done);
        }
        list.push_back(job);
        Ok(())
    }
}

/// What a restore or download request names.
pub(crate) struct Approved<'a> {
    pub(crate) user: &'a str,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) snapshot: &'a str,
    pub(crate) path: &'a str,
}

impl Approved<'_> {
    pub(crate) fn note(&self) -> String {
        format!(
            "approved by {} with a fresh TOTP code from {}",
            self.user,
            self.peer.ip()
        )
    }
}

/// Starts restoring `approved.snapshot:path` into a new directory under
/// the target `target` (never into existing files), or a dump of it into
/// the database server `target` (`choice` says which and where), in the
/// background.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    approved: &Approved<'_>,
    target: &str,
    choice: &DatabaseChoice,
) -> Result<Arc<Job>, Refused> {
    if shared.database_targets.contains_key(target) {
        return database::start(shared, approved, target, choice).await;
    }
    let Some(base) = shared.targets.get(target) else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            format!("no restore target {target:?} is configured"),
        ));
    };
    let snapshot = shared
        .repo
        .find_snapshot(approved.snapshot)
        .await
        .map_err(|e| engine_failure(&e, Operation::Restore))?;
    let (job, work) = register(
        shared,
        approved,
        &snapshot,
        (approved.path.to_owned(), target),
        |id, now| {
            let stamp = chrono::DateTime::from_timestamp_nanos(now).format("%Y%m%dT%H%M%SZ");
            base.join(format!("{}-{stamp}-{id}", snapshot.id.short()))
        },
        None,
    )?;
    let dir = job.dir.clone();
    let note = approved.note();
    tracing::info!(
        target: crate::ACCESS_LOG,
        user = approved.user, peer = %approved.peer, snapshot = %snapshot.id, path = approved.path,
        directory = %dir.display(), "restore started, approved with a fresh TOTP code"
    );
    let (shared, job_done) = (shared.clone(), job.clone());
    tokio::spawn(async move {
        let mut options = nfrepo_sources::RestoreOptions::default();
        options.verify = true;
        options.work = Some(work);
        let result = match shared.repo.reader().await {
            Ok(reader) => {
                // The restore's future is not provably `Send` (a closure
                // over borrowed plans trips the compiler's higher-ranked
                // lifetime check), so it runs to completion on a blocking
                // thread of the same runtime, as the CLI runs it on main.
                let (path, dir, handle) = (
                    job_done.path.clone(),
                    job_done.dir.clone(),
                    tokio::runtime::Handle::current(),
                );
                tokio::task::spawn_blocking(move || {
                    handle.block_on(nfrepo_sources::restore(&reader, &snapshot, &path, &dir, &options))
                })
                .await
                .map_err(|e| {
                    (
                        ErrorCode::RestoreFailed,
                        None,
                        format!("the restore worker failed: {e}"),
                    )
                })
                .and_then(|r| r.map_err(|e| (e.code(Operation::Restore), e.detail_code(), e.to_string())))
            }
            Err(e) => Err((e.code(Operation::Restore), e.detail_code(), e.to_string())),
        };
        let result = result.map(|report| {
            (
                report.files,
                report.bytes,
                format!("restored {} files, {} bytes", report.files, report.bytes),
            )
        });
        let command = vec!["--target".into(), job_done.dir.display().to_string()];
        finish(&shared, &job_done, result, &note, command).await;
    });
    Ok(job)
}

/// Registers a job restoring `path` of `snapshot` into `target`, approved
/// by `approved.user`, numbered and timed now: `dir(id, now_ns)` is the
/// directory it writes (empty for a database restore), `database` the
/// dump's database and where it goes. Returns the job and its progress.
fn register(
    shared: &Shared,
    approved: &Approved<'_>,
    snapshot: &nfrepo_engine::SnapshotEntry,
    (path, target): (String, &str),
    dir: impl FnOnce(u64, i64) -> PathBuf,
    database: Option<(String, String)>,
) -> Result<(Arc<Job>, Arc<Work>), Refused> {
    let id = shared.jobs.next.fetch_add(1, Ordering::Relaxed) + 1;
    let now = shared.clock.now_ns();
    let work = Arc::new(Work::default());
    let job = Arc::new(Job {
        id,
        by: approved.user.to_owned(),
        snapshot: snapshot.id.to_hex(),
        source: snapshot.snapshot.source.clone(),
        path,
        target: target.to_owned(),
        dir: dir(id, now),
        database,
        started_ns: now,
        work: work.clone(),
        outcome: Mutex::new(None),
    });
    shared.jobs.add(job.clone())?;
    Ok((job, work))
}

/// A job's result: (files or databases, bytes, message), or (code, detail, message).
type JobResult = Result<(u64, u64, String), (ErrorCode, Option<&'static str>, String)>;

/// Ends `job` with `result`: its outcome for the panel, a line in the
/// access log and an entry (`serve restore`, with its duration) in the
/// repository's audit log naming who approved it. `target_args` ends the
/// entry's command line (`--target DIR`, `--into URL`).
async fn finish(shared: &Shared, job: &Job, result: JobResult, note: &str, target_args: Vec<String>) {
    let finished_ns = shared.clock.now_ns();
    let duration_ms = u64::try_from(finished_ns.saturating_sub(job.started_ns) / 1_000_000).unwrap_or(0);
    let outcome = match &result {
        Ok((files, bytes, message)) => Outcome {
            ok: true,
            code: String::new(),
            message: message.clone(),
            finished_ns,
            files: *files,
            bytes: *bytes,
            duration_ms,
        },
        Err((code, _, message)) => Outcome {
            ok: false,
            code: code.as_str().to_owned(),
            message: message.clone(),
            finished_ns,
            files: 0,
            bytes: 0,
            duration_ms,
        },
    };
    tracing::info!(
        target: crate::ACCESS_LOG,
        user = %job.by, job = job.id, ok = outcome.ok, code = %outcome.code, duration_ms, "restore finished"
    );
    let mut command = vec![
        "nfrepo".into(),
        "serve".into(),
        "restore".into(),
        format!("{}:{}", job.snapshot, job.path),
    ];
    command.extend(target_args);
    let mut event = AuditEvent::new("serve restore", command);
    event.sources = vec![job.source.clone()];
    event.duration_ms = Some(duration_ms);
    match &result {
        Ok(_) => event.message = note.to_owned(),
        Err((code, detail, message)) => {
            event.code = code.as_str().to_owned();
            event.detail = detail.unwrap_or_default().to_owned();
            event.exit_code = 1;
            event.message = format!("{note}: {message}");
        }
    }
    shared.audit(event).await;
    *job.outcome.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outcome);
}

/// Streams one file of a snapshot; the reader checks its size and hashes
/// before the last bytes go out, so a damaged file ends in a broken
/// download, never in wrong bytes that look whole.
pub(crate) async fn download(shared: &Arc<Shared>, approved: &Approved<'_>) -> Result<Response, Refused> {
    let snapshot = shared
        .repo
        .find_snapshot(approved.snapshot)
        .await
        .map_err(|e| engine_failure(&e, Operation::Restore))?;
    let reader = shared
        .repo
        .reader()
        .await
        .map_err(|e| engine_failure(&e, Operation::Restore))?;
    let node = reader
        .resolve(&snapshot, approved.path)
        .await
        .map_err(|e| engine_failure(&e, Operation::Restore))?;
    let Some(node) = node.filter(|n| matches!(n.kind, NodeKind::File { .. })) else {
        return Err(refused(
            StatusCode::NOT_FOUND,
            format!("{}:{} is not a file", snapshot.id.short(), approved.path),
        ));
    };
    let size = node.size();
    let mut event = AuditEvent::new(
        "serve download",
        vec![
            "nfrepo".into(),
            "serve".into(),
            "download".into(),
            format!("{}:{}", snapshot.id.to_hex(), approved.path),
        ],
    );
    event.sources = vec![snapshot.snapshot.source.clone()];
    event.message = format!("{}; {size} bytes", approved.note());
    shared.audit(event).await;
    tracing::info!(
        target: crate::ACCESS_LOG,
        user = approved.user, peer = %approved.peer, snapshot = %snapshot.id, path = approved.path,
        "download approved with a fresh TOTP code"
    );
    let name = approved
        .path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    let stream = reader
        .file_content(&node, approved.path.to_owned())
        .map(|chunk| chunk.map(bytes::Bytes::from).map_err(std::io::Error::other));
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_owned()),
            (CONTENT_LENGTH, size.to_string()),
            (CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The status a refused restore gets for `code`.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BackupNotFound => StatusCode::NOT_FOUND,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::SnapshotInvalid | ErrorCode::RestoreConflict => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
