//! The HTML pages and their forms. Every form carries the session's CSRF
//! token (the login form a token of its own, double-submitted in a
//! cookie); restores and downloads also take a fresh TOTP code.

use std::fmt::Write;
use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use nfrepo_engine::{LayoutEntry, Operation, WalkEntry};
use nfrepo_format::{Node, NodeKind};
use nfrepo_server::Peer;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::auth::Refusal;
use crate::html::{bytes, code_field, csrf_field, esc, page, url};
use crate::reply::{Refused, engine_failure};
use crate::restore::Approved;
use crate::session::{Authed, LOGIN_COOKIE, Session, cookie, random_token, set_cookie, tokens_match};
use crate::sources::Standing;
use crate::state::Shared;

type App = State<Arc<Shared>>;

fn html(status: StatusCode, title: &str, user: Option<(&str, &str)>, body: &str) -> Response {
    (status, Html(page(title, user, body))).into_response()
}

fn logged_in(session: &Session) -> Option<(&str, &str)> {
    Some((session.user.as_str(), session.csrf.as_str()))
}

/// The user and session of a page request (the API token has no pages).
macro_rules! user_or_refuse {
    ($auth:expr) => {
        match $auth.user() {
            Ok(found) => found,
            Err(refusal) => return *refusal,
        }
    };
}

fn check_csrf(session: &Session, presented: &str) -> Result<(), Refused> {
    if tokens_match(presented, &session.csrf) {
        Ok(())
    } else {
        Err(Box::new(html(
            StatusCode::FORBIDDEN,
            "Refused",
            None,
            "<p>The form's CSRF token is missing or wrong. Reload the page and try again.</p>",
        )))
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    name: String,
    password: String,
    code: String,
    login_csrf: String,
}

fn login_form(token: &str, message: &str) -> String {
    let flash = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"flash\">{}</p>", esc(message))
    };
    format!(
        "{flash}<form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"login_csrf\" value=\"{}\">\
         <label>Name <input id=\"name\" name=\"name\" autocomplete=\"username\" required></label>\
         <label>Password <input id=\"password\" type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <label>TOTP code <input class=\"code\" id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required></label>\
         <button id=\"login\" type=\"submit\">Log in</button></form>",
        esc(token)
    )
}

