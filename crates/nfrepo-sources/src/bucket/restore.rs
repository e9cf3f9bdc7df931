//! Restoring a bucket snapshot into a bucket, never over different data
//! unless asked.
//!
//! # What is restored
//!
//! Objects go back at their original keys under the target operator's root
//! (the `--into` prefix). `SNAP:PREFIX` selects the objects whose key
//! **starts with** `PREFIX`, as an S3 listing prefix does: `photos/2026-`
//! takes `photos/2026-01/a.jpg` and `photos/2026-02/b.jpg`; `photos` also
//! takes `photos.txt` and `photos-old/…`; `photos/` takes only what is under
//! `photos/`. A prefix no key starts with is an error.
//!
//! `include` / `exclude` globs follow the rules of directory restores
//! (`crate::restore::select`), matched against the key as it is written
//! under the target, i.e. the whole original key: a pattern without `/`
//! matches any one component, so `*.txt` matches `a/b/x.txt` by its name;
//! a pattern with `/` matches from the start of the key and `*` does not
//! cross `/` (`logs/*.txt` takes `logs/a.txt`, not `logs/2026/a.txt`; `**`
//! does). A pattern that matches no selected object fails the restore
//! before anything is written.
//!
//! # What is compared, and why not ETags
//!
//! Every selected key is checked **before the first write**:
//!
//! - absent in the target: written;
//! - present with another size: differs;
//! - present with the same size: its bytes are read (streamed, bounded
//!   memory) and their BLAKE3 compared with the one the snapshot recorded
//!   for the object's whole content. Equal: left alone ("already there").
//!
//! ETags are not compared: a multipart upload's ETag is not a hash of the
//! content, so it never matches the source's, and an ETag's meaning varies
//! with encryption and server. Nor is a checksum stored in the object's
//! metadata trusted: any client that rewrites an object may copy the old
//! metadata onto new bytes (a read-modify-write that keeps `x-amz-meta-*`
//! is common), and a stale checksum would turn a changed object into
//! "already there", i.e. a restore that silently leaves the wrong bytes.
//! The price is one read of each same-size object in the target.
//!
//! If any object differs, nothing is written and the restore fails with
//! [`Error::ObjectsDiffer`] (`RESTORE_CONFLICT`) naming them, unless
//! `overwrite`. `dry_run` does the same check, writes nothing and reports
//! what would be written and replaced.
//!
//! # Writing
//!
//! Without `overwrite`, objects found absent are written with
//! `If-None-Match: *`: one that appears between the check and the write is
//! compared again, left alone if it is the snapshot's content, and
//! otherwise stops the restore with [`Error::ObjectsDiffer`] (the objects
//! written before it stay; each is complete and verified). Content streams
//! from the verified reader; an upload whose content fails verification is
//! aborted, so no partial object appears.

use futures::StreamExt;
use nfrepo_engine::{Reader, SnapshotEntry};
use nfrepo_format::{Node, NodeKind};
use opendal::Operator;

use super::{CONTENT_TYPE_XATTR, xattr};
use crate::restore::{Planned, Selection};
use crate::{Error, Result};

/// Target objects checked at once (HEAD, and a read when the size matches).
const PARALLEL_CHECKS: usize = 16;
/// Differing keys named in a conflict error; the rest are counted.
pub const LISTED_CONFLICTS: usize = 10;

/// Options for [`restore_bucket`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct BucketRestoreOptions {
    /// Only keys matching one of these globs (see the module docs).
    pub include: Vec<String>,
    /// Keys matching one of these are left out.
    pub exclude: Vec<String>,
    /// Replace target objects whose content differs instead of refusing.
    pub overwrite: bool,
    /// Check the target and report what would be written; write nothing.
    pub dry_run: bool,
    /// Read every written object back and compare its BLAKE3.
    pub verify: bool,
    /// Progress counters: objects checked, then objects and bytes written.
    pub work: Option<std::sync::Arc<nfrepo_engine::Work>>,
}

