//! The JSON API (`/api/*`) and `/metrics`, behind the same sessions as the
//! pages; `GET`s also take the read-only API token.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nfrepo_server::Peer;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::reply::{denied, refuse};
use crate::restore::Approved;
use crate::session::{Authed, CSRF_HEADER, session_of, set_cookie, tokens_match};
use crate::state::Shared;

type App = State<Arc<Shared>>;

/// `ns` as RFC 3339 UTC, to the second: every time in the JSON.
pub(crate) fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn opt_time(ns: Option<i64>) -> Value {
    ns.map_or(Value::Null, |ns| Value::String(time(ns)))
}

/// `GET /api/health`: whether the last refresh worked, and when it ran.
pub(crate) async fn health(State(shared): App, _auth: Authed) -> Response {
    let view = shared.view();
    let status = if view.error.is_none() && view.refreshed_ns > 0 {
        "ok"
    } else {
        "degraded"
    };
    Json(json!({
        "status": status,
        "repository": shared.origin.repository,
        "host": shared.origin.host,
        "refreshed": opt_time((view.refreshed_ns > 0).then_some(view.refreshed_ns)),
        "error": view.error,
        "alerts_firing": view.alerts.len(),
        "restores_running": shared.jobs.all().iter().filter(|j| j.outcome().is_none()).count(),
    }))
    .into_response()
}

/// `GET /api/session`: who is logged in, and the CSRF token for `POST`s.
pub(crate) async fn session(auth: Authed) -> Response {
    match auth.user() {
        Ok((user, session)) => Json(json!({ "user": user, "csrf": session.csrf })).into_response(),
        Err(refusal) => *refusal,
    }
}

