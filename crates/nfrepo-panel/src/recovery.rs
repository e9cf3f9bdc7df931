//! The disaster-recovery pages and their JSON: replicas and their lag,
//! drills and their RTO, and the audit trail with filters.
//!
//! Replicas and drills come from the view the background refresh leaves
//! (the facts the alert rules read); the audit trail is read and verified
//! from the repository on each request, so a tampered log shows as such on
//! the page that lists it, and filtered with the engine's [`AuditFilter`],
//! the one `nfrepo audit log` uses.

use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use nfrepo_engine::{AuditFilter, AuditLogEntry, Operation};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::time as rfc3339;
use crate::html::{esc, page, time, url};
use crate::reply::{Refused, engine_failure, refused};
use crate::session::Authed;
use crate::state::Shared;

type App = State<Arc<Shared>>;

/// Audit entries shown at most, newest first.
const AUDIT_SHOWN: usize = 500;

/// One replica, with the lag it may have.
struct ReplicaRow<'a> {
    fact: &'a nfrepo_ops::ReplicaFact,
    max_lag_seconds: Option<u64>,
}

impl ReplicaRow<'_> {
    /// `red` when unreadable or past its allowed lag, `amber` when behind, else `green`.
    fn standing(&self) -> &'static str {
        match (self.fact.error.is_some(), self.fact.lag_seconds, self.max_lag_seconds) {
            (true, _, _) => "red",
            (false, Some(lag), Some(max)) if lag > max => "red",
            (false, Some(lag), _) if lag > 0 => "amber",
            _ => "green",
        }
    }
}

fn replica_rows<'a>(shared: &Shared, facts: &'a nfrepo_ops::Facts) -> Vec<ReplicaRow<'a>> {
    facts
        .replicas
        .iter()
        .map(|fact| ReplicaRow {
            fact,
            max_lag_seconds: shared
                .watch
                .replicas
                .iter()
                .find(|w| w.name == fact.name)
                .and_then(|w| w.max_lag)
                .map(nfrepo_engine::Span::as_secs),
        })
        .collect()
}