/// What a bucket restore did, or with `dry_run` would do.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct BucketRestoreReport {
    /// Objects written (dry run: to be written), replaced ones included.
    pub objects: u64,
    /// Of [`Self::objects`], those that replaced a differing object.
    pub objects_replaced: u64,
    /// Objects already in the target with the snapshot's content.
    pub objects_unchanged: u64,
    /// Content bytes written (dry run: to be written).
    pub bytes: u64,
    /// Bytes of target objects read to compare their content.
    pub bytes_compared: u64,
    /// Objects read back and found equal to the snapshot (`verify`).
    pub verified: u64,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Whether differing objects were (dry run: would be) replaced.
    pub overwrite: bool,
    /// Dry run only: keys that do not exist in the target yet.
    pub new_keys: Vec<String>,
    /// Keys that exist in the target with other content: replaced with
    /// `overwrite`; in a dry run without it, the conflicts a real run
    /// would stop at.
    pub differing_keys: Vec<String>,
}

impl BucketRestoreReport {
    /// The conflict a real run would stop at: set by a dry run without
    /// `overwrite` that found differing objects.
    #[must_use]
    pub fn refusal(&self) -> Option<Error> {
        (self.dry_run && !self.overwrite && !self.differing_keys.is_empty())
            .then(|| objects_differ(&self.differing_keys, 0))
    }
}

fn objects_differ(keys: &[String], written: u64) -> Error {
    Error::ObjectsDiffer {
        keys: keys.iter().take(LISTED_CONFLICTS).cloned().collect(),
        total: keys.len(),
        written,
    }
}

/// What is at a key of the target, compared with the snapshot's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Absent,
    Same,
    Differs,
}

fn storage(what: &str, key: &str, e: &opendal::Error) -> Error {
    Error::RestoreCommandFailed(format!("{what} {key} in the target: {e}"))
}

/// Compares the object at `key` with content of `size` bytes and `blake3`;
/// returns the finding and the bytes read.
async fn compare(operator: &Operator, key: &str, size: u64, blake3: &[u8; 32]) -> Result<(Found, u64)> {
    let meta = match operator.stat(key).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok((Found::Absent, 0)),
        Err(e) => return Err(storage("checking", key, &e)),
    };
    if meta.content_length() != size {
        return Ok((Found::Differs, 0));
    }
    let stream = match operator.reader(key).await {
        Ok(reader) => reader.into_bytes_stream(..).await,
        Err(e) => Err(e),
    };
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok((Found::Absent, 0)),
        Err(e) => return Err(storage("reading", key, &e)),
    };
    let mut hasher = blake3::Hasher::new();
    let mut seen = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::RestoreCommandFailed(format!("reading {key} in the target: {e}")))?;
        seen += chunk.len() as u64;
        if seen > size {
            // Replaced by a longer object while it was read.
            return Ok((Found::Differs, seen));
        }
        hasher.update(&chunk);
    }
    let same = seen == size && hasher.finalize().as_bytes() == blake3;
    Ok((if same { Found::Same } else { Found::Differs }, seen))
}

/// A selected object and what its key holds in the target.
struct Checked {
    key: String,
    node: Node,
    size: u64,
    blake3: [u8; 32],
    found: Found,
}

fn content_of(node: &Node) -> Option<(u64, [u8; 32])> {
    match &node.kind {
        NodeKind::File { size, blake3, .. } => Some((*size, *blake3)),
        _ => None,
    }
}

/// The objects of `snapshot` whose key starts with `prefix` and that the
/// filters keep, in key order.
async fn select(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    prefix: &str,
    options: &BucketRestoreOptions,
) -> Result<Vec<Planned>> {
    let prefix = prefix.trim_start_matches('/');
    let (dir, stem) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    if !dir.is_empty() && dir.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(Error::Invalid(format!(
            "{prefix:?} is not a key prefix of a bucket snapshot"
        )));
    }
    let tree = if dir.is_empty() {
        Some(snapshot.snapshot.root)
    } else {
        match reader.resolve(snapshot, dir).await {
            Ok(Some(Node {
                kind: NodeKind::Dir { tree },
                ..
            })) => Some(tree),
            // An object, not a prefix: no key goes on past it.
            Ok(_) | Err(nfrepo_engine::Error::PathNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    };
    let mut selection = Selection::new(&options.include, &options.exclude)?;
    let mut plan = Vec::new();
    let mut found = false;
    if let Some(tree) = tree {
        let top = reader.tree(&tree).await?;
        for node in top.nodes.iter().filter(|n| n.name.starts_with(stem.as_bytes())) {
            let mut rel = dir.as_bytes().to_vec();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&node.name);
            match &node.kind {
                NodeKind::File { .. } => {
                    found = true;
                    let planned = Planned {
                        rel,
                        node: node.clone(),
                    };
                    selection.offer(planned, &mut plan);
                }
                NodeKind::Dir { tree } => {
                    reader
                        .walk(tree, &rel, true, |entry| {
                            if matches!(entry.node.kind, NodeKind::File { .. }) {
                                found = true;
                                let planned = Planned {
                                    rel: entry.path,
                                    node: entry.node,
                                };
                                selection.offer(planned, &mut plan);
                            }
                            Ok(())
                        })
                        .await?;
                }
                _ => {}
            }
        }
    }
    if !found && !prefix.is_empty() {
        return Err(nfrepo_engine::Error::PathNotFound {
            snapshot: snapshot.id.short(),
            path: format!("{prefix}… (no object key starts with it)"),
        }
        .into());
    }
    let unmatched = selection.unmatched();
    if !unmatched.is_empty() {
        return Err(Error::FilterMatchedNothing(unmatched));
    }
    Ok(plan)
}

