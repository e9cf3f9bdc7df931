//! The second pass of a check: every tree and content list the selected
//! snapshots reach, read breadth-first with many range reads in flight.
//!
//! Each distinct tree or list is read once, however many snapshots share it,
//! and data packs are never touched: a data blob is checked against the
//! index and the pack listing only.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use nfrepo_format::{BlobId, BlobKind, Content, ContentList, ListEntry, NodeKind, PackId, Tree};

use super::Findings;
use super::load::{Loaded, object_problem, pack_path};
use crate::read::{Reader, SnapshotEntry};
use crate::{ErrorCode, Result};

/// Tree and list blobs fetched at once.
const CONCURRENCY: usize = 32;

/// A list blob to read, with what its parent says about it.
#[derive(Clone, Copy, Debug)]
struct ListTask {
    id: BlobId,
    level: u8,
    /// Content bytes the parent says it covers (checked with `merkle`).
    len: u64,
}

/// What the walk counted.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub trees: u64,
    pub lists: u64,
    pub data_refs: u64,
    pub packs_referenced: HashSet<PackId>,
}

/// Breadth-first walker over trees and content lists.
pub(crate) struct Walker<'a> {
    reader: &'a Reader,
    loaded: &'a Loaded,
    merkle: bool,
    roots: Vec<BlobId>,
    trees: Vec<BlobId>,
    lists: Vec<ListTask>,
    seen_trees: HashSet<BlobId>,
    seen_lists: HashSet<BlobId>,
    walked: Walked,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(reader: &'a Reader, loaded: &'a Loaded, merkle: bool) -> Self {
        Self {
            reader,
            loaded,
            merkle,
            roots: Vec::new(),
            trees: Vec::new(),
            lists: Vec::new(),
            seen_trees: HashSet::new(),
            seen_lists: HashSet::new(),
            walked: Walked::default(),
        }
    }

    /// Queues a snapshot's root tree.
    pub(crate) fn add_root(&mut self, entry: &SnapshotEntry) {
        self.roots.push(entry.snapshot.root);
    }

    fn queue_tree(&mut self, id: BlobId, findings: &mut Findings) {
        if self.seen_trees.insert(id) && self.check_ref(&id, BlobKind::Tree, None, findings) {
            self.trees.push(id);
        }
    }

    fn queue_list(&mut self, task: ListTask, findings: &mut Findings) {
        if self.seen_lists.insert(task.id) && self.check_ref(&task.id, BlobKind::ContentList, None, findings) {
            self.lists.push(task);
        }
    }

    /// Checks a reference against the index and the pack listing; true if the blob is readable.
    fn check_ref(&mut self, id: &BlobId, kind: BlobKind, len: Option<u64>, findings: &mut Findings) -> bool {
        let Some(location) = self.loaded.index.get(id) else {
            // The class restore meets for the same blob (`Error::Missing`).
            findings.add(
                crate::ErrorClass::Missing.code(crate::Operation::Inspect),
                format!("blob {id}"),
                None,
                Some(*id),
                format!("{kind:?} blob is referenced but in no index"),
            );
            return false;
        };
        if location.kind != kind {
            findings.add(
                ErrorCode::SnapshotInvalid,
                format!("blob {id}"),
                Some(location.pack),
                Some(*id),
                format!("referenced as {kind:?} but indexed as {:?}", location.kind),
            );
            return false;
        }
        self.walked.packs_referenced.insert(location.pack);
        if let Some(problem) = self.loaded.bad_packs.get(&location.pack) {
            findings.add(
                problem.code,
                pack_path(location.pack_kind, &location.pack),
                Some(location.pack),
                Some(*id),
                problem.message.clone(),
            );
            return false;
        }
        if let Some(len) = len
            && self.merkle
            && u64::from(location.raw_len) != len
        {
            findings.add(
                ErrorCode::SnapshotInvalid,
                format!("blob {id}"),
                Some(location.pack),
                Some(*id),
                format!("chunk is {} bytes, its list says {len}", location.raw_len),
            );
        }
        true
    }

    /// Walks until nothing is queued.
    pub(crate) async fn run(mut self, findings: &mut Findings) -> Result<Walked> {
        for root in std::mem::take(&mut self.roots) {
            self.queue_tree(root, findings);
        }
        while !self.trees.is_empty() || !self.lists.is_empty() {
            let trees = std::mem::take(&mut self.trees);
            let lists = std::mem::take(&mut self.lists);
            let reader = self.reader;
            let fetched_trees: Vec<(BlobId, Result<Vec<u8>>)> = stream::iter(trees)
                .map(|id| async move { (id, reader.read_blob(&id, BlobKind::Tree).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let fetched_lists: Vec<(ListTask, Result<Vec<u8>>)> = stream::iter(lists)
                .map(|task| async move { (task, reader.read_blob(&task.id, BlobKind::ContentList).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (id, bytes) in fetched_trees {
                let Some(bytes) = self.opened(&id, bytes, findings)? else {
                    continue;
                };
                self.walked.trees += 1;
                match Tree::decode(&bytes) {
                    Ok(tree) => self.visit_tree(id, &tree, findings),
                    Err(e) => findings.add(
                        ErrorCode::SnapshotInvalid,
                        format!("blob {id}"),
                        None,
                        Some(id),
                        format!("tree does not decode: {e}"),
                    ),
                }
            }
            for (task, bytes) in fetched_lists {
                let Some(bytes) = self.opened(&task.id, bytes, findings)? else {
                    continue;
                };
                self.walked.lists += 1;
                match ContentList::decode(&bytes) {
                    Ok(list) => self.visit_list(task, &list, findings),
                    Err(e) => findings.add(
                        ErrorCode::SnapshotInvalid,
                        format!("blob {}", task.id),
                        None,
                        Some(task.id),
                        format!("content list does not decode: {e}"),
                    ),
                }
            }
        }
        Ok(self.walked)
    }

    /// The plaintext of a fetched blob, or a finding (storage failures abort).
    fn opened(&self, id: &BlobId, result: Result<Vec<u8>>, findings: &mut Findings) -> Result<Option<Vec<u8>>> {
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => {
                let Some(code) = object_problem(&e) else {
                    return Err(e);
                };
                let location = self.loaded.index.get(id);
                let object = location.map_or_else(|| format!("blob {id}"), |l| pack_path(l.pack_kind, &l.pack));
                findings.add(
                    code,
                    object,
                    location.map(|l| l.pack),
                    Some(*id),
                    format!("blob does not open: {}", super::one_line(&e)),
                );
                Ok(None)
            }
        }
    }

    fn visit_tree(&mut self, tree_id: BlobId, tree: &Tree, findings: &mut Findings) {
        for node in &tree.nodes {
            match &node.kind {
                NodeKind::Dir { tree } => self.queue_tree(*tree, findings),
                NodeKind::File { size, content, .. } => match content {
                    Content::Inline(entries) => {
                        self.visit_chunks(entries, findings);
                        if self.merkle {
                            let total = entries.iter().fold(0u64, |t, e| t.saturating_add(e.len));
                            if total != *size {
                                // Named by its directory's tree, so attribution finds it.
                                findings.add(
                                    ErrorCode::SnapshotInvalid,
                                    format!("blob {tree_id}"),
                                    None,
                                    Some(tree_id),
                                    format!("file {} is {size} bytes but its chunks hold {total}", node.name_lossy()),
                                );
                            }
                        }
                    }
                    Content::List { root, depth } => self.queue_list(
                        ListTask {
                            id: *root,
                            level: *depth,
                            len: *size,
                        },
                        findings,
                    ),
                },
                _ => {}
            }
        }
    }

    fn visit_list(&mut self, task: ListTask, list: &ContentList, findings: &mut Findings) {
        if self.merkle && (list.level != task.level || list.len() != task.len) {
            findings.add(
                ErrorCode::SnapshotInvalid,
                format!("blob {}", task.id),
                None,
                Some(task.id),
                format!(
                    "content list is level {} covering {} bytes; its parent says level {} covering {}",
                    list.level,
                    list.len(),
                    task.level,
                    task.len
                ),
            );
        }
        if list.level > 1 {
            for entry in &list.entries {
                self.queue_list(
                    ListTask {
                        id: entry.id,
                        level: list.level - 1,
                        len: entry.len,
                    },
                    findings,
                );
            }
        } else {
            self.visit_chunks(&list.entries, findings);
        }
    }

    fn visit_chunks(&mut self, entries: &[ListEntry], findings: &mut Findings) {
        for entry in entries {
            self.walked.data_refs += 1;
            self.check_ref(&entry.id, BlobKind::Data, Some(entry.len), findings);
        }
    }
}
