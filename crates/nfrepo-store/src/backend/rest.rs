//! The client of nfrepo's REST protocol (`format-spec/server.md`): a
//! repository served by `nfrepo serve`, as `rest+https://host:port/`.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, TryStreamExt, stream};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, IF_NONE_MATCH, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};
use crate::lock::Retention;
use crate::pieces::Pieces;
use crate::rest::{
    ListingLine, NFREPO_REST_CA_FILE, NFREPO_REST_TOKEN_FILE, REST_API_PREFIX, REST_ERROR_HEADER, REST_MODIFIED_HEADER,
    REST_SIZE_HEADER, http_client, parse_listing_line, parse_modified, read_token_file, rest_error_kind,
};
use crate::store::{ByteStream, ListStream, PutMode, Store};

/// The longest error message kept from a server's response.
const MAX_MESSAGE: usize = 300;

/// A [`Store`] served over HTTP(S) by `nfrepo serve` (`nfrepo-server`).
///
/// Every call is one request; the server's store does the atomic work
/// ([`PutMode::CreateNew`] is its conditional create, sent as
/// `If-None-Match: *`). Reads and streamed writes pass bytes on without
/// holding the object; a streamed put whose body fails aborts the request,
/// so the server stores nothing. Errors keep their [`ErrorKind`] across the
/// wire (`nfrepo-error` header), so retries and classification work as on a
/// local store; an append-only server's refusal is [`ErrorKind::AppendOnly`].
///
/// The bearer token is sent only in the `Authorization` header, never in a
/// URL, and `Debug` redacts it. Redirects are never followed, so the token
/// goes to no other host. Object lock is not part of the protocol: the store
/// reports none, and the server refuses to serve a bucket that has it.
pub struct RestStore {
    location: String,
    /// `<endpoint>/v1`, without a trailing `/`.
    base: String,
    client: reqwest::Client,
    token: Option<Zeroizing<String>>,
}

