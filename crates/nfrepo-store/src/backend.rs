//! The OpenDAL-backed [`Store`] for local directories and S3, and [`open`].

mod local;
mod rest;
mod s3api;
mod versions;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use opendal::services::{Fs, S3};
use opendal::{Buffer, Operator};

use crate::credentials::Credentials;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{ObjectInfo, ObjectKey, ObjectKind};
use crate::location::StoreUrl;
use crate::lock::Retention;
use crate::memory::MemoryStore;
use crate::pieces::Pieces;
use crate::store::{ByteStream, ListStream, PutMode, STREAM_PART_SIZE, Store};

pub use rest::RestStore;

/// The signing region when the URL names none.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// How [`open`] and [`s3_bucket_operator`] may reach a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Allow an S3 endpoint over plain `http://` on a host that is not a
    /// loopback address ([`StoreUrl::insecure_endpoint`]). Off by default:
    /// such a store is refused with [`ErrorKind::InsecureTransport`].
    pub allow_insecure_http: bool,
}

impl OpenOptions {
    /// Sets [`OpenOptions::allow_insecure_http`].
    #[must_use]
    pub const fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Refuses `url` if it is reached over plain http off this machine and
    /// that is not allowed. Every URL that becomes a store passes here.
    ///
    /// # Errors
    /// [`ErrorKind::InsecureTransport`] naming the endpoint (which never holds credentials).
    pub fn check(&self, url: &StoreUrl) -> Result<()> {
        match url.insecure_endpoint() {
            Some(endpoint) if !self.allow_insecure_http => Err(Error::new(
                ErrorKind::InsecureTransport,
                format!(
                    "refusing plain http:// endpoint {endpoint}: only loopback addresses may use http, use https://"
                ),
            )
            .with_location(url.to_string())),
            _ => Ok(()),
        }
    }
}

/// Opens the store at `url`. No I/O happens until the first operation.
///
/// - `file://` (or a bare path): the directory need not exist; the first `put`
///   creates it, and reads before that report [`ErrorKind::NotFound`].
/// - `s3://`: path-style requests, region [`DEFAULT_S3_REGION`] unless given, and
///   only `creds`: `~/.aws` files, `AWS_*` variables and instance metadata are never
///   consulted here (use [`Credentials::from_env`] to read the environment).
///   OpenDAL's own retry layer is not installed; wrap the result in a
///   [`RetryStore`](crate::RetryStore) so retries are counted and bounded in one place.
/// - `memory://name`: a [`MemoryStore`]; the same name returns the same objects for
///   the life of the process.
/// - `rest+https://host:port/` (or `rest+http://`): a [`RestStore`], a
///   repository served by `nfrepo serve`, with the bearer token from the file
///   `NFREPO_REST_TOKEN_FILE` names ([`RestStore::from_env`]); `creds` are not used.
///
/// # Errors
///
/// [`ErrorKind::InsecureTransport`] for plain http off this machine that `options`
/// does not allow, [`ErrorKind::Credentials`] for S3 without credentials,
/// [`ErrorKind::Other`] if OpenDAL rejects the configuration.
pub fn open(url: &StoreUrl, creds: &Credentials, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    options.check(url)?;
    let location = url.to_string();
    Ok(match url {
        StoreUrl::File { path } => {
            let root = std::path::absolute(path)
                .map_err(|e| Error::from_io(e, "cannot resolve repository path").with_location(&location))?;
            Arc::new(OpendalStore::local(root))
        }
        StoreUrl::S3 {
            bucket,
            prefix,
            endpoint,
            region,
        } => {
            let op = s3_operator(bucket, prefix, endpoint.as_deref(), region.as_deref(), creds)
                .map_err(|e| e.with_location(&location))?;
            let api = s3api::S3Api::new(
                bucket,
                prefix,
                endpoint.as_deref(),
                region.as_deref().unwrap_or(DEFAULT_S3_REGION),
                creds,
            );
            let mut store = OpendalStore::new(op, location);
            store.s3 = Some(api);
            Arc::new(store)
        }
        StoreUrl::Memory { name } => Arc::new(MemoryStore::named(name)),
        StoreUrl::Rest { endpoint } => Arc::new(RestStore::from_env(endpoint)?),
    })
}

