//! S3 buckets: objects streamed into a snapshot, and restored into a bucket.
//!
//! An object key `a/b/c.jpg` becomes the file `c.jpg` in directory `a/b`
//! of the snapshot, so `ls`, `find`, `--include` and partial restores work
//! on keys as on paths. Each file node keeps the object's size, its
//! last-modified time (as the mtime) and, as `user.s3.etag` and
//! `user.s3.content_type` extended attributes, its ETag and content type.
//!
//! An object whose ETag, size and last-modified match the parent snapshot's
//! node is not read again: its node is reused. Objects are streamed through
//! a bounded channel from an async reader, never held whole in memory.
//!
//! Keys that cannot be tree names (empty components, `.`/`..`) are skipped
//! and recorded as such. Restoring into a bucket is [`restore`]'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use nfrepo_engine::{BackupWriter, CommitDetails};
use nfrepo_format::{BlobId, Metadata, Node, NodeKind, Tree, Xattr};
use opendal::Operator;

use crate::{Error, Result};

mod restore;

pub use restore::{BucketRestoreOptions, BucketRestoreReport, restore_bucket};

/// The extended attribute holding an object's ETag.
pub const ETAG_XATTR: &str = "user.s3.etag";
/// The extended attribute holding an object's content type.
pub const CONTENT_TYPE_XATTR: &str = "user.s3.content_type";

/// Object chunks buffered between the async reader and the chunker.
const CHANNEL_CHUNKS: usize = 8;
/// Objects fetched ahead of the one being chunked.
const READ_AHEAD: usize = 8;

/// The result of backing up a bucket.
#[derive(Debug)]
pub struct BucketOutcome {
    /// The root tree to commit.
    pub root: BlobId,
    /// Counters and skipped keys.
    pub details: CommitDetails,
    /// Problems that did not stop the backup.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
struct Object {
    key: String,
    size: u64,
    etag: String,
    mtime_ns: i64,
}

#[derive(Default)]
struct Dir {
    files: BTreeMap<Vec<u8>, Object>,
    dirs: BTreeMap<Vec<u8>, Dir>,
}

fn storage_error(what: &str, e: &opendal::Error) -> Error {
    Error::CommandFailed(format!("{what}: {e}"))
}

fn mtime_ns(meta: &opendal::Metadata) -> i64 {
    meta.last_modified()
        .map(std::time::SystemTime::from)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn xattr(node: &Node, name: &str) -> Option<String> {
    node.meta
        .xattrs
        .iter()
        .find(|x| x.name == name.as_bytes())
        .map(|x| String::from_utf8_lossy(&x.value).into_owned())
}

/// Backs up every object under `operator`'s root. Blocks; call from a
/// non-runtime thread, with a handle to the runtime that drives `operator`.
///
/// # Errors
/// Listing failures and object read failures ([`Error::CommandFailed`]:
/// nothing must be committed), engine errors.
pub fn backup_bucket(
    session: &BackupWriter,
    operator: &Operator,
    handle: &tokio::runtime::Handle,
) -> Result<BucketOutcome> {
    let entries = handle
        .block_on(async { operator.list_with("").recursive(true).await })
        .map_err(|e| storage_error("listing the bucket", &e))?;
    let mut details = CommitDetails::default();
    let mut warnings = Vec::new();
    let mut root = Dir::default();
    for entry in entries {
        let (key, meta) = entry.into_parts();
        if !meta.is_file() || key.ends_with('/') {
            continue;
        }
        let parts: Vec<&str> = key.split('/').collect();
        if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            let message = format!("{key}: key cannot be stored as a path");
            warnings.push(message.clone());
            details.skipped.push(message);
            continue;
        }
        let Some((name, dirs)) = parts.split_last() else {
            continue;
        };
        let mut dir = &mut root;
        for part in dirs {
            dir = dir.dirs.entry(part.as_bytes().to_vec()).or_default();
        }
        dir.files.insert(
            name.as_bytes().to_vec(),
            Object {
                key: key.clone(),
                size: meta.content_length(),
                etag: meta.etag().unwrap_or_default().to_owned(),
                mtime_ns: mtime_ns(&meta),
            },
        );
    }
    let parent = match session.parent() {
        Some(parent) => Some(session.parent_tree(&parent.snapshot.root)?),
        None => None,
    };
    let mut walk = Walk {
        session,
        operator,
        handle,
        details,
        warnings,
    };
    let root = walk.store_dir(&root, parent)?;
    Ok(BucketOutcome {
        root,
        details: walk.details,
        warnings: walk.warnings,
    })
}

struct Walk<'a> {
    session: &'a BackupWriter,
    operator: &'a Operator,
    handle: &'a tokio::runtime::Handle,
    details: CommitDetails,
    warnings: Vec<String>,
}