/// `GET /replication`.
pub(crate) async fn replication_page(State(shared): App, auth: Authed) -> Response {
    let (_, session) = match auth.user() {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let view = shared.view();
    let mut body = String::from(
        "<div class=\"wide\"><table id=\"replicas\"><tr><th>Replica</th><th>Lag</th><th>Allowed</th>\
         <th>Snapshots behind</th><th>Problem</th></tr>",
    );
    let rows = replica_rows(&shared, &view.facts);
    for row in &rows {
        let _ = write!(
            body,
            "<tr class=\"{cls}\" data-replica=\"{name}\"><td>{name}</td><td>{lag}</td><td>{max}</td>\
             <td>{behind}</td><td>{error}</td></tr>",
            cls = row.standing(),
            name = esc(&row.fact.name),
            lag = row.fact.lag_seconds.map_or_else(
                || "unknown".to_owned(),
                |s| crate::html::age(i64::try_from(s).unwrap_or(i64::MAX))
            ),
            max = row
                .max_lag_seconds
                .map(|s| crate::html::age(i64::try_from(s).unwrap_or(i64::MAX)))
                .unwrap_or_default(),
            behind = row.fact.snapshots_behind,
            error = esc(row.fact.error.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</table></div>");
    if rows.is_empty() {
        body.push_str("<p>No replica is configured (<code>[replication.NAME]</code> in nfrepo.toml).</p>");
    }
    let user = Some((session.user.as_str(), session.csrf.as_str()));
    (StatusCode::OK, Html(page("Replication", user, &body))).into_response()
}

/// `GET /api/replication`.
pub(crate) async fn replication_api(State(shared): App, _auth: Authed) -> Response {
    let view = shared.view();
    let list: Vec<Value> = replica_rows(&shared, &view.facts)
        .iter()
        .map(|row| {
            json!({
                "name": row.fact.name,
                "status": row.standing(),
                "lag_seconds": row.fact.lag_seconds,
                "max_lag_seconds": row.max_lag_seconds,
                "snapshots_behind": row.fact.snapshots_behind,
                "error": row.fact.error,
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

/// `GET /drills`: the drills of the audit window, newest first.
pub(crate) async fn drills_page(State(shared): App, auth: Authed) -> Response {
    let (_, session) = match auth.user() {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let view = shared.view();
    let mut body = String::from(
        "<div class=\"wide\"><table id=\"drills\"><tr><th>Source</th><th>Started</th><th>Result</th><th>RTO</th></tr>",
    );
    for d in view.facts.drills.iter().rev() {
        let result = if d.passed {
            "passed".to_owned()
        } else {
            format!("{}: {}", esc(&d.code), esc(&d.message))
        };
        let _ = write!(
            body,
            "<tr class=\"{cls}\"><td><a href=\"/snapshots?source={qsource}\">{source}</a></td><td>{started}</td>\
             <td>{result}</td><td>{rto}</td></tr>",
            cls = if d.passed { "green" } else { "red" },
            qsource = url(&d.source),
            source = esc(&d.source),
            started = time(d.started_ns),
            rto = d
                .rto_ms
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_default(),
        );
    }
    body.push_str("</table></div>");
    if view.facts.drills.is_empty() {
        body.push_str("<p>No drill in the audit window: run <code>nfrepo drill</code> from cron.</p>");
    }
    let user = Some((session.user.as_str(), session.csrf.as_str()));
    (StatusCode::OK, Html(page("Drills", user, &body))).into_response()
}

/// `GET /api/drills`, newest first.
pub(crate) async fn drills_api(State(shared): App, _auth: Authed) -> Response {
    let view = shared.view();
    let list: Vec<Value> = view
        .facts
        .drills
        .iter()
        .rev()
        .map(|d| {
            json!({
                "source": d.source,
                "started": rfc3339(d.started_ns),
                "passed": d.passed,
                "code": d.code,
                "message": d.message,
                "rto_ms": d.rto_ms,
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

/// The filters of `/audit` and `/api/audit`, as a query string carries them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    failed: String,
}

impl AuditQuery {
    /// The engine's filter; a time that does not parse is refused.
    fn filter(&self, now_ns: i64) -> Result<AuditFilter, Refused> {
        let moment = |name: &str, text: &str| {
            if text.is_empty() {
                return Ok(None);
            }
            nfrepo_ops::parse_moment(text, now_ns).map(Some).ok_or_else(|| {
                refused(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read {name} {text:?}: use RFC 3339, YYYY-MM-DD, or an age like 36h or 7d"),
                )
            })
        };
        let text = |t: &str| (!t.is_empty()).then(|| t.to_owned());
        let mut filter = AuditFilter::default();
        filter.since_ns = moment("since", &self.since)?;
        filter.until_ns = moment("until", &self.until)?;
        filter.source = text(&self.source);
        filter.operation = text(&self.operation);
        filter.failed_only = matches!(self.failed.as_str(), "1" | "true" | "on");
        Ok(filter)
    }
}

/// The entries `query` selects, newest first, at most [`AUDIT_SHOWN`]; how
/// many matched; and the log's problems.
async fn audit_entries(
    shared: &Shared,
    query: &AuditQuery,
) -> Result<(Vec<AuditLogEntry>, usize, Vec<String>), Refused> {
    let filter = query.filter(shared.clock.now_ns())?;
    let report = nfrepo_engine::read_audit(&shared.repo, None)
        .await
        .map_err(|e| engine_failure(&e, Operation::Inspect))?;
    let mut problems: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{} is {}: {}", p.object, p.kind.as_str(), p.detail))
        .collect();
    problems.extend(report.public_key_problem.clone());
    let mut matched: Vec<AuditLogEntry> = report
        .entries
        .into_iter()
        .filter(|e| filter.matches(&e.record))
        .collect();
    let total = matched.len();
    matched.reverse();
    matched.truncate(AUDIT_SHOWN);
    Ok((matched, total, problems))
}

fn outcome(record: &nfrepo_format::AuditRecord) -> String {
    match (record.code.as_str(), record.detail.as_str()) {
        ("", _) => "ok".to_owned(),
        (code, "") => code.to_owned(),
        (code, detail) => format!("{code}/{detail}"),
    }
}

/// `GET /audit[?since&until&source&operation&failed]`.
pub(crate) async fn audit_page(State(shared): App, auth: Authed, Query(query): Query<AuditQuery>) -> Response {
    let (_, session) = match auth.user() {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let user = Some((session.user.as_str(), session.csrf.as_str()));
    let (entries, total, problems) = match audit_entries(&shared, &query).await {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let mut body = format!(
        "<form method=\"get\" action=\"/audit\" id=\"audit-filter\">\
         <label>Since <input name=\"since\" value=\"{since}\" placeholder=\"7d or 2026-12-01\"></label>\
         <label>Until <input name=\"until\" value=\"{until}\"></label>\
         <label>Source or host <input name=\"source\" value=\"{source}\"></label>\
         <label>Operation <input name=\"operation\" value=\"{operation}\" placeholder=\"snapshot, gc, serve restore\"></label>\
         <label><input type=\"checkbox\" name=\"failed\" value=\"1\"{failed}> failed only</label>\
         <button type=\"submit\">Filter</button></form>",
        since = esc(&query.since),
        until = esc(&query.until),
        source = esc(&query.source),
        operation = esc(&query.operation),
        failed = if query.failed.is_empty() { "" } else { " checked" },
    );
    if !problems.is_empty() {
        let _ = write!(
            body,
            "<p class=\"flash red\" id=\"audit-problems\">The audit log is not intact ({} problem(s)): {}</p>",
            problems.len(),
            esc(&problems[0])
        );
    }
    let _ = write!(
        body,
        "<p>{total} matching entr{}{}.</p><div class=\"wide\"><table id=\"audit\"><tr><th>Time</th><th>Who</th>\
         <th>Operation</th><th>Sources</th><th>Result</th><th>Message</th></tr>",
        if total == 1 { "y" } else { "ies" },
        if total > entries.len() {
            format!(", the newest {} shown", entries.len())
        } else {
            String::new()
        },
    );
    for e in &entries {
        let r = &e.record;
        let _ = write!(
            body,
            "<tr class=\"{cls}\"><td>{time}</td><td>{user}@{host}</td><td>{op}</td><td>{sources}</td>\
             <td>{outcome}</td><td>{message}</td></tr>",
            cls = if r.code.is_empty() { "green" } else { "red" },
            time = time(r.time_ns),
            user = esc(&r.user),
            host = esc(&r.host),
            op = esc(&r.operation),
            sources = esc(&r.sources.join(", ")),
            outcome = esc(&outcome(r)),
            message = esc(&r.message),
        );
    }
    body.push_str("</table></div>");
    (StatusCode::OK, Html(page("Audit trail", user, &body))).into_response()
}

/// `GET /api/audit[?since&until&source&operation&failed]`: newest first.
pub(crate) async fn audit_api(State(shared): App, _auth: Authed, Query(query): Query<AuditQuery>) -> Response {
    let (entries, total, problems) = match audit_entries(&shared, &query).await {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let r = &e.record;
            json!({
                "time": rfc3339(r.time_ns),
                "host": r.host,
                "user": r.user,
                "operation": r.operation,
                "sources": r.sources,
                "code": r.code,
                "detail": r.detail,
                "message": r.message,
                "exit_code": r.exit_code,
                "duration_ms": r.duration_ms,
                "authenticated": e.authenticated,
            })
        })
        .collect();
    Json(json!({ "matched": total, "entries": list, "problems": problems })).into_response()
}