/// A raw OpenDAL operator on an S3 bucket and prefix, for reading or
/// writing arbitrary objects (bucket sources and restores), not repository
/// objects. Credentials and `options` as for [`open`].
///
/// # Errors
/// [`ErrorKind::InvalidUrl`] for a URL that is not `s3://`;
/// [`ErrorKind::InsecureTransport`] as for [`open`];
/// [`ErrorKind::Credentials`] without credentials; [`ErrorKind::Other`] if
/// OpenDAL rejects the configuration.
pub fn s3_bucket_operator(url: &StoreUrl, creds: &Credentials, options: &OpenOptions) -> Result<Operator> {
    options.check(url)?;
    match url {
        StoreUrl::S3 {
            bucket,
            prefix,
            endpoint,
            region,
        } => s3_operator(bucket, prefix, endpoint.as_deref(), region.as_deref(), creds)
            .map_err(|e| e.with_location(url.to_string())),
        _ => Err(Error::new(ErrorKind::InvalidUrl, format!("{url} is not an s3:// URL"))),
    }
}

fn s3_operator(
    bucket: &str,
    prefix: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    creds: &Credentials,
) -> Result<Operator> {
    if creds.is_empty() {
        return Err(Error::new(
            ErrorKind::Credentials,
            "no s3 credentials: set NFREPO_S3_ACCESS_KEY_ID and NFREPO_S3_SECRET_ACCESS_KEY \
             (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or NFREPO_S3_CREDENTIALS_FILE)",
        ));
    }
    // The workspace disables opendal's auto-registration, so the HTTP transport
    // must be installed by hand. Idempotent.
    opendal::install_default();
    let mut builder = S3::default()
        .bucket(bucket)
        .root(&format!("/{prefix}"))
        .region(region.unwrap_or(DEFAULT_S3_REGION))
        .access_key_id(creds.access_key_id())
        .secret_access_key(creds.secret_access_key())
        .disable_config_load()
        .disable_ec2_metadata();
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint(endpoint);
    }
    if let Some(token) = creds.session_token() {
        builder = builder.session_token(token);
    }
    // An HTTP client of its own, not the process-wide default: a pooled
    // connection belongs to the tokio runtime that opened it, and one shared
    // across runtimes (a process that runs several, as a test binary does)
    // fails with "runtime dropped the dispatch task" once that runtime ends.
    let transport = opendal::HttpTransporter::new(opendal_http_transport_reqwest::ReqwestTransport::new(
        http_client_for(endpoint)?,
    ));
    let context = opendal::OperationContext::new().with_http_transport(transport);
    Ok(Operator::new(builder)
        .map_err(Error::from_opendal)?
        .with_context(context))
}

/// The HTTP client of an S3 operator. A plain `http://` endpoint (a bucket
/// server on the same host or network) never speaks TLS, so its client
/// trusts no certificate authority instead of loading the system's: that
/// load was about 6 ms of every command's 33 ms (`nfrepo snapshots` on a
/// loopback SeaweedFS, hyperfine, 30 runs). Anything else gets the default
/// client, which verifies against the system's authorities.
fn http_client_for(endpoint: Option<&str>) -> Result<reqwest::Client> {
    match endpoint {
        Some(endpoint) if endpoint.starts_with("http://") => reqwest::Client::builder()
            .tls_certs_only(Vec::new())
            .build()
            .map_err(|e| Error::new(ErrorKind::Other, format!("cannot build the HTTP client: {e}")).with_source(e)),
        _ => Ok(reqwest::Client::new()),
    }
}

/// A [`Store`] on an OpenDAL [`Operator`].
///
/// Atomicity: on S3 every put is a single `PUT` (with `If-None-Match: *` for
/// [`PutMode::CreateNew`]); a streamed put ([`Store::put_stream`]) of more
/// than one part is a multipart upload, which S3 makes visible only at its
/// `CompleteMultipartUpload` (sent with the same `If-None-Match: *`), and
/// which is aborted when the body fails; in memory, a map insert under a lock. For a local
/// directory, puts bypass OpenDAL and write a temp file, fsync it, then link
/// (`CreateNew`) or rename (`Overwrite`) it into place and fsync the directory, so a
/// crash never leaves a partial object and two concurrent `CreateNew` puts never both
/// succeed. Whole-object and ranged reads and listings of a local directory are one
/// blocking call each (no hop to the blocking pool per file, and no pool of
/// read buffers kept alive); streamed reads, stats and deletes go through
/// OpenDAL everywhere.
#[derive(Debug)]
pub struct OpendalStore {
    location: String,
    /// Built lazily for a local directory, which may not exist yet.
    op: OnceLock<Operator>,
    /// Set for local directories: puts take the atomic local path.
    local_root: Option<PathBuf>,
    /// Set for S3 stores made by [`open`]: the object-lock calls.
    s3: Option<s3api::S3Api>,
}

