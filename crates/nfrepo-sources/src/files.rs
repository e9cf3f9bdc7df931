//! Backing up file trees.
//!
//! Each path given becomes an entry of the snapshot's root tree, named by
//! its last component. Directories are walked depth-first in byte order of
//! names, so trees come out sorted and identical trees get identical ids.
//!
//! A file whose size, times, inode, device and mode match the parent
//! snapshot's node is not read: its node (and so its content list) is
//! reused. A put-only host, which cannot read its parent snapshot, asks its
//! own record of the files it stored instead (`BackupWriter::known_file`). An entry inside a tree that cannot be read is left out with a
//! warning; the snapshot is still committed, and the caller reports it as
//! partial. A path given at the top that does not exist or cannot be read
//! fails the backup ([`Error::SourceNotFound`], [`Error::SourceUnreadable`]):
//! a snapshot without it would look like a good, empty backup.
//!
//! # Entries that change while they are read
//!
//! Every entry is listed (`lstat`) and then opened relative to its parent
//! directory's descriptor with `O_NOFOLLOW | O_NONBLOCK`; the descriptor
//! is `fstat`ed and must be the same inode, on the same device, of the same
//! type as listed. An entry swapped in between (for a symlink to another
//! user's file, a FIFO, another file) is skipped and reported as a
//! per-item problem: the snapshot never stores another file's content under
//! this name and never blocks on a FIFO. Directories are listed through
//! their descriptor too, so a directory swapped for a link is not followed.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use nfrepo_engine::{BackupWriter, CommitDetails};
use nfrepo_format::{BlobId, Node, NodeKind, Tree};

use crate::meta::{self, Names};
use crate::{Error, Result};

/// The result of walking the paths: the root tree and the counters.
#[derive(Debug)]
pub struct FilesOutcome {
    /// The root tree to commit.
    pub root: BlobId,
    /// Counters and skipped entries for the snapshot.
    pub details: CommitDetails,
    /// Problems that did not stop the backup (unreadable files, xattrs).
    pub warnings: Vec<String>,
}

/// Which entries of the walked paths are kept.
///
/// A pattern with a `/` is a glob matched against the entry's absolute path
/// (`*` also matches `/`); a pattern without `/` matches the entry's name
/// (`*.log`, `node_modules`), as in gitignore and restic. An excluded
/// directory is not descended into; with include patterns, only files,
/// links and devices matching one are kept, while directories are always
/// walked.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FilesOptions {
    /// Keep only non-directory entries matching one of these.
    pub include: Vec<String>,
    /// Leave out entries matching one of these.
    pub exclude: Vec<String>,
    /// Leave out the contents of directories holding a valid `CACHEDIR.TAG`
    /// (<https://bford.info/cachedir/>); the directory and its tag are kept.
    pub exclude_caches: bool,
}

/// The first bytes of a valid `CACHEDIR.TAG`.
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// A pattern list, split into path globs and name globs.
struct Patterns {
    paths: globset::GlobSet,
    names: globset::GlobSet,
}

impl Patterns {
    fn new(patterns: &[String]) -> Result<Option<Self>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let (mut paths, mut names) = (globset::GlobSetBuilder::new(), globset::GlobSetBuilder::new());
        for pattern in patterns {
            let glob = globset::Glob::new(pattern).map_err(|e| Error::Invalid(format!("bad glob {pattern:?}: {e}")))?;
            if pattern.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: globset::GlobSetBuilder| b.build().map_err(|e| Error::Invalid(e.to_string()));
        Ok(Some(Self {
            paths: build(paths)?,
            names: build(names)?,
        }))
    }

    fn is_match(&self, absolute: &Path) -> bool {
        self.paths.is_match(absolute) || absolute.file_name().is_some_and(|name| self.names.is_match(name))
    }
}

pub(crate) struct Filter {
    include: Option<Patterns>,
    exclude: Option<Patterns>,
    exclude_caches: bool,
}

impl Filter {
    pub(crate) fn new(options: &FilesOptions) -> Result<Self> {
        Ok(Self {
            include: Patterns::new(&options.include)?,
            exclude: Patterns::new(&options.exclude)?,
            exclude_caches: options.exclude_caches,
        })
    }

    pub(crate) fn keeps(&self, path: &Path, is_dir: bool) -> bool {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if self.exclude.as_ref().is_some_and(|set| set.is_match(&absolute)) {
            return false;
        }
        is_dir || self.include.as_ref().is_none_or(|set| set.is_match(&absolute))
    }
}

