//! What a rollback compares: the source's scope, the entries a snapshot
//! holds inside it, and the entries on disk inside it.
//!
//! Everything here is keyed by the absolute live path. A path is *in scope*
//! when it lies under one of the source's paths and the source's current
//! include/exclude rules would back it up (no ancestor excluded). A
//! rollback reads, compares and changes in-scope paths only, so a file the
//! configuration excludes or never names is never touched (issue 9, bug 9).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nfrepo_engine::{Reader, SnapshotEntry};
use nfrepo_format::NodeKind;

use crate::files::Filter;
use crate::{Error, FilesOptions, Result};

/// The paths a rollback may read and change: a source's paths and its
/// include/exclude rules, as the source is configured *now*.
pub struct RollbackScope {
    roots: Vec<PathBuf>,
    filter: Filter,
    /// Whether the include/exclude rules are known. Without them (a source
    /// not in the configuration), a live entry neither snapshot holds may
    /// be one the source never backs up, so it is left alone.
    rules_known: bool,
}

impl RollbackScope {
    /// The scope of a source backing up `paths` with `options`' rules
    /// (relative paths are taken from the current directory).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad glob or a path that cannot be made absolute.
    pub fn new(paths: &[PathBuf], options: &FilesOptions) -> Result<Self> {
        let roots = paths
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<BTreeSet<_>>>()?
            .into_iter()
            .collect();
        Ok(Self {
            roots,
            filter: Filter::new(options)?,
            rules_known: true,
        })
    }

    /// The scope of a source whose rules are unknown (not in the
    /// configuration): its snapshots' `paths`, and only the live entries one
    /// of the two snapshots compared holds.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a path that cannot be made absolute.
    pub fn unconfigured(paths: &[PathBuf]) -> Result<Self> {
        let mut scope = Self::new(paths, &FilesOptions::default())?;
        scope.rules_known = false;
        Ok(scope)
    }

    /// The source's top-level paths, absolute.
    #[must_use]
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    fn root_of(&self, live: &Path) -> Option<&Path> {
        self.roots
            .iter()
            .filter(|r| live.starts_with(r))
            .max_by_key(|r| r.components().count())
            .map(PathBuf::as_path)
    }

    /// Whether the source, as configured, would back up `live`.
    pub(crate) fn contains(&self, live: &Path, is_dir: bool) -> bool {
        let Some(root) = self.root_of(live) else {
            return false;
        };
        let mut ancestor = live.parent();
        while let Some(dir) = ancestor
            && dir.starts_with(root)
        {
            if !self.filter.keeps(dir, true) {
                return false;
            }
            ancestor = dir.parent();
        }
        self.filter.keeps(live, is_dir)
    }

    /// The snapshot-style path (`<root name>/<rest>`) of a live path in scope.
    pub(crate) fn snapshot_path(&self, live: &Path) -> String {
        let Some(root) = self.root_of(live) else {
            return live.display().to_string();
        };
        let name = root_name(root);
        match live.strip_prefix(root) {
            Ok(rest) if !rest.as_os_str().is_empty() => format!("{name}/{}", rest.display()),
            _ => name,
        }
    }
}

