//! The S3 requests OpenDAL 0.59 has no call for: object-lock retention and the
//! bucket's object-lock configuration.
//!
//! Each request is built here, signed with AWS SigV4 by `reqsign-aws-v4` (the
//! signer OpenDAL's own S3 service uses) and sent through OpenDAL's installed
//! HTTP transport, so it shares OpenDAL's connection pool and TLS settings.
//! Requests are path-style, like the operator's (`{endpoint}/{bucket}/{key}`).

use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use md5::Digest as _;
use reqsign_core::{Context, SignRequestDyn as _};

use crate::credentials::Credentials;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{Retention, RetentionMode};

/// Signs and sends object-lock requests for one bucket and prefix.
pub(crate) struct S3Api {
    endpoint: String,
    bucket: String,
    root: String,
    signer: reqsign_aws_v4::RequestSigner,
    credential: reqsign_aws_v4::Credential,
    transport: opendal::HttpTransporter,
}

impl std::fmt::Debug for S3Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Api")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl S3Api {
    pub(crate) fn new(bucket: &str, prefix: &str, endpoint: Option<&str>, region: &str, creds: &Credentials) -> Self {
        let endpoint = endpoint.map_or_else(|| format!("https://s3.{region}.amazonaws.com"), str::to_owned);
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            root: prefix.trim_matches('/').to_owned(),
            signer: reqsign_aws_v4::RequestSigner::new("s3", region),
            credential: reqsign_aws_v4::Credential {
                access_key_id: creds.access_key_id().to_owned(),
                secret_access_key: creds.secret_access_key().to_owned(),
                session_token: creds.session_token().map(str::to_owned),
                expires_in: None,
            },
            transport: opendal::HttpTransporter::default(),
        }
    }

    /// `{endpoint}/{bucket}/{root}/{path}`; object paths are made of
    /// `[0-9a-z/._-]` (`ObjectKey`), which need no percent-encoding.
    fn object_url(&self, path: &str, query: &str) -> String {
        let mut url = format!("{}/{}/", self.endpoint, self.bucket);
        if !self.root.is_empty() {
            url.push_str(&self.root);
            url.push('/');
        }
        url.push_str(path);
        url.push('?');
        url.push_str(query);
        url
    }

    /// Whether the bucket has Object Lock enabled (`GetObjectLockConfiguration`).
    pub(crate) async fn lock_enabled(&self) -> Result<bool> {
        let url = format!("{}/{}?object-lock=", self.endpoint, self.bucket);
        let (status, body) = self.send(Method::GET, &url, Bytes::new()).await?;
        match status {
            StatusCode::OK => Ok(xml_field(&body, "ObjectLockEnabled").as_deref() == Some("Enabled")),
            StatusCode::NOT_FOUND if s3_code(&body).as_deref() != Some("NoSuchBucket") => Ok(false),
            _ => Err(status_error(status, &body, "get object lock configuration")),
        }
    }

    /// `PutObjectRetention` on `path` (its current version unless `version`).
    pub(crate) async fn put_retention(&self, path: &str, version: Option<&str>, retention: Retention) -> Result<()> {
        let body = Bytes::from(format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode_name(retention.mode),
            format_date(retention.until)
        ));
        let url = self.object_url(path, &version_query("retention=", version));
        let (status, reply) = self.send(Method::PUT, &url, body).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(status_error(status, &reply, "put object retention"))
    }

    /// `GetObjectRetention`: the retain-until date of `path` (its current
    /// version unless `version`), `None` when it has no retention.
    pub(crate) async fn retention(&self, path: &str, version: Option<&str>) -> Result<Option<SystemTime>> {
        let url = self.object_url(path, &version_query("retention=", version));
        let (status, body) = self.send(Method::GET, &url, Bytes::new()).await?;
        match status {
            StatusCode::OK => match xml_field(&body, "RetainUntilDate") {
                Some(date) => parse_date(&date).map(Some),
                None => Ok(None),
            },
            StatusCode::NOT_FOUND if s3_code(&body).as_deref() == Some("NoSuchObjectLockConfiguration") => Ok(None),
            _ => Err(status_error(status, &body, "get object retention")),
        }
    }

    async fn send(&self, method: Method, url: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
        let sha256 = hex::encode(sha2::Sha256::digest(&body));
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header("x-amz-content-sha256", sha256)
            .header(http::header::CONTENT_LENGTH, body.len());
        if !body.is_empty() {
            // Object-lock writes must carry an integrity header (Content-MD5).
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
            builder = builder.header("content-md5", md5);
        }
        let request = builder
            .body(opendal::Buffer::from(body))
            .map_err(|e| Error::new(ErrorKind::Other, format!("cannot build s3 request: {e}")))?;
        let (mut parts, body) = request.into_parts();
        self.signer
            .sign_request_dyn(&Context::new(), &mut parts, Some(&self.credential), None)
            .await
            .map_err(|e| Error::new(ErrorKind::Credentials, format!("cannot sign s3 request: {e}")))?;
        let response = self
            .transport
            .send(Request::from_parts(parts, body))
            .await
            .map_err(Error::from_opendal)?;
        Ok((response.status(), response.into_body().to_bytes()))
    }
}

