//! Backing up file trees.
//!
//! Each path given becomes an entry of the snapshot's root tree, named by
//! its last component. Directories are walked depth-first in byte order of
//! names, so trees come out sorted and identical trees get identical ids.
//!
//! A file whose size, times, inode, device and mode match the parent
//! snapshot's node is not read: its node (and so its content list) is
//! reused. An entry that cannot be read is left out with a warning; the
//! snapshot is still committed, and the caller reports it as partial.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nfrepo_engine::{BackupSession, CommitDetails};
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
/// Patterns are globs matched against the entry's absolute path (`*` also
/// matches `/`). An excluded directory is not descended into; with include
/// patterns, only files, links and devices matching one are kept, while
/// directories are always walked.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FilesOptions {
    /// Keep only non-directory entries matching one of these.
    pub include: Vec<String>,
    /// Leave out entries matching one of these.
    pub exclude: Vec<String>,
}

pub(crate) struct Filter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl Filter {
    pub(crate) fn new(options: &FilesOptions) -> Result<Self> {
        let set = |patterns: &[String]| -> Result<Option<globset::GlobSet>> {
            if patterns.is_empty() {
                return Ok(None);
            }
            let mut builder = globset::GlobSetBuilder::new();
            for pattern in patterns {
                builder.add(
                    globset::Glob::new(pattern).map_err(|e| Error::Invalid(format!("bad glob {pattern:?}: {e}")))?,
                );
            }
            builder.build().map(Some).map_err(|e| Error::Invalid(e.to_string()))
        };
        Ok(Self {
            include: set(&options.include)?,
            exclude: set(&options.exclude)?,
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

struct Walk<'a> {
    session: &'a BackupSession,
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
pub fn backup_files(session: &BackupSession, paths: &[PathBuf]) -> Result<FilesOutcome> {
    backup_files_with(session, paths, &FilesOptions::default())
}

/// [`backup_files`], keeping only the entries `options` selects.
///
/// # Errors
/// As [`backup_files`]; [`Error::Invalid`] for a bad glob.
pub fn backup_files_with(session: &BackupSession, paths: &[PathBuf], options: &FilesOptions) -> Result<FilesOutcome> {
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
    session: &BackupSession,
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
        if let Some(node) = walk.node(path, name, parent)? {
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

    fn node(&mut self, path: &Path, name: Vec<u8>, parent: Option<&Node>) -> Result<Option<Node>> {
        let stat = match std::fs::symlink_metadata(path) {
            Ok(stat) => stat,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let file_type = stat.file_type();
        if !self.filter.keeps(path, file_type.is_dir()) {
            return Ok(None);
        }
        let meta = meta::capture(path, &stat, &mut self.names, &mut self.warnings);
        let kind = if file_type.is_dir() {
            self.details.dirs += 1;
            match self.dir(path, parent)? {
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
            let file = match File::open(path) {
                Ok(file) => file,
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            };
            let stored = match self.session.store_stream(file, false) {
                Ok(stored) => stored,
                Err(nfrepo_engine::Error::Source { source, .. }) => {
                    self.skip(path, source);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            self.details.files += 1;
            self.details.bytes += stored.size;
            NodeKind::File {
                size: stored.size,
                content: stored.content,
                blake3: stored.blake3,
                sha256: stored.sha256,
            }
        } else if file_type.is_symlink() {
            self.details.others += 1;
            match std::fs::read_link(path) {
                Ok(target) => NodeKind::Symlink {
                    target: target.as_os_str().as_bytes().to_vec(),
                },
                Err(e) => {
                    self.skip(path, e);
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

    fn dir(&mut self, path: &Path, parent: Option<&Node>) -> Result<Option<BlobId>> {
        let parent_tree = match parent.map(|p| &p.kind) {
            Some(NodeKind::Dir { tree }) => self.parent_tree(tree),
            _ => None,
        };
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.file_name()),
                Err(e) => self.skip(path, e),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut nodes = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(&name);
            let name = name.as_bytes().to_vec();
            let old = parent_tree.as_ref().and_then(|t| t.find(&name));
            if let Some(node) = self.node(&child, name, old)? {
                nodes.push(node);
            }
        }
        Ok(Some(self.session.store_tree(&Tree { nodes })?))
    }
}
