//! Walking snapshot trees to find every referenced blob.
//!
//! Reads only tree and content-list blobs, which live in tree packs, so a
//! walk never touches a data pack (a cold tier is never read). Each tree or
//! list blob is read once however many snapshots share it; data chunks are
//! only recorded. Reads run concurrently, a bounded number at a time.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use nfrepo_format::{BlobId, BlobKind, Content, ContentList, ListEntry, NodeKind};

use super::refs::RefSet;
use crate::read::Reader;
use crate::{Error, Result};

/// Tree and list reads in flight at once.
const WALK_CONCURRENCY: usize = 16;

#[derive(Clone, Copy, Debug)]
enum Pending {
    Tree(BlobId),
    List(BlobId),
}

enum Loaded {
    Tree(std::sync::Arc<nfrepo_format::Tree>),
    List(ContentList),
}

/// Adds to `refs` every blob reachable from `roots` (root tree ids),
/// including the tree and list blobs themselves. Returns how many tree and
/// list blobs were read.
pub(crate) async fn walk(reader: &Reader, roots: impl IntoIterator<Item = BlobId>, refs: &mut RefSet) -> Result<u64> {
    let mut visited: HashSet<BlobId> = HashSet::new();
    let mut frontier: Vec<Pending> = Vec::new();
    for root in roots {
        if visited.insert(root) {
            refs.insert(&root);
            frontier.push(Pending::Tree(root));
        }
    }
    let mut read = 0u64;
    while !frontier.is_empty() {
        let batch: Vec<Pending> = frontier.split_off(frontier.len().saturating_sub(WALK_CONCURRENCY * 4));
        let loaded: Vec<Result<Loaded>> = stream::iter(batch)
            .map(|pending| load(reader, pending))
            .buffer_unordered(WALK_CONCURRENCY)
            .collect()
            .await;
        for item in loaded {
            read += 1;
            match item? {
                Loaded::Tree(tree) => {
                    for node in &tree.nodes {
                        match &node.kind {
                            NodeKind::Dir { tree } if visited.insert(*tree) => {
                                refs.insert(tree);
                                frontier.push(Pending::Tree(*tree));
                            }
                            NodeKind::File { content, .. } => match content {
                                Content::Inline(chunks) => chunks.iter().for_each(|c| refs.insert(&c.id)),
                                Content::List { root, .. } => {
                                    if visited.insert(*root) {
                                        refs.insert(root);
                                        frontier.push(Pending::List(*root));
                                    }
                                }
                            },
                            _ => {}
                        }
                    }
                }
                Loaded::List(list) => {
                    for ListEntry { id, .. } in &list.entries {
                        if list.level > 1 {
                            if visited.insert(*id) {
                                refs.insert(id);
                                frontier.push(Pending::List(*id));
                            }
                        } else {
                            refs.insert(id);
                        }
                    }
                }
            }
        }
    }
    refs.merge();
    Ok(read)
}

async fn load(reader: &Reader, pending: Pending) -> Result<Loaded> {
    match pending {
        Pending::Tree(id) => Ok(Loaded::Tree(reader.tree(&id).await?)),
        Pending::List(id) => {
            let bytes = reader.read_blob(&id, BlobKind::ContentList).await?;
            let list = ContentList::decode(&bytes).map_err(|e| Error::decode(format!("content list {id}"), e))?;
            Ok(Loaded::List(list))
        }
    }
}
