//! Repository URLs: where a repository lives, without any secrets.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use crate::error::{Error, ErrorKind, Result};

/// Where a repository lives.
///
/// Never holds credentials: `s3://key:secret@bucket` is rejected, and S3
/// credentials come from [`Credentials`](crate::Credentials) instead, so `Display`
/// is always safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreUrl {
    /// A local directory (`file:///abs/path`, or a bare absolute or relative path).
    File {
        /// The directory; relative paths are resolved against the working directory by [`open`](crate::open).
        path: PathBuf,
    },
    /// An S3 bucket, optionally under a key prefix.
    S3 {
        /// The bucket name.
        bucket: String,
        /// The key prefix without leading or trailing `/`; empty for the bucket root.
        prefix: String,
        /// A custom endpoint such as `http://127.0.0.1:18333`; `None` for AWS.
        endpoint: Option<String>,
        /// The signing region; [`open`](crate::open) defaults it to `us-east-1`.
        region: Option<String>,
    },
    /// A process-wide in-memory store, for tests: the same name opens the same store.
    Memory {
        /// The store's name.
        name: String,
    },
    /// A repository served by `nfrepo serve` (`rest+https://host:port/`,
    /// or `rest+http://` on loopback): see `format-spec/server.md`.
    Rest {
        /// `https://host:port` or `http://host:port`, with the server's path
        /// prefix if any, without a trailing `/`.
        endpoint: String,
    },
}

impl StoreUrl {
    /// Parses `file:///abs/path`, a bare path, `s3://bucket/prefix?endpoint=…&region=…`
    /// or `memory://name`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for an unsupported scheme, an S3 URL without a bucket,
    /// credentials embedded in the URL, or an unknown query parameter. Messages never
    /// repeat the part of the input that could hold a secret.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(invalid("empty repository url"));
        }
        let Some((scheme, _)) = s.split_once("://").filter(|(scheme, _)| is_scheme(scheme)) else {
            return Ok(StoreUrl::File { path: PathBuf::from(s) });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => parse_file(s),
            "s3" => parse_s3(s),
            "memory" => parse_memory(s),
            "rest+http" | "rest+https" => parse_rest(s),
            other => Err(invalid(format!(
                "unsupported scheme {other:?}: use file://, s3://, rest+https:// or memory://"
            ))),
        }
    }
}

impl StoreUrl {
    /// The endpoint of an S3 or REST store reached over plain `http://` on a host
    /// that is not a loopback address (`127.0.0.0/8`, `::1`, `localhost`):
    /// requests, object names and sizes would cross the network
    /// unencrypted. `None` for every other store, and for S3 without a
    /// custom endpoint (AWS, always `https://`).
    ///
    /// [`open`](crate::open) and [`s3_bucket_operator`](crate::s3_bucket_operator)
    /// refuse such a store unless [`OpenOptions::allow_insecure_http`](crate::OpenOptions)
    /// is set.
    #[must_use]
    pub fn insecure_endpoint(&self) -> Option<&str> {
        let endpoint = match self {
            StoreUrl::S3 {
                endpoint: Some(endpoint),
                ..
            }
            | StoreUrl::Rest { endpoint } => endpoint,
            _ => return None,
        };
        let parsed = Url::parse(endpoint).ok()?;
        if parsed.scheme() != "http" {
            return None;
        }
        (!is_loopback(parsed.host()?)).then_some(endpoint.as_str())
    }
}

/// Whether `host` is this machine: `localhost` (and its subdomains, RFC
/// 6761), `127.0.0.0/8`, `::1` or an IPv4-mapped loopback address.
fn is_loopback(host: url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File { path } if path.is_absolute() => write!(f, "file://{}", path.display()),
            StoreUrl::File { path } => write!(f, "{}", path.display()),
            StoreUrl::S3 {
                bucket,
                prefix,
                endpoint,
                region,
            } => {
                write!(f, "s3://{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                let mut separator = '?';
                if let Some(endpoint) = endpoint {
                    write!(f, "{separator}endpoint={endpoint}")?;
                    separator = '&';
                }
                if let Some(region) = region {
                    write!(f, "{separator}region={region}")?;
                }
                Ok(())
            }
            StoreUrl::Memory { name } => write!(f, "memory://{name}"),
            StoreUrl::Rest { endpoint } => write!(f, "rest+{endpoint}/"),
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidUrl, message)
}

/// RFC 3986 scheme syntax; anything else before `://` makes the input a path.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn parse_url(s: &str) -> Result<Url> {
    // The url crate's messages don't echo the input, so they are safe to keep.
    let url = Url::parse(s).map_err(|e| invalid(format!("malformed url: {e}")).with_source(e))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials in the url are not allowed: set NFREPO_S3_ACCESS_KEY_ID and NFREPO_S3_SECRET_ACCESS_KEY",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("a repository url has no #fragment"));
    }
    Ok(url)
}