impl fmt::Debug for RestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestStore")
            .field("location", &self.location)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl RestStore {
    /// A client of the server at `endpoint` (`http(s)://host:port[/path]`,
    /// as [`StoreUrl::Rest`](crate::StoreUrl::Rest) holds it), sending
    /// `token` if given, and trusting only the certificate authorities in
    /// the PEM file `ca_file` if given (else the system's).
    ///
    /// # Errors
    /// [`ErrorKind::Credentials`] for an unreadable or invalid CA file;
    /// [`ErrorKind::Other`] if the HTTP client cannot be built.
    pub fn new(endpoint: &str, token: Option<Zeroizing<String>>, ca_file: Option<&Path>) -> Result<Self> {
        let endpoint = endpoint.trim_end_matches('/');
        let location = format!("rest+{endpoint}/");
        let client = http_client(endpoint, ca_file, &location)?;
        Ok(Self {
            base: format!("{endpoint}{REST_API_PREFIX}"),
            location,
            client,
            token,
        })
    }

    /// [`RestStore::new`] with the token from the file `NFREPO_REST_TOKEN_FILE`
    /// names (none if unset: a server started with `--no-auth`) and the CA
    /// file `NFREPO_REST_CA_FILE` names.
    ///
    /// # Errors
    /// As [`RestStore::new`], and [`ErrorKind::Credentials`] for a token
    /// file that is unreadable, readable by others, or too short.
    pub fn from_env(endpoint: &str) -> Result<Self> {
        let token = match std::env::var_os(NFREPO_REST_TOKEN_FILE).filter(|v| !v.is_empty()) {
            Some(path) => Some(read_token_file(Path::new(&path))?),
            None => None,
        };
        let ca = std::env::var_os(NFREPO_REST_CA_FILE).filter(|v| !v.is_empty());
        Self::new(endpoint, token, ca.as_deref().map(Path::new))
    }

    fn object_url(&self, key: &ObjectKey) -> String {
        format!("{}/{}/{}", self.base, key.kind().prefix(), key.name())
    }

    fn request(&self, method: Method, url: String) -> RequestBuilder {
        let request = self.client.request(method, url);
        match &self.token {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {}", token.as_str())),
            None => request,
        }
    }

    /// Sends `request`; a response that is not a success becomes its error.
    async fn send(&self, request: RequestBuilder, key: Option<&ObjectKey>) -> Result<Response> {
        let response = request.send().await.map_err(|e| self.transport(e, key))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refusal(response, key).await)
    }

    fn with_subject(&self, err: Error, key: Option<&ObjectKey>) -> Error {
        let err = err.with_location(&self.location);
        match key {
            Some(key) => err.with_key(key),
            None => err,
        }
    }

    /// A request that got no (complete) response.
    fn transport(&self, err: reqwest::Error, key: Option<&ObjectKey>) -> Error {
        let (kind, what) = if is_tls_failure(&err) {
            // An untrusted certificate does not go away by retrying.
            (ErrorKind::Other, "tls handshake failed")
        } else if err.is_connect() {
            (ErrorKind::Unreachable, "server unreachable")
        } else if err.is_timeout() {
            (ErrorKind::Transient, "request timed out")
        } else {
            (ErrorKind::Transient, "request failed")
        };
        let cause = innermost(&err);
        self.with_subject(Error::new(kind, format!("{what}: {cause}")).with_source(err), key)
    }

    /// The error a server answered with: its `nfrepo-error` code, else the status.
    async fn refusal(&self, response: Response, key: Option<&ObjectKey>) -> Error {
        let status = response.status();
        let coded = response
            .headers()
            .get(REST_ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(rest_error_kind);
        let kind = coded.unwrap_or_else(|| kind_of_status(status));
        let text = response.text().await.unwrap_or_default();
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_MESSAGE)
            .collect();
        let text = text.trim();
        let message = match (kind, text.is_empty()) {
            (_, true) => format!("the server answered {status}"),
            (ErrorKind::PermissionDenied, false) if status == StatusCode::UNAUTHORIZED => {
                format!("permission denied by the server: {text}")
            }
            (_, false) => text.to_owned(),
        };
        self.with_subject(Error::new(kind, message), key)
    }

    fn body_failure(&self, err: reqwest::Error, key: &ObjectKey) -> Error {
        let cause = innermost(&err);
        self.with_subject(
            Error::new(ErrorKind::Transient, format!("response cut short: {cause}")).with_source(err),
            Some(key),
        )
    }
}

/// The class of a status the server sent without an `nfrepo-error` code
/// (a proxy in front of it, or a newer server's code this client does not know).
fn kind_of_status(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::PRECONDITION_FAILED => ErrorKind::AlreadyExists,
        StatusCode::RANGE_NOT_SATISFIABLE => ErrorKind::Corrupted,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Transient,
        s if s.is_server_error() => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// Whether the connection failed in its TLS handshake (an untrusted or
/// invalid certificate), which retrying does not change.
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        // rustls' own errors are private to the connector stack here; their
        // text ("invalid peer certificate: UnknownIssuer") is the stable part.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
            || e.to_string().contains("peer certificate")
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The deepest cause's text ("connection refused (os error 111)").
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = err;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    deepest.to_string()
}