/// Writes the objects of `snapshot` whose key starts with `prefix` (`""`
/// for all) into `operator`, each at its original key under the operator's
/// root. See the module docs for what is compared and when it refuses.
///
/// # Errors
/// [`Error::Invalid`] for a bad glob or prefix;
/// [`nfrepo_engine::Error::PathNotFound`] when no key starts with `prefix`;
/// [`Error::FilterMatchedNothing`]; [`Error::ObjectsDiffer`] when target
/// objects differ and `overwrite` is off (nothing written);
/// [`Error::RestoreCommandFailed`] for storage errors; engine errors if
/// stored data fails verification (the object being written is aborted);
/// [`Error::ContentMismatch`] when `verify` reads back other bytes.
pub async fn restore_bucket(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    prefix: &str,
    operator: &Operator,
    options: &BucketRestoreOptions,
) -> Result<BucketRestoreReport> {
    let plan = select(reader, snapshot, prefix, options).await?;
    let mut report = BucketRestoreReport {
        dry_run: options.dry_run,
        overwrite: options.overwrite,
        ..BucketRestoreReport::default()
    };
    let objects: Vec<Checked> = plan
        .into_iter()
        .filter_map(|planned| {
            let (size, blake3) = content_of(&planned.node)?;
            let key = String::from_utf8_lossy(&planned.rel).into_owned();
            Some(Checked {
                key,
                node: planned.node,
                size,
                blake3,
                found: Found::Absent,
            })
        })
        .collect();
    let work = options.work.as_deref();
    let advance = |items, bytes| {
        if let Some(work) = work {
            work.advance(items, bytes);
        }
    };
    if let Some(work) = work {
        work.phase("comparing", objects.len() as u64, 0);
    }
    let mut checks = futures::stream::iter(objects)
        .map(|mut object| async move {
            let (found, read) = compare(operator, &object.key, object.size, &object.blake3).await?;
            object.found = found;
            Ok::<_, Error>((object, read))
        })
        .buffered(PARALLEL_CHECKS);
    let mut todo: Vec<Checked> = Vec::new();
    while let Some(checked) = checks.next().await {
        let (object, read) = checked?;
        advance(1, read);
        report.bytes_compared += read;
        match object.found {
            Found::Same => report.objects_unchanged += 1,
            Found::Differs => {
                report.differing_keys.push(object.key.clone());
                todo.push(object);
            }
            Found::Absent => todo.push(object),
        }
    }
    drop(checks);
    if !report.differing_keys.is_empty() && !options.overwrite && !options.dry_run {
        return Err(objects_differ(&report.differing_keys, 0));
    }
    if let Some(work) = work.filter(|_| !options.dry_run) {
        work.phase("writing", todo.len() as u64, todo.iter().map(|o| o.size).sum());
    }
    for object in todo {
        let replaces = object.found == Found::Differs;
        if replaces && !options.overwrite {
            // A dry run's conflict: listed in `differing_keys`.
            continue;
        }
        if options.dry_run {
            if !replaces {
                report.new_keys.push(object.key.clone());
            }
        } else {
            let create_only = !replaces && !options.overwrite;
            match write_object(reader, operator, &object.key, &object.node, create_only).await? {
                Found::Absent => {}
                Found::Same => {
                    // Appeared since the check, with the snapshot's content.
                    report.objects_unchanged += 1;
                    continue;
                }
                Found::Differs => return Err(objects_differ(&[object.key], report.objects)),
            }
            if options.verify {
                match compare(operator, &object.key, object.size, &object.blake3).await? {
                    (Found::Same, read) => {
                        report.verified += 1;
                        report.bytes_compared += read;
                    }
                    _ => return Err(Error::ContentMismatch(object.key.into())),
                }
            }
        }
        advance(1, object.size);
        report.objects += 1;
        report.bytes += object.size;
        if replaces {
            report.objects_replaced += 1;
        }
    }
    Ok(report)
}

