//! Tree nodes: one blob per directory, listing its entries sorted by name.
//!
//! A tree's blob id is the keyed BLAKE3 of its plaintext, and that plaintext
//! holds the ids of its subtrees and of its files' content, so a snapshot's
//! root tree id is a Merkle root over everything in the snapshot.
//!
//! ```text
//! "NFRT" | version | postcard(Tree)          (then compressed and sealed as a blob)
//! ```

use serde::{Deserialize, Serialize};

use crate::BlobId;
use crate::content::Content;
use crate::envelope::{TREE_MAGIC, from_postcard, read_header, to_postcard, write_header};
use crate::{Error, Result};

/// A directory's entries, sorted by name with no duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The entries.
    pub nodes: Vec<Node>,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The file name as raw bytes (Unix names need not be UTF-8).
    pub name: Vec<u8>,
    /// What it is, with its kind-specific payload.
    pub kind: NodeKind,
    /// Ownership, permissions, times and extended attributes.
    pub meta: Metadata,
}

/// The kind of a node and what only that kind has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NodeKind {
    /// A regular file (or a stream stored as one).
    File {
        /// Length in bytes.
        size: u64,
        /// Its chunks.
        content: Content,
        /// Plain BLAKE3 of the whole content, for `restore --verify` and external tools.
        blake3: [u8; 32],
        /// SHA-256 of the whole content, when the source asks for it (dump streams do).
        sha256: Option<[u8; 32]>,
    },
    /// A directory.
    Dir {
        /// The subtree blob.
        tree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// The link target as raw bytes.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
    /// A Unix socket (recorded; restored as nothing).
    Socket,
}

/// Metadata kept for every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Permission and type bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, when it resolved.
    pub user: Option<String>,
    /// Group name, when it resolved.
    pub group: Option<String>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the Unix epoch (change detection only).
    pub ctime_ns: i64,
    /// Inode number (change detection only).
    pub inode: u64,
    /// Device id (change detection only).
    pub device: u64,
    /// Extended attributes that could be read, sorted by name.
    pub xattrs: Vec<Xattr>,
}

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Its name.
    pub name: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
}

impl Node {
    /// The name as text, with invalid UTF-8 replaced (for display only).
    #[must_use]
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// Size in bytes for files, zero otherwise.
    #[must_use]
    pub const fn size(&self) -> u64 {
        match self.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        }
    }
}

impl Tree {
    /// Plaintext of the tree blob.
    ///
    /// # Errors
    /// [`Error::Malformed`] if the nodes are not strictly sorted by name, or a name is empty, `.`, `..`, or holds `/` or NUL.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut out = Vec::new();
        write_header(&mut out, TREE_MAGIC);
        out.extend(to_postcard("tree", self)?);
        Ok(out)
    }

    /// Parses a tree blob's plaintext.
    ///
    /// # Errors
    /// Any decoding error, or [`Error::Malformed`] for unsorted or invalid names.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let tree: Self = from_postcard("tree", read_header("tree", TREE_MAGIC, bytes)?)?;
        tree.validate()?;
        Ok(tree)
    }

    fn validate(&self) -> Result<()> {
        for node in &self.nodes {
            if node.name.is_empty()
                || node.name.contains(&b'/')
                || node.name.contains(&0)
                || node.name == b"."
                || node.name == b".."
            {
                return Err(Error::malformed(
                    "tree",
                    format!("invalid entry name {:?}", node.name_lossy()),
                ));
            }
        }
        if self.nodes.windows(2).any(|w| matches!(w, [a, b] if a.name >= b.name)) {
            return Err(Error::malformed("tree", "entries are not strictly sorted by name"));
        }
        Ok(())
    }

    /// The entry called `name`.
    #[must_use]
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .and_then(|i| self.nodes.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::Symlink { target: b"x".to_vec() },
            meta: Metadata::default(),
        }
    }

    #[test]
    fn round_trip() {
        let tree = Tree {
            nodes: vec![node("a"), node("b")],
        };
        assert_eq!(Tree::decode(&tree.encode().unwrap()).unwrap(), tree);
        assert!(tree.find(b"b").is_some());
        assert!(tree.find(b"c").is_none());
    }

    #[test]
    fn rejects_unsorted_and_bad_names() {
        assert!(matches!(
            Tree {
                nodes: vec![node("b"), node("a")]
            }
            .encode(),
            Err(Error::Malformed { what: "tree", .. })
        ));
        assert!(matches!(
            Tree {
                nodes: vec![node("a/b")]
            }
            .encode(),
            Err(Error::Malformed { what: "tree", .. })
        ));
        assert!(matches!(
            Tree {
                nodes: vec![node("..")]
            }
            .encode(),
            Err(Error::Malformed { what: "tree", .. })
        ));
    }
}
