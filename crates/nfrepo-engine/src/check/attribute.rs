//! The last pass of a check, run only when something is damaged: walk the
//! selected snapshots again and name every file and directory the damage
//! reaches, so the operator knows what a restore would lose.
//!
//! Results are memoised per tree and per content list, so a subtree shared
//! by many snapshots is walked once.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use nfrepo_format::{BlobId, BlobKind, Content, ContentList, NodeKind};

use super::load::Loaded;
use super::{Affected, Findings};
use crate::Result;
use crate::read::{Reader, SnapshotEntry};

/// Paths listed per finding; beyond this the count is still right in the
/// findings' blobs, but the paths stop (a whole lost tree pack can reach
/// millions of files).
const MAX_PATHS_PER_FINDING: usize = 10_000;

/// A damaged path under a tree (relative to it) and the finding that reaches it.
type Hit = (Vec<u8>, usize);

struct Attributor<'a> {
    reader: &'a Reader,
    damaged: HashMap<BlobId, usize>,
    trees: HashMap<BlobId, Arc<Vec<Hit>>>,
    lists: HashMap<BlobId, Arc<Vec<usize>>>,
}

impl Attributor<'_> {
    /// The damaged paths under tree `id` (the empty path: the tree itself).
    fn tree_hits(&mut self, id: BlobId) -> BoxFuture<'_, Result<Arc<Vec<Hit>>>> {
        Box::pin(async move {
            if let Some(hits) = self.trees.get(&id) {
                return Ok(hits.clone());
            }
            let mut hits = Vec::new();
            if let Some(finding) = self.damaged.get(&id) {
                hits.push((Vec::new(), *finding));
            } else if let Ok(tree) = self.reader.tree(&id).await {
                for node in &tree.nodes {
                    let found: Vec<usize> = match &node.kind {
                        NodeKind::Dir { tree } => {
                            let below = self.tree_hits(*tree).await?;
                            for (path, finding) in below.iter() {
                                hits.push((join(&node.name, path), *finding));
                            }
                            Vec::new()
                        }
                        NodeKind::File { content, .. } => match content {
                            Content::Inline(entries) => entries
                                .iter()
                                .filter_map(|e| self.damaged.get(&e.id).copied())
                                .collect(),
                            Content::List { root, .. } => self.list_hits(*root).await?.to_vec(),
                        },
                        _ => Vec::new(),
                    };
                    for finding in dedup(found) {
                        hits.push((node.name.clone(), finding));
                    }
                }
            }
            let hits = Arc::new(hits);
            self.trees.insert(id, hits.clone());
            Ok(hits)
        })
    }

    /// The findings reaching the content under list `id`.
    fn list_hits(&mut self, id: BlobId) -> BoxFuture<'_, Result<Arc<Vec<usize>>>> {
        Box::pin(async move {
            if let Some(hits) = self.lists.get(&id) {
                return Ok(hits.clone());
            }
            let mut hits = Vec::new();
            if let Some(finding) = self.damaged.get(&id) {
                hits.push(*finding);
            } else if let Ok(bytes) = self.reader.read_blob(&id, BlobKind::ContentList).await
                && let Ok(list) = ContentList::decode(&bytes)
            {
                for entry in &list.entries {
                    if list.level > 1 {
                        hits.extend(self.list_hits(entry.id).await?.iter().copied());
                    } else if let Some(finding) = self.damaged.get(&entry.id) {
                        hits.push(*finding);
                    }
                }
            }
            let hits = Arc::new(dedup(hits));
            self.lists.insert(id, hits.clone());
            Ok(hits)
        })
    }
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

fn join(name: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut path = name.to_vec();
    if !rest.is_empty() {
        path.push(b'/');
        path.extend_from_slice(rest);
    }
    path
}

/// Fills in `affected` of every finding that names blobs the selected snapshots use.
pub(crate) async fn attribute(
    reader: &Reader,
    selected: &[SnapshotEntry],
    _loaded: &Loaded,
    findings: &mut Findings,
) -> Result<()> {
    let damaged = findings.damaged_blobs();
    if damaged.is_empty() {
        return Ok(());
    }
    let mut attributor = Attributor {
        reader,
        damaged,
        trees: HashMap::new(),
        lists: HashMap::new(),
    };
    for entry in selected {
        let hits = attributor.tree_hits(entry.snapshot.root).await?;
        for (path, index) in hits.iter() {
            let Some(finding) = findings.get_mut(*index) else {
                continue;
            };
            if finding.affected.len() >= MAX_PATHS_PER_FINDING {
                continue;
            }
            let path = if path.is_empty() {
                "/".to_owned()
            } else {
                String::from_utf8_lossy(path).into_owned()
            };
            finding.affected.push(Affected {
                snapshot: entry.id,
                path,
            });
        }
    }
    Ok(())
}
