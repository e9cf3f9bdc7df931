//! The restore target: every write relative to a directory descriptor.
//!
//! [`Target`] opens the target directory once. Each later path is reached
//! from that descriptor one component at a time with
//! `openat(O_DIRECTORY | O_NOFOLLOW)`, so a directory of the target that is
//! (or becomes) a symlink stops the restore with [`Error::Conflict`]
//! instead of sending writes through it; nothing is ever resolved by path.
//!
//! The descriptors of the directories on the path reached last are kept
//! ([`Target::dir`]): the next path is reached from the deepest directory
//! the two share, so the files of one directory, which a restore writes
//! one after the other, cost no `openat` each (a tree of 44,000 files in
//! directories seven deep made eight `openat` and eight `close` calls per
//! file, on the one thread that opens and places files). A directory kept
//! this way is the one that was reached: if it is renamed, or swapped for
//! a link, meanwhile, files still go into that directory, never through the
//! link, and the swap is a [`Error::Conflict`] once a later path reaches
//! that name again from the directory above.
//!
//! - Directories are created `0700` (`mkdirat`); their stored metadata is
//!   applied by [`Target::finish_dir`] once everything inside is written.
//! - A file is written to a temporary name in its directory: 64 random bits,
//!   created with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode `0600`, so a
//!   planted link or file at any name is never followed or reused. Only a
//!   file whose written bytes add up to its size and whose content, read
//!   back, matches the stored BLAKE3 (with `verify`: read back from the
//!   device, not the page cache; a large file's prefix is read back while
//!   the rest is written, see `digest.rs`, or its hash is assembled from
//!   the windows it was written in, see `direct.rs`) gets its metadata
//!   (through the descriptor) and is renamed over the real name. Without
//!   `overwrite` that rename is `RENAME_NOREPLACE`: the conflict check is
//!   the write itself, not an earlier look.
//! - Links, FIFOs and devices are created in place (`symlinkat`, `mknodat`),
//!   or, replacing a differing entry with `overwrite`, at a random name
//!   renamed over it.
//! - With `overwrite`, a directory where the snapshot has a file, link or
//!   device is renamed aside to a random name, the new entry renamed into
//!   place, and the old tree then removed through descriptors (links in it
//!   are removed, never followed); if placing fails, the directory is put
//!   back.
//! - An existing entry that is the same as the snapshot's (same type and
//!   content, link target or device number) is not a conflict and is left
//!   as it is, metadata included.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nfrepo_format::{Metadata, NodeKind};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::attrs::{self, Policy};
use super::digest::{self, RunningDigest};
use super::direct::{DirectFile, Staging};
use super::existing::{Existing, existing_file, hash_until, rename_no_replace, replace_at, same_special};
use super::select::Planned;
use crate::{Error, Result};

/// The least size of a file created at its size (what a file written
/// around the page cache needs); smaller ones are extended at the check if
/// their tail is a hole.
const SIZED_AT_OPEN: u64 = super::direct::DIRECT_MIN;

/// The least size of a file whose writeback the check starts
/// ([`digest::write_behind`]); smaller files are left to the kernel's
/// flusher and the final `syncfs`. Per small file, that call cost more
/// than the writeback it started: a tree of 44,000 files restored into a
/// new ext4 (5 alternated runs, `restore` including its `syncfs`) took
/// 7.01 s (6.73–7.25) with it for every file, 6.01 s (5.45–6.64) without,
/// the machine's CPU 10.8 against 8.6 s; from S3 through `remote-s3
/// 10,100`, 9.35 against 8.67 s.
const WRITTEN_BEHIND: u64 = super::direct::DIRECT_MIN;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Counters and warnings of the file-system side of a restore.
#[derive(Debug, Default)]
pub(crate) struct TargetReport {
    pub dirs: u64,
    pub others: u64,
    pub others_unchanged: u64,
    pub files_unchanged: u64,
    pub verified: u64,
    pub warnings: Vec<String>,
}

