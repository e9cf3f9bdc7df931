//! Restoring a snapshot, or part of it, into a directory.
//!
//! The planner walks the selected trees and applies `--include` /
//! `--exclude` ([`select`] documents the glob rules); it never looks at the
//! target. Every file-system call goes through [`target::Target`]:
//! directories first (created `0700`), then file contents, then links,
//! FIFOs and devices, and last the directories' own metadata, deepest
//! first, and one `syncfs`.
//!
//! File contents are restored by pack, not file by file ([`files`]): each
//! file gets a random temporary name created `0600` at its recorded size
//! (sparse), the engine plans which ranges of which packs hold the chunks of
//! a batch of files, each range is read once, its chunks are opened on
//! every core and written with positioned writes to every file and offset
//! that needs them (all-zero chunks are left as holes), and a file is
//! renamed into place only once every byte of it was written from a chunk
//! that verified (authenticated, decompressed and re-hashed to its keyed
//! id) and the file, read back (from the page cache, hashed on every core),
//! matched its node's whole BLAKE3. `--verify` makes that read come from
//! the device: each file is flushed and its cached pages dropped first.
//!
//! # Durability (`fsync` policy)
//!
//! Files are not synced one by one. After the last entry is in place and
//! the directories' metadata is applied, one `syncfs(2)` of the target's
//! file system flushes everything, and only then does the restore report
//! success: a restore that returned is on disk. A crash before that may
//! leave renamed files whose content had not reached the disk; they are
//! not trusted: running the restore again compares every existing file by
//! size and BLAKE3 and rewrites any that differ (with `--overwrite`).
//! `--verify` flushes each file before reading it back from the device,
//! which syncs the files one by one; the final `syncfs` still runs.
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
mod files;
mod select;
mod target;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nfrepo_engine::{Reader, SnapshotEntry};
use nfrepo_format::NodeKind;

pub use content::{DamagedRange, write_content, write_content_skipping_damage};
pub(crate) use existing::rename_no_replace_at;
pub(crate) use select::{Planned, Selection};
use target::Target;
pub(crate) use target::open_dir_beneath;

use crate::driver::blocking;
use crate::{Error, Result};

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

    let policy = attrs::Policy::current(options.keep_setid);
    let (root, overwrite, verify) = (target.to_path_buf(), options.overwrite, options.verify);
    let dirs = plan.clone();
    let opened = blocking(move || {
        let mut target = Target::open(&root, overwrite, verify, policy)?;
        for dir in dirs.iter().filter(|p| p.is_dir()) {
            target.make_dir(dir)?;
        }
        Ok(target)
    })
    .await?;
    let shared = Arc::new(Mutex::new(opened));
    let mut report = files::restore_files(reader, &plan, &shared, target, options).await?;
    let rest = plan.clone();
    let target = blocking(move || {
        let mut target = lock(&shared)?;
        for special in rest
            .iter()
            .filter(|p| !p.is_dir() && !matches!(p.node.kind, NodeKind::File { .. }))
        {
            target.make_special(special)?;
        }
        for dir in rest.iter().rev().filter(|p| p.is_dir()) {
            target.finish_dir(dir)?;
        }
        target.sync()?;
        Ok(std::mem::take(&mut target.report))
    })
    .await?;
    report.files_unchanged = target.files_unchanged;
    report.dirs = target.dirs;
    report.others = target.others;
    report.others_unchanged = target.others_unchanged;
    report.verified = target.verified;
    report.warnings = target.warnings;
    report.unmatched_filters = unmatched_filters;
    report.skipped.sort();
    Ok(report)
}

/// What the blocking calls of one restore share (the target, the files'
/// state), one call at a time.
fn lock<T>(shared: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    shared
        .lock()
        .map_err(|_| Error::Invalid("a restore writer thread panicked".into()))
}
