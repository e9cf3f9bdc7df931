//! Restoring a snapshot, or part of it, into a directory.
//!
//! The restore plans on the async side and writes on one blocking thread.
//! The planner walks the selected trees and applies `--include` /
//! `--exclude` ([`select`] documents the glob rules); it never looks at the
//! target. The writer ([`target::Target`]) owns every file-system call and
//! receives work through a bounded channel: directories first (created
//! `0700`), then file contents streamed from the reader (several files at
//! once, each into a random temporary name created `0600`, renamed into
//! place only after its BLAKE3 matched), then links, FIFOs and devices,
//! and last the directories' own metadata, deepest first, and one `syncfs`.
//!
//! # Safety against the target changing under the restore
//!
//! Every path is opened relative to a directory descriptor, one component
//! at a time, without following symlinks: a symlink in the target where
//! the snapshot has a directory is a [`Error::Conflict`] (with `overwrite`:
//! the link itself is replaced by a directory), whenever it appears. A
//! symlink that is part of the snapshot is created as a link and never
//! followed. Conflicts are decided at the moment of each write, through
//! the descriptors: an existing entry that is the same as the snapshot's
//! (type and content, link target or device number) is left alone; one
//! that differs stops the restore unless `overwrite`, and a file that
//! appears at a name while its content is written is not replaced
//! (`RENAME_NOREPLACE`). Files written before a conflict stops the restore
//! stay (each is complete and verified); temporary files never do.
//!
//! # Ownership and special mode bits
//!
//! - As root, owners are restored by **numeric** uid/gid (the names in the
//!   snapshot are informational), before the mode, so setuid, setgid and
//!   sticky bits are restored exactly.
//! - As any other user, files belong to that user: ownership is not
//!   changed, and setuid/setgid bits are **dropped** with a warning (a
//!   setuid file would otherwise run as the restoring user), unless
//!   [`RestoreOptions::keep_setid`]. The sticky bit is kept.
//! - Nothing is readable by others while it is restored: directories stay
//!   `0700` and files `0600` until their stored mode is applied.

mod attrs;
mod content;
mod existing;
mod select;
mod target;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use nfrepo_engine::{Reader, SnapshotEntry};
use nfrepo_format::NodeKind;
use tokio::sync::{mpsc, oneshot};

pub use content::{DamagedRange, write_content, write_content_skipping_damage};
pub(crate) use existing::rename_no_replace_at;
pub(crate) use select::{Planned, Selection};
pub(crate) use target::open_dir_beneath;
use target::{OpenFile, Opened, Target, TargetReport};

use crate::{Error, Result};

/// Files restored at once: many small files are bound by per-file system
/// calls, not bandwidth. Each streams with the reader's read-ahead.
const PARALLEL_FILES: usize = 8;
/// Read-ahead shared by the files restored at once, in MiB. Each file takes
/// its size in MiB (one to eight) of it, so many small files go eight at a
/// time while big ones, each reading up to 8 MiB ahead, go three at a time:
/// memory stays bounded whatever the mix.
const SHARED_READ_AHEAD_MIB: u32 = 24;
/// Messages (each at most one chunk) queued for the writer thread.
const WRITER_QUEUE: usize = 16;

/// Options for [`restore`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Only paths matching one of these (or under a match) are restored.
    /// Globs are relative to the target (see the module docs).
    pub include: Vec<String>,
    /// Paths matching one of these (or under a match) are not restored.
    pub exclude: Vec<String>,
    /// Re-read each restored file from disk and compare its BLAKE3.
    pub verify: bool,
    /// Replace existing entries that differ instead of refusing.
    pub overwrite: bool,
    /// Skip files whose stored content is damaged or missing (listing them
    /// in [`RestoreReport::skipped`]) instead of stopping at the first.
    pub skip_damaged: bool,
    /// Keep setuid/setgid bits when not running as root.
    pub keep_setid: bool,
    /// Progress counters: files and content bytes, with their totals once planned.
    pub work: Option<Arc<nfrepo_engine::Work>>,
}

/// What a restore did.
#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    /// Files written.
    pub files: u64,
    /// Files already identical in the target.
    pub files_unchanged: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Other nodes created.
    pub others: u64,
    /// Links, FIFOs and devices already identical in the target.
    pub others_unchanged: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Files re-hashed from disk (with `verify`).
    pub verified: u64,
    /// Problems that did not stop the restore (ownership, xattrs, sockets).
    pub warnings: Vec<String>,
    /// Files not restored because their stored content is damaged (with
    /// `skip_damaged`): the path in the target and why. Nothing is written
    /// under their names.
    pub skipped: Vec<(PathBuf, String)>,
    /// Filters that matched no entry (`--include "pattern"`): the restore
    /// ran, but the caller should say so and fail.
    pub unmatched_filters: Vec<String>,
}