/// Points where tests act on the target while it is being written.
#[cfg(test)]
pub(crate) enum Event<'a> {
    /// Before a file's directory is opened and its temporary file created.
    BeforeOpen { rel: &'a [u8] },
    /// Content written to the temporary file, before its metadata is applied.
    Written { parent: &'a OwnedFd, temp: &'a str },
}

/// A test's action at an [`Event`].
#[cfg(test)]
pub(crate) type Hook = Box<dyn FnMut(Event<'_>) + Send>;

/// A directory being restored into. Synchronous: it runs on a blocking thread.
pub(crate) struct Target {
    root: Arc<OwnedFd>,
    root_path: PathBuf,
    /// The directories of the path reached last, outermost first: each
    /// component's name and descriptor ([`Self::dir`]).
    reached: Vec<(Vec<u8>, Arc<OwnedFd>)>,
    /// Directories this restore created and has not finished (by path
    /// relative to the target; the target itself, `""`, if the restore
    /// created it): nothing was at any name in them, so a file to restore
    /// there is created without a look at its name first
    /// ([`Self::open_file`]). Held only until [`Self::finish_dir`], so at
    /// most the directories of the batches in the pipeline.
    fresh: HashSet<Vec<u8>>,
    /// Unpredictable temporary names without a system call each.
    temp_names: TempNames,
    overwrite: bool,
    verify: bool,
    policy: Policy,
    /// The window buffers of large files written around the page cache.
    staging: Arc<Staging>,
    pub(crate) report: TargetReport,
    #[cfg(test)]
    pub(crate) hook: Option<Hook>,
    /// Temporary names to use before random ones.
    #[cfg(test)]
    pub(crate) forced_temp: Vec<String>,
}

/// What [`Target::open_file`] found.
pub(crate) enum Opened {
    /// The same file is already there; nothing to write.
    Unchanged,
    /// A temporary file to fill.
    Write(Box<OpenFile>),
}

/// A file being written under a temporary name; removed on drop unless it
/// was renamed into place.
///
/// It is filled with positioned writes ([`FileWriter::write_at`], from any
/// thread, in any order); all-zero content is never written, so it stays a
/// hole. A large file is created at its recorded size (`ftruncate`:
/// sparse, no blocks yet); a smaller one grows with its writes, and is
/// extended to its size at the check if its tail is a hole.
/// [`Self::record`] counts what was written, in any order.
pub(crate) struct OpenFile {
    parent: Arc<OwnedFd>,
    rel: Vec<u8>,
    path: PathBuf,
    temp: Option<String>,
    file: Arc<File>,
    size: u64,
    /// Content bytes recorded (placements, in any order).
    written: u64,
    /// Whether [`Self::check`] passed, and whether it read from the device.
    checked: Option<bool>,
    error: Option<Error>,
    blake3: [u8; 32],
    /// The whole BLAKE3 taken while a large file is written.
    digest: Option<Arc<RunningDigest>>,
    /// A large file written around the page cache (`direct.rs`); such a
    /// file has no `digest`.
    direct: Option<Arc<DirectFile>>,
    meta: Metadata,
    /// Something differing is at the name and `overwrite` is on.
    replace: bool,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = nix::unistd::unlinkat(&self.parent, temp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

impl OpenFile {
    /// A handle for positioned writes from other threads.
    pub(crate) fn writer(&self) -> FileWriter {
        FileWriter {
            file: self.file.clone(),
            path: self.path.clone(),
            size: self.size,
            digest: self.digest.clone(),
            direct: self.direct.clone(),
        }
    }

    /// Starts writing the file back to its device without waiting
    /// ([`digest::write_behind`]): a `--verify` restore does it for every
    /// file of a step before checking them, so the device writes them
    /// together instead of one direct read at a time waiting for its own.
    /// A large file's prefix read back while it was written is on the
    /// device already: only the rest is asked for (asking for the whole
    /// file walked, and dropped from the page cache, every page of a 1 GB
    /// file for nothing).
    pub(crate) fn start_writeback(&self) {
        if self.direct.is_some() {
            // Written to the device already (but for its last block).
            return;
        }
        let from = self.digest.as_ref().map_or(0, |digest| digest.hashed());
        digest::write_behind(&self.file, from, 0);
    }

    /// Records that `len` bytes of verified content were written (with
    /// [`FileWriter::write_at`]) at one of the file's planned placements.
    pub(crate) const fn record(&mut self, len: u64) {
        self.written += len;
    }

    /// Checks the written content: its written bytes add up to its size,
    /// and the file read back has the node's whole BLAKE3 (every chunk was
    /// authenticated before it was written; this catches a chunk sealed
    /// under an id it does not hash to, a node that disagrees with its
    /// chunks, and the restore's own writes). The read normally comes from
    /// the page cache; with `from_device` it comes from the storage
    /// ([`Self::hash_rest`]). A large file's prefix was hashed while it was
    /// written (the `digest` module, from the device through `O_DIRECT`
    /// with `from_device`), so only the rest is read here. Takes no lock of
    /// the target: the restore checks files outside it, several at once,
    /// before [`Target::close_file`] (which checks any file not checked).
    ///
    /// # Errors
    /// [`Error::ContentMismatch`]; I/O errors reading back; the first
    /// error writing it.
    pub(crate) fn check(&mut self, from_device: bool) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.written != self.size {
            return Err(Error::ContentMismatch(self.path.clone()));
        }
        if let Some(direct) = self.direct.as_ref()
            && let Some(whole) = direct.finish(from_device).map_err(|e| io_error(&self.path, e))?
        {
            if whole != self.blake3 {
                return Err(Error::ContentMismatch(self.path.clone()));
            }
            self.checked = Some(from_device);
            return Ok(());
        }
        if !self.fit_to_size().map_err(|e| io_error(&self.path, e))? {
            return Err(Error::ContentMismatch(self.path.clone()));
        }
        let started = std::time::Instant::now();
        let (hasher, from) = match self.digest.as_ref().and_then(|d| d.take(from_device)) {
            Some(prefix) => (prefix.hasher, prefix.hashed),
            None => (blake3::Hasher::new(), 0),
        };
        if self.digest.is_some() {
            tracing::debug!(
                path = %self.path.display(),
                hashed_while_written = from,
                tail = self.size.saturating_sub(from),
                waited_for_hashing = ?started.elapsed(),
                "checking a large file"
            );
        }
        let whole = self
            .hash_rest(hasher, from, from_device)
            .map_err(|e| io_error(&self.path, e))?;
        if whole != self.blake3 {
            return Err(Error::ContentMismatch(self.path.clone()));
        }
        if !from_device && self.size >= WRITTEN_BEHIND {
            // Checked from the page cache; a device read wrote it back already.
            digest::write_behind(&self.file, from, 0);
        }
        self.checked = Some(from_device);
        Ok(())
    }

    /// Whether the file is no longer than its size (a longer one was
    /// written past its end); a shorter one, not sized when it was created
    /// and ending in a hole (all-zero content, never written), is extended
    /// to its size. So the check reads exactly the file's size.
    fn fit_to_size(&self) -> std::io::Result<bool> {
        let len = u64::try_from(nix::sys::stat::fstat(self.file.as_fd())?.st_size).unwrap_or(u64::MAX);
        if len < self.size {
            self.file.set_len(self.size)?;
        }
        Ok(len <= self.size)
    }

    /// Hashes the file from `from` to its end (its size, which
    /// [`Self::fit_to_size`] checked) into `hasher`. With
    /// `from_device` the bytes come from the storage: with direct reads
    /// through its own descriptor where the file system allows (the
    /// direct read writes the range back first, and needs no `fdatasync`:
    /// on ext4 that is a journal commit per file, which made `--verify` of
    /// a tree of small files take four times as long as the restore), else
    /// after flushing the file and dropping its cached pages.
    fn hash_rest(&self, mut hasher: blake3::Hasher, from: u64, from_device: bool) -> std::io::Result<[u8; 32]> {
        if !from_device {
            return hash_until(&self.file, hasher, from, self.size, self.size);
        }
        match digest::hash_direct(&self.file, &mut hasher, from, self.size) {
            Some(hashed) => {
                hashed?;
                Ok(*hasher.finalize().as_bytes())
            }
            None => {
                digest::flush_and_drop(&self.file, from, 0)?;
                hash_until(&self.file, hasher, from, self.size, self.size)
            }
        }
    }
}

/// Positioned writes into an [`OpenFile`], shareable between threads.
#[derive(Clone)]
pub(crate) struct FileWriter {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    digest: Option<Arc<RunningDigest>>,
    direct: Option<Arc<DirectFile>>,
}

impl FileWriter {
    /// Writes `data` at `offset`. All-zero data inside the file's size is
    /// not written: it stays a hole, which reads as zeros (at the file's
    /// end, once [`OpenFile::check`] extended a file not sized when
    /// created).
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_run(offset, &[data])
    }

    /// Writes `parts` one after the other from `offset`, with as few calls
    /// as it can (`pwritev`): each all-zero part inside the file's size is
    /// left a hole, as in [`Self::write_at`], and the parts between holes
    /// go together.
    pub(crate) fn write_run(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        if let Some(direct) = &self.direct {
            return direct.write_run(offset, parts).map_err(|e| io_error(&self.path, e));
        }
        let mut batch: Vec<IoSlice<'_>> = Vec::new();
        let (mut batch_at, mut at) = (offset, offset);
        for part in parts {
            let len = part.len() as u64;
            let hole = at.saturating_add(len) <= self.size && is_zero(part);
            if hole || batch.len() == IOV_MAX {
                self.write_batch(batch_at, &mut batch)?;
            }
            if batch.is_empty() {
                batch_at = if hole { at + len } else { at };
            }
            if !hole {
                batch.push(IoSlice::new(part));
            }
            at += len;
        }
        self.write_batch(batch_at, &mut batch)?;
        if let Some(digest) = &self.digest {
            digest.wrote(offset, at - offset);
        }
        Ok(())
    }

    /// Writes `batch` at `offset` and empties it, however short each call.
    fn write_batch(&self, mut offset: u64, batch: &mut Vec<IoSlice<'_>>) -> Result<()> {
        let mut rest = batch.as_mut_slice();
        while !rest.is_empty() {
            let at =
                i64::try_from(offset).map_err(|_| io_error(&self.path, std::io::Error::other("offset too large")))?;
            match nix::sys::uio::pwritev(self.file.as_fd(), rest, at) {
                Ok(0) => {
                    return Err(io_error(&self.path, std::io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    IoSlice::advance_slices(&mut rest, n);
                    offset += n as u64;
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(io_error(&self.path, e.into())),
            }
        }
        batch.clear();
        Ok(())
    }

    /// Writes `data` at `offset` whatever it holds: zeros too, since the
    /// file may hold other bytes there (a rewrite after a failed check,
    /// `files::rewrite_checked`).
    pub(crate) fn overwrite_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        if let Some(direct) = &self.direct {
            direct.spoil();
        }
        self.write_batch(offset, &mut vec![IoSlice::new(data)])?;
        if let Some(digest) = &self.digest {
            digest.wrote(offset, data.len() as u64);
        }
        Ok(())
    }

    /// Whether a large file has new prefix to hash (see the `digest` module).
    pub(crate) fn hash_due(&self) -> bool {
        self.digest.as_ref().is_some_and(|d| d.due())
    }

    /// Hashes what is newly written of a large file's prefix; call it on a
    /// blocking thread of its own (it may wait for the device).
    pub(crate) fn catch_up(&self) {
        if let Some(digest) = &self.digest {
            digest.catch_up(&self.file);
        }
    }
}

/// Slices one `pwritev` takes at most (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Whether every byte is zero (branch-free inner loop, so it vectorizes).
pub(super) fn is_zero(data: &[u8]) -> bool {
    data.chunks(256)
        .all(|block| block.iter().fold(0u8, |acc, b| acc | b) == 0)
}

fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (rel.get(..i).unwrap_or_default(), rel.get(i + 1..).unwrap_or_default()),
        None => (&[], rel),
    }
}

fn name_of(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Temporary names in the target (see the module docs).
struct TempNames(crate::random::Names);

impl TempNames {
    fn new() -> Self {
        Self(crate::random::Names::new())
    }

    fn next(&mut self) -> String {
        format!(".nfrepo-restore-{}", self.0.next_hex())
    }
}

impl Target {
    /// Creates `path` if missing (the path itself is the operator's choice
    /// and may pass through links) and opens it.
    pub(crate) fn open(path: &Path, overwrite: bool, verify: bool, policy: Policy) -> Result<Self> {
        let missing = matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        std::fs::create_dir_all(path).map_err(|e| io_error(path, e))?;
        let root = nix::fcntl::openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(path, e.into()))?;
        Ok(Self {
            root: Arc::new(root),
            root_path: path.to_path_buf(),
            reached: Vec::new(),
            fresh: if missing {
                HashSet::from([Vec::new()])
            } else {
                HashSet::new()
            },
            temp_names: TempNames::new(),
            overwrite,
            verify,
            policy,
            staging: Arc::new(Staging::default()),
            report: TargetReport::default(),
            #[cfg(test)]
            hook: None,
            #[cfg(test)]
            forced_temp: Vec::new(),
        })
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        self.root_path.join(name_of(rel))
    }

    /// The directory `rel` of the target, reached without following links:
    /// from the deepest directory it shares with the path reached last (see
    /// the module docs), one component at a time with
    /// `openat(O_DIRECTORY | O_NOFOLLOW)`. A component that is a symlink or
    /// not a directory is [`Error::Conflict`] naming it.
    fn dir(&mut self, rel: &[u8]) -> Result<Arc<OwnedFd>> {
        let shared = self
            .reached
            .iter()
            .zip(components(rel))
            .take_while(|((reached, _), (component, _))| reached.as_slice() == *component)
            .count();
        self.reached.truncate(shared);
        for (component, end) in components(rel).skip(shared) {
            let base = self.reached.last().map_or(&self.root, |(_, fd)| fd);
            let fd = nix::fcntl::openat(base, name_of(component), DIR_FLAGS, Mode::empty())
                .map_err(|e| not_reached(self.path(rel.get(..end).unwrap_or(rel)), e))?;
            self.reached.push((component.to_vec(), Arc::new(fd)));
        }
        Ok(Arc::clone(self.reached.last().map_or(&self.root, |(_, fd)| fd)))
    }

    fn temp_name(&mut self) -> String {
        #[cfg(test)]
        if let Some(name) = self.forced_temp.pop() {
            return name;
        }
        self.temp_names.next()
    }

    /// Runs `create` on fresh random names until one did not exist.
    fn create_temp<T>(&mut self, rel: &[u8], mut create: impl FnMut(&OsStr) -> nix::Result<T>) -> Result<(String, T)> {
        for _ in 0..16 {
            let temp = self.temp_name();
            match create(OsStr::new(&temp)) {
                Ok(made) => return Ok((temp, made)),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(io_error(&self.path(rel), e.into())),
            }
        }
        Err(io_error(
            &self.path(rel),
            std::io::Error::other("no free temporary name after 16 random tries"),
        ))
    }

    /// Creates (`0700`) or opens the directory of `planned`. With
    /// `overwrite`, a link or file in its place is replaced, never followed.
    pub(crate) fn make_dir(&mut self, planned: &Planned) -> Result<()> {
        let (parent_rel, name) = split(&planned.rel);
        let parent = self.dir(parent_rel)?;
        let path = || self.path(&planned.rel);
        let mode = Mode::from_bits_truncate(0o700);
        match nix::sys::stat::mkdirat(&parent, name_of(name), mode) {
            Ok(()) => {
                self.fresh.insert(planned.rel.clone());
            }
            Err(Errno::EEXIST) => match nix::fcntl::openat(&parent, name_of(name), DIR_FLAGS, Mode::empty()) {
                Ok(_) => {}
                Err(Errno::ELOOP | Errno::ENOTDIR) if self.overwrite => {
                    nix::unistd::unlinkat(&parent, name_of(name), UnlinkatFlags::NoRemoveDir)
                        .and_then(|()| nix::sys::stat::mkdirat(&parent, name_of(name), mode))
                        .map_err(|e| io_error(&path(), e.into()))?;
                }
                Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(Error::Conflict(path())),
                Err(e) => return Err(io_error(&path(), e.into())),
            },
            Err(e) => return Err(io_error(&path(), e.into())),
        }
        self.report.dirs += 1;
        Ok(())
    }

    /// Applies a directory's stored metadata (call deepest first, after
    /// everything inside it was written).
    ///
    /// The directory is reached as a file's is ([`Self::dir`]): from the
    /// deepest directory it shares with the path reached last, which, the
    /// walk leaving directories deepest first, is usually its parent or the
    /// directory itself (reaching each from the target cost one `openat`
    /// per level, 24,000 for a tree of 3,400 directories).
    pub(crate) fn finish_dir(&mut self, planned: &Planned) -> Result<()> {
        self.fresh.remove(&planned.rel);
        let dir = self.dir(&planned.rel)?;
        let path = self.path(&planned.rel);
        let file = File::from(dir.try_clone().map_err(|e| io_error(&path, e))?);
        attrs::apply_fd(&file, &path, &planned.node.meta, self.policy, &mut self.report.warnings);
        Ok(())
    }

    /// Flushes the target's file system: the restore is durable after this.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file_system().sync()
    }

    /// The target's file system, to flush without the target's lock.
    pub(crate) fn file_system(&self) -> FileSystem {
        FileSystem {
            root: Arc::clone(&self.root),
            path: self.root_path.clone(),
        }
    }

    /// Looks at what is at the name of a file to restore and, unless the
    /// same file is there, creates its temporary file.
    ///
    /// # Errors
    /// [`Error::Conflict`] if something else is there and `overwrite` is
    /// off, or a directory on the way is not a directory.
    pub(crate) fn open_file(&mut self, planned: &Planned) -> Result<Opened> {
        let NodeKind::File { size, blake3, .. } = &planned.node.kind else {
            return Err(Error::Invalid(format!(
                "{}: not a file",
                self.path(&planned.rel).display()
            )));
        };
        #[cfg(test)]
        if let Some(hook) = self.hook.as_mut() {
            hook(Event::BeforeOpen { rel: &planned.rel });
        }
        let (parent_rel, name) = split(&planned.rel);
        let parent = self.dir(parent_rel)?;
        // In a directory this restore created nothing is at the name: no
        // look (a `newfstatat` per file). Should something appear there
        // meanwhile, placing the file finds it (`RENAME_NOREPLACE`) and
        // decides as this look would have (`Self::close_file`).
        let look = if self.fresh.contains(parent_rel) {
            Ok(Existing::Absent)
        } else {
            existing_file(&parent, name, *size, blake3)
        };
        let replace = match look {
            Ok(Existing::Absent) => false,
            Ok(Existing::Same) => {
                self.report.files_unchanged += 1;
                return Ok(Opened::Unchanged);
            }
            Ok(Existing::Differs) if self.overwrite => true,
            Ok(Existing::Differs) => return Err(Error::Conflict(self.path(&planned.rel))),
            Err(e) => return Err(io_error(&self.path(&planned.rel), e)),
        };
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (temp, fd) = self.create_temp(&planned.rel, |temp| {
            nix::fcntl::openat(&parent, temp, flags, Mode::from_bits_truncate(0o600))
        })?;
        let path = self.path(&planned.rel);
        let file = File::from(fd);
        // A small file grows with its writes and is extended only if its
        // tail is a hole ([`OpenFile::check`]): an `ftruncate` per file
        // saved. A large one is sized now, for its direct writes.
        let sized = if *size >= SIZED_AT_OPEN {
            file.set_len(*size)
        } else {
            Ok(())
        };
        let file = Arc::new(file);
        let direct = DirectFile::open(&self.staging, &parent, &temp, &file, *size, self.verify).map(Arc::new);
        let digest = (direct.is_none() && *size >= 2 * digest::STEP).then(|| {
            let direct = self
                .verify
                .then(|| digest::open_direct(&parent, &temp, &file))
                .flatten();
            Arc::new(RunningDigest::new(self.verify, direct))
        });
        let open = OpenFile {
            parent,
            rel: planned.rel.clone(),
            path,
            temp: Some(temp),
            file,
            size: *size,
            written: 0,
            checked: None,
            error: None,
            blake3: *blake3,
            digest,
            direct,
            meta: planned.node.meta.clone(),
            replace,
        };
        // On failure `open` is dropped, which removes the temporary file.
        sized.map_err(|e| io_error(&open.path, e))?;
        Ok(Opened::Write(Box::new(open)))
    }

    /// Appends content to an open file (what tests write with).
    #[cfg(test)]
    pub(crate) fn write(&self, file: &mut OpenFile, data: &[u8]) {
        let offset = file.written;
        match file.writer().write_at(offset, data) {
            Ok(()) => file.record(data.len() as u64),
            Err(e) => {
                file.error.get_or_insert(e);
            }
        }
    }

    /// The window buffers of the large files written around the page cache.
    pub(crate) fn staging(&self) -> Arc<Staging> {
        Arc::clone(&self.staging)
    }

    /// Whether files are read back from the device before they are placed (`--verify`).
    pub(crate) const fn verifies(&self) -> bool {
        self.verify
    }

    /// Checks the content (unless [`OpenFile::check`] did), applies the
    /// metadata and renames the file into place. Returns the bytes written,
    /// or `None` if the same file turned up at the name meanwhile.
    ///
    /// # Errors
    /// [`Error::ContentMismatch`]; [`Error::Conflict`] if a differing entry
    /// appeared at the name; I/O errors. The temporary file is removed.
    pub(crate) fn close_file(&mut self, mut file: Box<OpenFile>) -> Result<Option<u64>> {
        let path = file.path.clone();
        if file.checked.is_none_or(|from_device| self.verify && !from_device) {
            file.check(self.verify)?;
        }
        if file.checked == Some(true) {
            self.report.verified += 1;
        }
        let temp = file.temp.clone().unwrap_or_default();
        #[cfg(test)]
        if let Some(hook) = self.hook.as_mut() {
            hook(Event::Written {
                parent: &file.parent,
                temp: &temp,
            });
        }
        attrs::apply_fd(&file.file, &path, &file.meta, self.policy, &mut self.report.warnings);
        let (_, name) = split(&file.rel);
        let mut placed = if file.replace {
            replace_at(&file.parent, &temp, name_of(name), &self.temp_names.next())
        } else {
            rename_no_replace(&file.parent, &temp, name_of(name))
        };
        if placed == Err(Errno::EEXIST) {
            match existing_file(&file.parent, name, file.written, &file.blake3) {
                Ok(Existing::Same) => {
                    self.report.files_unchanged += 1;
                    return Ok(None);
                }
                // Appeared since the file was opened (in a directory this
                // restore created, where it was not looked for).
                Ok(Existing::Differs) if self.overwrite => {
                    placed = replace_at(&file.parent, &temp, name_of(name), &self.temp_names.next());
                }
                _ => return Err(Error::Conflict(path)),
            }
        }
        placed.map_err(|e| io_error(&path, e.into()))?;
        file.temp = None;
        Ok(Some(file.written))
    }

    /// Creates a link, FIFO or device (sockets are only reported).
    ///
    /// # Errors
    /// [`Error::Conflict`] if something else is at the name and
    /// `overwrite` is off; I/O errors replacing it.
    pub(crate) fn make_special(&mut self, planned: &Planned) -> Result<()> {
        let path = self.path(&planned.rel);
        let (kind, rdev, link) = match &planned.node.kind {
            NodeKind::Symlink { target } => (SFlag::S_IFLNK, 0, target.as_slice()),
            NodeKind::Fifo => (SFlag::S_IFIFO, 0, &[][..]),
            NodeKind::CharDevice { rdev } => (SFlag::S_IFCHR, *rdev, &[][..]),
            NodeKind::BlockDevice { rdev } => (SFlag::S_IFBLK, *rdev, &[][..]),
            NodeKind::Socket => {
                self.report
                    .warnings
                    .push(format!("{}: sockets are not restored", path.display()));
                return Ok(());
            }
            _ => {
                return Err(Error::Invalid(format!("{}: not a special file", path.display())));
            }
        };
        let (parent_rel, name) = split(&planned.rel);
        let parent = self.dir(parent_rel)?;
        let create = |at: &OsStr| -> nix::Result<()> {
            if kind == SFlag::S_IFLNK {
                nix::unistd::symlinkat(name_of(link), &parent, at)
            } else {
                nix::sys::stat::mknodat(&parent, at, kind, Mode::from_bits_truncate(0o600), rdev)
            }
        };
        match create(name_of(name)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                if same_special(&parent, name, kind, rdev, link).map_err(|e| io_error(&path, e))? {
                    self.report.others_unchanged += 1;
                    return Ok(());
                }
                if !self.overwrite {
                    return Err(Error::Conflict(path));
                }
                let (temp, ()) = self.create_temp(&planned.rel, create)?;
                if let Err(e) = replace_at(&parent, &temp, name_of(name), &self.temp_names.next()) {
                    let _ = nix::unistd::unlinkat(&parent, temp.as_str(), UnlinkatFlags::NoRemoveDir);
                    return Err(io_error(&path, e.into()));
                }
            }
            Err(e) => {
                // Devices need privileges; the rest of the restore goes on.
                self.report
                    .warnings
                    .push(format!("{}: cannot create: {e}", path.display()));
                return Ok(());
            }
        }
        attrs::apply_at(
            &parent,
            name,
            kind,
            &path,
            &planned.node.meta,
            self.policy,
            &mut self.report.warnings,
        );
        self.report.others += 1;
        Ok(())
    }
}

