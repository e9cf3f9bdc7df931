//! Turning errors into one line (or one JSON object) and an exit code.

use nfrepo_engine::{ErrorClass, ErrorCode, Operation};

/// Exit code of a snapshot committed with skipped entries.
pub const EXIT_PARTIAL: i32 = 3;
/// Exit code of a usage error (clap's too).
pub const EXIT_USAGE: i32 = 2;
/// Exit code of "busy, try later" (`EX_TEMPFAIL`): another maintenance
/// command holds the lease and nothing was done.
pub const EXIT_BUSY: i32 = 75;

/// The detail code of a bad argument value; such failures are usage errors.
pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";

/// The code printed for a usage error, in place of an [`ErrorCode`].
const USAGE: &str = "USAGE";

/// A failed command: its stable code, an optional finer code, and the message.
#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub detail: Option<&'static str>,
    pub message: String,
    /// Nothing was done because another command holds what this one needs:
    /// exit [`EXIT_BUSY`] instead of the code's status.
    pub busy: bool,
}

impl Failure {
    pub fn new(code: ErrorCode, detail: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            code,
            detail,
            message: message.into(),
            busy: false,
        }
    }

    /// A bad argument value or combination: exit 2, `error[USAGE/INVALID_ARGUMENT]`.
    ///
    /// The [`ErrorCode`] is only a placeholder; [`Failure::code_str`] and
    /// [`Failure::exit_code`] report a usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BackupFailed, Some(INVALID_ARGUMENT), message)
    }

    /// Whether this is a usage error (a bad argument value).
    pub fn is_usage(&self) -> bool {
        self.detail == Some(INVALID_ARGUMENT)
    }

    /// The code as printed: `USAGE` for usage errors, else the error code.
    pub fn code_str(&self) -> &'static str {
        if self.is_usage() { USAGE } else { self.code.as_str() }
    }

    pub fn engine(err: &nfrepo_engine::Error, during: Operation) -> Self {
        let mut failure = Self::new(err.code(during), err.detail_code_during(during), error_chain(err));
        failure.busy = err.class() == ErrorClass::Busy;
        failure
    }

    pub fn mount(err: &nfrepo_mount::Error) -> Self {
        match err {
            nfrepo_mount::Error::Engine(e) => Self::engine(e, Operation::Inspect),
            _ => Self::new(err.code(), err.detail_code(), error_chain(err)),
        }
    }

    pub fn sources(err: &nfrepo_sources::Error, during: Operation) -> Self {
        Self::new(err.code(during), err.detail_code(), error_chain(err))
    }

    /// A storage error met before a repository is open (parsing its URL,
    /// reading credentials, opening the backend), classified as the engine
    /// classifies every storage error.
    pub fn store(err: &nfrepo_store::Error, during: Operation) -> Self {
        let detail = match err.kind() {
            nfrepo_store::ErrorKind::Unreachable => Some("STORAGE_UNREACHABLE"),
            nfrepo_store::ErrorKind::InvalidUrl => Some("INVALID_REPOSITORY_URL"),
            nfrepo_store::ErrorKind::InsecureTransport => Some("INSECURE_HTTP"),
            nfrepo_store::ErrorKind::Credentials => Some("CREDENTIALS"),
            _ => None,
        };
        let mut message = error_chain(err);
        if err.kind() == nfrepo_store::ErrorKind::InsecureTransport {
            message.push_str(
                " (to allow it anyway: --allow-insecure-http, or allow_insecure_http = true under [repository])",
            );
        }
        Self::new(ErrorClass::of_store(err).code(during), detail, message)
    }

    /// The process exit code of this failure.
    pub fn exit_code(&self) -> i32 {
        if self.is_usage() {
            return EXIT_USAGE;
        }
        if self.busy {
            return EXIT_BUSY;
        }
        match self.code {
            ErrorCode::BackupFailed => 10,
            ErrorCode::BackupCorrupted => 11,
            ErrorCode::BackupNotFound => 12,
            ErrorCode::RestoreFailed => 13,
            ErrorCode::RestoreConflict => 14,
            ErrorCode::RollbackFailed => 15,
            ErrorCode::PermissionDenied => 16,
            ErrorCode::SnapshotInvalid => 17,
            _ => 1,
        }
    }

    /// The failure as the `error` member of a JSON report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code_str(),
            "detail": self.detail,
            "message": self.message,
            "exit_code": self.exit_code(),
        })
    }

    /// Prints the one error line on stderr (names escaped) and returns the exit code.
    pub fn print_line(&self) -> i32 {
        let detail = self.detail.map(|d| format!("/{d}")).unwrap_or_default();
        eprintln!(
            "error[{}{detail}]: {}",
            self.code_str(),
            crate::output::escape::text(&self.message)
        );
        self.exit_code()
    }

    /// Prints the failure (with `--json` also as a JSON object on stdout)
    /// and returns the exit code.
    pub fn report(&self, json: bool) -> i32 {
        if json {
            crate::output::outln!("{}", serde_json::json!({ "error": self.json() }));
        }
        self.print_line()
    }
}

/// The error and its causes on one line, each cause once.
///
/// The chain stops at a storage error: its own line already names the code,
/// the object and the reason, and what lies below it (the storage library's
/// request context, with URLs and HTTP headers) is detail for `-v`, logged
/// in full at `info`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    let mut cut = err.is::<nfrepo_store::Error>();
    while let Some(cause) = source.filter(|_| !cut) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cut = cause.is::<nfrepo_store::Error>();
        source = cause.source();
    }
    if source.is_some() {
        tracing::info!(error = %nfrepo_store::chain_line(err), "the error in full");
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_storage_refusal_is_one_short_line_without_the_request_context() {
        let context = "PermissionDenied (permanent) at read, context: { uri: http://s3/x, \
                       response: Parts { status: 403, headers: {\"server\": \"S\"} } }";
        let store = nfrepo_store::Error::new(
            nfrepo_store::ErrorKind::PermissionDenied,
            "permission denied: SignatureDoesNotMatch: the signature does not match",
        )
        .with_source(std::io::Error::other(context));
        let err = nfrepo_engine::Error::StoragePermission(store);
        let line = error_chain(&err);
        assert_eq!(
            line,
            "storage refused access: permission denied: SignatureDoesNotMatch: the signature does not match"
        );
        assert!(!line.contains("headers"), "{line}");
    }
}