impl OpendalStore {
    /// Wraps an existing operator; `location` names it in messages and must hold no
    /// credentials. An `fs` operator gets the same atomic local puts as [`OpendalStore::local`].
    pub fn new(op: Operator, location: impl Into<String>) -> Self {
        let info = op.info();
        let local_root = (info.scheme() == "fs").then(|| PathBuf::from(info.root()));
        Self {
            location: location.into(),
            op: OnceLock::from(op),
            local_root,
            s3: None,
        }
    }

    /// A store in the local directory `root`, which is created by the first put.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            location: StoreUrl::File { path: root.clone() }.to_string(),
            op: OnceLock::new(),
            local_root: Some(root),
            s3: None,
        }
    }

    /// The operator, or `None` for a local directory that does not exist yet.
    ///
    /// Callers that find none build one each and the first stored wins: no
    /// caller waits for another's build, which an async once-cell would
    /// make them do, so a first call set aside unpolled (a read a buffered
    /// stream started) cannot hold up every other: the shape of the restore
    /// hang fixed in the engine's tree-pack blocks and index recovery.
    async fn operator(&self) -> Result<Option<&Operator>> {
        if let Some(op) = self.op.get() {
            return Ok(Some(op));
        }
        let Some(root) = &self.local_root else {
            return Err(Error::new(ErrorKind::Other, "store has no operator").with_location(&self.location));
        };
        match tokio::fs::try_exists(root).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                return Err(Error::from_io(e, "cannot access repository directory").with_location(&self.location));
            }
        }
        let built = local_operator(root.clone())
            .await
            .map_err(|e| e.with_location(&self.location))?;
        Ok(Some(self.op.get_or_init(|| built)))
    }

    /// `range` of an object for [`Store::get_range`] and
    /// [`Store::get_range_pieces`]: a local directory's in one buffer, or
    /// with `pieces` in pieces (`local::get_range`); an S3 response's frames.
    async fn read_range(&self, key: &ObjectKey, range: Range<u64>, pieces: bool) -> Result<Pieces> {
        if range.start > range.end {
            return Err(Error::new(
                ErrorKind::Other,
                format!("invalid range {}..{}", range.start, range.end),
            )
            .with_key(key));
        }
        if range.is_empty() {
            // Still report a missing object as missing.
            self.stat(key).await?;
            return Ok(Pieces::default());
        }
        let Some(op) = self.operator().await? else {
            return Err(self.not_found(key));
        };
        let short = |detail: String| short_range(key, &self.location, &range, &detail);
        let expected = range.end - range.start;
        if let Some(root) = &self.local_root {
            let pieces = local::get_range(root.clone(), key.path(), range.clone(), pieces)
                .await
                .map_err(|e| e.with_key(key).with_location(&self.location))?;
            if pieces.len() as u64 != expected {
                return Err(short(format!("got {} of {expected} bytes", pieces.len())));
            }
            return Ok(pieces);
        }
        let buffer = match op.read_with(&key.path()).range(range.clone()).await {
            Ok(buffer) => buffer,
            Err(e) => {
                let err = self.fail(e, key);
                // OpenDAL reports a short ranged read as a generic error; the object's
                // size tells whether the range ran past its end.
                if err.kind() == ErrorKind::Other
                    && let Ok(info) = self.stat(key).await
                    && info.size < range.end
                {
                    return Err(short(format!("it has {} bytes", info.size)).with_source(err));
                }
                return Err(err);
            }
        };
        if buffer.len() as u64 != expected {
            return Err(short(format!("got {} of {expected} bytes", buffer.len())));
        }
        Ok(Pieces::from_parts(buffer))
    }

    fn fail(&self, err: opendal::Error, key: &ObjectKey) -> Error {
        Error::from_opendal(err).with_key(key).with_location(&self.location)
    }

    /// The S3 object-lock calls and the operator, or the error for a store without them.
    fn lock_api(&self, key: Option<&ObjectKey>) -> Result<(&s3api::S3Api, &Operator)> {
        match (&self.s3, self.op.get()) {
            (Some(api), Some(op)) => Ok((api, op)),
            _ => {
                let err =
                    Error::new(ErrorKind::Other, "object lock needs an s3:// repository").with_location(&self.location);
                Err(match key {
                    Some(key) => err.with_key(key),
                    None => err,
                })
            }
        }
    }

    /// The listing of `kind` (not the config), in ascending name order:
    /// S3 lists keys in that order, so its recursive lister is passed on as
    /// it pages; other services (a directory) are walked one directory at a
    /// time, each sorted.
    async fn lister(&self, kind: ObjectKind) -> Result<ListStream<'_>> {
        if let Some(root) = &self.local_root {
            let listed = local::list(root.clone(), kind)
                .await
                .map_err(|e| e.with_location(&self.location))?;
            return Ok(stream::iter(listed).map(Ok).boxed());
        }
        let Some(op) = self.operator().await? else {
            return Ok(stream::empty().boxed());
        };
        let prefix = format!("{}/", kind.prefix());
        if op.info().scheme() == "s3" {
            let lister = match op.lister_with(&prefix).recursive(true).await {
                Ok(lister) => lister,
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(stream::empty().boxed()),
                Err(e) => return Err(Error::from_opendal(e).with_location(&self.location)),
            };
            return Ok(lister
                .map_err(|e| Error::from_opendal(e).with_location(&self.location))
                .try_filter_map(move |entry| self.entry_info(kind, entry))
                .boxed());
        }
        let dirs = if kind.is_fanned_out() {
            let mut dirs: Vec<String> = self
                .list_dir(op, &prefix)
                .await?
                .into_iter()
                .filter(|entry| entry.metadata().is_dir() && entry.path() != prefix)
                .map(|entry| entry.path().to_owned())
                .collect();
            dirs.sort();
            dirs
        } else {
            vec![prefix]
        };
        Ok(stream::iter(dirs)
            .then(move |dir| async move {
                let mut files = self.list_dir(op, &dir).await?;
                files.retain(|entry| !entry.metadata().is_dir());
                files.sort_by(|a, b| a.name().cmp(b.name()));
                Ok::<_, Error>(stream::iter(files).map(Ok))
            })
            .try_flatten()
            .try_filter_map(move |entry| self.entry_info(kind, entry))
            .boxed())
    }

    /// The entries directly in `dir` (a missing one is empty).
    async fn list_dir(&self, op: &Operator, dir: &str) -> Result<Vec<opendal::Entry>> {
        match op.list(dir).await {
            Ok(entries) => Ok(entries),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::from_opendal(e).with_location(&self.location)),
        }
    }

    /// The listing entry of an object of `kind`; `None` for directories,
    /// stray names and objects gone since they were listed.
    async fn entry_info(&self, kind: ObjectKind, entry: opendal::Entry) -> Result<Option<ObjectInfo>> {
        let meta = entry.metadata();
        if meta.is_dir() {
            return Ok(None);
        }
        let Some(key) = ObjectKey::from_path(kind, entry.path()) else {
            return Ok(None);
        };
        if meta.is_file() {
            return Ok(Some(info_from(key, meta)));
        }
        // Some services (memory) list names without sizes.
        match self.stat(&key).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn not_found(&self, key: &ObjectKey) -> Error {
        Error::new(ErrorKind::NotFound, "object not found")
            .with_key(key)
            .with_location(&self.location)
    }
}