/// The file system a target is on.
pub(crate) struct FileSystem {
    root: Arc<OwnedFd>,
    path: PathBuf,
}

impl FileSystem {
    /// Writes back everything of the file system that is not on its
    /// device yet, and waits for it (`syncfs`).
    ///
    /// # Errors
    /// An I/O error of the writeback (named by the target's path).
    pub(crate) fn sync(&self) -> Result<()> {
        nix::unistd::syncfs(&self.root).map_err(|e| io_error(&self.path, e.into()))
    }
}

/// The directory `rel` (components separated by `/`) below the directory
/// `base` (whose path is `base_path`, for messages), opened one component
/// at a time with `O_DIRECTORY | O_NOFOLLOW`: a component that is (or
/// became) a symlink or not a directory is [`Error::Conflict`] naming it,
/// never followed. An empty `rel` is `base` itself.
pub(crate) fn open_dir_beneath(base: &OwnedFd, base_path: &Path, rel: &[u8]) -> Result<OwnedFd> {
    let mut fd = base.try_clone().map_err(|e| io_error(base_path, e))?;
    for (component, end) in components(rel) {
        fd = nix::fcntl::openat(&fd, name_of(component), DIR_FLAGS, Mode::empty())
            .map_err(|e| not_reached(base_path.join(name_of(rel.get(..end).unwrap_or(rel))), e))?;
    }
    Ok(fd)
}

/// The components of `rel` (separated by `/`; empty ones skipped), each
/// with the offset in `rel` where it ends (for naming the path up to it).
fn components(rel: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    rel.split(|b| *b == b'/')
        .scan(0, |start, component| {
            let end = *start + component.len();
            *start = end + 1;
            Some((component, end))
        })
        .filter(|(component, _)| !component.is_empty())
}

/// Why the directory `path` could not be reached: a link or a non-directory
/// there is [`Error::Conflict`], anything else an I/O error.
fn not_reached(path: PathBuf, e: Errno) -> Error {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => Error::Conflict(path),
        e => io_error(&path, e.into()),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
