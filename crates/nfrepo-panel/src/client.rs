//! The client side of `POST /api/restores`, for `nfrepo restore --via URL`:
//! a restore run by the server (the one place that reads the repository
//! when backup hosts hold only put-only credentials), approved with the
//! caller's password and a fresh TOTP code, and followed until it ends.
//!
//! The password and the code travel only in the request body, over the
//! server's TLS (an `http://` server is accepted on loopback only, as the
//! server itself serves plain HTTP only there). The session the answer
//! sets is kept in memory for following the job and never written out.

use std::path::Path;
use std::time::Duration;

use nfrepo_engine::{ErrorCode, Work};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::reply::{ERROR_DETAIL_HEADER, ERROR_HEADER};
use crate::session::{COOKIE_PLAIN, COOKIE_TLS};

/// How often a running restore is asked for its progress.
const POLL: Duration = Duration::from_millis(500);
/// Failed progress requests in a row before the client gives up following
/// (the restore goes on at the server).
const POLL_FAILURES: u32 = 20;
/// The longest message kept from a server's refusal.
const MAX_MESSAGE: usize = 300;

/// What `restore --via` asks of the server.
pub struct ViaRequest<'a> {
    /// `http(s)://host:port` of `nfrepo serve --listen`.
    pub server: &'a str,
    /// PEM file of the only certificate authorities to trust (else the system's).
    pub ca_file: Option<&'a Path>,
    /// The user, as in `[serve] users`.
    pub name: &'a str,
    /// The user's password.
    pub password: Zeroizing<String>,
    /// A fresh TOTP code of `name`: the login and the approval.
    pub code: Zeroizing<String>,
    /// A snapshot as the server resolves it (id prefix, `latest`, `SOURCE@latest`).
    pub snapshot: &'a str,
    /// A path in the snapshot; empty for all of it.
    pub path: &'a str,
    /// The name of a restore target configured on the server.
    pub target: &'a str,
}

impl std::fmt::Debug for ViaRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViaRequest")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("snapshot", &self.snapshot)
            .field("path", &self.path)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A restore as the server reports it (`GET /api/restores/{id}`).
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct RemoteRestore {
    /// The job's number at the server.
    pub id: u64,
    /// The user whose code approved it.
    pub approved_by: String,
    /// The snapshot's full id.
    pub snapshot: String,
    /// The snapshot's source.
    pub source: String,
    /// The path restored; empty for the whole snapshot.
    pub path: String,
    /// The configured target it restores into.
    pub target: String,
    /// The new directory on the server the restore writes into.
    pub directory: String,
    /// What it is doing now, while it runs.
    pub phase: Option<String>,
    /// Files restored so far.
    pub items_done: u64,
    /// Files to restore, once known.
    pub items_total: u64,
    /// `items_total` counts only what the server planned so far; it grows
    /// as the restore goes (a part of a snapshot).
    #[serde(default)]
    pub totals_growing: bool,
    /// Bytes restored so far.
    pub bytes_done: u64,
    /// Set once the restore has ended.
    pub outcome: Option<RemoteOutcome>,
}

/// How a remote restore ended.
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct RemoteOutcome {
    /// Whether every file was restored and verified.
    pub ok: bool,
    /// The error code, empty on success.
    pub code: String,
    /// What happened, in one line.
    pub message: String,
    /// Files restored.
    pub files: u64,
    /// Bytes restored.
    pub bytes: u64,
}

/// A refused or failed remote restore, with our error code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ViaError {
    /// Our error code.
    pub code: ErrorCode,
    /// `INVALID_ARGUMENT` for a request the server found malformed (a
    /// usage error); `LOCKED_OUT`, `TOTP_REUSED`, `WRONG_CREDENTIALS` for
    /// a refused login; `SERVER_UNREACHABLE`; else the server's detail.
    pub detail: Option<&'static str>,
    /// What happened, in one line.
    pub message: String,
}

impl ViaError {
    fn new(code: ErrorCode, detail: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            code,
            detail,
            message: message.into(),
        }
    }

    fn unreachable(server: &str, e: &reqwest::Error) -> Self {
        Self::new(
            ErrorCode::RestoreFailed,
            Some("SERVER_UNREACHABLE"),
            format!("cannot reach {server}: {}", nfrepo_store::chain_line(e)),
        )
    }
}