fn version_query(base: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{base}&versionId={}", percent_encode(v)),
        None => base.to_owned(),
    }
}

/// Version ids are opaque strings; encode everything but unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn mode_name(mode: RetentionMode) -> &'static str {
    match mode {
        RetentionMode::Governance => "GOVERNANCE",
        RetentionMode::Compliance => "COMPLIANCE",
    }
}

/// ISO 8601 in UTC with whole seconds, the form every S3 server accepts.
fn format_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_date(s: &str) -> Result<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(SystemTime::from)
        .map_err(|e| {
            Error::new(
                ErrorKind::Other,
                format!("s3 returned an unreadable retain-until date {s:?}: {e}"),
            )
        })
}

/// The text of the first `<name>…</name>` element in an S3 XML reply. These
/// replies are a handful of flat elements; a full XML parser buys nothing.
fn xml_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text.get(start..)?.find(&format!("</{name}>"))?;
    text.get(start..start + len).map(str::to_owned)
}

fn s3_code(body: &[u8]) -> Option<String> {
    xml_field(body, "Code")
}

fn status_error(status: StatusCode, body: &[u8], what: &str) -> Error {
    let kind = match status {
        StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::TOO_MANY_REQUESTS => ErrorKind::Transient,
        s if s.is_server_error() => ErrorKind::Transient,
        _ => ErrorKind::Other,
    };
    let detail = match (s3_code(body), xml_field(body, "Message")) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code,
        _ => format!("http {}", status.as_u16()),
    };
    Error::new(kind, format!("{what}: {detail}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_round_trip_in_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(format_date(t), "2027-01-15T08:00:00Z");
        assert_eq!(parse_date("2027-01-15T08:00:00Z").unwrap(), t);
        assert_eq!(parse_date("2027-01-15T08:00:00.000Z").unwrap(), t);
        assert_eq!(parse_date("nonsense").unwrap_err().kind(), ErrorKind::Other);
    }

    #[test]
    fn reads_flat_xml_fields() {
        let body =
            b"<Retention><Mode>COMPLIANCE</Mode><RetainUntilDate>2027-01-15T08:00:00Z</RetainUntilDate></Retention>";
        assert_eq!(xml_field(body, "Mode").as_deref(), Some("COMPLIANCE"));
        assert_eq!(xml_field(body, "Missing"), None);
        let err = status_error(
            StatusCode::FORBIDDEN,
            b"<Error><Code>AccessDenied</Code><Message>Access Denied.</Message></Error>",
            "put object retention",
        );
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert_eq!(err.message(), "put object retention: AccessDenied: Access Denied.");
    }

    #[test]
    fn version_ids_are_encoded() {
        assert_eq!(
            version_query("retention=", Some("a+b/c")),
            "retention=&versionId=a%2Bb%2Fc"
        );
        assert_eq!(version_query("retention=", None), "retention=");
    }
}
