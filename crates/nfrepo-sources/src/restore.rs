//! Restoring a snapshot, or part of it, into a directory.
//!
//! Restore runs in two passes. The first walks the selected trees, applies
//! `--include`/`--exclude`, and checks every existing file in the target:
//! identical files are skipped, differing ones are a conflict that stops the
//! restore before anything is written (unless `overwrite`). The second
//! writes files, several at once, each into a temporary name that is renamed
//! into place only after all its chunks were verified, so a failed restore
//! never leaves a half-written file under a real name. Directory metadata
//! is applied last, deepest first, so writing files does not disturb it.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use nfrepo_engine::{Reader, SnapshotEntry};
use nfrepo_format::{Node, NodeKind};

use crate::{Error, Result, meta};

/// Files restored at once: many small files are bound by per-file system
/// calls, not bandwidth. Each streams with the reader's read-ahead.
const PARALLEL_FILES: usize = 8;
/// Read-ahead shared by the files restored at once, in MiB. Each file takes
/// its size in MiB (one to eight) of it, so many small files go eight at a
/// time while big ones, each reading up to 8 MiB ahead, go three at a time:
/// memory stays bounded whatever the mix.
const SHARED_READ_AHEAD_MIB: u32 = 24;

/// Options for [`restore`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Only paths matching one of these (or under a match) are restored.
    pub include: Vec<String>,
    /// Paths matching one of these (or under a match) are not restored.
    pub exclude: Vec<String>,
    /// Re-read each restored file from disk and compare its BLAKE3.
    pub verify: bool,
    /// Replace existing files that differ instead of refusing.
    pub overwrite: bool,
    /// Skip files whose stored content is damaged or missing (listing them
    /// in [`RestoreReport::skipped`]) instead of stopping at the first.
    pub skip_damaged: bool,
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
}

struct Selection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

fn glob_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let pattern = pattern.trim_start_matches('/');
        builder.add(Glob::new(pattern).map_err(|e| Error::Invalid(format!("bad glob {pattern:?}: {e}")))?);
    }
    builder.build().map(Some).map_err(|e| Error::Invalid(e.to_string()))
}

impl Selection {
    /// Whether `path` or one of its ancestors matches `set`.
    fn matches(set: &GlobSet, path: &str) -> bool {
        let mut prefix = path;
        loop {
            if set.is_match(prefix) {
                return true;
            }
            match prefix.rfind('/') {
                Some(i) => prefix = &prefix[..i],
                None => return false,
            }
        }
    }

    fn excluded(&self, path: &str) -> bool {
        self.exclude.as_ref().is_some_and(|set| Self::matches(set, path))
    }

    fn included(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|set| Self::matches(set, path))
    }
}

/// One node to restore, with its place in the snapshot and in the target.
struct Planned {
    node: Node,
    target: PathBuf,
}