impl RollbackScope {
    /// [`snapshot_path`](Self::snapshot_path) as raw bytes (names need not be UTF-8).
    pub(crate) fn snapshot_path_bytes(&self, live: &Path) -> Vec<u8> {
        let Some(root) = self.root_of(live) else {
            return live.as_os_str().as_bytes().to_vec();
        };
        let mut out = root_name(root).into_bytes();
        if let Ok(rest) = live.strip_prefix(root)
            && !rest.as_os_str().is_empty()
        {
            out.push(b'/');
            out.extend_from_slice(rest.as_os_str().as_bytes());
        }
        out
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok(absolute.components().collect())
}

/// The name a top-level path has inside a snapshot (as the files source names it).
pub(crate) fn root_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "root".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// What one path holds; metadata is not compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Dir,
    /// A regular file; `blake3` is known for snapshot entries and computed
    /// lazily for live files.
    File {
        size: u64,
        blake3: Option<[u8; 32]>,
    },
    Symlink(Vec<u8>),
    /// A FIFO, device or socket, by type name.
    Other(&'static str),
}

impl Shape {
    pub(crate) fn is_dir(&self) -> bool {
        matches!(self, Self::Dir)
    }
}

/// An entry of a snapshot, in scope.
#[derive(Clone, Debug)]
pub(crate) struct Wanted {
    /// Its path inside the snapshot.
    pub rel: String,
    pub shape: Shape,
}

/// The in-scope entries of a snapshot, and which of the scope's roots it holds.
pub(crate) struct SnapshotState {
    pub entries: BTreeMap<PathBuf, Wanted>,
    pub roots: BTreeSet<PathBuf>,
}

/// Reads the in-scope entries of `snapshot`.
///
/// A snapshot's top-level entries are mapped back to the paths recorded in
/// it; a top-level entry whose recorded path the scope does not name is
/// ignored, as is everything the scope's rules leave out.
pub(crate) async fn snapshot_state(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    scope: &RollbackScope,
) -> Result<SnapshotState> {
    let recorded: BTreeMap<String, PathBuf> = snapshot
        .snapshot
        .paths
        .iter()
        .filter_map(|p| absolute(Path::new(p)).ok())
        .filter(|p| scope.roots.contains(p))
        .map(|p| (root_name(&p), p))
        .collect();
    let mut state = SnapshotState {
        entries: BTreeMap::new(),
        roots: BTreeSet::new(),
    };
    reader
        .walk(&snapshot.snapshot.root, b"", true, |entry| {
            let rel = entry.path_lossy();
            let (top, rest) = rel.split_once('/').unwrap_or((rel.as_str(), ""));
            let Some(root) = recorded.get(top) else {
                return Ok(());
            };
            let raw_rest = entry
                .path
                .iter()
                .position(|b| *b == b'/')
                .and_then(|i| entry.path.get(i + 1..));
            let live = match raw_rest {
                Some(rest) => root.join(std::ffi::OsStr::from_bytes(rest)),
                None => root.clone(),
            };
            let shape = match &entry.node.kind {
                NodeKind::Dir { .. } => Shape::Dir,
                NodeKind::File { size, blake3, .. } => Shape::File {
                    size: *size,
                    blake3: Some(*blake3),
                },
                NodeKind::Symlink { target } => Shape::Symlink(target.clone()),
                NodeKind::Fifo => Shape::Other("fifo"),
                NodeKind::CharDevice { .. } => Shape::Other("character device"),
                NodeKind::BlockDevice { .. } => Shape::Other("block device"),
                _ => Shape::Other("socket"),
            };
            if !scope.contains(&live, shape.is_dir()) {
                return Ok(());
            }
            if rest.is_empty() {
                state.roots.insert(live.clone());
            }
            state.entries.insert(live, Wanted { rel, shape });
            Ok(())
        })
        .await?;
    Ok(state)
}

/// An in-scope entry on disk.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub shape: Shape,
    /// A directory holding (at any depth) entries outside the scope, which
    /// a rollback must leave where they are.
    pub holds_outside: bool,
}

/// Lists the in-scope entries on disk, without following symlinks. With
/// unknown rules, entries none of `known` holds count as outside the scope.
///
/// # Errors
/// [`Error::Io`] for a directory that cannot be listed or an entry that
/// cannot be examined: a rollback must see everything it may change.
pub(crate) fn live_state(
    scope: &RollbackScope,
    known: &[&BTreeMap<PathBuf, Wanted>],
) -> Result<BTreeMap<PathBuf, Live>> {
    let mut entries = scan_roots(scope)?;
    if !scope.rules_known {
        let unknown: Vec<PathBuf> = entries
            .keys()
            .filter(|p| !known.iter().any(|k| k.contains_key(*p)))
            .cloned()
            .collect();
        for path in unknown {
            entries.remove(&path);
            for ancestor in path.ancestors().skip(1) {
                match entries.get_mut(ancestor) {
                    Some(entry) => entry.holds_outside = true,
                    None => break,
                }
            }
        }
    }
    Ok(entries)
}

fn scan_roots(scope: &RollbackScope) -> Result<BTreeMap<PathBuf, Live>> {
    let mut entries = BTreeMap::new();
    for root in &scope.roots {
        match std::fs::symlink_metadata(root) {
            Ok(meta) if scope.contains(root, meta.is_dir()) => {
                scan(scope, root, &meta, &mut entries)?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(root, e)),
        }
    }
    Ok(entries)
}

