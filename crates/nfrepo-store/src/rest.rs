//! The wire names of nfrepo's REST protocol (`format-spec/server.md`),
//! shared by the client backend (`backend/rest.rs`) and `nfrepo-server`, so
//! the two can never disagree on a header, a path or an error code.

use std::path::Path;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};

/// The path prefix of every object route: `/v1/<kind>/<name>`, `/v1/<kind>`.
pub const REST_API_PREFIX: &str = "/v1";
/// The response header that names an error's [`ErrorKind`] ([`rest_error_code`]).
pub const REST_ERROR_HEADER: &str = "nfrepo-error";
/// The `HEAD` response header with the object's modification time, in
/// nanoseconds since the Unix epoch (absent when the store keeps none).
pub const REST_MODIFIED_HEADER: &str = "nfrepo-modified-ns";
/// The `HEAD` response header with the object's size in bytes (sent besides
/// `Content-Length`, which HTTP stacks may rewrite on a body-less response).
pub const REST_SIZE_HEADER: &str = "nfrepo-size";
/// The environment variable naming the bearer-token file of a `rest+` store.
pub const NFREPO_REST_TOKEN_FILE: &str = "NFREPO_REST_TOKEN_FILE";
/// The environment variable naming a PEM file of the only certificate
/// authorities a `rest+https://` store trusts (else the system's roots).
pub const NFREPO_REST_CA_FILE: &str = "NFREPO_REST_CA_FILE";
/// The fewest characters a bearer token may have.
pub const MIN_TOKEN_LEN: usize = 16;

/// The code a server sends in [`REST_ERROR_HEADER`] for `kind`.
pub fn rest_error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not-found",
        ErrorKind::AlreadyExists => "already-exists",
        ErrorKind::PermissionDenied => "permission-denied",
        ErrorKind::AppendOnly => "append-only",
        ErrorKind::Unreachable | ErrorKind::Transient => "transient",
        ErrorKind::Corrupted => "corrupted",
        ErrorKind::InvalidKey => "invalid-key",
        ErrorKind::Retained => "retained",
        _ => "other",
    }
}

/// The [`ErrorKind`] of a [`REST_ERROR_HEADER`] code; `None` for a code this
/// version does not know (the client then goes by the status alone).
pub fn rest_error_kind(code: &str) -> Option<ErrorKind> {
    Some(match code {
        "not-found" => ErrorKind::NotFound,
        "already-exists" => ErrorKind::AlreadyExists,
        "permission-denied" | "unauthorized" => ErrorKind::PermissionDenied,
        "append-only" => ErrorKind::AppendOnly,
        "transient" => ErrorKind::Transient,
        "corrupted" => ErrorKind::Corrupted,
        "invalid-key" => ErrorKind::InvalidKey,
        "retained" => ErrorKind::Retained,
        "other" => ErrorKind::Other,
        _ => return None,
    })
}

/// The object kind whose [`ObjectKind::prefix`] is `segment`.
pub fn rest_object_kind(segment: &str) -> Option<ObjectKind> {
    ObjectKind::all().iter().copied().find(|kind| kind.prefix() == segment)
}

/// One line of a listing: `<name> <size> <modified ns or ->\n`. Names never
/// hold a space or a newline ([`ObjectKey::new`]).
pub fn rest_listing_line(info: &ObjectInfo) -> String {
    let modified = info
        .last_modified
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or_else(|| "-".to_owned(), |d| d.as_nanos().to_string());
    format!("{} {} {modified}\n", info.key.name(), info.size)
}

/// The last line of a complete listing: `end <count>\n`. A listing cut short
/// (a dropped connection) lacks it, and the client refuses it rather than
/// taking a partial listing for the whole.
pub fn rest_listing_end(count: u64) -> String {
    format!("end {count}\n")
}

/// One parsed listing line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ListingLine {
    Object(ObjectInfo),
    End(u64),
}

pub(crate) fn parse_listing_line(kind: ObjectKind, line: &str) -> Option<ListingLine> {
    let mut fields = line.split(' ');
    let first = fields.next()?;
    let second = fields.next()?;
    match (first, fields.next(), fields.next()) {
        ("end", None, None) => Some(ListingLine::End(second.parse().ok()?)),
        (name, Some(modified), None) => {
            let key = ObjectKey::new(kind, name).ok()?;
            let size = second.parse().ok()?;
            let last_modified = match modified {
                "-" => None,
                ns => Some(parse_modified(ns)?),
            };
            Some(ListingLine::Object(ObjectInfo {
                key,
                size,
                last_modified,
            }))
        }
        _ => None,
    }
}

