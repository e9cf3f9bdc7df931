//! Walking snapshot trees to find every referenced blob.
//!
//! Runs on the engine's tree walker ([`crate::walk`]) with lists and the
//! seen-set on: only tree and content-list blobs are read, which live in
//! tree packs, so the walk never touches a data pack (a cold tier is never
//! read); each tree or list blob is read once however many snapshots share
//! it; data chunks are only recorded. Any tree or list that cannot be read
//! ends the walk: GC then deletes nothing.

use nfrepo_format::{BlobId, Content, ContentList, Node, NodeKind, Tree};

use super::refs::RefSet;
use crate::Result;
use crate::read::Reader;
use crate::walk::{self, Pending, Visitor, WalkOptions};

/// Tree and list reads in flight at once.
const WALK_CONCURRENCY: usize = 16;

/// Records every blob the walk reaches.
struct Referenced<'a> {
    refs: &'a mut RefSet,
    read: u64,
    work: Option<&'a crate::Work>,
}

impl Visitor for Referenced<'_> {
    fn descend(&mut self, _path: &[u8], blob: &Pending) -> Result<bool> {
        self.refs.insert(&blob.id())?;
        Ok(true)
    }

    fn enter_tree(&mut self, _path: &[u8], _id: &BlobId, _tree: &Tree) -> Result<()> {
        self.read += 1;
        crate::work::advance(self.work, 1, 0);
        Ok(())
    }

    fn visit_node(&mut self, _path: &[u8], _parent: &BlobId, node: &Node) -> Result<()> {
        if let NodeKind::File {
            content: Content::Inline(chunks),
            ..
        } = &node.kind
        {
            for chunk in chunks {
                self.refs.insert(&chunk.id)?;
            }
        }
        Ok(())
    }

    fn visit_list(&mut self, _path: &[u8], _blob: &Pending, list: &ContentList) -> Result<()> {
        self.read += 1;
        crate::work::advance(self.work, 1, 0);
        // Inner lists are recorded when the walk descends into them.
        if list.level <= 1 {
            for entry in &list.entries {
                self.refs.insert(&entry.id)?;
            }
        }
        Ok(())
    }
}

/// Adds to `refs` every blob reachable from `roots` (root tree ids),
/// including the tree and list blobs themselves, and makes `refs` ready for
/// lookups ([`RefSet::finish`], off the runtime). Returns how many tree and
/// list blobs were read (also counted as items of `work`).
pub(crate) async fn walk(
    reader: &Reader,
    roots: impl IntoIterator<Item = BlobId>,
    refs: &mut RefSet,
    work: Option<&crate::Work>,
) -> Result<u64> {
    if let Some(work) = work {
        work.phase("marking trees", 0, 0);
    }
    let mut visitor = Referenced { refs, read: 0, work };
    let options = WalkOptions {
        dedup: true,
        lists: true,
        concurrency: WALK_CONCURRENCY,
    };
    walk::walk(
        reader,
        roots.into_iter().map(|root| (Vec::new(), root)),
        options,
        &mut visitor,
    )
    .await?;
    let read = visitor.read;
    let mut set = std::mem::take(refs);
    *refs = tokio::task::spawn_blocking(move || set.finish().map(|()| set))
        .await
        .map_err(|e| crate::Error::Pipeline(e.to_string()))??;
    Ok(read)
}
