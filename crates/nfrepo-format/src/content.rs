//! Content lists: a file's chunk ids as a Merkle tree of list blobs.
//!
//! Small files keep their chunk list inline in the tree node. Larger ones
//! point to the root of a tree of list blobs. Lists are cut by content: an
//! entry ends its list when its id's first two bytes, as a little-endian
//! number, are a multiple of [`LIST_CUT_MODULUS`] (ids are keyed hashes, so
//! this is random but repeatable), with at least [`LIST_MIN_ENTRIES`] and at
//! most [`LIST_MAX_ENTRIES`] entries. A change in the middle of a 100 GB dump
//! therefore rewrites only the few list blobs around it, and no list is ever
//! one big object.
//!
//! ```text
//! "NFRL" | version | postcard(ContentList)   (then compressed and sealed as a blob)
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{CONTENT_LIST_MAGIC, from_postcard, read_header, to_postcard, write_header};
use crate::{BlobId, Error, RepoKeys, Result};

/// A list ends after an entry whose id's first two bytes are a multiple of this.
pub const LIST_CUT_MODULUS: u16 = 128;
/// A list holds at least this many entries (unless it is the last).
pub const LIST_MIN_ENTRIES: usize = 16;
/// A list holds at most this many entries.
pub const LIST_MAX_ENTRIES: usize = 1024;
/// Files with at most this many chunks keep their list inline.
pub const INLINE_MAX_ENTRIES: usize = 16;
/// Deepest list tree accepted when decoding (2^64 bytes need far fewer levels).
pub const MAX_DEPTH: u8 = 8;

/// One entry: a chunk (at level 0) or a child list (above), with the number
/// of content bytes it covers, so readers can seek without fetching it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The chunk or child list blob.
    pub id: BlobId,
    /// Content bytes covered.
    pub len: u64,
}

/// A file's content as stored in its tree node.
///
/// Exhaustive on purpose: a new variant is a format change every reader must handle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// The chunks themselves (at most [`INLINE_MAX_ENTRIES`]).
    Inline(Vec<ListEntry>),
    /// The root of a list tree; `depth` is the root's level (1 = it lists chunks).
    List {
        /// The root list blob.
        root: BlobId,
        /// Level of the root; the leaves below are level 1 lists of chunks.
        depth: u8,
    },
}

/// The body of a list blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentList {
    /// 1 for a list of chunks, n > 1 for a list of level n-1 lists.
    pub level: u8,
    /// The entries, in content order.
    pub entries: Vec<ListEntry>,
}

impl ContentList {
    /// Plaintext of the list blob.
    ///
    /// # Errors
    /// Never in practice.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.entries.len() * 40 + 8);
        write_header(&mut out, CONTENT_LIST_MAGIC);
        out.extend(to_postcard("content list", self)?);
        Ok(out)
    }

    /// Parses a list blob's plaintext.
    ///
    /// # Errors
    /// Any decoding error, or [`Error::Malformed`] for a level of 0 or above [`MAX_DEPTH`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let list: Self = from_postcard("content list", read_header("content list", CONTENT_LIST_MAGIC, bytes)?)?;
        if list.level == 0 || list.level > MAX_DEPTH {
            return Err(Error::malformed(
                "content list",
                format!("level {} out of range", list.level),
            ));
        }
        if list.entries.len() > LIST_MAX_ENTRIES {
            return Err(Error::malformed("content list", "too many entries"));
        }
        Ok(list)
    }

    /// Content bytes covered by the list.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.entries.iter().fold(0u64, |total, e| total.saturating_add(e.len))
    }

    /// Whether the list covers nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn ends_list(entry: &ListEntry, len: usize) -> bool {
    let [a, b, ..] = entry.id.0;
    len >= LIST_MAX_ENTRIES || (len >= LIST_MIN_ENTRIES && u16::from_le_bytes([a, b]) % LIST_CUT_MODULUS == 0)
}

/// A list blob the builder produced: the caller stores it as a
/// [`crate::BlobKind::ContentList`] blob.
#[derive(Clone, Debug)]
pub struct EmittedList {
    /// Its id (keyed BLAKE3 of `plaintext`).
    pub id: BlobId,
    /// Its plaintext.
    pub plaintext: Vec<u8>,
}

/// Builds a file's content list while its chunks stream past, holding at
/// most one unfinished list per level.
#[derive(Debug, Default)]
pub struct ContentListBuilder {
    levels: Vec<Vec<ListEntry>>,
    emitted_any: bool,
}