/// Whether the directory `dir` holds a valid `CACHEDIR.TAG` (read without
/// following a link, never blocking).
fn is_cache_dir(dir: &OwnedFd) -> bool {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let Ok(fd) = nix::fcntl::openat(dir, "CACHEDIR.TAG", flags, Mode::empty()) else {
        return false;
    };
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    let file = File::from(fd);
    std::io::Read::read_exact(&mut &file, &mut head).is_ok() && head == CACHEDIR_SIGNATURE
}

struct Walk<'a> {
    session: &'a BackupWriter,
    filter: Filter,
    names: Names,
    details: CommitDetails,
    warnings: Vec<String>,
}

/// Backs up `paths` into `session`. Blocks; call from a non-runtime thread.
///
/// # Errors
/// [`Error::Invalid`] if two paths share a last component or a path has
/// none; engine errors (storage, pipeline) abort the walk.
pub fn backup_files(session: &BackupWriter, paths: &[PathBuf]) -> Result<FilesOutcome> {
    backup_files_with(session, paths, &FilesOptions::default())
}

/// [`backup_files`], keeping only the entries `options` selects.
///
/// # Errors
/// As [`backup_files`]; [`Error::Invalid`] for a bad glob.
pub fn backup_files_with(session: &BackupWriter, paths: &[PathBuf], options: &FilesOptions) -> Result<FilesOutcome> {
    let (nodes, details, warnings) = walk_nodes(session, paths, options)?;
    let root = session.store_tree(&Tree { nodes })?;
    Ok(FilesOutcome {
        root,
        details,
        warnings,
    })
}

