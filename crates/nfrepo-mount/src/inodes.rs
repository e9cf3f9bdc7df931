//! The inode table: which FUSE inode number stands for which entry.
//!
//! An entry gets its number when the kernel first looks it up, keyed by
//! (parent inode, name), and keeps it while the kernel holds a reference
//! (its lookup count); when the kernel forgets it, the number and its
//! entry go, so the table holds what the kernel caches, not the
//! repository. Files of one snapshot recorded with the same device and
//! inode (hard links) share one number, whichever path reaches them.

use std::collections::HashMap;
use std::sync::Arc;

use nfrepo_engine::SnapshotEntry;
use nfrepo_format::{Node, NodeKind, SnapshotId, Tree};

/// The root's inode number (FUSE's fixed one).
pub(crate) const ROOT: u64 = 1;

/// What an inode stands for.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// An entry of the layout (a directory, a snapshot's root, `latest`),
    /// by its path of names: resolved against the current layout on every
    /// use, so a forgotten snapshot disappears.
    Layout(Vec<Vec<u8>>),
    /// A node of a snapshot's tree: `tree.nodes[index]`.
    Node {
        snapshot: Arc<SnapshotEntry>,
        tree: Arc<Tree>,
        index: usize,
    },
}

impl Kind {
    pub(crate) fn node(&self) -> Option<&Node> {
        match self {
            Self::Node { tree, index, .. } => tree.nodes.get(*index),
            Self::Layout(_) => None,
        }
    }
}

#[derive(Debug)]
struct Inode {
    kind: Kind,
    parent: u64,
    /// The path shown in logs (from the mount's root).
    path: Arc<str>,
    lookups: u64,
    /// Every (parent, name) that names it (more than one for hard links).
    names: Vec<(u64, Vec<u8>)>,
    link_key: Option<(SnapshotId, u64, u64)>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Table {
    inodes: HashMap<u64, Inode>,
    names: HashMap<(u64, Vec<u8>), u64>,
    links: HashMap<(SnapshotId, u64, u64), u64>,
    next: u64,
}

impl Table {
    pub(crate) fn new() -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                kind: Kind::Layout(Vec::new()),
                parent: ROOT,
                path: Arc::from("/"),
                lookups: 1,
                names: Vec::new(),
                link_key: None,
            },
        );
        Self {
            inodes,
            names: HashMap::new(),
            links: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// What `ino` stands for, its parent and its path.
    pub(crate) fn get(&self, ino: u64) -> Option<(Kind, u64, Arc<str>)> {
        self.inodes
            .get(&ino)
            .map(|i| (i.kind.clone(), i.parent, i.path.clone()))
    }

    /// The number already given to `name` under `parent`, if any.
    pub(crate) fn known(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.names.get(&(parent, name.to_vec())).copied()
    }

    /// Looks `name` up under `parent` as `kind`: its number, its lookup
    /// count raised by one.
    pub(crate) fn lookup(&mut self, parent: u64, name: &[u8], kind: Kind) -> u64 {
        let key = (parent, name.to_vec());
        if let Some(&ino) = self.names.get(&key)
            && let Some(inode) = self.inodes.get_mut(&ino)
        {
            inode.lookups += 1;
            inode.kind = kind;
            return ino;
        }
        let link_key = match &kind {
            Kind::Node { snapshot, .. } => kind.node().and_then(|node| match node.kind {
                NodeKind::File { .. } if node.meta.inode != 0 => Some((snapshot.id, node.meta.device, node.meta.inode)),
                _ => None,
            }),
            Kind::Layout(_) => None,
        };
        if let Some(link) = link_key
            && let Some(&ino) = self.links.get(&link)
            && let Some(inode) = self.inodes.get_mut(&ino)
        {
            inode.lookups += 1;
            inode.names.push(key.clone());
            self.names.insert(key, ino);
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        let parent_path = self
            .inodes
            .get(&parent)
            .map_or_else(|| Arc::from("/"), |p| p.path.clone());
        let mut path = String::from(parent_path.trim_end_matches('/'));
        path.push('/');
        path.push_str(&String::from_utf8_lossy(name));
        self.inodes.insert(
            ino,
            Inode {
                kind,
                parent,
                path: Arc::from(path),
                lookups: 1,
                names: vec![key.clone()],
                link_key,
            },
        );
        self.names.insert(key, ino);
        if let Some(link) = link_key {
            self.links.insert(link, ino);
        }
        ino
    }

    /// The kernel dropped `count` references to `ino`; at none left the
    /// number is released (never the root's).
    pub(crate) fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(count);
        if inode.lookups > 0 {
            return;
        }
        if let Some(inode) = self.inodes.remove(&ino) {
            for name in inode.names {
                if self.names.get(&name) == Some(&ino) {
                    self.names.remove(&name);
                }
            }
            if let Some(link) = inode.link_key
                && self.links.get(&link) == Some(&ino)
            {
                self.links.remove(&link);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inodes.len()
    }
}

#[cfg(test)]
mod tests {
    use nfrepo_format::{Content, Metadata};

    use super::*;

    fn file(name: &str, inode: u64) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File {
                size: 0,
                content: Content::Inline(vec![]),
                blake3: [0; 32],
                sha256: None,
            },
            meta: Metadata {
                inode,
                device: 7,
                ..Metadata::default()
            },
        }
    }

    fn snapshot() -> Arc<SnapshotEntry> {
        Arc::new(SnapshotEntry {
            id: nfrepo_format::SnapshotId([1; 32]),
            snapshot: nfrepo_testing::header::snapshot("s", "files", 0),
        })
    }

    #[test]
    fn hard_links_share_a_number_and_forgetting_releases_it() {
        let tree = Arc::new(Tree {
            nodes: vec![file("a", 42), file("b", 42), file("c", 43)],
        });
        let snapshot = snapshot();
        let node = |index| Kind::Node {
            snapshot: snapshot.clone(),
            tree: tree.clone(),
            index,
        };
        let mut table = Table::new();
        let a = table.lookup(ROOT, b"a", node(0));
        let b = table.lookup(ROOT, b"b", node(1));
        let c = table.lookup(ROOT, b"c", node(2));
        assert_eq!(a, b, "one recorded inode, one number");
        assert_ne!(a, c);
        assert_eq!(table.known(ROOT, b"a"), Some(a));
        assert_eq!(table.get(c).map(|(_, _, path)| path.to_string()), Some("/c".into()));
        table.forget(a, 1);
        assert!(table.get(a).is_some(), "still referenced through b");
        table.forget(a, 1);
        assert!(table.get(a).is_none());
        assert_eq!(table.known(ROOT, b"b"), None);
        table.forget(ROOT, 10);
        assert!(table.get(ROOT).is_some(), "the root stays");
        assert_eq!(table.len(), 2);
    }
}