fn parse_file(s: &str) -> Result<StoreUrl> {
    let url = parse_url(s)?;
    if url.query().is_some() {
        return Err(invalid("file urls take no query parameters"));
    }
    if !matches!(url.host_str(), None | Some("" | "localhost")) {
        return Err(invalid("file urls must name a local path: file:///abs/path"));
    }
    let path = url
        .to_file_path()
        .map_err(|()| invalid("file urls must name an absolute path: file:///abs/path"))?;
    Ok(StoreUrl::File { path })
}

fn parse_s3(s: &str) -> Result<StoreUrl> {
    let url = parse_url(s)?;
    let bucket = url.host_str().unwrap_or_default();
    if bucket.is_empty() {
        return Err(invalid("s3 url without a bucket: use s3://bucket/prefix"));
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(format!("invalid s3 bucket name {bucket:?}")));
    }
    if url.port().is_some() {
        return Err(invalid("an s3 url has no port: put it in ?endpoint=http://host:port"));
    }
    let prefix = url.path().trim_matches('/');
    if !prefix.is_empty() && !plain_segments(prefix) {
        return Err(invalid(format!(
            "invalid s3 prefix {prefix:?}: use segments of 0-9, A-Z, a-z, '.', '_' and '-'"
        )));
    }

    let mut endpoint = None;
    let mut region = None;
    for (name, value) in url.query_pairs() {
        let slot = match name.as_ref() {
            "endpoint" => &mut endpoint,
            "region" => &mut region,
            other => {
                return Err(invalid(format!(
                    "unknown s3 url parameter {other:?}: only endpoint and region are supported"
                )));
            }
        };
        if slot.is_some() {
            return Err(invalid(format!("s3 url parameter {name:?} given twice")));
        }
        *slot = Some(value.into_owned());
    }
    if let Some(value) = &endpoint {
        let parsed = parse_url(value)?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid("s3 endpoint must be an http:// or https:// url"));
        }
        endpoint = Some(value.trim_end_matches('/').to_owned());
    }
    if let Some(value) = &region
        && (value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return Err(invalid(format!("invalid s3 region {value:?}")));
    }
    Ok(StoreUrl::S3 {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint,
        region,
    })
}

fn parse_memory(s: &str) -> Result<StoreUrl> {
    let url = parse_url(s)?;
    let name = url.host_str().unwrap_or_default();
    if name.is_empty() || !matches!(url.path(), "" | "/") || url.query().is_some() || url.port().is_some() {
        return Err(invalid("memory urls are memory://name"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(format!("invalid memory store name {name:?}")));
    }
    Ok(StoreUrl::Memory { name: name.to_owned() })
}

/// Whether `path` is `/`-separated segments of `[0-9A-Za-z._-]`, none
/// empty, `.` or `..`.
fn plain_segments(path: &str) -> bool {
    path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    })
}

