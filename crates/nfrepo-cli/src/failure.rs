//! Turning errors into one line (or one JSON object) and an exit code.

use nfrepo_engine::{ErrorCode, Operation};

/// Exit code of a snapshot committed with skipped entries.
pub const EXIT_PARTIAL: i32 = 3;
/// Exit code of a usage error (as clap's own).
pub const EXIT_USAGE: i32 = 2;
/// The detail code of a usage error.
const USAGE: &str = "USAGE";

/// A failed command: its stable code, an optional finer code, and the message.
#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub detail: Option<&'static str>,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, detail: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            code,
            detail,
            message: message.into(),
        }
    }

    /// A command line that contradicts itself or the configuration: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BackupFailed, Some(USAGE), message)
    }

    pub fn engine(err: &nfrepo_engine::Error, during: Operation) -> Self {
        Self::new(err.code(during), err.detail_code(), error_chain(err))
    }

    pub fn sources(err: &nfrepo_sources::Error, during: Operation) -> Self {
        Self::new(err.code(during), err.detail_code(), error_chain(err))
    }

    pub fn store(err: &nfrepo_store::Error, during: Operation) -> Self {
        let detail = match err.kind() {
            nfrepo_store::ErrorKind::Unreachable => Some("STORAGE_UNREACHABLE"),
            nfrepo_store::ErrorKind::InvalidUrl => Some("INVALID_REPOSITORY_URL"),
            _ => None,
        };
        let code = match err.kind() {
            nfrepo_store::ErrorKind::NotFound | nfrepo_store::ErrorKind::InvalidUrl => ErrorCode::BackupNotFound,
            nfrepo_store::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
            _ => match during {
                Operation::Restore => ErrorCode::RestoreFailed,
                _ => ErrorCode::BackupFailed,
            },
        };
        Self::new(code, detail, error_chain(err))
    }

    /// The process exit code of this failure.
    pub fn exit_code(&self) -> i32 {
        if let Some(USAGE) = self.detail {
            return EXIT_USAGE;
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

    /// Prints the failure and returns the exit code.
    pub fn report(&self, json: bool) -> i32 {
        let exit = self.exit_code();
        if json {
            let value = serde_json::json!({
                "error": {
                    "code": self.code.as_str(),
                    "detail": self.detail,
                    "message": self.message,
                    "exit_code": exit,
                }
            });
            println!("{value}");
        }
        let detail = self.detail.map(|d| format!("/{d}")).unwrap_or_default();
        eprintln!("error[{}{detail}]: {}", self.code, self.message);
        exit
    }
}

/// The error and its causes on one line, each cause once.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}