/// Restores `path` of `snapshot` (the whole snapshot for `""`) under `target`.
///
/// # Errors
/// [`Error::Invalid`] for a bad glob; [`Error::Conflict`] when an existing
/// entry differs and `overwrite` is off, or a directory of the target is
/// not one; engine errors (a corrupted blob stops the restore, naming it);
/// I/O errors writing the target.
pub async fn restore(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    path: &str,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let mut selection = Selection::new(&options.include, &options.exclude)?;
    match reader.resolve(snapshot, path).await? {
        None => {
            reader
                .walk(&snapshot.snapshot.root, b"", true, |entry| {
                    selection.offer(Planned {
                        rel: entry.path,
                        node: entry.node,
                    });
                    Ok(())
                })
                .await?;
        }
        Some(node) => {
            let top = node.name.clone();
            let tree = match &node.kind {
                NodeKind::Dir { tree } => Some(*tree),
                _ => None,
            };
            selection.offer(Planned { rel: top.clone(), node });
            if let Some(tree) = tree {
                reader
                    .walk(&tree, &top, true, |entry| {
                        selection.offer(Planned {
                            rel: entry.path,
                            node: entry.node,
                        });
                        Ok(())
                    })
                    .await?;
            }
        }
    }
    let unmatched_filters = selection.unmatched();
    let plan = Arc::new(selection.into_plan());
    if let Some(work) = &options.work {
        let sizes = plan.iter().filter_map(|p| match p.node.kind {
            NodeKind::File { size, .. } => Some(size),
            _ => None,
        });
        let (files, bytes) = sizes.fold((0, 0), |(n, b), size| (n + 1, b + size));
        work.phase("restoring", files, bytes);
    }

    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let writer = {
        let plan = plan.clone();
        let target = target.to_path_buf();
        let (overwrite, verify) = (options.overwrite, options.verify);
        let policy = attrs::Policy::current(options.keep_setid);
        tokio::task::spawn_blocking(move || run_writer(Target::open(&target, overwrite, verify, policy)?, &plan, rx))
    };
    let fed = feed(reader, &plan, &tx, target, options).await;
    drop(tx);
    // The writer's error, if any, is the cause of the feeder's.
    let (written, finished) = writer
        .await
        .map_err(|e| Error::Invalid(format!("restore writer failed: {e}")))??;
    let mut report = fed?;
    if !finished {
        return Err(Error::Invalid("restore writer stopped early".into()));
    }
    report.files_unchanged = written.files_unchanged;
    report.dirs = written.dirs;
    report.others = written.others;
    report.others_unchanged = written.others_unchanged;
    report.verified = written.verified;
    report.warnings = written.warnings;
    report.unmatched_filters = unmatched_filters;
    report.skipped.sort();
    Ok(report)
}

/// Work for the writer thread. Files are named by their index in the plan.
enum Op {
    Dir(usize),
    /// Replies whether the file must be written (false: the same is there).
    Open {
        index: usize,
        reply: oneshot::Sender<Result<bool>>,
    },
    Chunk {
        index: usize,
        data: Vec<u8>,
    },
    /// The content could not be read: drop the temporary file.
    Abort(usize),
    /// Replies with the bytes written (`None`: the same file turned up).
    Close {
        index: usize,
        reply: oneshot::Sender<Result<Option<u64>>>,
    },
    Special(usize),
    /// Directory metadata, deepest first, then `syncfs`.
    Finish,
}