/// A login page with a new login CSRF token (and its cookie).
fn login_page(shared: &Shared, status: StatusCode, message: &str) -> Response {
    let token = random_token();
    let mut response = html(status, "Log in", None, &login_form(&token, message));
    if let Ok(value) = set_cookie(LOGIN_COOKIE, &token, shared.tls, 3600).parse() {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// `GET /login`.
pub(crate) async fn login(State(shared): App) -> Response {
    login_page(&shared, StatusCode::OK, "")
}

/// `POST /login`: name, password and TOTP code together. Every failure
/// says the same thing and counts towards the name's lockout.
pub(crate) async fn login_post(
    State(shared): App,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !tokens_match(&form.login_csrf, expected) {
        return login_page(&shared, StatusCode::FORBIDDEN, "The login form expired. Try again.");
    }
    let now = shared.clock.now_ns();
    let name = form.name.trim();
    if let Err(refusal) = shared
        .log_in(name, Zeroizing::new(form.password), &form.code, peer.0)
        .await
    {
        let message = match refusal {
            Refusal::Locked { until_ns } => {
                let message = format!("Too many failed logins: locked until {}.", crate::html::time(until_ns));
                return login_page(&shared, StatusCode::TOO_MANY_REQUESTS, &message);
            }
            Refusal::CodeReused => "That TOTP code was already used: wait for the next one.",
            Refusal::Wrong => "Wrong name, password or TOTP code.",
        };
        return login_page(&shared, StatusCode::UNAUTHORIZED, message);
    }
    let Some(id) = shared.sessions.create(name, now) else {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            None,
            "<p>No randomness for a session.</p>",
        );
    };
    let mut response = Redirect::to("/").into_response();
    for value in [
        set_cookie(shared.cookie_name(), &id, shared.tls, shared.session_max_s),
        set_cookie(LOGIN_COOKIE, "", shared.tls, 0),
    ] {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`.
pub(crate) async fn logout(State(shared): App, auth: Authed, Form(form): Form<CsrfForm>) -> Response {
    let crate::session::Principal::User { id, session } = &auth.0 else {
        return Redirect::to("/login").into_response();
    };
    if let Err(refusal) = check_csrf(session, &form.csrf) {
        return *refusal;
    }
    shared.sessions.remove(id);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = set_cookie(shared.cookie_name(), "", shared.tls, 0).parse() {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// `GET /`: sources against their RPO, and the alerts firing.
pub(crate) async fn dashboard(State(shared): App, auth: Authed) -> Response {
    let (_, session) = user_or_refuse!(auth);
    let view = shared.view();
    let now = shared.clock.now_ns();
    let mut body = String::new();
    if let Some(error) = &view.error {
        let _ = write!(body, "<p class=\"flash\">The last refresh failed: {}</p>", esc(error));
    }
    body.push_str(
        "<div class=\"wide\"><table id=\"sources\"><tr><th>Source</th><th>Status</th><th>Last backup</th>\
         <th>Age / RPO</th><th>Size</th><th>Trend</th></tr>",
    );
    for row in crate::sources::rows(&view.facts, &shared.watch, &shared.alerts_config, now) {
        let age = match (row.age_seconds, row.allowed_seconds) {
            (Some(age), Some(rpo)) => format!("{} / {}", crate::html::age(age), crate::html::age(rpo)),
            (Some(age), None) => crate::html::age(age),
            (None, _) => "never".into(),
        };
        let status = match row.standing {
            Standing::Red if row.last_snapshot_ns.is_none() => "red: no backup",
            Standing::Red => "red: past its RPO",
            Standing::Amber => "amber",
            Standing::Green => "green",
            Standing::Unwatched => "no schedule",
        };
        let _ = write!(
            body,
            "<tr class=\"{cls}\" data-source=\"{name}\"><td><a href=\"/snapshots?source={qname}\">{name}</a></td>\
             <td>{status}</td><td>{last}</td><td>{age}</td><td>{size}</td><td>{trend}</td></tr>",
            cls = row.standing.as_str(),
            name = esc(&row.name),
            qname = url(&row.name),
            last = row.last_snapshot_ns.map(crate::html::time).unwrap_or_default(),
            size = row.bytes.map(bytes).unwrap_or_default(),
            trend = esc(row.trend.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</table></div>");
    let _ = write!(
        body,
        "<p>{} alert(s) firing: <a href=\"/alerts\">see and acknowledge</a>. Read {}.</p>",
        view.alerts.len(),
        if view.refreshed_ns > 0 {
            crate::html::time(view.refreshed_ns)
        } else {
            "never".into()
        }
    );
    html(StatusCode::OK, "Sources", logged_in(session), &body)
}

/// `GET /alerts`: firing and recently resolved alerts, with acknowledge.
pub(crate) async fn alerts(State(shared): App, auth: Authed) -> Response {
    let (_, session) = user_or_refuse!(auth);
    let state = match shared.alert_state().await {
        Ok(state) => state,
        Err(e) => {
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Alerts",
                logged_in(session),
                &esc(&e.to_string()),
            );
        }
    };
    let mut body = String::from(
        "<div class=\"wide\"><table id=\"alerts\"><tr><th>Status</th><th>Severity</th><th>Alert</th>\
         <th>Since</th><th>Summary</th><th></th></tr>",
    );
    for (key, t) in &state.alerts {
        let firing = t.status == nfrepo_ops::Status::Firing;
        let action = match (&t.acknowledged, firing) {
            (Some(ack), _) => format!("acknowledged by {}", esc(&ack.by)),
            (None, true) => format!(
                "<form method=\"post\" action=\"/alerts/ack\">{}<input type=\"hidden\" name=\"key\" value=\"{}\">\
                 <button type=\"submit\" class=\"ack\">Acknowledge</button></form>",
                csrf_field(&session.csrf),
                esc(key)
            ),
            (None, false) => String::new(),
        };
        let _ = write!(
            body,
            "<tr class=\"{cls}\" data-alert=\"{key}\"><td>{status}</td><td>{severity}</td><td>{key}</td><td>{since}</td>\
             <td>{summary}</td><td>{action}</td></tr>",
            cls = if firing { "red" } else { "green" },
            key = esc(key),
            status = t.status.as_str(),
            severity = t.alert.rule.severity().as_str(),
            since = crate::html::time(t.first_fired_ns),
            summary = esc(&t.alert.summary),
        );
    }
    body.push_str("</table></div>");
    html(StatusCode::OK, "Alerts", logged_in(session), &body)
}

#[derive(Deserialize)]
pub(crate) struct AckForm {
    key: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /alerts/ack`.
pub(crate) async fn ack(State(shared): App, auth: Authed, Form(form): Form<AckForm>) -> Response {
    let (user, session) = user_or_refuse!(auth);
    if let Err(refusal) = check_csrf(session, &form.csrf) {
        return *refusal;
    }
    match shared.acknowledge(&form.key, user).await {
        Ok(true) => Redirect::to("/alerts").into_response(),
        Ok(false) => html(
            StatusCode::NOT_FOUND,
            "Alerts",
            logged_in(session),
            &format!("<p>No firing alert {}.</p>", esc(&form.key)),
        ),
        Err(e) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Alerts",
            logged_in(session),
            &esc(&e.to_string()),
        ),
    }
}

#[derive(Deserialize)]
pub(crate) struct SourceQuery {
    source: Option<String>,
}

/// `GET /snapshots[?source=S]`.
pub(crate) async fn snapshots(State(shared): App, auth: Authed, Query(q): Query<SourceQuery>) -> Response {
    let (_, session) = user_or_refuse!(auth);
    let view = shared.view();
    let list = view.snapshots(q.source.as_deref());
    let mut body = String::from(
        "<div class=\"wide\"><table id=\"snapshots\"><tr><th>Snapshot</th><th>Source</th><th>Time</th><th>Size</th></tr>",
    );
    for s in list {
        let _ = write!(
            body,
            "<tr><td><a href=\"/snapshots/{id}\">{short}</a></td><td>{source}</td><td>{time}</td><td>{size}</td></tr>",
            id = esc(&s.id),
            short = esc(s.id.get(..8).unwrap_or(&s.id)),
            source = esc(&s.source),
            time = crate::html::time(s.time_ns),
            size = bytes(s.bytes),
        );
    }
    body.push_str("</table></div>");
    let title = match &q.source {
        Some(source) => format!("Snapshots of {source}"),
        None => "Snapshots".into(),
    };
    html(StatusCode::OK, &title, logged_in(session), &body)
}

/// `GET /browse?path=P`: the repository in the platform's backup layout
/// (`/<env>/<type>/<source>/<YYYY>/<MM>/<DD>/<HHMMSS>`, `/sources/<source>/latest`,
/// `/snapshots/<id>`), the same layout `nfrepo mount` shows. A path that
/// reaches into a snapshot (as copied from a file manager on the mount)
/// leads to that directory of the snapshot's tree.
pub(crate) async fn browse(State(shared): App, auth: Authed, Query(q): Query<PathQuery>) -> Response {
    let (_, session) = user_or_refuse!(auth);
    let snapshots = match shared.repo.readable_snapshots().await {
        Ok(list) => list,
        Err(e) => return *engine_failure(&e, Operation::Inspect),
    };
    let layout = nfrepo_engine::Layout::build(snapshots);
    let parts: Vec<&str> = q.path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let names: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
    let Some(LayoutEntry::Dir(children)) = layout.get(&names) else {
        return match layout.resolve(&q.path) {
            Some((snapshot, rest)) => {
                Redirect::to(&format!("/snapshots/{}?path={}", snapshot.id.to_hex(), url(&rest))).into_response()
            }
            None => *crate::reply::refused(StatusCode::NOT_FOUND, format!("{} is not in the layout", q.path)),
        };
    };
    let here = parts.join("/");
    let mut body = format!("<p>Path: /{}</p>", esc(&here));
    if let Some((_, parent)) = parts.split_last() {
        let _ = write!(
            body,
            "<p><a href=\"/browse?path=/{}\">..</a></p>",
            url(&parent.join("/"))
        );
    }
    body.push_str("<div class=\"wide\"><table id=\"layout\"><tr><th>Name</th><th>Snapshot</th></tr>");
    for (name, entry) in children {
        let name = String::from_utf8_lossy(name);
        let full = if here.is_empty() {
            name.to_string()
        } else {
            format!("{here}/{name}")
        };
        let _ = match entry {
            LayoutEntry::Dir(_) => write!(
                body,
                "<tr><td><a href=\"/browse?path=/{}\">{}/</a></td><td></td></tr>",
                url(&full),
                esc(&name)
            ),
            LayoutEntry::Snapshot(s) => {
                let id = s.id.to_hex();
                write!(
                    body,
                    "<tr><td><a href=\"/snapshots/{id}\">{}/</a></td><td>{}</td></tr>",
                    esc(&name),
                    esc(&s.id.short())
                )
            }
            LayoutEntry::Link(target) => {
                let target = String::from_utf8_lossy(target);
                let linked = if here.is_empty() {
                    target.to_string()
                } else {
                    format!("{here}/{target}")
                };
                write!(
                    body,
                    "<tr><td><a href=\"/browse?path=/{}\">{} → {}</a></td><td></td></tr>",
                    url(&linked),
                    esc(&name),
                    esc(&target)
                )
            }
        };
    }
    body.push_str("</table></div>");
    html(StatusCode::OK, "Browse", logged_in(session), &body)
}

#[derive(Deserialize)]
pub(crate) struct PathQuery {
    #[serde(default)]
    path: String,
}

/// `GET /snapshots/{id}?path=P`: one directory of a snapshot, with a
/// download form per file and a restore form for the directory.
pub(crate) async fn tree(
    State(shared): App,
    auth: Authed,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Response {
    let (_, session) = user_or_refuse!(auth);
    let path = q.path.trim_matches('/').to_owned();
    let (kind, entries) = match list_dir(&shared, &id, &path).await {
        Ok(listed) => listed,
        Err(refusal) => return *refusal,
    };
    let mut body = format!("<p>Path: /{}</p>", esc(&path));
    if !path.is_empty() {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        let _ = write!(
            body,
            "<p><a href=\"/snapshots/{}?path={}\">..</a></p>",
            esc(&id),
            url(parent)
        );
    }
    body.push_str("<div class=\"wide\"><table id=\"tree\"><tr><th>Name</th><th>Size</th><th></th></tr>");
    for entry in &entries {
        let full = entry.path_lossy();
        let name = full.rsplit('/').next().unwrap_or(&full);
        match entry.node.kind {
            NodeKind::Dir { .. } => {
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/snapshots/{}?path={}\">{}/</a></td><td></td><td></td></tr>",
                    esc(&id),
                    url(&full),
                    esc(name)
                );
            }
            NodeKind::File { .. } => {
                let _ = write!(
                    body,
                    "<tr><td>{name}</td><td>{size}</td><td><form method=\"post\" action=\"/download\">{csrf}\
                     <input type=\"hidden\" name=\"snapshot\" value=\"{id}\"><input type=\"hidden\" name=\"path\" value=\"{path}\">\
                     <input class=\"code\" name=\"code\" inputmode=\"numeric\" placeholder=\"TOTP\" required>\
                     <button type=\"submit\">Download</button></form></td></tr>",
                    name = esc(name),
                    size = bytes(entry.node.size()),
                    csrf = csrf_field(&session.csrf),
                    id = esc(&id),
                    path = esc(&full),
                );
            }
            _ => {
                let _ = write!(body, "<tr><td>{}</td><td></td><td></td></tr>", esc(name));
            }
        }
    }
    body.push_str("</table></div>");
    let options: String = shared
        .targets
        .keys()
        .map(|t| format!("<option value=\"{0}\">{0}</option>", esc(t)))
        .collect();
    if options.is_empty() {
        body.push_str("<p>No restore target is configured ([serve.restore_targets]).</p>");
    } else {
        let _ = write!(
            body,
            "<h2>Restore /{path} of this snapshot</h2><form method=\"post\" action=\"/restore\">{csrf}\
             <input type=\"hidden\" name=\"snapshot\" value=\"{id}\"><input type=\"hidden\" name=\"path\" value=\"{path}\">\
             <label>Into <select name=\"target\" id=\"target\">{options}</select></label>{code}\
             <button id=\"restore\" type=\"submit\">Restore</button></form>",
            path = esc(&path),
            csrf = csrf_field(&session.csrf),
            id = esc(&id),
            code = code_field("restore-code"),
        );
    }
    if path.is_empty() {
        database_form(&shared, &mut body, &id, &kind, &entries, &session.csrf);
    }
    let title = format!("Snapshot {}", id.get(..8).unwrap_or(&id));
    html(StatusCode::OK, &title, logged_in(session), &body)
}

/// The form restoring one dump of a `mysql`/`postgres` snapshot (whose
/// root `entries` are) into a database target of the same kind, shown by
/// name and URL (which never holds a password).
fn database_form(shared: &Shared, body: &mut String, id: &str, kind: &str, entries: &[WalkEntry], csrf: &str) {
    if kind != "mysql" && kind != "postgres" {
        return;
    }
    let nodes: Vec<Node> = entries.iter().map(|e| e.node.clone()).collect();
    let dumps: String = nfrepo_sources::dump_names(&nodes)
        .iter()
        .map(|(_, db)| format!("<option value=\"{0}\">{0}</option>", esc(db)))
        .collect();
    let targets: String = shared
        .database_targets
        .iter()
        .filter(|(_, t)| t.connection().scheme == kind)
        .map(|(name, t)| {
            format!(
                "<option value=\"{}\">{} ({})</option>",
                esc(name),
                esc(name),
                esc(&t.connection().to_string())
            )
        })
        .collect();
    if targets.is_empty() {
        let _ = write!(
            body,
            "<p>No {kind} database target is configured ([serve.database_targets]).</p>",
            kind = esc(kind)
        );
        return;
    }
    let _ = write!(
        body,
        "<h2>Restore a database of this snapshot</h2><form method=\"post\" action=\"/restore\">{csrf}\
         <input type=\"hidden\" name=\"snapshot\" value=\"{id}\">\
         <label>Dump <select name=\"database\" id=\"database\">{dumps}</select></label>\
         <label>Into server <select name=\"target\" id=\"db-target\">{targets}</select></label>\
         <label>As database <input name=\"into\" id=\"into\" placeholder=\"the dump's name\"></label>\
         <label><input type=\"checkbox\" name=\"force\" value=\"on\"> replace a database that holds data \
         (loaded and verified first; the old one is kept aside)</label>{code}\
         <button id=\"restore-db\" type=\"submit\">Restore database</button></form>",
        csrf = csrf_field(csrf),
        id = esc(id),
        code = code_field("restore-db-code"),
    );
}

/// The source kind of snapshot `id` and the entries of its directory `path`.
async fn list_dir(shared: &Shared, id: &str, path: &str) -> Result<(String, Vec<WalkEntry>), Refused> {
    let fail = |e: nfrepo_engine::Error| engine_failure(&e, Operation::Inspect);
    let snapshot = shared.repo.find_snapshot(id).await.map_err(fail)?;
    let reader = shared.repo.reader().await.map_err(fail)?;
    let tree = match reader.resolve(&snapshot, path).await.map_err(fail)? {
        None => snapshot.snapshot.root,
        Some(Node {
            kind: NodeKind::Dir { tree },
            ..
        }) => tree,
        Some(_) => {
            return Err(crate::reply::refused(
                StatusCode::NOT_FOUND,
                format!("{path} is not a directory"),
            ));
        }
    };
    let mut entries = Vec::new();
    reader
        .walk(&tree, path.as_bytes(), false, |e| {
            entries.push(e);
            Ok(())
        })
        .await
        .map_err(fail)?;
    Ok((snapshot.snapshot.source_kind, entries))
}

#[derive(Deserialize)]
pub(crate) struct FileForm {
    snapshot: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
    /// A database restore: the dumped database, the database to restore
    /// into, and whether to replace one that holds data (`on`).
    #[serde(default)]
    database: String,
    #[serde(default)]
    into: String,
    #[serde(default)]
    force: String,
}

/// Checks the CSRF token and spends a fresh TOTP code of `user`: what a
/// restore or download then names as its approval.
async fn approve<'a>(
    shared: &Shared,
    (user, session): (&'a str, &Session),
    peer: Peer,
    form: &'a FileForm,
) -> Result<Approved<'a>, Refused> {
    check_csrf(session, &form.csrf)?;
    let what = format!("approval of {}:{}", form.snapshot, form.path);
    let refusal = match shared.approve(user, &form.code, &what, peer.0).await {
        Ok(()) => {
            return Ok(Approved {
                user,
                peer: peer.0,
                snapshot: &form.snapshot,
                path: form.path.trim_matches('/'),
            });
        }
        Err(refusal) => refusal,
    };
    let message = match refusal {
        Refusal::Locked { until_ns } => format!("Too many wrong codes: locked until {}.", crate::html::time(until_ns)),
        Refusal::CodeReused => "That TOTP code was already used: wait for the next one.".to_owned(),
        Refusal::Wrong => "Wrong TOTP code.".to_owned(),
    };
    let status = refusal.status();
    Err(Box::new(html(
        status,
        "Refused",
        logged_in(session),
        &format!("<p class=\"flash\">{}</p>", esc(&message)),
    )))
}

/// `POST /download`: one file, approved with a fresh TOTP code.
pub(crate) async fn download(
    State(shared): App,
    auth: Authed,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Form(form): Form<FileForm>,
) -> Response {
    let approved = match approve(&shared, user_or_refuse!(auth), peer, &form).await {
        Ok(approved) => approved,
        Err(refusal) => return *refusal,
    };
    crate::restore::download(&shared, &approved)
        .await
        .unwrap_or_else(|refusal| *refusal)
}

/// `POST /restore`: a snapshot or path into a configured target, approved
/// with a fresh TOTP code; then the restores page shows its progress.
pub(crate) async fn restore(
    State(shared): App,
    auth: Authed,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Form(form): Form<FileForm>,
) -> Response {
    let approved = match approve(&shared, user_or_refuse!(auth), peer, &form).await {
        Ok(approved) => approved,
        Err(refusal) => return *refusal,
    };
    let choice = crate::restore::DatabaseChoice {
        database: form.database.clone(),
        into: form.into.clone(),
        force: !form.force.is_empty(),
    };
    match crate::restore::start(&shared, &approved, &form.target, &choice).await {
        Ok(_) => Redirect::to("/restores").into_response(),
        Err(refusal) => *refusal,
    }
}

/// `GET /restores`: restores started here, newest first; the page reloads
/// itself while one runs.
pub(crate) async fn restores(State(shared): App, auth: Authed) -> Response {
    let (_, session) = user_or_refuse!(auth);
    let jobs = shared.jobs.all();
    let running = jobs.iter().any(|j| j.outcome().is_none());
    let mut body = String::new();
    if running {
        body.push_str("<meta http-equiv=\"refresh\" content=\"2\">");
    }
    body.push_str(
        "<div class=\"wide\"><table id=\"restores\"><tr><th>#</th><th>Snapshot:path</th><th>Into</th>\
         <th>Approved by</th><th>Progress</th><th>Result</th></tr>",
    );
    for job in jobs {
        let v = job.view();
        let (cls, result) = match &v.outcome {
            None => ("amber", "running".to_owned()),
            Some(o) if o.ok => ("green", esc(&o.message)),
            Some(o) => ("red", format!("{}: {}", esc(&o.code), esc(&o.message))),
        };
        let _ = write!(
            body,
            "<tr class=\"{cls}\"><td>{id}</td><td>{snap}:/{path}</td><td>{dir}</td><td>{by}</td>\
             <td>{phase} {done}/{total} {items}, {bytes}</td><td class=\"result\">{result}</td></tr>",
            id = v.id,
            snap = esc(v.snapshot.get(..8).unwrap_or(&v.snapshot)),
            path = esc(&v.path),
            dir = esc(v.into.as_deref().unwrap_or(&v.directory)),
            items = if v.into.is_some() { "databases" } else { "files" },
            by = esc(&v.approved_by),
            phase = v.phase.unwrap_or(""),
            done = v.items_done,
            total = v.items_total,
            bytes = bytes(v.bytes_done),
        );
    }
    body.push_str("</table></div>");
    html(StatusCode::OK, "Restores", logged_in(session), &body)
}
