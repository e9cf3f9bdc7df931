//! Browsing snapshots: walking trees for `ls`, and comparing two snapshots for `diff`.

use std::collections::VecDeque;

use nfrepo_format::{BlobId, Node, NodeKind};

use crate::Result;
use crate::read::{Reader, SnapshotEntry};

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

impl Reader {
    /// Every node under the tree `root`, depth-first in name order, with
    /// paths prefixed by `prefix`. Loads one tree at a time.
    ///
    /// # Errors
    /// Errors reading trees.
    pub async fn walk(
        &self,
        root: &BlobId,
        prefix: &[u8],
        recursive: bool,
        mut visit: impl FnMut(WalkEntry) -> Result<()>,
    ) -> Result<()> {
        let mut stack: Vec<VecDeque<WalkEntry>> = vec![self.children(root, prefix).await?];
        while let Some(level) = stack.last_mut() {
            let Some(entry) = level.pop_front() else {
                stack.pop();
                continue;
            };
            let subtree = match &entry.node.kind {
                NodeKind::Dir { tree } if recursive => Some((*tree, entry.path.clone())),
                _ => None,
            };
            visit(entry)?;
            if let Some((tree, path)) = subtree {
                stack.push(self.children(&tree, &path).await?);
            }
        }
        Ok(())
    }

    async fn children(&self, tree: &BlobId, prefix: &[u8]) -> Result<VecDeque<WalkEntry>> {
        let tree = self.tree(tree).await?;
        Ok(tree
            .nodes
            .iter()
            .map(|node| WalkEntry {
                path: join(prefix, &node.name),
                node: node.clone(),
            })
            .collect())
    }

    /// Compares two snapshots; subtrees with equal ids are skipped unread.
    ///
    /// # Errors
    /// Errors reading trees.
    pub async fn diff(&self, old: &SnapshotEntry, new: &SnapshotEntry) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        let mut work = vec![(Some(old.snapshot.root), Some(new.snapshot.root), Vec::new())];
        while let Some((a, b, prefix)) = work.pop() {
            if a == b {
                continue;
            }
            let left = match a {
                Some(id) => self.tree(&id).await?.nodes.clone(),
                None => Vec::new(),
            };
            let right = match b {
                Some(id) => self.tree(&id).await?.nodes.clone(),
                None => Vec::new(),
            };
            let (mut i, mut j) = (0, 0);
            while i < left.len() || j < right.len() {
                let order = match (left.get(i), right.get(j)) {
                    (Some(l), Some(r)) => l.name.cmp(&r.name),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        if let Some(l) = left.get(i) {
                            self.note_all(&mut changes, &mut work, &prefix, l, ChangeKind::Removed, true);
                        }
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        if let Some(r) = right.get(j) {
                            self.note_all(&mut changes, &mut work, &prefix, r, ChangeKind::Added, false);
                        }
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        if let (Some(l), Some(r)) = (left.get(i), right.get(j)) {
                            let path = join(&prefix, &l.name);
                            match (&l.kind, &r.kind) {
                                (NodeKind::Dir { tree: ta }, NodeKind::Dir { tree: tb }) => {
                                    if l.meta != r.meta {
                                        changes.push(Change::new(ChangeKind::Metadata, &path, r));
                                    }
                                    work.push((Some(*ta), Some(*tb), path));
                                }
                                (NodeKind::Dir { .. }, _) | (_, NodeKind::Dir { .. }) => {
                                    self.note_all(&mut changes, &mut work, &prefix, l, ChangeKind::Removed, true);
                                    self.note_all(&mut changes, &mut work, &prefix, r, ChangeKind::Added, false);
                                }
                                _ if l.kind != r.kind => changes.push(Change::new(ChangeKind::Modified, &path, r)),
                                _ if !same_metadata(l, r) => changes.push(Change::new(ChangeKind::Metadata, &path, r)),
                                _ => {}
                            }
                        }
                        i += 1;
                        j += 1;
                    }
                }
            }
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }

    fn note_all(
        &self,
        changes: &mut Vec<Change>,
        work: &mut Vec<(Option<BlobId>, Option<BlobId>, Vec<u8>)>,
        prefix: &[u8],
        node: &Node,
        kind: ChangeKind,
        old_side: bool,
    ) {
        let path = join(prefix, &node.name);
        changes.push(Change::new(kind, &path, node));
        if let NodeKind::Dir { tree } = node.kind {
            if old_side {
                work.push((Some(tree), None, path));
            } else {
                work.push((None, Some(tree), path));
            }
        }
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

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = prefix.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
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