/// Walks `paths` into the sorted top-level nodes of a root tree, without
/// storing that root, so a source can add nodes of its own beside them.
pub(crate) fn walk_nodes(
    session: &BackupWriter,
    paths: &[PathBuf],
    options: &FilesOptions,
) -> Result<(Vec<Node>, CommitDetails, Vec<String>)> {
    let mut walk = Walk {
        session,
        filter: Filter::new(options)?,
        names: Names::default(),
        details: CommitDetails::default(),
        warnings: Vec::new(),
    };
    let parent_root = match session.parent() {
        Some(parent) => walk.parent_tree(&parent.snapshot.root),
        None => None,
    };
    let mut nodes = Vec::new();
    for path in paths {
        let name = top_level_name(path)?;
        let parent = parent_root.as_ref().and_then(|t| t.find(&name));
        if let Some(node) = walk.node(None, path, name, parent)? {
            nodes.push(node);
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = nodes.windows(2).find(|w| matches!(w, [a, b] if a.name == b.name)) {
        let name = w.first().map(|n| n.name_lossy().into_owned()).unwrap_or_default();
        return Err(Error::Invalid(format!(
            "two paths have the same last component {name:?}"
        )));
    }
    Ok((nodes, walk.details, walk.warnings))
}

/// Fails unless `path`, given at the top of a backup, exists.
pub(crate) fn check_top_level(path: &Path) -> Result<()> {
    std::fs::symlink_metadata(path)
        .map(|_| ())
        .map_err(|e| top_level_error(path, e))
}

fn top_level_error(path: &Path, error: std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        Error::SourceNotFound {
            path: path.to_path_buf(),
        }
    } else {
        Error::SourceUnreadable {
            path: path.to_path_buf(),
            source: error,
        }
    }
}

fn top_level_name(path: &Path) -> Result<Vec<u8>> {
    let absolute = std::path::absolute(path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let normal: PathBuf = absolute.components().collect();
    match normal.file_name() {
        Some(name) => Ok(name.as_bytes().to_vec()),
        None => Ok(b"root".to_vec()),
    }
}

impl Walk<'_> {
    fn skip(&mut self, path: &Path, why: impl std::fmt::Display) {
        let message = format!("{}: {why}", path.display());
        tracing::warn!("skipped {message}");
        self.details.skipped.push(message.clone());
        self.warnings.push(message);
    }

    /// An entry that cannot be read: a path given at the top fails the
    /// backup, one inside a tree is skipped.
    fn unreadable(&mut self, path: &Path, error: std::io::Error, top: bool) -> Result<()> {
        if top {
            return Err(top_level_error(path, error));
        }
        self.skip(path, error);
        Ok(())
    }

    fn parent_tree(&mut self, id: &BlobId) -> Option<Arc<Tree>> {
        match self.session.parent_tree(id) {
            Ok(tree) => Some(tree),
            Err(e) => {
                self.warnings
                    .push(format!("parent tree {id} unreadable, reading files again: {e}"));
                None
            }
        }
    }

    /// The node of `path`, named `name` in the directory `at` (`None`: a
    /// top-level path, opened by its path).
    fn node(
        &mut self,
        at: Option<&OwnedFd>,
        path: &Path,
        name: Vec<u8>,
        parent: Option<&Node>,
    ) -> Result<Option<Node>> {
        let top = at.is_none();
        let stat = match std::fs::symlink_metadata(path) {
            Ok(stat) => stat,
            Err(e) => {
                self.unreadable(path, e, top)?;
                return Ok(None);
            }
        };
        let file_type = stat.file_type();
        if !self.filter.keeps(path, file_type.is_dir()) {
            return Ok(None);
        }
        // Belt and braces: staging is never inside a source's path, but an
        // interrupted rollback's staging directory must never be backed up.
        // Not source data, so the snapshot is not partial; but said, since
        // it may hold the only copy of files an old rollback moved aside.
        if !top && file_type.is_dir() && crate::rollback::is_staging_name(&name) {
            let message = format!(
                "{}: the staging directory of an interrupted rollback, not backed up (inspect it, then remove it)",
                path.display()
            );
            tracing::warn!("{message}");
            self.warnings.push(message);
            return Ok(None);
        }
        let meta = meta::capture(path, &stat, &mut self.names, &mut self.warnings);
        let kind = if file_type.is_dir() {
            let dir = match open_listed(at, path, &name, &stat, OFlag::O_DIRECTORY) {
                Ok(dir) => dir,
                Err(e) => {
                    self.unreadable(path, e, top)?;
                    return Ok(None);
                }
            };
            self.details.dirs += 1;
            match self.dir(path, dir, parent)? {
                Some(tree) => NodeKind::Dir { tree },
                None => return Ok(None),
            }
        } else if file_type.is_file() {
            if let Some(NodeKind::File { size, .. }) = parent.map(|p| &p.kind)
                && let Some(old) = parent
                && meta::unchanged(&old.meta, *size, &meta, stat.len())
            {
                self.details.files += 1;
                self.details.files_unchanged += 1;
                self.details.bytes += size;
                return Ok(Some(Node {
                    name,
                    kind: old.kind.clone(),
                    meta,
                }));
            }
            // A put-only host has no parent to compare with: its own record.
            if parent.is_none()
                && let Some(kind) = self.session.known_file(path, &meta, stat.len())
            {
                self.details.files += 1;
                self.details.files_unchanged += 1;
                self.details.bytes += stat.len();
                return Ok(Some(Node { name, kind, meta }));
            }
            #[cfg(test)]
            tests::before_open(path);
            let file = match open_listed(at, path, &name, &stat, OFlag::empty()) {
                Ok(file) => File::from(file),
                Err(e) => {
                    self.unreadable(path, e, top)?;
                    return Ok(None);
                }
            };
            let stored = match self.session.store_stream(file, false) {
                Ok(stored) => stored,
                Err(nfrepo_engine::Error::Source { source, .. }) => {
                    self.unreadable(path, source, top)?;
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            self.details.files += 1;
            self.details.bytes += stored.size;
            self.session.remember_file(path, &meta, &stored);
            stored.file_kind()
        } else if file_type.is_symlink() {
            self.details.others += 1;
            let read = match at {
                Some(at) => nix::fcntl::readlinkat(at, OsStr::from_bytes(&name)).map_err(std::io::Error::from),
                None => std::fs::read_link(path).map(PathBuf::into_os_string),
            };
            match read {
                Ok(target) => NodeKind::Symlink {
                    target: target.as_bytes().to_vec(),
                },
                Err(e) => {
                    self.unreadable(path, e, top)?;
                    return Ok(None);
                }
            }
        } else {
            self.details.others += 1;
            if file_type.is_fifo() {
                NodeKind::Fifo
            } else if file_type.is_char_device() {
                NodeKind::CharDevice { rdev: stat.rdev() }
            } else if file_type.is_block_device() {
                NodeKind::BlockDevice { rdev: stat.rdev() }
            } else {
                NodeKind::Socket
            }
        };
        Ok(Some(Node { name, kind, meta }))
    }

    /// The tree of the directory `path`, listed and walked through `dir`.
    fn dir(&mut self, path: &Path, dir: OwnedFd, parent: Option<&Node>) -> Result<Option<BlobId>> {
        let parent_tree = match parent.map(|p| &p.kind) {
            Some(NodeKind::Dir { tree }) => self.parent_tree(tree),
            _ => None,
        };
        let listing = nix::unistd::dup(&dir).and_then(nix::dir::Dir::from_fd);
        let mut listing = match listing {
            Ok(listing) => listing,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in listing.iter() {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        names.push(name.to_vec());
                    }
                }
                Err(e) => self.skip(path, e),
            }
        }
        drop(listing);
        if self.filter.exclude_caches && is_cache_dir(&dir) {
            names.retain(|name| name.as_slice() == b"CACHEDIR.TAG");
        }
        names.sort();
        let mut nodes = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(OsStr::from_bytes(&name));
            let old = parent_tree.as_ref().and_then(|t| t.find(&name));
            if let Some(node) = self.node(Some(&dir), &child, name, old)? {
                nodes.push(node);
            }
        }
        Ok(Some(self.session.store_tree(&Tree { nodes })?))
    }
}