fn header_u64(response: &Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// A listing's body as it arrives: whole lines parsed, a partial last one kept.
struct ListingBody {
    chunks: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    pending: Vec<u8>,
    ready: VecDeque<ObjectInfo>,
    seen: u64,
    end: Option<u64>,
    finished: bool,
}

impl ListingBody {
    /// Parses every complete line of what has arrived, with `chunk`.
    fn parse(&mut self, kind: ObjectKind, chunk: &[u8]) -> std::result::Result<(), String> {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(at) = self
            .pending
            .get(start..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let line = self.pending.get(start..start + at).unwrap_or_default();
            if self.end.is_some() {
                return Err("has lines after its end".into());
            }
            match std::str::from_utf8(line).ok().and_then(|l| parse_listing_line(kind, l)) {
                Some(ListingLine::Object(info)) => {
                    self.seen += 1;
                    self.ready.push_back(info);
                }
                Some(ListingLine::End(count)) => self.end = Some(count),
                None => return Err("has a malformed line".into()),
            }
            start += at + 1;
        }
        self.pending.drain(..start);
        Ok(())
    }
}

impl RestStore {
    fn listing_broken(&self, kind: ObjectKind, why: String) -> Error {
        self.with_subject(
            Error::new(ErrorKind::Transient, format!("listing of {kind}/ {why}")),
            None,
        )
    }
}

#[async_trait::async_trait]
impl Store for RestStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        let mut request = self
            .request(Method::PUT, self.object_url(key))
            .header(CONTENT_LENGTH, data.len())
            .body(data);
        if mode == PutMode::CreateNew {
            request = request.header(IF_NONE_MATCH, "*");
        }
        self.send(request, Some(key)).await.map(drop)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let response = self
            .send(self.request(Method::GET, self.object_url(key)), Some(key))
            .await?;
        response.bytes().await.map_err(|e| self.body_failure(e, key))
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        self.get_range_pieces(key, range).await.map(Pieces::into_bytes)
    }

    /// The response body's frames as they came (see [`Pieces`]); a body
    /// longer than the range is refused as soon as it runs past it.
    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        if range.start > range.end {
            return Err(self.with_subject(
                Error::new(
                    ErrorKind::Other,
                    format!("invalid range {}..{}", range.start, range.end),
                ),
                Some(key),
            ));
        }
        if range.is_empty() {
            // Still report a missing object as missing.
            self.stat(key).await?;
            return Ok(Pieces::default());
        }
        let request = self
            .request(Method::GET, self.object_url(key))
            .header(RANGE, format!("bytes={}-{}", range.start, range.end - 1));
        let mut response = self.send(request, Some(key)).await?;
        let partial = response.status() == StatusCode::PARTIAL_CONTENT;
        let expected = range.end - range.start;
        let mut parts = Vec::new();
        let mut received = 0u64;
        while received <= expected
            && let Some(part) = response.chunk().await.map_err(|e| self.body_failure(e, key))?
        {
            received += part.len() as u64;
            parts.push(part);
        }
        if !partial || received != expected {
            return Err(self.with_subject(
                Error::new(
                    ErrorKind::Corrupted,
                    if received > expected {
                        format!(
                            "the server answered the range {}..{} with more than its {expected} bytes",
                            range.start, range.end
                        )
                    } else {
                        format!(
                            "object is shorter than the requested range {}..{}: got {received} of {expected} bytes",
                            range.start, range.end
                        )
                    },
                ),
                Some(key),
            ));
        }
        Ok(Pieces::from_parts(parts))
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let response = self
            .send(self.request(Method::HEAD, self.object_url(key)), Some(key))
            .await?;
        let size = header_u64(&response, REST_SIZE_HEADER).ok_or_else(|| {
            self.with_subject(
                Error::new(
                    ErrorKind::Other,
                    format!("the server sent no valid {REST_SIZE_HEADER} header"),
                ),
                Some(key),
            )
        })?;
        let last_modified = response
            .headers()
            .get(REST_MODIFIED_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_modified);
        Ok(ObjectInfo {
            key: key.clone(),
            size,
            last_modified,
        })
    }

    /// Parsed as the body arrives; the end line's count is checked at the end.
    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
        stream::once(async move {
            let url = format!("{}/{}", self.base, kind.prefix());
            let response = self.send(self.request(Method::GET, url), None).await?;
            let lines = ListingBody {
                chunks: response.bytes_stream().boxed(),
                pending: Vec::new(),
                ready: VecDeque::new(),
                seen: 0,
                end: None,
                finished: false,
            };
            Ok(stream::try_unfold(lines, move |mut lines| async move {
                loop {
                    if let Some(info) = lines.ready.pop_front() {
                        return Ok(Some((info, lines)));
                    }
                    if lines.finished {
                        return match lines.end {
                            Some(count) if count == lines.seen && lines.pending.is_empty() => Ok(None),
                            Some(count) => {
                                Err(self
                                    .listing_broken(kind, format!("announced {count} objects and sent {}", lines.seen)))
                            }
                            None => Err(self.listing_broken(kind, "was cut short (no end line)".into())),
                        };
                    }
                    match lines.chunks.next().await {
                        Some(Ok(chunk)) => lines
                            .parse(kind, &chunk)
                            .map_err(|why| self.listing_broken(kind, why))?,
                        Some(Err(e)) => {
                            return Err(self.listing_broken(kind, format!("cut short: {}", innermost(&e))));
                        }
                        None => lines.finished = true,
                    }
                }
            }))
        })
        .try_flatten()
        .boxed()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.send(self.request(Method::DELETE, self.object_url(key)), Some(key))
            .await
            .map(drop)
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        Ok(false)
    }

    async fn set_retention(&self, key: &ObjectKey, _retention: Retention) -> Result<()> {
        Err(crate::store::no_object_lock(key).with_location(&self.location))
    }

    async fn purge(&self, _key: &ObjectKey) -> Result<()> {
        Ok(())
    }

    async fn list_purgeable(&self, _kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(Vec::new())
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream<'static>> {
        let response = self
            .send(self.request(Method::GET, self.object_url(key)), Some(key))
            .await?;
        let (key, location) = (key.clone(), self.location.clone());
        Ok(response
            .bytes_stream()
            .map_err(move |e| {
                Error::new(ErrorKind::Transient, format!("response cut short: {}", innermost(&e)))
                    .with_source(e)
                    .with_key(&key)
                    .with_location(&location)
            })
            .boxed())
    }

    async fn put_stream(&self, key: &ObjectKey, mut body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
        // The request body must be `'static` and `body` borrows: a pump in
        // this task feeds it through a small channel. If `body` fails, the
        // pump ends the request body with an error, the request is aborted
        // and the server (which sees an incomplete body) stores nothing.
        let (mut tx, rx) = futures::channel::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(2);
        let mut request = self
            .request(Method::PUT, self.object_url(key))
            .body(reqwest::Body::wrap_stream(rx));
        if mode == PutMode::CreateNew {
            request = request.header(IF_NONE_MATCH, "*");
        }
        let pump = async move {
            let mut total = 0u64;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        total += chunk.len() as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            // The request ended early; its own result says why.
                            return Ok(total);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other("the upload's body failed"))).await;
                        return Err(e);
                    }
                }
            }
            Ok(total)
        };
        let (sent, pumped) = futures::join!(self.send(request, Some(key)), pump);
        let total = pumped.map_err(|e| self.with_subject(e, Some(key)))?;
        sent?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `206` and `body`.
    async fn answering(body: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn a_body_longer_or_shorter_than_the_range_is_refused() {
        let key = ObjectKey::new(ObjectKind::Data, "ab".repeat(32)).unwrap();
        let long = RestStore::new(&answering(b"0123456789abcdefghij").await, None, None).unwrap();
        let err = long.get_range_pieces(&key, 0..10).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        assert!(err.to_string().contains("more than its 10 bytes"), "{err}");
        let short = RestStore::new(&answering(b"01234").await, None, None).unwrap();
        let err = short.get_range(&key, 0..10).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        assert!(err.to_string().contains("got 5 of 10 bytes"), "{err}");
        let exact = RestStore::new(&answering(b"0123456789").await, None, None).unwrap();
        assert_eq!(
            exact.get_range(&key, 0..10).await.unwrap(),
            Bytes::from_static(b"0123456789")
        );
    }
}
