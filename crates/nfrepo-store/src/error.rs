//! The crate's one error type, classified for the engine's retry decisions.

use std::error::Error as StdError;
use std::fmt;

use crate::key::ObjectKey;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, at the granularity the engine acts on.
///
/// Only [`Transient`](ErrorKind::Transient) and
/// [`Unreachable`](ErrorKind::Unreachable) are worth retrying; see
/// [`Error::is_retryable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object (or the whole repository location) does not exist.
    NotFound,
    /// A [`PutMode::CreateNew`](crate::PutMode::CreateNew) found an object under that name.
    AlreadyExists,
    /// The backend refused the credentials or the operation.
    PermissionDenied,
    /// The backend could not be reached at all (connection refused, DNS failure, no route).
    Unreachable,
    /// The backend failed in a way that may go away: 5xx, throttling, a reset connection.
    Transient,
    /// The repository URL could not be parsed or names an unsupported scheme.
    InvalidUrl,
    /// Stored bytes are not what they must be, e.g. an object shorter than a range the index records.
    Corrupted,
    /// Anything else; not retryable.
    Other,
    /// An object name that [`ObjectKey::new`] rejects.
    InvalidKey,
    /// S3 credentials are missing, incomplete or unreadable.
    Credentials,
    /// The store would be reached over plain http off this machine, and that is not allowed.
    InsecureTransport,
    /// An S3 Object Lock retention keeps a stored version until a date
    /// ([`Error::retained_until`]); not a failure of the store, and not retryable
    /// before that date.
    Retained,
    /// An append-only server (`nfrepo serve --append-only`) refused to
    /// delete or overwrite an object: not retryable, and not a failure of
    /// the store; the operation must run on the repository directly.
    AppendOnly,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unreachable => "backend unreachable",
            ErrorKind::Transient => "temporary backend failure",
            ErrorKind::InvalidUrl => "invalid repository url",
            ErrorKind::Corrupted => "corrupted object",
            ErrorKind::Other => "storage error",
            ErrorKind::InvalidKey => "invalid object name",
            ErrorKind::Credentials => "bad credentials",
            ErrorKind::InsecureTransport => "insecure transport",
            ErrorKind::Retained => "retained by object lock",
            ErrorKind::AppendOnly => "refused by an append-only server",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage error: a kind, the object it concerns, a one-line message and the underlying cause.
///
/// `Display` is one lowercase line, `"<object path or location>: <message>"`; the
/// underlying backend error is available through [`std::error::Error::source`].
/// Backend-level failures ([`ErrorKind::Unreachable`]) name the repository location
/// rather than the object, since every object would fail the same way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error("{}", self.line())]
pub struct Error {
    kind: ErrorKind,
    key: Option<String>,
    location: Option<String>,
    message: String,
    /// Unix seconds (S3 dates have whole seconds); 8 bytes keep `Error` small.
    retained_until: Option<std::num::NonZeroU64>,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    /// A new error of `kind`; `message` should be lowercase without a trailing period.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            key: None,
            location: None,
            message: message.into(),
            retained_until: None,
            source: None,
        }
    }

    /// An [`ErrorKind::Retained`] error: a stored version of `key` is under
    /// object-lock retention until `until`, so the server refused to delete it.
    pub fn retained(key: &ObjectKey, until: std::time::SystemTime) -> Self {
        let when = chrono::DateTime::<chrono::Utc>::from(until).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut err = Self::new(ErrorKind::Retained, format!("retained by object lock until {when}")).with_key(key);
        let secs = until
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
        err.retained_until = std::num::NonZeroU64::new(secs);
        err
    }

    /// For [`ErrorKind::Retained`]: the date the retention lapses.
    pub fn retained_until(&self) -> Option<std::time::SystemTime> {
        self.retained_until
            .map(|secs| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs.get()))
    }

    /// Attaches the object the failed operation concerned.
    #[must_use]
    pub fn with_key(mut self, key: &ObjectKey) -> Self {
        self.key = Some(key.path());
        self
    }

    /// Attaches the repository location (already free of credentials).
    #[must_use]
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The classification the engine acts on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation may succeed: true for
    /// [`ErrorKind::Transient`] and [`ErrorKind::Unreachable`] only.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient | ErrorKind::Unreachable)
    }

    /// The path of the object concerned, relative to the repository root.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The repository location, if known.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The message without the object or location prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn line(&self) -> String {
        let subject = match self.kind {
            ErrorKind::Unreachable => self.location.as_deref().or(self.key.as_deref()),
            _ => self.key.as_deref().or(self.location.as_deref()),
        };
        match subject {
            Some(subject) => format!("{subject}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// Classifies an OpenDAL error. `ConditionNotMatch` only arises from our
    /// `if_not_exists` writes, so it means the object already exists.
    pub(crate) fn from_opendal(err: opendal::Error) -> Self {
        use opendal::ErrorKind as K;
        let (kind, message) = match err.kind() {
            K::NotFound => (ErrorKind::NotFound, "object not found".to_owned()),
            K::AlreadyExists | K::ConditionNotMatch => (ErrorKind::AlreadyExists, "object already exists".to_owned()),
            K::PermissionDenied => (
                ErrorKind::PermissionDenied,
                format!("permission denied: {}", concise(err.message())),
            ),
            K::RangeNotSatisfied => (
                ErrorKind::Corrupted,
                "object is shorter than the requested range".to_owned(),
            ),
            K::RateLimited => (
                ErrorKind::Transient,
                format!("backend is throttling: {}", concise(err.message())),
            ),
            K::ConfigInvalid => (
                ErrorKind::Other,
                format!("backend misconfigured: {}", concise(err.message())),
            ),
            _ if is_connect_failure(&err) => (
                ErrorKind::Unreachable,
                format!("backend unreachable: {}", innermost_cause(&err)),
            ),
            _ if err.is_temporary() => (
                ErrorKind::Transient,
                format!("temporary backend failure: {}", concise(&innermost_cause(&err))),
            ),
            _ => (
                ErrorKind::Other,
                format!("backend error: {}", concise(&innermost_cause(&err))),
            ),
        };
        Error::new(kind, message).with_source(err)
    }

    /// Classifies an I/O error from the local write path.
    pub(crate) fn from_io(err: std::io::Error, what: &str) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::PermissionDenied,
            K::Interrupted | K::WouldBlock | K::TimedOut => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
        let message = match kind {
            ErrorKind::AlreadyExists => "object already exists".to_owned(),
            _ => format!("{what}: {err}"),
        };
        Error::new(kind, message).with_source(err)
    }
}