/// Detail codes a server sends that this client names.
const KNOWN_DETAILS: &[&str] = &[
    "LOCKED_OUT",
    "TOTP_REUSED",
    "WRONG_CREDENTIALS",
    "INVALID_ARGUMENT",
    "APPEND_ONLY",
    "SNAPSHOT_NOT_FOUND",
    "PATH_NOT_FOUND",
    "INSECURE_HTTP",
];

/// Asks `request.server` to restore, then follows the job until it ends,
/// mirroring its counters into `work` for a progress display. Returns the
/// finished job when it succeeded.
///
/// # Errors
/// The server's refusal with its code (`PERMISSION_DENIED/TOTP_REUSED`, a
/// snapshot that does not exist: `BACKUP_NOT_FOUND`, an unknown target: a
/// usage error), `RESTORE_FAILED/SERVER_UNREACHABLE`, or the failed job's
/// own code and message.
pub async fn restore_via(request: ViaRequest<'_>, work: Option<&Work>) -> Result<RemoteRestore, ViaError> {
    let server = request.server.trim_end_matches('/');
    if !(server.starts_with("https://") || server.starts_with("http://")) {
        return Err(ViaError::new(
            ErrorCode::RestoreFailed,
            Some("INVALID_ARGUMENT"),
            format!("--via takes http(s)://host:port, not {server:?}"),
        ));
    }
    let url = nfrepo_store::StoreUrl::Rest {
        endpoint: server.to_owned(),
    };
    if let Some(endpoint) = url.insecure_endpoint() {
        return Err(ViaError::new(
            ErrorCode::PermissionDenied,
            Some("INSECURE_HTTP"),
            format!(
                "refusing to send a password to {endpoint} over plain http: only loopback addresses may use http, use https://"
            ),
        ));
    }
    let client = nfrepo_store::http_client(server, request.ca_file, server)
        .map_err(|e| ViaError::new(ErrorCode::PermissionDenied, Some("CREDENTIALS"), e.to_string()))?;
    let body = serde_json::json!({
        "name": request.name,
        "password": request.password.as_str(),
        "code": request.code.trim(),
        "snapshot": request.snapshot,
        "path": request.path,
        "target": request.target,
    });
    let answer = client
        .post(format!("{server}/api/restores"))
        .header(CONTENT_TYPE, "application/json")
        .body(Zeroizing::new(body.to_string()).as_bytes().to_vec())
        .send()
        .await
        .map_err(|e| ViaError::unreachable(server, &e))?;
    drop(body);
    if answer.status() != StatusCode::ACCEPTED {
        return Err(refusal(answer).await);
    }
    let session = answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, _)| name == COOKIE_PLAIN || name == COOKIE_TLS)
        })
        .map(|pair| Zeroizing::new(pair.to_owned()));
    let mut job = decode(server, answer).await?;
    let Some(session) = session else {
        return Err(ViaError::new(
            ErrorCode::RestoreFailed,
            None,
            format!("{server} started restore {} but set no session to follow it", job.id),
        ));
    };
    let url = format!("{server}/api/restores/{}", job.id);
    let mut failures = 0;
    let mut shown = Shown::default();
    loop {
        if let Some(work) = work {
            shown.mirror(&job, work);
        }
        if let Some(outcome) = &job.outcome {
            if outcome.ok {
                return Ok(job);
            }
            let code = ErrorCode::parse(&outcome.code).unwrap_or(ErrorCode::RestoreFailed);
            return Err(ViaError::new(
                code,
                None,
                format!(
                    "the restore into {} failed at the server: {}",
                    job.directory, outcome.message
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
        let polled = async {
            let answer = client
                .get(&url)
                .header(COOKIE, session.as_str())
                .send()
                .await
                .map_err(|e| ViaError::unreachable(server, &e))?;
            if !answer.status().is_success() {
                return Err(refusal(answer).await);
            }
            decode(server, answer).await
        }
        .await;
        match polled {
            Ok(next) => {
                job = next;
                failures = 0;
            }
            Err(e) if e.detail == Some("SERVER_UNREACHABLE") && failures < POLL_FAILURES => failures += 1,
            Err(e) => {
                return Err(ViaError::new(
                    e.code,
                    e.detail,
                    format!(
                        "lost track of restore {} into {} (it may still be running at the server): {}",
                        job.id, job.directory, e.message
                    ),
                ));
            }
        }
    }
}

/// What of a remote job's counters a local [`Work`] shows already.
#[derive(Default)]
struct Shown {
    total: Option<u64>,
    items: u64,
    bytes: u64,
}

impl Shown {
    /// Moves `work` to `job`'s counters: a new phase when the total
    /// changes other than by growing (the server started its next phase),
    /// else the increments.
    fn mirror(&mut self, job: &RemoteRestore, work: &Work) {
        if job.phase.is_none() {
            return;
        }
        let continues = self
            .total
            .is_some_and(|total| job.items_total == total || (job.totals_growing && job.items_total > total));
        if !continues || job.items_done < self.items || job.bytes_done < self.bytes {
            let total = if job.totals_growing { 0 } else { job.items_total };
            work.phase("restoring at the server", total, 0);
            *self = Self {
                total: Some(total),
                items: 0,
                bytes: 0,
            };
        }
        let total = self.total.unwrap_or_default();
        if job.items_total > total {
            work.grow(job.items_total - total, 0);
            self.total = Some(job.items_total);
        }
        work.advance(job.items_done - self.items, job.bytes_done - self.bytes);
        self.items = job.items_done;
        self.bytes = job.bytes_done;
    }
}

/// The job in an answer's body.
async fn decode(server: &str, answer: reqwest::Response) -> Result<RemoteRestore, ViaError> {
    let body = answer.bytes().await.map_err(|e| ViaError::unreachable(server, &e))?;
    serde_json::from_slice(&body).map_err(|e| {
        ViaError::new(
            ErrorCode::RestoreFailed,
            None,
            format!("{server} answered with an unexpected body: {e}"),
        )
    })
}

/// The error a non-success answer stands for: the code the server named,
/// else one by its status.
async fn refusal(answer: reqwest::Response) -> ViaError {
    let status = answer.status();
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let named = header(ERROR_HEADER).as_deref().and_then(ErrorCode::parse);
    let detail = header(ERROR_DETAIL_HEADER).and_then(|d| KNOWN_DETAILS.iter().copied().find(|k| *k == d));
    let mut message = answer.text().await.unwrap_or_default();
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(cut);
    }
    let message = format!("the server refused ({status}): {}", message.trim());
    match (named, status) {
        (Some(code), _) => ViaError::new(code, detail, message),
        (None, StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY) => {
            ViaError::new(ErrorCode::RestoreFailed, Some("INVALID_ARGUMENT"), message)
        }
        (None, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) => {
            ViaError::new(ErrorCode::PermissionDenied, detail, message)
        }
        (None, StatusCode::NOT_FOUND) => ViaError::new(ErrorCode::BackupNotFound, detail, message),
        (None, _) => ViaError::new(ErrorCode::RestoreFailed, detail, message),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    /// A running job as the server would report it.
    fn job(done: u64, total: u64, growing: bool) -> RemoteRestore {
        serde_json::from_value(serde_json::json!({
            "id": 1, "approved_by": "alice", "snapshot": "ab", "source": "web", "path": "src",
            "target": "scratch", "directory": "/r/1", "phase": "restoring",
            "items_done": done, "items_total": total, "totals_growing": growing,
            "bytes_done": done * 10, "outcome": null,
        }))
        .unwrap()
    }

    fn shown(work: &Work) -> (u64, u64, bool) {
        let c = work.counts().unwrap();
        (c.items_done, c.items_total, c.growing)
    }

    #[test]
    fn the_mirror_follows_growing_totals_without_restarting_the_phase() {
        let (work, mut mirror) = (Work::default(), Shown::default());
        mirror.mirror(&job(0, 0, false), &work);
        let since = work.counts().unwrap().since;
        mirror.mirror(&job(1, 4, true), &work);
        assert_eq!(shown(&work), (1, 4, true));
        mirror.mirror(&job(5, 9, true), &work);
        assert_eq!(shown(&work), (5, 9, true));
        assert_eq!(work.counts().unwrap().since, since, "one phase throughout");
        // A server that moves on to a phase with known totals starts one here.
        mirror.mirror(&job(0, 3, false), &work);
        assert_eq!(shown(&work), (0, 3, false));
        mirror.mirror(&job(2, 3, false), &work);
        assert_eq!(shown(&work), (2, 3, false));
    }
}
