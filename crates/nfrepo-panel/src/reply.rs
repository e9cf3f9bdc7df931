//! Error responses: a status and one line, with the error code in a header
//! for scripts (`nfrepo-error`, as the REST store server sends it).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nfrepo_engine::Operation;

/// The header naming the error code of a refusal.
pub const ERROR_HEADER: &str = "nfrepo-error";

/// A refusal on an error path: boxed, as a `Response` is large and this is the rare path.
pub(crate) type Refused = Box<Response>;

/// `status` with `message` as plain text.
pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// [`refuse`], boxed for an error path.
pub(crate) fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    Box::new(refuse(status, message))
}

/// The header with the finer detail code of a refusal (`TOTP_REUSED`, …).
pub const ERROR_DETAIL_HEADER: &str = "nfrepo-error-detail";

/// A refused login or approval: `PERMISSION_DENIED` and its detail
/// (`LOCKED_OUT`, `TOTP_REUSED`, `WRONG_CREDENTIALS`), `message` for a
/// wrong secret (which one is never said).
pub(crate) fn denied(refusal: crate::auth::Refusal, message: &str) -> Response {
    let text = match refusal {
        crate::auth::Refusal::Locked { until_ns } => format!(
            "too many failures: locked until {}",
            chrono::DateTime::from_timestamp_nanos(until_ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        crate::auth::Refusal::CodeReused => "that TOTP code was already used: wait for the next one".to_owned(),
        crate::auth::Refusal::Wrong => message.to_owned(),
    };
    let mut response = refuse(refusal.status(), text);
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static("PERMISSION_DENIED"));
    headers.insert(ERROR_DETAIL_HEADER, HeaderValue::from_static(refusal.detail()));
    response
}

/// The response for an engine failure during `during`.
pub(crate) fn engine_failure(e: &nfrepo_engine::Error, during: Operation) -> Refused {
    let code = e.code(during);
    let status = crate::restore::status_of(code);
    if status.is_server_error() {
        tracing::warn!(error = %e, "the repository failed");
    }
    let mut response = refuse(status, e.to_string());
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code.as_str()));
    if let Some(detail) = e.detail_code_during(during) {
        headers.insert(ERROR_DETAIL_HEADER, HeaderValue::from_static(detail));
    }
    Box::new(response)
}