/// Records `path` and, for a directory, what it holds; returns whether
/// anything at or below `path` is outside the scope.
fn scan(
    scope: &RollbackScope,
    path: &Path,
    meta: &std::fs::Metadata,
    entries: &mut BTreeMap<PathBuf, Live>,
) -> Result<bool> {
    let kind = meta.file_type();
    let shape = if kind.is_dir() {
        Shape::Dir
    } else if kind.is_file() {
        Shape::File {
            size: meta.len(),
            blake3: None,
        }
    } else if kind.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| io(path, e))?;
        Shape::Symlink(target.as_os_str().as_bytes().to_vec())
    } else if kind.is_fifo() {
        Shape::Other("fifo")
    } else if kind.is_char_device() {
        Shape::Other("character device")
    } else if kind.is_block_device() {
        Shape::Other("block device")
    } else {
        Shape::Other("socket")
    };
    let mut outside = false;
    if shape.is_dir() {
        for child in std::fs::read_dir(path).map_err(|e| io(path, e))? {
            let child = child.map_err(|e| io(path, e))?.path();
            let meta = std::fs::symlink_metadata(&child).map_err(|e| io(&child, e))?;
            if scope.contains(&child, meta.is_dir()) {
                outside |= scan(scope, &child, &meta, entries)?;
            } else {
                outside = true;
            }
        }
    }
    entries.insert(
        path.to_path_buf(),
        Live {
            shape,
            holds_outside: outside,
        },
    );
    Ok(outside)
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Compares live entries with snapshot entries, hashing each live file at
/// most once (files are compared by size, then BLAKE3).
#[derive(Default)]
pub(crate) struct Comparer {
    hashes: HashMap<PathBuf, [u8; 32]>,
}

impl Comparer {
    /// Whether the live entry at `path` equals `want` (directories always
    /// do: directory metadata is not rolled back).
    pub(crate) fn same(&mut self, path: &Path, live: &Shape, want: &Shape) -> Result<bool> {
        Ok(match (live, want) {
            (
                Shape::File { size, .. },
                Shape::File {
                    size: wanted,
                    blake3: Some(hash),
                },
            ) => size == wanted && self.hash(path)? == *hash,
            (a, b) => a == b,
        })
    }

    fn hash(&mut self, path: &Path) -> Result<[u8; 32]> {
        if let Some(hash) = self.hashes.get(path) {
            return Ok(*hash);
        }
        let mut hasher = blake3::Hasher::new();
        let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
        hasher.update_reader(file).map_err(|e| io(path, e))?;
        let hash = *hasher.finalize().as_bytes();
        self.hashes.insert(path.to_path_buf(), hash);
        Ok(hash)
    }

    /// Forgets every hash (after files were swapped).
    pub(crate) fn clear(&mut self) {
        self.hashes.clear();
    }
}

/// The live paths that differ from `snapshot`: changed, missing, or present
/// though the snapshot does not hold them.
pub(crate) fn differences(
    live: &BTreeMap<PathBuf, Live>,
    snapshot: &BTreeMap<PathBuf, Wanted>,
    comparer: &mut Comparer,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (path, want) in snapshot {
        match live.get(path) {
            Some(entry) if comparer.same(path, &entry.shape, &want.shape)? => {}
            _ => out.push(path.clone()),
        }
    }
    out.extend(live.keys().filter(|p| !snapshot.contains_key(*p)).cloned());
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn scope_leaves_out_excluded_and_unnamed_paths() {
        let options = FilesOptions {
            exclude: vec!["*.bak".into(), "*/cache".into()],
            ..FilesOptions::default()
        };
        let scope = RollbackScope::new(&["/srv/conf".into()], &options).unwrap();
        assert!(scope.contains(Path::new("/srv/conf"), true));
        assert!(scope.contains(Path::new("/srv/conf/a.conf"), false));
        assert!(!scope.contains(Path::new("/srv/conf/notes.bak"), false));
        assert!(
            !scope.contains(Path::new("/srv/conf/cache/x"), false),
            "under an excluded dir"
        );
        assert!(!scope.contains(Path::new("/srv/other/data.txt"), false));
        assert!(!scope.contains(Path::new("/srv/confx"), true));
        assert_eq!(scope.snapshot_path(Path::new("/srv/conf/d/a")), "conf/d/a");
    }

    #[test]
    fn live_state_marks_directories_holding_outside_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("conf");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/keep.bak"), "x").unwrap();
        std::fs::write(root.join("a"), "a").unwrap();
        let options = FilesOptions {
            exclude: vec!["*.bak".into()],
            ..FilesOptions::default()
        };
        let scope = RollbackScope::new(std::slice::from_ref(&root), &options).unwrap();
        let live = live_state(&scope, &[]).unwrap();
        assert!(!live.contains_key(&root.join("d/e/keep.bak")));
        assert!(live[&root.join("d/e")].holds_outside);
        assert!(live[&root].holds_outside);
        assert!(!live[&root.join("a")].holds_outside);
    }
}
