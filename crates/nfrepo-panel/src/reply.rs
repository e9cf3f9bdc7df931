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

/// The response for an engine failure during `during`.
pub(crate) fn engine_failure(e: &nfrepo_engine::Error, during: Operation) -> Refused {
    let code = e.code(during);
    let status = crate::restore::status_of(code);
    if status.is_server_error() {
        tracing::warn!(error = %e, "the repository failed");
    }
    let mut response = refuse(status, e.to_string());
    response
        .headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(code.as_str()));
    Box::new(response)
}
