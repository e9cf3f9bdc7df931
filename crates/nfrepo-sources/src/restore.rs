//! Restoring a snapshot, or part of it, into a directory.
//!
//! The walk of the selected trees applies `--include` / `--exclude`
//! ([`select`] documents the glob rules) and never looks at the target.
//! Every file-system call goes through [`target::Target`].
//!
//! # Batches: memory flat in the number of files
//!
//! The walk is not planned whole: it streams into the restore in batches of
//! at most 4096 entries (or about 4 MiB of them, long names and xattrs
//! counted; [`RestoreOptions::batch_entries`]). The walk waits while a full
//! batch is handed over. Each batch's directories are created (`0700`)
//! before its files are opened; once the last of its files is in place,
//! its links, FIFOs and devices are made, and last the stored metadata of
//! the directories the walk has left is applied (deepest first): the
//! restore keeps the directories it is in on a stack (as deep as the
//! tree), and a directory is finished in the batch where the walk leaves
//! it, after everything inside it was written, so its mtime and mode are
//! final. One `syncfs` ends the restore.
//!
//! The batches go through one pipeline ([`files::restore_batches`]): the
//! next batch's files are opened and read while the last one's are still
//! checked and placed, so the reads in flight never run dry between
//! batches (on a remote store, each drain and refill cost a few round
//! trips). At most about four batches exist at once: one being filled,
//! one handed over, one being planned, and the files of the ones before
//! it still being written or closed (bounded by the reads in flight and
//! the files open at once), plus the walker's window of trees loaded
//! ahead (16 per level of the path walked).
//!
//! A chunk shared by files planned together (a group of files opened at
//! once: up to 256 files or 16 MiB of content, [`files`]) is read once; a
//! chunk shared by files of different groups is read once per group
//! (deduplicated trees and repeated small files cost a few re-reads, never
//! more memory). With
//! `--include`, directories that lead to no restored entry are decided as
//! the walk goes, without a look ahead ([`select`]).
//!
//! Peak memory is therefore set by the batch size, the walker's window and
//! the reads in flight ([`files`]: 16 MiB of sealed bytes at most), not by
//! the number of files: 44,808 files of `/usr` restore in about 80 MiB
//! (README, "Memory against the size of the repository"). An error stops
//! the restore where it is: files placed before it stay (each complete and
//! verified), and the directories still open keep mode `0700`.
//!
//! File contents are restored by pack, not file by file ([`files`]): each
//! file gets a random temporary name created `0600` at its recorded size
//! (sparse), the engine plans which ranges of which packs hold the chunks of
//! a batch of files, each range is read once, its chunks are opened on
//! every core and written with positioned writes to every file and offset
//! that needs them (all-zero chunks are left as holes), and a file is
//! renamed into place only once every byte of it was written from a chunk
//! that opened (authenticated under its id, decompressed, its length
//! checked) and the file, read back (from the page cache, hashed on every
//! core), matched its node's whole BLAKE3; a file that does not is written
//! again from chunks re-hashed to their keyed ids, so the chunk at fault is
//! named ([`files`], format-spec/blob.md "Opening without the re-hash") (a large file's prefix is read back
//! while the rest is written, `restore/digest.rs`). `--verify` makes that
//! read come from the device: through `O_DIRECT`, or, where the file
//! system refuses it, by flushing the file and dropping its cached pages.
//! A file of 8 MiB or more is written around the page cache where the file
//! system allows (`restore/direct.rs`): gathered in aligned windows written
//! with `O_DIRECT`, its whole BLAKE3 assembled from the windows' subtree
//! hashes (with `--verify`, of each window read back from the device), so
//! it is neither copied through the page cache nor read back in order.
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
//! Files written around the page cache are on the device once their
//! windows are written. For the rest of the files of 8 MiB or more,
//! writeback is started early, without waiting for it: each range a check
//! has read back from the page cache (a large file's prefix as it grows, a
//! file's rest when it is checked) is handed to the device then
//! (`digest::write_behind`), so the device writes while the restore
//! computes and the final `syncfs` finds little left (the dump's restore
//! into ext4 with the flush took 21 % less time, README). Smaller files
//! are left to the kernel, which writes many back at once for less than a
//! call per file cost (`target::WRITTEN_BEHIND`).
//! `--verify` writes each file back before reading it from the device
//! (a direct read writes its range back first, and waits for it: a large
//! file's new prefix has its writeback started whole before its first
//! block is read, so the device writes ahead of the reads; the small files
//! a step completes are written back together, by one `syncfs` when they
//! are 32 or more, and read back on 16 threads, so the device has many
//! files in hand instead of one per core; where direct reads are refused,
//! the file is flushed with `fdatasync`); the final `syncfs` still runs and
//! is what makes the restore durable.
//!
//! # Safety against the target changing under the restore
//!
//! Every path is opened relative to a directory descriptor, one component
//! at a time, without following symlinks: a symlink in the target where
//! the snapshot has a directory is a [`Error::Conflict`] (with `overwrite`:
//! the link itself is replaced by a directory), whenever a path reaches it.
//! The descriptors of the directories on the path reached last are kept
//! for the next path (the files of one directory come one after the
//! other), so a directory swapped for a link after it was reached keeps
//! getting the files of that directory itself, never through the link,
//! until a path reaches its name again (`target`). A
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
mod digest;
mod direct;
mod existing;
mod files;
mod select;
mod target;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nfrepo_engine::{Reader, SnapshotEntry, WalkPause};
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
    /// Progress counters: files and content bytes. A whole snapshot without
    /// filters takes its totals from its summary; a part's totals grow as
    /// the walk plans each batch.
    pub work: Option<Arc<nfrepo_engine::Work>>,
    /// Entries per batch (default 4096, see the module docs): fewer lower
    /// the memory a restore takes; more re-read fewer chunks shared by
    /// files of different batches.
    pub batch_entries: Option<usize>,
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
/// I/O errors writing the target. Batches restored before the error stay
/// (every file in them complete and verified).
pub async fn restore(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    path: &str,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let selection = Selection::new(&options.include, &options.exclude)?;
    // The totals are known before the walk only for a whole snapshot; for
    // a part they grow batch by batch, and are complete at the end.
    let whole = path.trim_matches('/').is_empty() && options.include.is_empty() && options.exclude.is_empty();
    if let Some(work) = &options.work {
        let summary = &snapshot.snapshot.summary;
        let (files, bytes) = if whole { (summary.files, summary.bytes) } else { (0, 0) };
        work.phase("restoring", files, bytes);
    }
    let policy = attrs::Policy::current(options.keep_setid);
    let (root, overwrite, verify) = (target.to_path_buf(), options.overwrite, options.verify);
    let opened = blocking(move || Target::open(&root, overwrite, verify, policy)).await?;
    let shared = Arc::new(Mutex::new(opened));

    let limits = BatchLimits {
        entries: options.batch_entries.unwrap_or(BATCH_ENTRIES).max(1),
        bytes: BATCH_BYTES,
    };
    let (batches_tx, batches) = tokio::sync::mpsc::channel::<Batch>(1);
    // A part's totals grow as the walk hands over each batch.
    let growing = options.work.clone().filter(|_| !whole);
    let walking = async move {
        let mut batcher = Batcher::new(selection, limits, growing, batches_tx);
        match reader.resolve(snapshot, path).await? {
            None => {
                reader
                    .walk_paced(&snapshot.snapshot.root, b"", |entry| {
                        Ok(batcher.offer(entry.path, entry.node))
                    })
                    .await?;
            }
            Some(node) => {
                let top = node.name.clone();
                let tree = match &node.kind {
                    NodeKind::Dir { tree } => Some(*tree),
                    _ => None,
                };
                if let Some(pause) = batcher.offer(top.clone(), node) {
                    pause.await?;
                }
                if let Some(tree) = tree {
                    reader
                        .walk_paced(&tree, &top, |entry| Ok(batcher.offer(entry.path, entry.node)))
                        .await?;
                }
            }
        }
        batcher.finish().await?;
        Ok::<_, Error>(batcher.selection.unmatched())
    };
    let restoring = files::restore_batches(reader, batches, &shared, target, options);
    let (unmatched_filters, mut report) = futures::try_join!(walking, restoring)?;

    let target = blocking(move || {
        let mut target = lock(&shared)?;
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

/// Entries of one batch at most (see the module docs).
const BATCH_ENTRIES: usize = 4096;
/// Estimated memory of one batch's entries at most.
const BATCH_BYTES: usize = 4 << 20;

#[derive(Clone, Copy)]
struct BatchLimits {
    entries: usize,
    bytes: usize,
}

/// A batch of the walk: the selected entries in walk order (a directory
/// before what it holds), and the directories the walk left, deepest
/// first, whose metadata is applied once the batch is written.
#[derive(Default)]
struct Batch {
    entries: Vec<Planned>,
    left: Vec<Planned>,
}

impl Batch {
    /// Creates the batch's directories (`0700`): before any of its files
    /// is opened.
    fn make_dirs(&self, target: &mut Target) -> Result<()> {
        for dir in self.entries.iter().filter(|p| p.is_dir()) {
            target.make_dir(dir)?;
        }
        Ok(())
    }

    /// Makes the batch's links, FIFOs and devices, then applies the
    /// metadata of the directories the walk left (deepest first): after
    /// every file of the batch was placed, since nothing is written into
    /// those directories any more.
    fn finish(&self, target: &mut Target) -> Result<()> {
        for special in self
            .entries
            .iter()
            .filter(|p| !p.is_dir() && !matches!(p.node.kind, NodeKind::File { .. }))
        {
            target.make_special(special)?;
        }
        for dir in &self.left {
            target.finish_dir(dir)?;
        }
        Ok(())
    }

    /// The files of the batch and their bytes.
    fn files(&self) -> (u64, u64) {
        self.entries
            .iter()
            .fold((0, 0), |(files, bytes), p| match &p.node.kind {
                NodeKind::File { size, .. } => (files + 1, bytes + size),
                _ => (files, bytes),
            })
    }
}

/// Cuts the walk into batches, applying the selection; the walk waits
/// while a full batch is handed over (one batch is restored, one waits).
struct Batcher {
    selection: Selection,
    limits: BatchLimits,
    batch: Batch,
    /// Estimated memory of `batch`.
    bytes: usize,
    /// Restored directories the walk is still in, outermost first
    /// (bounded by the depth of the tree).
    open: Vec<Planned>,
    /// What the selection let through for the entry offered last.
    selected: Vec<Planned>,
    /// Progress whose totals grow with each batch (a part of a snapshot).
    growing: Option<Arc<nfrepo_engine::Work>>,
    tx: tokio::sync::mpsc::Sender<Batch>,
}

impl Batcher {
    fn new(
        selection: Selection,
        limits: BatchLimits,
        growing: Option<Arc<nfrepo_engine::Work>>,
        tx: tokio::sync::mpsc::Sender<Batch>,
    ) -> Self {
        Self {
            selection,
            limits,
            batch: Batch::default(),
            bytes: 0,
            open: Vec::new(),
            selected: Vec::new(),
            growing,
            tx,
        }
    }

    /// Hands `batch` over, counting its files into growing totals.
    fn hand_over(&self, batch: Batch) -> impl Future<Output = nfrepo_engine::Result<()>> + use<> {
        if let Some(work) = &self.growing {
            let (files, bytes) = batch.files();
            work.grow(files, bytes);
        }
        send_batch(self.tx.clone(), batch)
    }

    /// Offers one entry of the walk; returns the handing over of a full batch.
    fn offer(&mut self, rel: Vec<u8>, node: nfrepo_format::Node) -> Option<WalkPause> {
        self.selection.offer(Planned { rel, node }, &mut self.selected);
        for planned in std::mem::take(&mut self.selected) {
            // Every open directory this entry is not under was left for good.
            while self
                .open
                .last()
                .is_some_and(|d| !select::is_under(&planned.rel, &d.rel))
            {
                self.batch.left.extend(self.open.pop());
            }
            if planned.is_dir() {
                self.open.push(Planned {
                    rel: planned.rel.clone(),
                    node: planned.node.clone(),
                });
            }
            self.bytes += approx_size(&planned);
            self.batch.entries.push(planned);
        }
        if self.batch.entries.len() < self.limits.entries && self.bytes < self.limits.bytes {
            return None;
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        Some(Box::pin(self.hand_over(batch)))
    }

    /// Hands over the last batch, with every directory still open.
    async fn finish(&mut self) -> Result<()> {
        while let Some(dir) = self.open.pop() {
            self.batch.left.push(dir);
        }
        let batch = std::mem::take(&mut self.batch);
        if !batch.entries.is_empty() || !batch.left.is_empty() {
            self.hand_over(batch).await?;
        }
        Ok(())
    }
}

/// Hands `batch` to the restoring side; fails only if it has stopped (its
/// own error is then the one reported).
async fn send_batch(tx: tokio::sync::mpsc::Sender<Batch>, batch: Batch) -> nfrepo_engine::Result<()> {
    tx.send(batch)
        .await
        .map_err(|_| nfrepo_engine::Error::Pipeline("the restore stopped".into()))
}

/// The memory an entry of a batch takes, roughly (its heap parts counted).
fn approx_size(planned: &Planned) -> usize {
    let meta = &planned.node.meta;
    let xattrs: usize = meta.xattrs.iter().map(|x| x.name.len() + x.value.len() + 48).sum();
    let kind = match &planned.node.kind {
        NodeKind::Symlink { target } => target.len(),
        NodeKind::File {
            content: nfrepo_format::Content::Inline(entries),
            ..
        } => entries.len() * std::mem::size_of::<nfrepo_format::ListEntry>(),
        _ => 0,
    };
    std::mem::size_of::<Planned>()
        + planned.rel.len()
        + planned.node.name.len()
        + meta.user.as_ref().map_or(0, String::len)
        + meta.group.as_ref().map_or(0, String::len)
        + xattrs
        + kind
}

/// What the blocking calls of one restore share (the target, the files'
/// state), one call at a time.
fn lock<T>(shared: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    shared
        .lock()
        .map_err(|_| Error::Invalid("a restore writer thread panicked".into()))
}