fn parse_rest(s: &str) -> Result<StoreUrl> {
    let inner = s.get("rest+".len()..).unwrap_or_default();
    let url = parse_url(inner).map_err(|e| {
        if e.message().starts_with("credentials") {
            invalid("credentials in the url are not allowed: put the token in a file named by NFREPO_REST_TOKEN_FILE")
        } else {
            e
        }
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("rest url without a host: use rest+https://host:port/"));
    }
    if url.query().is_some() {
        return Err(invalid("rest urls take no query parameters"));
    }
    let path = url.path().trim_end_matches('/');
    let path_ok = path.is_empty() || path.strip_prefix('/').is_some_and(plain_segments);
    if !path_ok {
        return Err(invalid(format!(
            "invalid rest url path {path:?}: use segments of 0-9, A-Z, a-z, '.', '_' and '-'"
        )));
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(StoreUrl::Rest {
        endpoint: format!("{}://{host}{port}{path}", url.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(endpoint: &str) -> StoreUrl {
        StoreUrl::Rest {
            endpoint: endpoint.into(),
        }
    }

    fn s3(bucket: &str, prefix: &str, endpoint: Option<&str>, region: Option<&str>) -> StoreUrl {
        StoreUrl::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: endpoint.map(Into::into),
            region: region.map(Into::into),
        }
    }

    #[test]
    fn parses_good_urls() {
        let file = |p: &str| StoreUrl::File { path: PathBuf::from(p) };
        let cases = [
            ("file:///srv/repo", file("/srv/repo")),
            ("file:///srv/my%20repo", file("/srv/my repo")),
            ("file://localhost/srv/repo", file("/srv/repo")),
            ("/srv/repo", file("/srv/repo")),
            ("repo", file("repo")),
            ("./a/b", file("./a/b")),
            ("s3://bucket", s3("bucket", "", None, None)),
            ("s3://bucket/", s3("bucket", "", None, None)),
            ("s3://bucket/a/b/", s3("bucket", "a/b", None, None)),
            (
                "s3://nfrepo-test/ci?endpoint=http://127.0.0.1:18333&region=us-east-1",
                s3("nfrepo-test", "ci", Some("http://127.0.0.1:18333"), Some("us-east-1")),
            ),
            (
                "S3://b/p?region=eu-west-1&endpoint=https%3A%2F%2Fs3.example.com%2F",
                s3("b", "p", Some("https://s3.example.com"), Some("eu-west-1")),
            ),
            ("memory://t1", StoreUrl::Memory { name: "t1".into() }),
            ("rest+https://backup.example:8000/", rest("https://backup.example:8000")),
            ("rest+http://127.0.0.1:8000", rest("http://127.0.0.1:8000")),
            ("REST+HTTPS://[::1]:8000/nfrepo/", rest("https://[::1]:8000/nfrepo")),
            ("rest+https://backup.example", rest("https://backup.example")),
        ];
        for (input, expected) in cases {
            assert_eq!(StoreUrl::parse(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "file:///srv/repo",
            "relative/repo",
            "s3://bucket",
            "s3://bucket/a/b?endpoint=http://127.0.0.1:18333&region=us-east-1",
            "s3://bucket/a?region=us-east-1",
            "memory://t1",
            "rest+https://backup.example:8000/",
            "rest+http://127.0.0.1:8000/repo/",
        ] {
            let url = StoreUrl::parse(input).unwrap();
            assert_eq!(url.to_string(), input);
            assert_eq!(StoreUrl::parse(&url.to_string()).unwrap(), url);
        }
    }

    #[test]
    fn rejects_bad_urls() {
        for input in [
            "",
            "ftp://host/path",
            "gs://bucket",
            "s3://",
            "s3:///prefix",
            "s3://bucket:9000/p",
            "s3://bucket/p?endpont=http://x",
            "s3://bucket/p?region=a&region=b",
            "s3://bucket/p?endpoint=ftp://x",
            "s3://bucket/p?endpoint=notaurl",
            "s3://bucket/a//b",
            "s3://bucket/a b",
            "s3://bucket/p#frag",
            "file://otherhost/path",
            "file:///srv/repo?x=1",
            "memory://",
            "memory://a/b",
            "rest+ftp://host/",
            "rest+https://",
            "rest+https://host:notaport/",
            "rest+https://host/?token=x",
            "rest+https://host/a//b",
            "rest+https://host/#frag",
        ] {
            let err = StoreUrl::parse(input).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{input}");
        }
    }

    // Issue 12, item 5: plain http is for loopback only.
    #[test]
    fn insecure_endpoint_is_plain_http_off_this_machine() {
        let insecure = |input: &str| StoreUrl::parse(input).unwrap().insecure_endpoint().map(str::to_owned);
        for loopback in [
            "http://127.0.0.1:18333",
            "http://127.8.9.10",
            "http://localhost:9000",
            "http://LOCALHOST.",
            "http://s3.localhost:9000",
            "http://[::1]:9000",
            "http://[::ffff:127.0.0.1]:9000",
        ] {
            assert_eq!(insecure(&format!("s3://b/p?endpoint={loopback}")), None, "{loopback}");
            assert_eq!(insecure(&format!("rest+{loopback}/")), None, "{loopback}");
        }
        assert_eq!(
            insecure("rest+http://10.0.0.5:8000/").as_deref(),
            Some("http://10.0.0.5:8000")
        );
        assert_eq!(insecure("rest+https://10.0.0.5:8000/"), None);
        for remote in [
            "http://10.0.0.5:9000",
            "http://128.0.0.1",
            "http://s3.example.com",
            "http://localhost.example.com",
            "http://[::2]:9000",
            "http://[::ffff:10.0.0.1]:9000",
        ] {
            assert_eq!(
                insecure(&format!("s3://b/p?endpoint={remote}")).as_deref(),
                Some(remote.trim_end_matches('/')),
                "{remote}"
            );
        }
        for safe in [
            "s3://b/p?endpoint=https://s3.example.com",
            "s3://b/p",
            "/srv/repo",
            "memory://m",
        ] {
            assert_eq!(insecure(safe), None, "{safe}");
        }
    }

    #[test]
    fn errors_never_echo_secrets() {
        for input in [
            "s3://AKIAEXAMPLE:sup3rsecret@bucket/p",
            "s3://bucket/p?endpoint=http://user:sup3rsecret@host:9000",
            "rest+https://token:sup3rsecret@host:8000/",
        ] {
            let err = StoreUrl::parse(input).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl);
            assert!(!err.to_string().contains("sup3rsecret"), "{err}");
        }
    }
}