/// Streams one object into the target ([`Found::Absent`]: written). With
/// `create_only`, an object that appeared at `key` since the check is not
/// replaced but compared again ([`Found::Same`] or [`Found::Differs`]).
async fn write_object(
    reader: &Reader,
    operator: &Operator,
    key: &str,
    node: &Node,
    create_only: bool,
) -> Result<Found> {
    let failed = |e: opendal::Error| storage("writing", key, &e);
    let mut writer = operator.writer_with(key).if_not_exists(create_only);
    if let Some(content_type) = xattr(node, CONTENT_TYPE_XATTR) {
        writer = writer.content_type(&content_type);
    }
    let mut writer = writer.await.map_err(failed)?;
    // Verified as a whole: the last chunk comes only once size and hashes match.
    let mut chunks = std::pin::pin!(reader.file_content(node, key.to_owned()));
    let mut outcome: Result<()> = Ok(());
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                outcome = Err(e.into());
                break;
            }
        };
        if let Err(e) = writer.write(chunk).await {
            outcome = Err(failed(e));
            break;
        }
    }
    if let Err(e) = outcome {
        let _ = writer.abort().await;
        return Err(e);
    }
    match writer.close().await {
        Ok(_) => Ok(Found::Absent),
        Err(e) if create_only && e.kind() == opendal::ErrorKind::ConditionNotMatch => {
            let _ = writer.abort().await;
            let (size, blake3) = content_of(node).unwrap_or_default();
            Ok(match compare(operator, key, size, &blake3).await?.0 {
                Found::Same => Found::Same,
                _ => Found::Differs,
            })
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(failed(e))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::sync::Arc;

    use nfrepo_engine::{InitOptions, Repository};
    use nfrepo_format::{KdfParams, Node};
    use opendal::Operator;

    use super::{Found, write_object};
    use crate::{BucketSource, RunOptions};

    fn memory() -> Operator {
        Operator::new(opendal::services::Memory::default()).unwrap()
    }

    /// A repository holding one bucket snapshot with `k` = `snapshot`.
    async fn snapshot_of_k() -> (nfrepo_engine::Reader, Node) {
        let mut options = InitOptions::default();
        options.kdf = KdfParams::insecure_for_tests();
        let repo = Repository::init(Arc::new(nfrepo_store::MemoryStore::new()), b"pw", options)
            .await
            .unwrap();
        let source = memory();
        source.write("k", b"snapshot".to_vec()).await.unwrap();
        let source = Box::new(BucketSource::new(source, "memory://src"));
        let report = crate::run_backup(&repo, source, &RunOptions::new("b"), &mut |_| {})
            .await
            .unwrap();
        let reader = repo.reader().await.unwrap();
        let entry = repo.find_snapshot(&report.id.to_hex()).await.unwrap();
        let node = reader.resolve(&entry, "k").await.unwrap().unwrap();
        (reader, node)
    }

    // Issue 10, item 6: an object that appears between the check and the
    // write (here: one already there when the create-only write runs) is
    // never replaced; it is compared instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_create_only_write_never_replaces_an_object_that_appeared() {
        let (reader, node) = snapshot_of_k().await;
        let target = memory();
        target.write("k", b"someone".to_vec()).await.unwrap();
        assert_eq!(
            write_object(&reader, &target, "k", &node, true).await.unwrap(),
            Found::Differs
        );
        assert_eq!(target.read("k").await.unwrap().to_vec(), b"someone");

        target.write("k", b"snapshot".to_vec()).await.unwrap();
        assert_eq!(
            write_object(&reader, &target, "k", &node, true).await.unwrap(),
            Found::Same
        );

        target.write("k", b"someone".to_vec()).await.unwrap();
        assert_eq!(
            write_object(&reader, &target, "k", &node, false).await.unwrap(),
            Found::Absent
        );
        assert_eq!(target.read("k").await.unwrap().to_vec(), b"snapshot");
        assert_eq!(
            write_object(&reader, &memory(), "k", &node, true).await.unwrap(),
            Found::Absent
        );
    }
}
