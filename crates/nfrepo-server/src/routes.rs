//! The REST routes (`format-spec/server.md`) over a [`Store`].

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH, RANGE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nfrepo_store::{
    ErrorKind, ObjectKey, PutMode, REST_ERROR_HEADER, REST_MODIFIED_HEADER, REST_SIZE_HEADER, Store, rest_error_code,
    rest_listing_end, rest_listing_line, rest_object_kind,
};

use crate::auth::Auth;
use crate::listen::Peer;
use crate::policy::{AppendOnly, Mode, Write};

/// The `tracing` target of the access log: one `info` line per request.
pub const ACCESS_LOG: &str = "nfrepo_server::access";

pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) auth: Auth,
    pub(crate) mode: Mode,
}

type Shared = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/{kind}", get(list))
        .route(
            "/v1/{kind}/{name}",
            get(get_object).head(stat_object).put(put_object).delete(delete_object),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// An error response: the status, the `nfrepo-error` code of `kind`, and a one-line message.
fn refuse(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Response {
    let mut response = (status, message.into()).into_response();
    response
        .headers_mut()
        .insert(REST_ERROR_HEADER, HeaderValue::from_static(rest_error_code(kind)));
    response
}

/// The response for a failure of the served store.
fn store_failure(err: &nfrepo_store::Error) -> Response {
    let status = match err.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists => StatusCode::PRECONDITION_FAILED,
        ErrorKind::PermissionDenied | ErrorKind::AppendOnly | ErrorKind::Retained => StatusCode::FORBIDDEN,
        ErrorKind::InvalidKey => StatusCode::BAD_REQUEST,
        ErrorKind::Corrupted => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorKind::Transient | ErrorKind::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::warn!(error = %err, "the served store failed");
    }
    // The message only: the client names the object itself, and the
    // server's own location is none of its business.
    refuse(status, err.kind(), err.message())
}

/// The object a path names, or the response refusing it (boxed: a
/// `Response` is large, and this is the rare path).
fn object_key(kind: &str, name: &str) -> Result<ObjectKey, Box<Response>> {
    let kind = rest_object_kind(kind).ok_or_else(|| {
        Box::new(refuse(
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidKey,
            "no such object kind",
        ))
    })?;
    ObjectKey::new(kind, name)
        .map_err(|e| Box::new(refuse(StatusCode::BAD_REQUEST, ErrorKind::InvalidKey, e.message())))
}

async fn authenticate(State(state): Shared, request: Request, next: Next) -> Response {
    if let Auth::Token(token) = &state.auth
        && !token.admits(request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes))
    {
        let why = if request.headers().contains_key(AUTHORIZATION) {
            "the server refused the bearer token"
        } else {
            "the server needs a bearer token (set NFREPO_REST_TOKEN_FILE)"
        };
        let mut response = refuse(StatusCode::UNAUTHORIZED, ErrorKind::PermissionDenied, why);
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// One line per request: client, method, path (never headers or a query,
/// so never the token), status, bytes announced and time taken.
async fn access_log(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| info.0.0.to_string())
        .unwrap_or_default();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        target: ACCESS_LOG,
        peer = %peer,
        method = %method,
        object = %path,
        status = response.status().as_u16(),
        error = response.headers().get(REST_ERROR_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-"),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Listing lines queued between the listing task and the response body.
const LISTING_LINES_IN_FLIGHT: usize = 256;

async fn list(State(state): Shared, Path(kind): Path<String>) -> Response {
    let Some(kind) = rest_object_kind(&kind) else {
        return refuse(StatusCode::NOT_FOUND, ErrorKind::InvalidKey, "no such object kind");
    };
    // One line per object, written as the store lists it (never the whole
    // listing in memory), then the end line with the count. A task lists
    // into a small channel the body drains. A listing that fails at once is
    // refused with its status; one that fails midway ends the body with an
    // error instead, so the client sees a listing cut short, never a
    // partial one taken for the whole.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<nfrepo_store::Result<Bytes>>(LISTING_LINES_IN_FLIGHT);
    let store = Arc::clone(&state.store);
    tokio::spawn(async move {
        let mut listing = store.list_stream(kind);
        let mut count = 0u64;
        while let Some(item) = listing.next().await {
            let failed = item.is_err();
            let line = item.map(|info| {
                count += 1;
                Bytes::from(rest_listing_line(&info))
            });
            if tx.send(line).await.is_err() || failed {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from(rest_listing_end(count)))).await;
    });
    let first = match rx.recv().await {
        Some(Err(e)) => return store_failure(&e),
        Some(Ok(line)) => line,
        None => return store_failure(&nfrepo_store::Error::new(ErrorKind::Other, "the listing task ended")),
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let lines = futures::stream::once(async move { Ok(first) }).chain(rest);
    let mut response = Body::from_stream(lines).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// `bytes=a-b` (one range, both ends given) as `a..b+1`.
fn parse_range(value: &HeaderValue) -> Option<std::ops::Range<u64>> {
    let (start, end) = value.to_str().ok()?.strip_prefix("bytes=")?.split_once('-')?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    let end = end.checked_add(1)?;
    (start < end).then_some(start..end)
}

async fn get_object(State(state): Shared, Path((kind, name)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let key = match object_key(&kind, &name) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    if let Some(range) = headers.get(RANGE) {
        let Some(range) = parse_range(range) else {
            return refuse(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorKind::Other,
                "only one range bytes=START-END is supported",
            );
        };
        return match state.store.get_range(&key, range).await {
            Ok(bytes) => (StatusCode::PARTIAL_CONTENT, bytes).into_response(),
            Err(e) => store_failure(&e),
        };
    }
    let mut stream = match state.store.get_stream(&key).await {
        Ok(stream) => stream,
        Err(e) => return store_failure(&e),
    };
    // Some stores open the object lazily: a missing one fails at the first
    // chunk, which must still become a 404, not a cut-short 200.
    let first = match stream.next().await {
        Some(Err(e)) => return store_failure(&e),
        first => first,
    };
    let stream = futures::stream::iter(first).chain(stream).inspect_err(move |e| {
        tracing::warn!(object = %key, error = %e, "reading an object failed while sending it");
    });
    Body::from_stream(stream).into_response()
}

async fn stat_object(State(state): Shared, Path((kind, name)): Path<(String, String)>) -> Response {
    let key = match object_key(&kind, &name) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    match state.store.stat(&key).await {
        Ok(info) => {
            let mut headers = HeaderMap::new();
            headers.insert(REST_SIZE_HEADER, HeaderValue::from(info.size));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(info.size));
            if let Some(ns) = info
                .last_modified
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .and_then(|d| HeaderValue::from_str(&d.as_nanos().to_string()).ok())
            {
                headers.insert(REST_MODIFIED_HEADER, ns);
            }
            (StatusCode::OK, headers).into_response()
        }
        Err(e) => store_failure(&e),
    }
}

async fn put_object(
    State(state): Shared,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match object_key(&kind, &name) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let create = headers.get(IF_NONE_MATCH).is_some_and(|v| v == "*");
    let Mode::AppendOnly = state.mode;
    if let Err(why) = AppendOnly::check(key.kind(), if create { Write::Create } else { Write::Replace }) {
        return refuse(StatusCode::FORBIDDEN, ErrorKind::AppendOnly, why);
    }
    // A replace of a kind that may not be replaced is a create: the store's
    // conditional create is what keeps an existing object as it is.
    let mode = if create || !AppendOnly::may_replace(key.kind()) {
        PutMode::CreateNew
    } else {
        PutMode::Overwrite
    };
    let body = body
        .into_data_stream()
        .map_err(|e| nfrepo_store::Error::new(ErrorKind::Transient, format!("upload cut short: {e}")))
        .boxed();
    // In its own task: a client that disconnects drops this handler, and a
    // store cancelled mid-write could leave its temp file behind. The task
    // sees the body fail instead, and the store cleans up.
    let store = state.store.clone();
    let write_key = key.clone();
    let written = tokio::spawn(async move { store.put_stream(&write_key, body, mode).await })
        .await
        .unwrap_or_else(|e| {
            Err(nfrepo_store::Error::new(
                ErrorKind::Other,
                format!("the write task failed: {e}"),
            ))
        });
    match written {
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && !create => refuse(
            StatusCode::FORBIDDEN,
            ErrorKind::AppendOnly,
            AppendOnly::overwrite_refused(key.kind()),
        ),
        Err(e) => store_failure(&e),
    }
}

async fn delete_object(State(state): Shared, Path((kind, name)): Path<(String, String)>) -> Response {
    let key = match object_key(&kind, &name) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let Mode::AppendOnly = state.mode;
    if let Err(why) = AppendOnly::check(key.kind(), Write::Delete) {
        return refuse(StatusCode::FORBIDDEN, ErrorKind::AppendOnly, why);
    }
    match state.store.delete(&key).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let range = |s: &'static str| parse_range(&HeaderValue::from_static(s));
        assert_eq!(range("bytes=0-0"), Some(0..1));
        assert_eq!(range("bytes=3-8"), Some(3..9));
        for bad in [
            "bytes=5-4",
            "bytes=-5",
            "bytes=5-",
            "bytes=1-2,4-5",
            "items=1-2",
            "bytes=a-b",
        ] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }
}