/// Opens the entry `name` of `at` (or `path` at the top level) as listed in
/// `listed`: never through a symlink, never blocking on a FIFO, and only if
/// the descriptor is the same inode of the same type.
fn open_listed(
    at: Option<&OwnedFd>,
    path: &Path,
    name: &[u8],
    listed: &std::fs::Metadata,
    extra: OFlag,
) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | extra;
    let fd = match at {
        Some(at) => nix::fcntl::openat(at, OsStr::from_bytes(name), flags, Mode::empty()),
        None => nix::fcntl::openat(nix::fcntl::AT_FDCWD, path, flags, Mode::empty()),
    }
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
            std::io::Error::other("changed while being read: now a symlink or not a directory")
        }
        e => e.into(),
    })?;
    let opened = nix::sys::stat::fstat(fd.as_fd())?;
    let kind = |mode: u32| SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
    if (opened.st_dev, opened.st_ino) != (listed.dev(), listed.ino()) || kind(opened.st_mode) != kind(listed.mode()) {
        return Err(std::io::Error::other(
            "changed while being read: not the file that was listed (skipped, nothing else stored in its place)",
        ));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::cell::RefCell;
    use std::path::Path;
    use std::sync::Arc;

    use nfrepo_engine::{BackupOptions, InitOptions, Repository};
    use nfrepo_format::KdfParams;

    type Hook = Box<dyn FnMut(&Path)>;

    thread_local! {
        /// Runs between listing a file and opening it, on the walking thread.
        static BEFORE_OPEN: RefCell<Option<Hook>> = RefCell::new(None);
    }

    pub(super) fn before_open(path: &Path) {
        BEFORE_OPEN.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook(path);
            }
        });
    }

    // Issue 9, bug 3: a file checked as regular and then opened by name could
    // be swapped for a symlink (storing another file's content under its
    // name) or a FIFO (blocking the backup forever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue9_bug3_entries_swapped_after_listing_are_skipped_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("a-link"), b"mine").unwrap();
        std::fs::write(data.join("b-fifo"), b"mine").unwrap();
        std::fs::write(data.join("c-kept"), b"kept").unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"another user's secret").unwrap();

        let mut init = InitOptions::default();
        init.kdf = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let repo = Repository::init(Arc::new(nfrepo_store::MemoryStore::new()), b"pw", init)
            .await
            .unwrap();
        let session = repo
            .begin_backup(BackupOptions::new("data", "files", "files"))
            .await
            .unwrap();
        let (session, walked) = tokio::task::spawn_blocking(move || {
            BEFORE_OPEN.with(|hook| {
                *hook.borrow_mut() = Some(Box::new(move |path: &Path| {
                    match path.file_name().and_then(|n| n.to_str()) {
                        Some("a-link") => {
                            std::fs::remove_file(path).unwrap();
                            std::os::unix::fs::symlink(&secret, path).unwrap();
                        }
                        Some("b-fifo") => {
                            std::fs::remove_file(path).unwrap();
                            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
                        }
                        _ => {}
                    }
                }));
            });
            let walked = super::walk_nodes(&session, &[data], &super::FilesOptions::default());
            (session, walked)
        })
        .await
        .unwrap();
        let (_, details, _) = walked.unwrap();
        session.abort().await;
        assert_eq!(details.files, 1, "only c-kept is stored: {details:?}");
        assert_eq!(details.bytes, 4);
        assert_eq!(details.skipped.len(), 2, "{:?}", details.skipped);
        for (skipped, name) in details.skipped.iter().zip(["a-link", "b-fifo"]) {
            assert!(
                skipped.contains(name) && skipped.contains("changed while being read"),
                "{skipped}"
            );
        }
    }
}
