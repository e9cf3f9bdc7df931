//! Searching snapshots: `nfrepo find`, on the engine's one tree walker.
//!
//! Each snapshot's tree is walked from its root; a directory already
//! walked *at the same path* in an earlier snapshot (same tree id: same
//! content, everything below it the same) is not walked again: the matches
//! found under it then are credited to this snapshot too. Snapshots mostly
//! share their trees, so a search over a thousand snapshots of one source
//! reads each distinct directory version about once.
//!
//! A match is reported once per distinct *version* of an entry at a path
//! (a file's content, a link's target, a directory's mode and time), with
//! every snapshot that holds that version, oldest first.

use std::collections::HashMap;

use nfrepo_format::{BlobId, Node, NodeKind, SnapshotId, Tree};

use crate::Result;
use crate::read::{Reader, SnapshotEntry};
use crate::walk::{self, Pending, Visitor, WalkOptions};

/// One version of a path that matched, and where it is.
#[derive(Clone, Debug)]
pub struct Found {
    /// Slash-separated path from the snapshot's root (bytes, as stored).
    pub path: Vec<u8>,
    /// The entry, as the first snapshot holding this version records it.
    pub node: Node,
    /// Every searched snapshot holding this version, oldest first.
    pub snapshots: Vec<SnapshotId>,
}

/// What makes two entries at one path the same version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Version {
    File([u8; 32], u64),
    Dir(u32, i64),
    Link(Vec<u8>),
    Other(u8, u32, i64),
}

fn version(node: &Node) -> Version {
    match &node.kind {
        NodeKind::File { blake3, size, .. } => Version::File(*blake3, *size),
        NodeKind::Dir { .. } => Version::Dir(node.meta.mode, node.meta.mtime_ns),
        NodeKind::Symlink { target } => Version::Link(target.clone()),
        NodeKind::Fifo => Version::Other(0, node.meta.mode, node.meta.mtime_ns),
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => Version::Other(
            1,
            u32::try_from(*rdev % u64::from(u32::MAX)).unwrap_or(0),
            node.meta.mtime_ns,
        ),
        _ => Version::Other(2, node.meta.mode, node.meta.mtime_ns),
    }
}

struct Finder<F> {
    accept: F,
    current: SnapshotId,
    found: Vec<Found>,
    index: HashMap<(Vec<u8>, Version), usize>,
    /// The matches under a directory already walked, by (path, tree).
    memo: HashMap<(Vec<u8>, BlobId), Vec<usize>>,
    /// Matches met in the current snapshot, in walk order; each open
    /// directory owns the part from its frame's start on.
    collected: Vec<usize>,
    frames: Vec<usize>,
}

impl<F> Finder<F> {
    fn credit(&mut self, i: usize) {
        if let Some(found) = self.found.get_mut(i)
            && found.snapshots.last() != Some(&self.current)
        {
            found.snapshots.push(self.current);
        }
        self.collected.push(i);
    }
}

impl<F: FnMut(&[u8], &Node) -> bool> Visitor for Finder<F> {
    fn descend(&mut self, path: &[u8], blob: &Pending) -> Result<bool> {
        let Pending::Tree(id) = blob else {
            return Ok(false);
        };
        let Some(known) = self.memo.get(&(path.to_vec(), *id)).cloned() else {
            return Ok(true);
        };
        for i in known {
            self.credit(i);
        }
        Ok(false)
    }

    fn enter_tree(&mut self, _path: &[u8], _id: &BlobId, _tree: &Tree) -> Result<()> {
        self.frames.push(self.collected.len());
        Ok(())
    }

    fn visit_node(&mut self, path: &[u8], _parent: &BlobId, node: &Node) -> Result<()> {
        if !(self.accept)(path, node) {
            return Ok(());
        }
        let key = (path.to_vec(), version(node));
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.found.push(Found {
                    path: path.to_vec(),
                    node: node.clone(),
                    snapshots: Vec::new(),
                });
                self.index.insert(key, self.found.len() - 1);
                self.found.len() - 1
            }
        };
        self.credit(i);
        Ok(())
    }

    fn leave_tree(&mut self, path: &[u8], id: &BlobId) -> Result<()> {
        let start = self.frames.pop().unwrap_or(0);
        let under = self.collected.get(start..).unwrap_or_default().to_vec();
        self.memo.insert((path.to_vec(), *id), under);
        Ok(())
    }
}

impl Reader {
    /// Every entry of `snapshots` that `accept` takes (given its path from
    /// the snapshot's root and its node), once per distinct version, with
    /// the snapshots holding it; sorted by path, then by the first snapshot
    /// holding each version. See the module docs for what is walked.
    ///
    /// # Errors
    /// Errors reading trees (naming the tree and its path).
    pub async fn find(
        &self,
        snapshots: &[SnapshotEntry],
        accept: impl FnMut(&[u8], &Node) -> bool,
    ) -> Result<Vec<Found>> {
        let mut finder = Finder {
            accept,
            current: SnapshotId::default(),
            found: Vec::new(),
            index: HashMap::new(),
            memo: HashMap::new(),
            collected: Vec::new(),
            frames: Vec::new(),
        };
        for snapshot in snapshots {
            finder.current = snapshot.id;
            finder.collected.clear();
            finder.frames.clear();
            walk::walk(
                self,
                [(Vec::new(), snapshot.snapshot.root)],
                WalkOptions::default(),
                &mut finder,
            )
            .await?;
        }
        let order: HashMap<SnapshotId, usize> = snapshots.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let mut found = finder.found;
        found.sort_by_key(|f| {
            let first = f.snapshots.first().and_then(|id| order.get(id)).copied();
            (f.path.clone(), first)
        });
        Ok(found)
    }
}