impl ContentListBuilder {
    /// An empty builder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk; returns any list blobs that became complete.
    ///
    /// # Errors
    /// Never in practice (encoding cannot fail).
    pub fn push(&mut self, keys: &RepoKeys, chunk: ListEntry, out: &mut Vec<EmittedList>) -> Result<()> {
        self.push_at(keys, 0, chunk, out)
    }

    fn push_at(&mut self, keys: &RepoKeys, level: usize, entry: ListEntry, out: &mut Vec<EmittedList>) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        let Some(list) = self.levels.get_mut(level) else {
            return Ok(());
        };
        list.push(entry);
        if ends_list(&entry, list.len()) {
            let entries = std::mem::take(list);
            let parent = self.emit(keys, level, entries, out)?;
            self.push_at(keys, level + 1, parent, out)?;
        }
        Ok(())
    }

    fn emit(
        &mut self,
        keys: &RepoKeys,
        level: usize,
        entries: Vec<ListEntry>,
        out: &mut Vec<EmittedList>,
    ) -> Result<ListEntry> {
        let list = ContentList {
            level: u8::try_from(level + 1).map_err(|_| Error::malformed("content list", "too deep"))?,
            entries,
        };
        let plaintext = list.encode()?;
        let id = keys.blob_id(&plaintext);
        out.push(EmittedList { id, plaintext });
        self.emitted_any = true;
        Ok(ListEntry { id, len: list.len() })
    }

    /// Closes every open level and returns the content for the tree node.
    ///
    /// # Errors
    /// Never in practice.
    pub fn finish(mut self, keys: &RepoKeys, out: &mut Vec<EmittedList>) -> Result<Content> {
        if !self.emitted_any && self.levels.len() <= 1 {
            let chunks = self.levels.pop().unwrap_or_default();
            if chunks.len() <= INLINE_MAX_ENTRIES {
                return Ok(Content::Inline(chunks));
            }
            self.levels.push(chunks);
        }
        let mut level = 0;
        loop {
            let pending = self.levels.get_mut(level).map(std::mem::take).unwrap_or_default();
            let is_top = level + 1 >= self.levels.len();
            if is_top && pending.len() == 1 && level > 0 {
                // A single list at the top is the root.
                let root = pending.first().map(|e| e.id).unwrap_or_default();
                return Ok(Content::List {
                    root,
                    depth: u8::try_from(level).map_err(|_| Error::malformed("content list", "too deep"))?,
                });
            }
            if !pending.is_empty() || is_top {
                let parent = self.emit(keys, level, pending, out)?;
                if self.levels.len() <= level + 1 {
                    self.levels.push(Vec::new());
                }
                if let Some(up) = self.levels.get_mut(level + 1) {
                    up.push(parent);
                }
            }
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;
    use std::collections::HashMap;

    fn flatten(content: &Content, store: &HashMap<BlobId, Vec<u8>>) -> Vec<ListEntry> {
        fn walk(id: &BlobId, store: &HashMap<BlobId, Vec<u8>>, out: &mut Vec<ListEntry>) {
            let list = ContentList::decode(&store[id]).unwrap();
            for e in &list.entries {
                if list.level == 1 {
                    out.push(*e)
                } else {
                    walk(&e.id, store, out)
                }
            }
        }
        match content {
            Content::Inline(e) => e.clone(),
            Content::List { root, .. } => {
                let mut out = Vec::new();
                walk(root, store, &mut out);
                out
            }
        }
    }

    fn build(n: usize) -> (Content, HashMap<BlobId, Vec<u8>>, Vec<ListEntry>) {
        let keys = MasterKey::from_bytes([3; 32]).derive();
        let chunks: Vec<ListEntry> = (0..n as u64)
            .map(|i| ListEntry {
                id: keys.blob_id(&i.to_le_bytes()),
                len: i + 1,
            })
            .collect();
        let mut b = ContentListBuilder::new();
        let mut out = Vec::new();
        for c in &chunks {
            b.push(&keys, *c, &mut out).unwrap();
        }
        let content = b.finish(&keys, &mut out).unwrap();
        (content, out.into_iter().map(|e| (e.id, e.plaintext)).collect(), chunks)
    }

    #[test]
    fn flattening_gives_back_every_chunk() {
        for n in [0, 1, 16, 17, 100, 1000, 5000, 70_000] {
            let (content, store, chunks) = build(n);
            assert_eq!(flatten(&content, &store), chunks, "n = {n}");
            if n <= INLINE_MAX_ENTRIES {
                assert!(matches!(content, Content::Inline(_)));
            }
        }
    }

    #[test]
    fn lists_stay_small() {
        let (_, store, _) = build(70_000);
        assert!(store.values().all(|b| b.len() < LIST_MAX_ENTRIES * 45));
        assert!(store.len() > 70_000 / LIST_MAX_ENTRIES);
    }
}