/// True when the error chain shows the connection itself failed, as opposed to
/// a request that reached the server.
fn is_connect_failure(err: &opendal::Error) -> bool {
    use std::io::ErrorKind as K;
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable
            )
        {
            return true;
        }
        // hyper-util's connector errors are private types; their text is the stable part.
        let text = e.to_string();
        if text.contains("tcp connect error") || text.contains("dns error") || text.contains("client error (Connect)") {
            return true;
        }
        current = e.source();
    }
    false
}

/// OpenDAL's S3 errors carry the whole parsed response (`S3Error { code: "…",
/// message: "…", resource: …, request_id: … }`); the code and message are what an
/// operator needs.
fn concise(message: &str) -> String {
    let field = |name: &str| {
        let start = message.find(&format!("{name}: \""))? + name.len() + 3;
        let len = message.get(start..)?.find('"')?;
        message.get(start..start + len)
    };
    match (message.starts_with("S3Error {"), field("code"), field("message")) {
        (true, Some(code), Some(text)) if !text.is_empty() => format!("{code}: {text}"),
        (true, Some(code), _) => code.to_owned(),
        _ => message.to_owned(),
    }
}

/// The deepest cause's text (e.g. "connection refused (os error 111)"), which is the
/// informative part of a long HTTP client chain; falls back to OpenDAL's message.
fn innermost_cause(err: &opendal::Error) -> String {
    let mut deepest: Option<&(dyn StdError + 'static)> = None;
    let mut current = err.source();
    while let Some(e) = current {
        deepest = Some(e);
        current = e.source();
    }
    match deepest {
        Some(e) => e.to_string(),
        None => err.message().to_owned(),
    }
}

/// `e` and every cause below it, joined by `: ` on one line: what a
/// message built from a foreign error (an HTTP client's, say) shows.
#[must_use]
pub fn chain_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ObjectKind;

    #[test]
    fn display_names_the_object() {
        let key = ObjectKey::new(ObjectKind::Data, "abcd").unwrap();
        let err = Error::new(ErrorKind::NotFound, "object not found")
            .with_key(&key)
            .with_location("s3://bucket/prefix");
        assert_eq!(err.to_string(), "data/ab/abcd: object not found");
        assert_eq!(err.key(), Some("data/ab/abcd"));
        assert!(!err.is_retryable());
    }

    #[test]
    fn unreachable_names_the_location() {
        let key = ObjectKey::new(ObjectKind::Index, "abcd").unwrap();
        let err = Error::new(ErrorKind::Unreachable, "backend unreachable: connection refused")
            .with_key(&key)
            .with_location("s3://bucket/prefix");
        assert_eq!(
            err.to_string(),
            "s3://bucket/prefix: backend unreachable: connection refused"
        );
        assert!(err.is_retryable());
    }

    #[test]
    fn opendal_kinds_map() {
        let cases = [
            (opendal::ErrorKind::NotFound, ErrorKind::NotFound),
            (opendal::ErrorKind::ConditionNotMatch, ErrorKind::AlreadyExists),
            (opendal::ErrorKind::PermissionDenied, ErrorKind::PermissionDenied),
            (opendal::ErrorKind::RateLimited, ErrorKind::Transient),
            (opendal::ErrorKind::Unexpected, ErrorKind::Other),
        ];
        for (from, to) in cases {
            assert_eq!(
                Error::from_opendal(opendal::Error::new(from, "x")).kind(),
                to,
                "{from:?}"
            );
        }
        let temporary = opendal::Error::new(opendal::ErrorKind::Unexpected, "x").set_temporary();
        assert_eq!(Error::from_opendal(temporary).kind(), ErrorKind::Transient);
        let refused = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
            .set_temporary()
            .set_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let mapped = Error::from_opendal(refused);
        assert_eq!(mapped.kind(), ErrorKind::Unreachable);
        assert!(std::error::Error::source(&mapped).is_some());
    }

    #[test]
    fn s3_errors_are_shortened() {
        let raw = r#"S3Error { code: "SignatureDoesNotMatch", message: "The signature does not match.", resource: "/b/x", request_id: "18E" }"#;
        assert_eq!(concise(raw), "SignatureDoesNotMatch: The signature does not match.");
        assert_eq!(concise("plain text"), "plain text");
        let err = Error::from_opendal(opendal::Error::new(opendal::ErrorKind::PermissionDenied, raw));
        assert_eq!(
            err.message(),
            "permission denied: SignatureDoesNotMatch: The signature does not match."
        );
    }

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<Error>() <= 128);
    }
}