/// Restores `path` of `snapshot` (the whole snapshot for `""`) under `target`.
///
/// # Errors
/// [`Error::Conflict`] before writing anything if an existing file differs
/// and `overwrite` is off; engine errors (a corrupted blob stops the restore,
/// naming it); I/O errors writing the target.
pub async fn restore(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    path: &str,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let selection = Selection {
        include: glob_set(&options.include)?,
        exclude: glob_set(&options.exclude)?,
    };
    let start = reader.resolve(snapshot, path).await?;
    let mut plan: Vec<Planned> = Vec::new();
    let base = path.trim_matches('/');
    match start {
        None => {
            reader
                .walk(&snapshot.snapshot.root, b"", true, |entry| {
                    let rel = entry.path_lossy();
                    if !selection.excluded(&rel) && (selection.included(&rel) || is_dir(&entry.node)) {
                        plan.push(Planned {
                            target: target.join(std::ffi::OsStr::from_bytes(&entry.path)),
                            node: entry.node,
                        });
                    }
                    Ok(())
                })
                .await?;
        }
        Some(node) => {
            let top = target.join(std::ffi::OsStr::from_bytes(&node.name));
            if let NodeKind::Dir { tree } = &node.kind {
                reader
                    .walk(tree, b"", true, |entry| {
                        let rel = format!("{base}/{}", entry.path_lossy());
                        if !selection.excluded(&rel) && (selection.included(&rel) || is_dir(&entry.node)) {
                            plan.push(Planned {
                                target: top.join(std::ffi::OsStr::from_bytes(&entry.path)),
                                node: entry.node,
                            });
                        }
                        Ok(())
                    })
                    .await?;
            }
            plan.insert(0, Planned { node, target: top });
        }
    }
    // Directories kept only for their included descendants are dropped if empty.
    if selection.include.is_some() {
        let wanted: Vec<&Path> = plan
            .iter()
            .filter(|p| !is_dir(&p.node))
            .map(|p| p.target.as_path())
            .collect();
        let keep: Vec<bool> = plan
            .iter()
            .map(|p| !is_dir(&p.node) || wanted.iter().any(|w| w.starts_with(&p.target)))
            .collect();
        let mut keep = keep.into_iter();
        plan.retain(|_| keep.next().unwrap_or(false));
    }

    let mut report = RestoreReport::default();
    let todo = check_conflicts(&plan, options.overwrite, &mut report).await?;
    std::fs::create_dir_all(target).map_err(|e| io_error(target, e))?;

    for planned in plan.iter().filter(|p| is_dir(&p.node)) {
        std::fs::create_dir_all(&planned.target).map_err(|e| io_error(&planned.target, e))?;
        report.dirs += 1;
    }
    let files: Vec<&Planned> = plan
        .iter()
        .zip(&todo)
        .filter(|(p, write)| **write && matches!(p.node.kind, NodeKind::File { .. }))
        .map(|(p, _)| p)
        .collect();
    let read_ahead = tokio::sync::Semaphore::new(SHARED_READ_AHEAD_MIB as usize);
    let read_ahead = &read_ahead;
    let mut results = futures::stream::iter(files)
        .map(|planned| async move {
            let size_mib = match planned.node.kind {
                NodeKind::File { size, .. } => size >> 20,
                _ => 0,
            };
            let share = u32::try_from(size_mib.clamp(1, 8)).unwrap_or(8);
            // The semaphore is never closed, so acquiring only waits.
            let _share = read_ahead.acquire_many(share).await;
            (planned, restore_file(reader, planned, options.verify).await)
        })
        .buffer_unordered(PARALLEL_FILES);
    let mut written = Vec::new();
    while let Some((planned, result)) = results.next().await {
        match result {
            Ok(done) => written.push(done),
            Err(e) if options.skip_damaged && e.is_damage() => {
                report.skipped.push((planned.target.clone(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    report.skipped.sort();
    for (bytes, warnings) in written {
        report.files += 1;
        report.bytes += bytes;
        if options.verify {
            report.verified += 1;
        }
        report.warnings.extend(warnings);
    }
    for planned in plan
        .iter()
        .filter(|p| !is_dir(&p.node) && !matches!(p.node.kind, NodeKind::File { .. }))
    {
        restore_special(planned, options.overwrite, &mut report)?;
    }
    for planned in plan.iter().rev().filter(|p| is_dir(&p.node)) {
        meta::apply(&planned.target, &planned.node.meta, false, &mut report.warnings);
    }
    // One flush of the whole file system at the end instead of an fsync per
    // file: the restore is durable when this returns, at a fraction of the cost.
    let root = std::fs::File::open(target).map_err(|e| io_error(target, e))?;
    nix::unistd::syncfs(&root).map_err(|e| io_error(target, e.into()))?;
    Ok(report)
}

fn is_dir(node: &Node) -> bool {
    matches!(node.kind, NodeKind::Dir { .. })
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Returns, for each planned node, whether it must be written.
async fn check_conflicts(plan: &[Planned], overwrite: bool, report: &mut RestoreReport) -> Result<Vec<bool>> {
    let mut todo = Vec::with_capacity(plan.len());
    for planned in plan {
        let existing = std::fs::symlink_metadata(&planned.target);
        let write = match (&planned.node.kind, existing) {
            (_, Err(_)) => true,
            (NodeKind::Dir { .. }, Ok(m)) if m.is_dir() => true,
            (NodeKind::File { size, blake3, .. }, Ok(m)) if m.is_file() && m.len() == *size => {
                let path = planned.target.clone();
                let actual = tokio::task::spawn_blocking(move || hash_file(&path))
                    .await
                    .map_err(|e| Error::Invalid(e.to_string()))?
                    .map_err(|e| io_error(&planned.target, e))?;
                if actual == *blake3 {
                    report.files_unchanged += 1;
                    false
                } else if overwrite {
                    true
                } else {
                    return Err(Error::Conflict(planned.target.clone()));
                }
            }
            (_, Ok(_)) if overwrite => true,
            (_, Ok(_)) => return Err(Error::Conflict(planned.target.clone())),
        };
        todo.push(write);
    }
    Ok(todo)
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

async fn restore_file(reader: &Reader, planned: &Planned, verify: bool) -> Result<(u64, Vec<String>)> {
    let NodeKind::File { blake3, .. } = &planned.node.kind else {
        return Ok((0, Vec::new()));
    };
    let target = planned.target.clone();
    let temp = temp_name(&target);
    let mut file = std::fs::File::create(&temp).map_err(|e| io_error(&temp, e))?;
    // Removes the temporary file however this ends early, including when a
    // failing sibling makes the restore drop this future mid-stream.
    let guard = TempFile(Some(temp.clone()));
    let mut written = 0u64;
    // Verified as a whole: the last chunk comes only once size and hashes match.
    let mut chunks = std::pin::pin!(reader.file_content(&planned.node, planned.target.display().to_string()));
    let result: Result<()> = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            file.write_all(&chunk).map_err(|e| io_error(&temp, e))?;
        }
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, &target).map_err(|e| io_error(&target, e))?;
    guard.disarm();
    let mut warnings = Vec::new();
    meta::apply(&target, &planned.node.meta, false, &mut warnings);
    if verify {
        let path = target.clone();
        let actual = tokio::task::spawn_blocking(move || hash_file(&path))
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?
            .map_err(|e| io_error(&target, e))?;
        if actual != *blake3 {
            return Err(Error::ContentMismatch(target));
        }
    }
    Ok((written, warnings))
}

/// A temporary restore file, removed on drop unless disarmed after its rename.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn temp_name(target: &Path) -> PathBuf {
    let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".nfrepo-restore-{}", std::process::id()));
    target.with_file_name(name)
}

fn restore_special(planned: &Planned, overwrite: bool, report: &mut RestoreReport) -> Result<()> {
    let path = &planned.target;
    if overwrite && std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
    }
    let made = match &planned.node.kind {
        NodeKind::Symlink { target } => {
            if std::fs::symlink_metadata(path).is_ok() {
                // An identical link was found by the conflict check.
                return Ok(());
            }
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path).map_err(|e| io_error(path, e))?;
            meta::apply(path, &planned.node.meta, true, &mut report.warnings);
            report.others += 1;
            return Ok(());
        }
        NodeKind::Fifo => nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(planned.node.meta.mode)),
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
            let kind = if matches!(planned.node.kind, NodeKind::CharDevice { .. }) {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(
                path,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(planned.node.meta.mode),
                *rdev,
            )
        }
        _ => {
            report
                .warnings
                .push(format!("{}: sockets are not restored", path.display()));
            return Ok(());
        }
    };
    match made {
        Ok(()) => {
            meta::apply(path, &planned.node.meta, false, &mut report.warnings);
            report.others += 1;
        }
        Err(e) => report.warnings.push(format!("{}: cannot create: {e}", path.display())),
    }
    Ok(())
}

