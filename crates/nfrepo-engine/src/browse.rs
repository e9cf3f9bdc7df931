//! Browsing snapshots: walking trees for `ls`, and comparing two snapshots for `diff`.

use nfrepo_format::{BlobId, Node, NodeKind};

use crate::Result;
use crate::read::{Reader, SnapshotEntry};
use crate::walk::{self, Pause, Pending, Visitor, WalkOptions, join};

/// A future [`Reader::walk_paced`] waits for before visiting the next node.
pub type WalkPause = Pause;

/// One entry met while walking a tree, with its path relative to the walk's start.
#[derive(Clone, Debug)]
pub struct WalkEntry {
    /// Slash-separated path (bytes, as stored).
    pub path: Vec<u8>,
    /// The node.
    pub node: Node,
}

impl WalkEntry {
    /// The path as text, invalid UTF-8 replaced.
    #[must_use]
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// [`Reader::walk`]'s visitor: every node, descending only when recursive.
struct Entries<F> {
    recursive: bool,
    /// The start tree is always loaded; below it only when recursive.
    started: bool,
    visit: F,
}

impl<F: FnMut(WalkEntry) -> Result<()>> Visitor for Entries<F> {
    fn descend(&mut self, _path: &[u8], _blob: &Pending) -> Result<bool> {
        let first = !self.started;
        self.started = true;
        Ok(first || self.recursive)
    }

    fn visit_node(&mut self, path: &[u8], _parent: &BlobId, node: &Node) -> Result<()> {
        (self.visit)(WalkEntry {
            path: path.to_vec(),
            node: node.clone(),
        })
    }
}

/// [`Reader::walk_paced`]'s visitor: every node, each visit may ask the walk to wait.
struct Paced<F> {
    visit: F,
    pause: Option<Pause>,
}

impl<F: FnMut(WalkEntry) -> Result<Option<Pause>>> Visitor for Paced<F> {
    fn visit_node(&mut self, path: &[u8], _parent: &BlobId, node: &Node) -> Result<()> {
        self.pause = (self.visit)(WalkEntry {
            path: path.to_vec(),
            node: node.clone(),
        })?;
        Ok(())
    }

    fn pause(&mut self) -> Option<Pause> {
        self.pause.take()
    }
}

impl Reader {
    /// As [`Self::walk`] (recursive), but `visit` may return a future the
    /// walk awaits before the next node: a consumer that takes nodes in
    /// batches (a restore) holds the walk back while it works, so what the
    /// walk has visited and not yet handed over stays bounded. Subtrees
    /// already being loaded ahead keep loading meanwhile (within the
    /// walker's window).
    ///
    /// # Errors
    /// As [`Self::walk`], or the first error a pause returns.
    pub async fn walk_paced(
        &self,
        root: &BlobId,
        prefix: &[u8],
        visit: impl FnMut(WalkEntry) -> Result<Option<WalkPause>> + Send,
    ) -> Result<()> {
        let mut paced = Paced { visit, pause: None };
        walk::walk(self, [(prefix.to_vec(), *root)], WalkOptions::default(), &mut paced).await
    }

    /// Every node under the tree `root`, depth-first in name order, with
    /// paths prefixed by `prefix`: a directory is visited before what it
    /// holds. Runs on the engine's one tree walker (subtrees are loaded
    /// ahead, a bounded number at a time).
    ///
    /// # Errors
    /// Errors reading trees (naming the tree and its path), or the first error `visit` returns.
    pub async fn walk(
        &self,
        root: &BlobId,
        prefix: &[u8],
        recursive: bool,
        visit: impl FnMut(WalkEntry) -> Result<()>,
    ) -> Result<()> {
        let mut entries = Entries {
            recursive,
            started: false,
            visit,
        };
        walk::walk(self, [(prefix.to_vec(), *root)], WalkOptions::default(), &mut entries).await
    }