/// The blocking side: runs `ops` until [`Op::Finish`] (returns `true`) or
/// until the feeder goes away (`false`; open temporary files are removed).
fn run_writer(mut target: Target, plan: &[Planned], mut ops: mpsc::Receiver<Op>) -> Result<(TargetReport, bool)> {
    let planned = |i: usize| {
        plan.get(i)
            .ok_or_else(|| Error::Invalid(format!("no planned node {i}")))
    };
    let mut open: std::collections::HashMap<usize, Box<OpenFile>> = std::collections::HashMap::new();
    while let Some(op) = ops.blocking_recv() {
        match op {
            Op::Dir(i) => target.make_dir(planned(i)?)?,
            Op::Open { index, reply } => {
                let opened = planned(index).and_then(|p| target.open_file(p)).map(|o| match o {
                    Opened::Unchanged => false,
                    Opened::Write(file) => {
                        open.insert(index, file);
                        true
                    }
                });
                let _ = reply.send(opened);
            }
            Op::Chunk { index, data } => {
                if let Some(file) = open.get_mut(&index) {
                    target.write(file, &data);
                }
            }
            Op::Abort(index) => drop(open.remove(&index)),
            Op::Close { index, reply } => {
                let closed = match open.remove(&index) {
                    Some(file) => target.close_file(file),
                    None => Err(Error::Invalid(format!("file {index} is not open"))),
                };
                let _ = reply.send(closed);
            }
            Op::Special(i) => target.make_special(planned(i)?)?,
            Op::Finish => {
                for dir in plan.iter().rev().filter(|p| p.is_dir()) {
                    target.finish_dir(dir)?;
                }
                target.sync()?;
                return Ok((target.report, true));
            }
        }
    }
    Ok((target.report, false))
}

fn writer_gone() -> Error {
    Error::Invalid("restore writer stopped".into())
}

/// The async side: sends the plan to the writer, streaming file contents.
async fn feed(
    reader: &Reader,
    plan: &[Planned],
    tx: &mpsc::Sender<Op>,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    for (i, _) in plan.iter().enumerate().filter(|(_, p)| p.is_dir()) {
        tx.send(Op::Dir(i)).await.map_err(|_| writer_gone())?;
    }
    let files = plan
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.node.kind, NodeKind::File { .. }));
    let read_ahead = tokio::sync::Semaphore::new(SHARED_READ_AHEAD_MIB as usize);
    let read_ahead = &read_ahead;
    let mut results = futures::stream::iter(files)
        .map(|(index, planned)| async move {
            let size_mib = match planned.node.kind {
                NodeKind::File { size, .. } => size >> 20,
                _ => 0,
            };
            let share = u32::try_from(size_mib.clamp(1, 8)).unwrap_or(8);
            // The semaphore is never closed, so acquiring only waits.
            let _share = read_ahead.acquire_many(share).await;
            (
                planned,
                feed_file(reader, index, planned, tx, options.work.as_deref()).await,
            )
        })
        .buffer_unordered(PARALLEL_FILES);
    let mut report = RestoreReport::default();
    while let Some((planned, result)) = results.next().await {
        match result {
            Ok(Some(bytes)) => {
                report.files += 1;
                report.bytes += bytes;
            }
            Ok(None) => {}
            Err(e) if options.skip_damaged && e.is_damage() => {
                let path = target.join(std::ffi::OsStr::from_bytes(&planned.rel));
                report.skipped.push((path, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    drop(results);
    for (i, _) in plan
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_dir() && !matches!(p.node.kind, NodeKind::File { .. }))
    {
        tx.send(Op::Special(i)).await.map_err(|_| writer_gone())?;
    }
    tx.send(Op::Finish).await.map_err(|_| writer_gone())?;
    Ok(report)
}

/// Streams one file to the writer; `None` if the same file was there.
/// Advances `work` by each chunk's bytes and by one file at the end.
async fn feed_file(
    reader: &Reader,
    index: usize,
    planned: &Planned,
    tx: &mpsc::Sender<Op>,
    work: Option<&nfrepo_engine::Work>,
) -> Result<Option<u64>> {
    let NodeKind::File { size, .. } = planned.node.kind else {
        return Ok(None);
    };
    let advance = |items, bytes| {
        if let Some(work) = work {
            work.advance(items, bytes);
        }
    };
    let (reply, answer) = oneshot::channel();
    tx.send(Op::Open { index, reply }).await.map_err(|_| writer_gone())?;
    if !answer.await.map_err(|_| writer_gone())?? {
        advance(1, size);
        return Ok(None);
    }
    // Verified as a whole: the last chunk comes only once size and hashes match.
    let path = String::from_utf8_lossy(&planned.rel).into_owned();
    let mut chunks = std::pin::pin!(reader.file_content(&planned.node, path));
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(data) => {
                advance(0, data.len() as u64);
                tx.send(Op::Chunk { index, data }).await.map_err(|_| writer_gone())?;
            }
            Err(e) => {
                let _ = tx.send(Op::Abort(index)).await;
                return Err(e.into());
            }
        }
    }
    let (reply, answer) = oneshot::channel();
    tx.send(Op::Close { index, reply }).await.map_err(|_| writer_gone())?;
    let closed = answer.await.map_err(|_| writer_gone())?;
    advance(1, 0);
    closed
}