impl Walk<'_> {
    fn store_dir(&mut self, dir: &Dir, parent: Option<Arc<Tree>>) -> Result<BlobId> {
        let mut nodes = Vec::with_capacity(dir.files.len() + dir.dirs.len());
        for (name, sub) in &dir.dirs {
            let old = parent.as_ref().and_then(|t| t.find(name)).and_then(|n| match &n.kind {
                NodeKind::Dir { tree } => self.session.parent_tree(tree).ok(),
                _ => None,
            });
            self.details.dirs += 1;
            let tree = self.store_dir(sub, old)?;
            nodes.push(Node {
                name: name.clone(),
                kind: NodeKind::Dir { tree },
                meta: Metadata {
                    mode: 0o755,
                    ..Metadata::default()
                },
            });
        }
        // Objects to read, in order; up to READ_AHEAD of them are fetched
        // ahead while earlier ones are chunked, so many small objects are
        // not bound by one request's latency each.
        let mut files: Vec<(&[u8], &Object, Option<&Node>)> = Vec::with_capacity(dir.files.len());
        for (name, object) in &dir.files {
            if dir.dirs.contains_key(name) {
                let message = format!(
                    "{}: an object and a prefix share this name; the object was left out",
                    object.key
                );
                self.warnings.push(message.clone());
                self.details.skipped.push(message);
                continue;
            }
            let old = parent.as_ref().and_then(|t| t.find(name));
            files.push((name.as_slice(), object, old.filter(|old| unchanged(old, object))));
        }
        let needed: Vec<&Object> = files
            .iter()
            .filter(|(_, _, old)| old.is_none())
            .map(|(_, o, _)| *o)
            .collect();
        let mut to_fetch = needed.into_iter();
        let mut fetching: std::collections::VecDeque<Fetch> = std::collections::VecDeque::new();
        for (name, object, old) in files {
            self.details.files += 1;
            self.details.bytes += object.size;
            if let Some(old) = old {
                self.details.files_unchanged += 1;
                nodes.push(Node {
                    name: name.to_vec(),
                    kind: old.kind.clone(),
                    meta: old.meta.clone(),
                });
                continue;
            }
            while fetching.len() < READ_AHEAD
                && let Some(next) = to_fetch.next()
            {
                fetching.push_back(self.fetch(&next.key));
            }
            let fetch = fetching
                .pop_front()
                .ok_or_else(|| Error::Invalid(format!("{}: read-ahead out of step", object.key)))?;
            nodes.push(self.object_node(name, object, fetch)?);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(self.session.store_tree(&Tree { nodes })?)
    }

    fn object_node(&mut self, name: &[u8], object: &Object, fetch: Fetch) -> Result<Node> {
        let content_type = fetch
            .content_type
            .blocking_recv()
            .map_err(|_| Error::CommandFailed(format!("reading {}: the fetch task ended", object.key)))?
            .map_err(|e| Error::CommandFailed(format!("reading {}: {e}", object.key)))?;
        let stored = self.session.store_stream(fetch.reader, true).map_err(|e| match e {
            nfrepo_engine::Error::Source { source, .. } => {
                Error::CommandFailed(format!("reading {}: {source}", object.key))
            }
            other => other.into(),
        })?;
        let mut xattrs = vec![Xattr {
            name: ETAG_XATTR.as_bytes().to_vec(),
            value: object.etag.as_bytes().to_vec(),
        }];
        if !content_type.is_empty() {
            xattrs.push(Xattr {
                name: CONTENT_TYPE_XATTR.as_bytes().to_vec(),
                value: content_type.into_bytes(),
            });
        }
        xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Node {
            name: name.to_vec(),
            kind: stored.file_kind(),
            meta: Metadata {
                mode: 0o644,
                mtime_ns: object.mtime_ns,
                xattrs,
                ..Metadata::default()
            },
        })
    }

    /// Starts fetching an object: its content type (a HEAD, since listings
    /// lack it) and then its bytes, into a bounded channel.
    fn fetch(&self, key: &str) -> Fetch {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_CHUNKS);
        let (type_tx, type_rx) = tokio::sync::oneshot::channel();
        let operator = self.operator.clone();
        let key = key.to_owned();
        self.handle.spawn(async move {
            match operator.stat(&key).await {
                Ok(meta) => {
                    let _ = type_tx.send(Ok(meta.content_type().unwrap_or_default().to_owned()));
                }
                Err(e) => {
                    let _ = type_tx.send(Err(e.to_string()));
                    return;
                }
            }
            let stream = match operator.reader(&key).await {
                Ok(reader) => reader.into_bytes_stream(..).await,
                Err(e) => Err(e),
            };
            match stream {
                Ok(mut stream) => {
                    while let Some(item) = stream.next().await {
                        if tx.send(item).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                }
            }
        });
        Fetch {
            content_type: type_rx,
            reader: ChannelReader {
                rx,
                current: Bytes::new(),
            },
        }
    }
}

/// An object being fetched ahead of its turn.
struct Fetch {
    content_type: tokio::sync::oneshot::Receiver<std::result::Result<String, String>>,
    reader: ChannelReader,
}

/// Whether the parent snapshot's node is still this object.
fn unchanged(old: &Node, object: &Object) -> bool {
    matches!(&old.kind, NodeKind::File { size, .. } if *size == object.size)
        && old.meta.mtime_ns == object.mtime_ns
        && !object.etag.is_empty()
        && xattr(old, ETAG_XATTR).as_deref() == Some(object.etag.as_str())
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        if let Some(dest) = buf.get_mut(..n) {
            dest.copy_from_slice(&chunk);
        }
        Ok(n)
    }
}