    /// Compares two snapshots; subtrees with equal ids are skipped unread.
    ///
    /// Trees present on both sides are compared node by node (a merge of
    /// two sorted lists, not a walk); a directory only one side has is
    /// listed whole by the tree walker.
    ///
    /// # Errors
    /// Errors reading trees.
    pub async fn diff(&self, old: &SnapshotEntry, new: &SnapshotEntry) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        // Directories only one side has: (tree, path, added or removed).
        let mut one_sided: Vec<(BlobId, Vec<u8>, ChangeKind)> = Vec::new();
        let mut work = vec![(old.snapshot.root, new.snapshot.root, Vec::new())];
        while let Some((a, b, prefix)) = work.pop() {
            if a == b {
                continue;
            }
            let left = self.tree(&a).await?;
            let right = self.tree(&b).await?;
            let (mut i, mut j) = (0, 0);
            while i < left.nodes.len() || j < right.nodes.len() {
                match (left.nodes.get(i), right.nodes.get(j)) {
                    (Some(l), Some(r)) if l.name == r.name => {
                        let path = join(&prefix, &l.name);
                        match (&l.kind, &r.kind) {
                            (NodeKind::Dir { tree: ta }, NodeKind::Dir { tree: tb }) => {
                                if l.meta != r.meta {
                                    note_change(&mut changes, ChangeKind::Metadata, &path, r);
                                }
                                work.push((*ta, *tb, path));
                            }
                            (NodeKind::Dir { .. }, _) | (_, NodeKind::Dir { .. }) => {
                                note_side(&mut changes, &mut one_sided, &prefix, l, ChangeKind::Removed);
                                note_side(&mut changes, &mut one_sided, &prefix, r, ChangeKind::Added);
                            }
                            _ if l.kind != r.kind => note_change(&mut changes, ChangeKind::Modified, &path, r),
                            _ if !same_metadata(l, r) => note_change(&mut changes, ChangeKind::Metadata, &path, r),
                            _ => {}
                        }
                        i += 1;
                        j += 1;
                    }
                    (Some(l), Some(r)) if l.name < r.name => {
                        note_side(&mut changes, &mut one_sided, &prefix, l, ChangeKind::Removed);
                        i += 1;
                    }
                    (Some(l), None) => {
                        note_side(&mut changes, &mut one_sided, &prefix, l, ChangeKind::Removed);
                        i += 1;
                    }
                    (_, Some(r)) => {
                        note_side(&mut changes, &mut one_sided, &prefix, r, ChangeKind::Added);
                        j += 1;
                    }
                    (None, None) => break,
                }
            }
        }
        for (tree, path, kind) in one_sided {
            self.walk(&tree, &path, true, |entry| {
                changes.push(Change::new(kind, &entry.path, &entry.node));
                Ok(())
            })
            .await?;
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }
}

fn note_change(changes: &mut Vec<Change>, kind: ChangeKind, path: &[u8], node: &Node) {
    changes.push(Change::new(kind, path, node));
}

/// Notes a node only one side has; a directory's contents are listed later.
fn note_side(
    changes: &mut Vec<Change>,
    one_sided: &mut Vec<(BlobId, Vec<u8>, ChangeKind)>,
    prefix: &[u8],
    node: &Node,
    kind: ChangeKind,
) {
    let path = join(prefix, &node.name);
    changes.push(Change::new(kind, &path, node));
    if let NodeKind::Dir { tree } = node.kind {
        one_sided.push((tree, path, kind));
    }
}

/// Whether two nodes' metadata match for `diff` (ignoring inode, device and ctime,
/// which change on every copy).
fn same_metadata(a: &Node, b: &Node) -> bool {
    a.meta.mode == b.meta.mode
        && a.meta.uid == b.meta.uid
        && a.meta.gid == b.meta.gid
        && a.meta.mtime_ns == b.meta.mtime_ns
        && a.meta.xattrs == b.meta.xattrs
}

/// How an entry differs between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// Content or type changed.
    Modified,
    /// Only metadata changed.
    Metadata,
}

impl ChangeKind {
    /// One-character marker as in `diff` output: `+`, `-`, `M`, `U`.
    #[must_use]
    pub const fn marker(self) -> char {
        match self {
            Self::Added => '+',
            Self::Removed => '-',
            Self::Modified => 'M',
            Self::Metadata => 'U',
        }
    }
}

/// One difference.
#[derive(Clone, Debug)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// Where, as text (invalid UTF-8 replaced; for display only).
    pub path: String,
    /// Where, as stored: the exact bytes of [`Change::path`].
    pub path_bytes: Vec<u8>,
    /// Whether the entry is a directory.
    pub is_dir: bool,
}

impl Change {
    fn new(kind: ChangeKind, path: &[u8], node: &Node) -> Self {
        Self {
            kind,
            path: String::from_utf8_lossy(path).into_owned(),
            path_bytes: path.to_vec(),
            is_dir: matches!(node.kind, NodeKind::Dir { .. }),
        }
    }
}