/// Feeds `body` to `writer` in parts of exactly [`STREAM_PART_SIZE`] bytes
/// (the last one shorter), without copying, and returns the bytes written.
/// The first error (the body's or the upload's) stops it; the caller aborts.
async fn write_parts(writer: &mut opendal::Writer, mut body: ByteStream<'_>) -> Result<u64> {
    let mut part: Vec<Bytes> = Vec::new();
    let mut filled = 0;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk?;
        total += chunk.len() as u64;
        while !chunk.is_empty() {
            let take = (STREAM_PART_SIZE - filled).min(chunk.len());
            part.push(chunk.split_to(take));
            filled += take;
            if filled == STREAM_PART_SIZE {
                writer
                    .write(Buffer::from(std::mem::take(&mut part)))
                    .await
                    .map_err(Error::from_opendal)?;
                filled = 0;
            }
        }
    }
    if filled > 0 {
        writer.write(Buffer::from(part)).await.map_err(Error::from_opendal)?;
    }
    Ok(total)
}

async fn local_operator(root: PathBuf) -> Result<Operator> {
    let root = path_str(&root)?.to_owned();
    tokio::task::spawn_blocking(move || Operator::new(Fs::default().root(&root)))
        .await
        .map_err(|e| Error::new(ErrorKind::Other, format!("open task failed: {e}")).with_source(e))?
        .map_err(Error::from_opendal)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidUrl,
            format!("repository path is not valid utf-8: {}", path.display()),
        )
    })
}