/// `GET /api/sources`.
pub(crate) async fn sources(State(shared): App, _auth: Authed) -> Response {
    let view = shared.view();
    let rows = crate::sources::rows(&view.facts, &shared.watch, &shared.alerts_config, shared.clock.now_ns());
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "status": r.standing.as_str(),
                "snapshots": r.snapshots,
                "last_snapshot": opt_time(r.last_snapshot_ns),
                "last_snapshot_id": r.last_snapshot_id,
                "age_seconds": r.age_seconds,
                "rpo_seconds": r.allowed_seconds,
                "due": opt_time(r.due_ns),
                "bytes": r.bytes,
                "trend": r.trend,
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct SnapshotQuery {
    source: Option<String>,
}

/// `GET /api/snapshots[?source=S]`, newest first.
pub(crate) async fn snapshots(State(shared): App, _auth: Authed, Query(q): Query<SnapshotQuery>) -> Response {
    let view = shared.view();
    let list: Vec<Value> = view
        .snapshots(q.source.as_deref())
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "source": s.source,
                "time": time(s.time_ns),
                "bytes": s.bytes,
                "bytes_added": s.bytes_added,
                "bytes_added_stored": s.bytes_added_stored,
                "duration_ms": s.duration_ms,
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

/// `GET /api/alerts`: every tracked alert (firing and recently resolved).
pub(crate) async fn alerts(State(shared): App, _auth: Authed) -> Response {
    let state = match shared.alert_state().await {
        Ok(state) => state,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    Json(state.to_json(&time)).into_response()
}

/// `POST /api/alerts/{key}/ack` with the session's CSRF token in `X-CSRF-Token`.
pub(crate) async fn ack(State(shared): App, auth: Authed, headers: HeaderMap, Path(key): Path<String>) -> Response {
    let (user, session) = match auth.user() {
        Ok(user) => user,
        Err(refusal) => return *refusal,
    };
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !tokens_match(presented, &session.csrf) {
        return refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
    }
    match shared.acknowledge(&key, user).await {
        Ok(true) => Json(json!({ "acknowledged": key, "by": user })).into_response(),
        Ok(false) => refuse(StatusCode::NOT_FOUND, format!("no firing alert {key:?}")),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The body of `POST /api/restores`.
#[derive(Deserialize)]
pub(crate) struct RestoreRequest {
    snapshot: String,
    #[serde(default)]
    path: String,
    /// The name of a restore target configured on the server.
    target: String,
    /// A fresh TOTP code: the approval.
    code: String,
    /// A database target: the dumped database to restore (default: the only one).
    #[serde(default)]
    database: String,
    /// A database target: the database to restore into (default: the dumped one's name).
    #[serde(default)]
    into: String,
    /// A database target: replace a database that holds data (kept aside).
    #[serde(default)]
    force: bool,
    /// With `password`: log in and approve in one request (`restore --via`).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /api/restores`: starts a restore into a new directory of a
/// configured target and answers `202` with the job (`GET` it from
/// `Location` for progress).
///
/// Two ways in, each spending one fresh TOTP code:
/// - a session with its CSRF token in `X-CSRF-Token` (the platform's own
///   panel), and `code`;
/// - `name`, `password` and `code` in the body, checked as a login is
///   (lockout and audit alike), for `nfrepo restore --via`: the answer then
///   also sets a session cookie for following the job.
pub(crate) async fn start_restore(
    State(shared): App,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Json(request): Json<RestoreRequest>,
) -> Response {
    let RestoreRequest {
        snapshot,
        path,
        target,
        code,
        database,
        into,
        force,
        name,
        password,
    } = request;
    let (user, new_session) = if let Some(password) = password {
        let Some(name) = name.map(|n| n.trim().to_owned()) else {
            return refuse(StatusCode::BAD_REQUEST, "a password needs a name");
        };
        if let Err(refusal) = shared.log_in(&name, Zeroizing::new(password), &code, peer.0).await {
            return denied(refusal, "wrong name, password or TOTP code");
        }
        match shared.sessions.create(&name, shared.clock.now_ns()) {
            Some(id) => (name, Some(id)),
            None => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "no randomness for a session"),
        }
    } else {
        let Some((_, session)) = session_of(&shared, &headers) else {
            return refuse(StatusCode::UNAUTHORIZED, "log in first");
        };
        let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !tokens_match(presented, &session.csrf) {
            return refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
        let what = format!("approval of {snapshot}:{path}");
        if let Err(refusal) = shared.approve(&session.user, &code, &what, peer.0).await {
            return denied(refusal, "wrong TOTP code");
        }
        (session.user, None)
    };
    let approved = Approved {
        user: &user,
        peer: peer.0,
        snapshot: &snapshot,
        path: path.trim_matches('/'),
    };
    let choice = crate::restore::DatabaseChoice { database, into, force };
    let job = match crate::restore::start(&shared, &approved, &target, &choice).await {
        Ok(job) => job,
        Err(refusal) => return *refusal,
    };
    let mut response = (StatusCode::ACCEPTED, Json(job.view())).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = format!("/api/restores/{}", job.id).parse() {
        headers.insert(LOCATION, value);
    }
    if let Some(id) = new_session
        && let Ok(value) = set_cookie(shared.cookie_name(), &id, shared.tls, shared.session_max_s).parse()
    {
        headers.append(SET_COOKIE, value);
    }
    response
}

/// `GET /api/restores/{id}`: one restore started through the panel.
pub(crate) async fn restore(State(shared): App, _auth: Authed, Path(id): Path<u64>) -> Response {
    match shared.jobs.all().iter().find(|j| j.id == id) {
        Some(job) => Json(job.view()).into_response(),
        None => refuse(StatusCode::NOT_FOUND, format!("no restore {id} is remembered")),
    }
}

/// `GET /api/restores`: restores started through the panel, newest first.
pub(crate) async fn restores(State(shared): App, _auth: Authed) -> Response {
    let list: Vec<_> = shared.jobs.all().iter().map(|j| j.view()).collect();
    Json(list).into_response()
}

/// `GET /metrics`: Prometheus text of the repository as last read
/// (`nfrepo_ops::render_metrics`, the same text `nfrepo metrics` prints).
pub(crate) async fn metrics(State(shared): App, _auth: Authed) -> Response {
    let view = shared.view();
    let text = nfrepo_ops::render_metrics(
        &view.facts,
        &shared.watch,
        &shared.alerts_config,
        &view.alerts,
        view.refreshed_ns,
    );
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