/// Writes a file's content to `out` (for `cat`). Returns the bytes written.
///
/// # Errors
/// [`Error::NotAFile`] for anything but a file; engine errors, including a
/// corrupted blob, stop the output at the last verified chunk. The file's
/// last chunk is written only once its size and hashes match its node
/// ([`Reader::file_content`]).
pub async fn write_content(reader: &Reader, node: &Node, mut out: impl Write) -> Result<u64> {
    if !matches!(node.kind, NodeKind::File { .. }) {
        return Err(Error::NotAFile(node.name_lossy().into_owned()));
    }
    let mut chunks = std::pin::pin!(reader.file_content(node, node.name_lossy().into_owned()));
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).map_err(|e| Error::Io {
            path: PathBuf::from("<stdout>"),
            source: e,
        })?;
        written += chunk.len() as u64;
    }
    out.flush().map_err(|e| Error::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    })?;
    Ok(written)
}

/// A byte range of a file that `cat --skip-damaged` filled with zeros, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    /// Offset of the first zero byte.
    pub offset: u64,
    /// Number of zero bytes written in place of the damaged content.
    pub len: u64,
    /// What was wrong with the stored content.
    pub reason: String,
}

/// Like [`write_content`], but a chunk that is damaged or missing is
/// written as zeros of its recorded length, and listed, instead of ending
/// the output: every non-zero byte written still passed authentication,
/// and every offset after a damaged range stays where it belongs (what a
/// database dump being salvaged needs). If a content list itself is
/// damaged, the rest of the file (up to its recorded size) is zeros.
///
/// # Errors
/// [`Error::NotAFile`]; I/O errors writing `out`; storage failures that are not damage.
pub async fn write_content_skipping_damage(
    reader: &Reader,
    node: &Node,
    mut out: impl Write,
) -> Result<(u64, Vec<DamagedRange>)> {
    let NodeKind::File { content, size, .. } = &node.kind else {
        return Err(Error::NotAFile(node.name_lossy().into_owned()));
    };
    let io = |e| Error::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    };
    let mut damaged = Vec::new();
    let mut written = 0u64;
    let write_zeros = |out: &mut dyn Write, len: u64| -> Result<()> {
        let zeros = [0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            out.write_all(zeros.get(..n).unwrap_or_default()).map_err(io)?;
            left -= n as u64;
        }
        Ok(())
    };
    let entries = reader.content_chunks(content);
    let mut chunks = std::pin::pin!(
        entries
            .map(|entry| {
                let reader = reader.clone();
                async move {
                    match entry {
                        Ok(entry) => {
                            let read = reader.read_blob(&entry.id, nfrepo_format::BlobKind::Data).await;
                            Ok((entry, read))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(8)
    );
    while let Some(next) = chunks.next().await {
        match next {
            Ok((_, Ok(chunk))) => {
                out.write_all(&chunk).map_err(io)?;
                written += chunk.len() as u64;
            }
            Ok((entry, Err(e))) if e.is_damage() => {
                write_zeros(&mut out, entry.len)?;
                damaged.push(DamagedRange {
                    offset: written,
                    len: entry.len,
                    reason: e.to_string(),
                });
                written += entry.len;
            }
            Err(e) if e.is_damage() => {
                let rest = size.saturating_sub(written);
                write_zeros(&mut out, rest)?;
                damaged.push(DamagedRange {
                    offset: written,
                    len: rest,
                    reason: e.to_string(),
                });
                written += rest;
                break;
            }
            Ok((_, Err(e))) | Err(e) => return Err(e.into()),
        }
    }
    out.flush().map_err(io)?;
    Ok((written, damaged))
}