fn info_from(key: ObjectKey, meta: &opendal::Metadata) -> ObjectInfo {
    ObjectInfo {
        key,
        size: meta.content_length(),
        last_modified: meta.last_modified().map(Into::into),
    }
}

/// `Corrupted`: `key` ends before `range` does (`detail` says how far).
fn short_range(key: &ObjectKey, location: &str, range: &Range<u64>, detail: &str) -> Error {
    Error::new(
        ErrorKind::Corrupted,
        format!(
            "object is shorter than the requested range {}..{}: {detail}",
            range.start, range.end
        ),
    )
    .with_key(key)
    .with_location(location)
}

#[async_trait::async_trait]
impl Store for OpendalStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        if let Some(root) = &self.local_root {
            return local::put(root.clone(), key.path(), data, mode)
                .await
                .map_err(|e| e.with_key(key).with_location(&self.location));
        }
        let Some(op) = self.operator().await? else {
            return Err(self.not_found(key));
        };
        let path = key.path();
        let write = op.write_with(&path, data);
        let written = match mode {
            PutMode::CreateNew => write.if_not_exists(true).await,
            PutMode::Overwrite => write.await,
        };
        written.map(drop).map_err(|e| self.fail(e, key))
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        if let Some(root) = &self.local_root {
            return local::get(root.clone(), key.path())
                .await
                .map_err(|e| e.with_key(key).with_location(&self.location));
        }
        let Some(op) = self.operator().await? else {
            return Err(self.not_found(key));
        };
        let buffer = op.read(&key.path()).await.map_err(|e| self.fail(e, key))?;
        Ok(buffer.to_bytes())
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        self.read_range(key, range, false).await.map(Pieces::into_bytes)
    }

    /// The response's frames as they came (see [`Pieces`]); a local
    /// directory's range in pieces of at most 512 KiB (`local::get_range`).
    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        self.read_range(key, range, true).await
    }

    /// On S3, one ranged request whose response frames are yielded as they
    /// arrive; a local directory's range is read whole, in pieces.
    async fn get_range_stream(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteStream<'static>> {
        if self.local_root.is_some() || range.start >= range.end {
            let pieces = self.read_range(key, range, true).await?;
            return Ok(pieces.into_stream());
        }
        let Some(op) = self.operator().await? else {
            return Err(self.not_found(key));
        };
        let reader = op.reader(&key.path()).await.map_err(|e| self.fail(e, key))?;
        let buffers = reader.into_stream(range.clone()).await.map_err(|e| self.fail(e, key))?;
        let (owned_key, location) = (key.clone(), self.location.clone());
        let frames: ByteStream<'static> = buffers
            .map_err(move |e| Error::from_opendal(e).with_key(&owned_key).with_location(&location))
            .map_ok(|buffer| stream::iter(Iterator::map(buffer, Ok)))
            .try_flatten()
            .boxed();
        // A response of another length than asked for ends with an error.
        let (op, path, end) = (op.clone(), key.path(), range.end);
        let (key, location, expected) = (key.clone(), self.location.clone(), range.end - range.start);
        let wrong_length = move |got: u64| {
            if got < expected {
                return short_range(&key, &location, &range, &format!("got {got} of {expected} bytes"));
            }
            let longer = format!(
                "the answer to the ranged read {}..{} is longer than the {expected} bytes asked for",
                range.start, range.end
            );
            Error::new(ErrorKind::Corrupted, longer)
                .with_key(&key)
                .with_location(&location)
        };
        Ok(stream::unfold((frames, 0u64, false), move |(mut frames, seen, ended)| {
            let (wrong_length, op, path) = (wrong_length.clone(), op.clone(), path.clone());
            async move {
                if ended {
                    return None;
                }
                match frames.next().await {
                    Some(Ok(frame)) => {
                        let seen = seen + frame.len() as u64;
                        let item = if seen > expected {
                            Err(wrong_length(seen))
                        } else {
                            Ok(frame)
                        };
                        let ended = item.is_err();
                        Some((item, (frames, seen, ended)))
                    }
                    // OpenDAL reports a response that ends short as a
                    // generic error, as it does a connection lost: the
                    // object's size tells a short object apart.
                    Some(Err(e)) if e.kind() == ErrorKind::Other => {
                        let short = op.stat(&path).await.is_ok_and(|meta| meta.content_length() < end);
                        let e = if short { wrong_length(seen).with_source(e) } else { e };
                        Some((Err(e), (frames, seen, true)))
                    }
                    Some(Err(e)) => Some((Err(e), (frames, seen, true))),
                    None if seen == expected => None,
                    None => Some((Err(wrong_length(seen)), (frames, seen, true))),
                }
            }
        })
        .boxed())
    }

    fn streams_ranges(&self) -> bool {
        self.local_root.is_none()
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let Some(op) = self.operator().await? else {
            return Err(self.not_found(key));
        };
        let meta = op.stat(&key.path()).await.map_err(|e| self.fail(e, key))?;
        if meta.is_dir() {
            return Err(self.not_found(key));
        }
        Ok(info_from(key.clone(), &meta))
    }

    async fn list_names(&self, kind: ObjectKind) -> Result<Vec<ObjectKey>> {
        match &self.local_root {
            Some(root) if kind != ObjectKind::Config => local::list_names(root.clone(), kind)
                .await
                .map_err(|e| e.with_location(&self.location)),
            _ => self.list_stream(kind).map_ok(|info| info.key).try_collect().await,
        }
    }

    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
        if kind == ObjectKind::Config {
            return stream::once(async move {
                match self.stat(&ObjectKey::config()).await {
                    Ok(info) => Ok(Some(info)),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .try_filter_map(|info| async move { Ok(info) })
            .boxed();
        }
        stream::once(self.lister(kind)).try_flatten().boxed()
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream<'static>> {
        let Some(op) = self.operator().await? else {
            return Err(self.not_found(key));
        };
        let reader = op.reader(&key.path()).await.map_err(|e| self.fail(e, key))?;
        let buffers = reader.into_stream(..).await.map_err(|e| self.fail(e, key))?;
        let (key, location) = (key.clone(), self.location.clone());
        Ok(buffers
            .map_err(move |e| Error::from_opendal(e).with_key(&key).with_location(&location))
            .map_ok(|buffer| futures::stream::iter(Iterator::map(buffer, Ok)))
            .try_flatten()
            .boxed())
    }

    async fn put_stream(&self, key: &ObjectKey, body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
        if let Some(root) = &self.local_root {
            return local::put_stream(root.clone(), key.path(), body, mode)
                .await
                .map_err(|e| e.with_key(key).with_location(&self.location));
        }
        let Some(op) = self.operator().await? else {
            return Err(self.not_found(key));
        };
        // One part uploads at a time (`concurrent(1)`): the writer holds the
        // part being uploaded and the one given to it, at most two parts of
        // this object; see `STREAM_PUT_BUFFER`.
        let mut writer = op
            .writer_with(&key.path())
            .chunk(STREAM_PART_SIZE)
            .concurrent(1)
            .if_not_exists(mode == PutMode::CreateNew)
            .await
            .map_err(|e| self.fail(e, key))?;
        match write_parts(&mut writer, body).await {
            Ok(len) => {
                writer.close().await.map_err(|e| self.fail(e, key))?;
                Ok(len)
            }
            Err(e) => {
                // Nothing becomes visible: the upload is aborted (its parts
                // are dropped by the server); a failed abort leaves only
                // invisible parts, which the bucket's lifecycle rules reclaim.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(object = %key.path(), error = %abort, "cannot abort a refused upload");
                }
                Err(e.with_key(key).with_location(&self.location))
            }
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let Some(op) = self.operator().await? else {
            return Ok(());
        };
        match op.delete(&key.path()).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.fail(e, key)),
        }
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        match &self.s3 {
            Some(api) => api.lock_enabled().await.map_err(|e| e.with_location(&self.location)),
            None => Ok(false),
        }
    }

    async fn set_retention(&self, key: &ObjectKey, retention: Retention) -> Result<()> {
        if self.s3.is_none() {
            return Err(crate::store::no_object_lock(key).with_location(&self.location));
        }
        let (api, _) = self.lock_api(Some(key))?;
        api.put_retention(&key.path(), None, retention)
            .await
            .map_err(|e| e.with_key(key).with_location(&self.location))
    }

    async fn purge(&self, key: &ObjectKey) -> Result<()> {
        if self.s3.is_none() {
            return Ok(());
        }
        let (api, op) = self.lock_api(Some(key))?;
        versions::purge(op, api, key)
            .await
            .map_err(|e| e.with_location(&self.location))
    }

    async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        if self.s3.is_none() {
            return Ok(Vec::new());
        }
        let (_, op) = self.lock_api(None)?;
        versions::list_purgeable(op, kind)
            .await
            .map_err(|e| e.with_location(&self.location))
    }
}