/// A time in nanoseconds since the epoch, as [`REST_MODIFIED_HEADER`] and listings carry it.
pub(crate) fn parse_modified(ns: &str) -> Option<SystemTime> {
    let ns: u128 = ns.parse().ok()?;
    let secs = u64::try_from(ns / 1_000_000_000).ok()?;
    let nanos = u32::try_from(ns % 1_000_000_000).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Reads a bearer token from `path`: the file must be readable by its owner
/// only (mode `0600` or stricter), and hold one line of at least
/// [`MIN_TOKEN_LEN`] visible ASCII characters (a trailing newline is
/// ignored). Messages name the file, never its contents.
///
/// # Errors
/// [`ErrorKind::Credentials`] naming the file and the rule it breaks.
pub fn read_token_file(path: &Path) -> Result<Zeroizing<String>> {
    let bad = |why: String| Error::new(ErrorKind::Credentials, format!("token file {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    check_owner_only(&meta).map_err(bad)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not one line of ASCII".into()))?;
    let token = text.strip_suffix('\n').unwrap_or(text);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("it must hold one line of visible ASCII characters".into()));
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(bad(format!("the token is shorter than {MIN_TOKEN_LEN} characters")));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

#[cfg(unix)]
fn check_owner_only(meta: &std::fs::Metadata) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("it is readable by others (mode {mode:04o}): chmod 600 it"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_meta: &std::fs::Metadata) -> std::result::Result<(), String> {
    Ok(())
}

/// How long a connection attempt may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may stay silent during a response.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP client for an nfrepo server at `endpoint` (the REST store, or
/// the panel's API for `restore --via`): TLS 1.2 or later, no redirects
/// (a bearer token or a password goes to no other host), no proxy, HTTPS
/// only for an `https://` endpoint, and trusting only the certificate
/// authorities in the PEM file `ca_file` if given (else the system's).
/// `location` names the server in errors.
///
/// # Errors
/// [`ErrorKind::Credentials`] for an unreadable or invalid CA file;
/// [`ErrorKind::Other`] if the client cannot be built.
pub fn http_client(endpoint: &str, ca_file: Option<&Path>, location: &str) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .user_agent(concat!("nfrepo/", env!("CARGO_PKG_VERSION")));
    if endpoint.starts_with("https://") {
        builder = builder.https_only(true);
    }
    if let Some(path) = ca_file {
        let bad = |why: String| {
            Error::new(ErrorKind::Credentials, format!("CA file {}: {why}", path.display())).with_location(location)
        };
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad("it holds no certificate".into()));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| {
        Error::new(ErrorKind::Other, format!("cannot build the HTTP client: {e}"))
            .with_source(e)
            .with_location(location)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_code_that_maps_back() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::PermissionDenied,
            ErrorKind::AppendOnly,
            ErrorKind::Transient,
            ErrorKind::Corrupted,
            ErrorKind::InvalidKey,
            ErrorKind::Retained,
            ErrorKind::Other,
        ] {
            assert_eq!(rest_error_kind(rest_error_code(kind)), Some(kind), "{kind:?}");
        }
        assert_eq!(
            rest_error_kind(rest_error_code(ErrorKind::Unreachable)),
            Some(ErrorKind::Transient)
        );
        assert_eq!(rest_error_kind("from-the-future"), None);
    }

    #[test]
    fn listing_lines_round_trip() {
        let info = ObjectInfo {
            key: ObjectKey::new(ObjectKind::Data, "abcd").unwrap(),
            size: 42,
            last_modified: Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123)),
        };
        let line = rest_listing_line(&info);
        assert_eq!(line, "abcd 42 1700000000000000123\n");
        assert_eq!(
            parse_listing_line(ObjectKind::Data, line.trim_end()),
            Some(ListingLine::Object(info))
        );
        let plain = ObjectInfo {
            key: ObjectKey::config(),
            size: 7,
            last_modified: None,
        };
        let line = rest_listing_line(&plain);
        assert_eq!(
            parse_listing_line(ObjectKind::Config, line.trim_end()),
            Some(ListingLine::Object(plain))
        );
        assert_eq!(parse_listing_line(ObjectKind::Data, "end 3"), Some(ListingLine::End(3)));
        for bad in [
            "",
            "abcd",
            "abcd 1",
            "abcd x -",
            "a 1 -",
            "abcd 1 - extra",
            "end",
            "end x",
            "../x 1 -",
        ] {
            assert_eq!(parse_listing_line(ObjectKind::Data, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn token_files_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("0123456789abcdef-token\n", 0o600);
        assert_eq!(read_token_file(&path).unwrap().as_str(), "0123456789abcdef-token");
        write("0123456789abcdef-token\n", 0o640);
        let err = read_token_file(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        assert!(err.to_string().contains("mode 0640"), "{err}");
        assert!(!err.to_string().contains("abcdef-token"), "{err}");
        write("short\n", 0o600);
        assert_eq!(read_token_file(&path).unwrap_err().kind(), ErrorKind::Credentials);
        write("two words are not a token\n", 0o600);
        assert_eq!(read_token_file(&path).unwrap_err().kind(), ErrorKind::Credentials);
        let missing = read_token_file(&dir.path().join("none")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Credentials);
    }
}
