//! The second pass of a check: every tree and content list the selected
//! snapshots reach, on the engine's tree walker ([`crate::walk`]) with many
//! range reads in flight.
//!
//! Each distinct tree or list is read once, however many snapshots share it,
//! and data packs are never touched: a data blob is checked against the
//! index and the pack listing only. A reference is checked before its blob is
//! read; a blob that does not read or decode is a finding, and the walk goes
//! on with the rest.

use std::collections::HashSet;

use nfrepo_format::{BlobId, BlobKind, Content, ContentList, ListEntry, Node, NodeKind, PackId, Tree};

use super::Findings;
use super::load::{Loaded, object_problem, pack_path};
use crate::read::{Reader, SnapshotEntry};
use crate::walk::{self, LoadFailure, Pending, Visitor, WalkOptions};
use crate::{Error, ErrorCode, Result};

/// Tree and list blobs fetched at once.
const CONCURRENCY: usize = 32;

/// What the walk counted.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub trees: u64,
    pub lists: u64,
    pub data_refs: u64,
    pub packs_referenced: HashSet<PackId>,
}

/// Walks the trees and lists of `selected`, adding findings.
pub(crate) async fn walk(
    reader: &Reader,
    loaded: &Loaded,
    merkle: bool,
    selected: &[SnapshotEntry],
    findings: &mut Findings,
    work: Option<&crate::Work>,
) -> Result<Walked> {
    if let Some(work) = work {
        work.phase("walking trees", 0, 0);
    }
    let mut checker = Checker {
        loaded,
        merkle,
        findings,
        walked: Walked::default(),
        work,
    };
    let options = WalkOptions {
        dedup: true,
        lists: true,
        concurrency: CONCURRENCY,
    };
    let roots = selected.iter().map(|e| (Vec::new(), e.snapshot.root));
    walk::walk(reader, roots, options, &mut checker).await?;
    Ok(checker.walked)
}

/// Checks each reference and each tree and list as the walk meets them.
struct Checker<'a> {
    loaded: &'a Loaded,
    merkle: bool,
    findings: &'a mut Findings,
    walked: Walked,
    work: Option<&'a crate::Work>,
}

impl Visitor for Checker<'_> {
    fn descend(&mut self, _path: &[u8], blob: &Pending) -> Result<bool> {
        Ok(match blob {
            Pending::Tree(id) => self.check_ref(id, BlobKind::Tree, None),
            Pending::List { id, .. } => self.check_ref(id, BlobKind::ContentList, None),
        })
    }

    fn enter_tree(&mut self, _path: &[u8], id: &BlobId, tree: &Tree) -> Result<()> {
        self.walked.trees += 1;
        crate::work::advance(self.work, 1, 0);
        for node in &tree.nodes {
            self.visit_file(*id, node);
        }
        Ok(())
    }

    fn visit_list(&mut self, _path: &[u8], blob: &Pending, list: &ContentList) -> Result<()> {
        self.walked.lists += 1;
        let Pending::List { id, level, len } = *blob else {
            return Ok(());
        };
        if self.merkle && (list.level != level || list.len() != len) {
            self.findings.add(
                ErrorCode::SnapshotInvalid,
                format!("blob {id}"),
                None,
                Some(id),
                format!(
                    "content list is level {} covering {} bytes; its parent says level {level} covering {len}",
                    list.level,
                    list.len(),
                ),
            );
        }
        // Inner lists are checked when the walk descends into them.
        if list.level <= 1 {
            self.visit_chunks(&list.entries);
        }
        Ok(())
    }

    fn damaged(&mut self, _path: &[u8], blob: &Pending, failure: LoadFailure) -> Result<()> {
        let id = blob.id();
        match failure {
            LoadFailure::Read(e) => self.unreadable(&id, e),
            LoadFailure::Decode(e) => {
                match blob {
                    Pending::Tree(_) => self.walked.trees += 1,
                    Pending::List { .. } => self.walked.lists += 1,
                }
                let what = match blob {
                    Pending::Tree(_) => "tree",
                    Pending::List { .. } => "content list",
                };
                self.findings.add(
                    ErrorCode::SnapshotInvalid,
                    format!("blob {id}"),
                    None,
                    Some(id),
                    format!("{what} does not decode: {e}"),
                );
                Ok(())
            }
        }
    }
}

impl Checker<'_> {
    /// Checks a reference against the index and the pack listing; true if the blob is readable.
    fn check_ref(&mut self, id: &BlobId, kind: BlobKind, len: Option<u64>) -> bool {
        let Some(location) = self.loaded.index.get(id) else {
            // The class restore meets for the same blob (`Error::Missing`).
            self.findings.add(
                crate::ErrorClass::Missing.code(crate::Operation::Inspect),
                format!("blob {id}"),
                None,
                Some(*id),
                format!("{kind:?} blob is referenced but in no index"),
            );
            return false;
        };
        if location.kind != kind {
            self.findings.add(
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
            self.findings.add(
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
            self.findings.add(
                ErrorCode::SnapshotInvalid,
                format!("blob {id}"),
                Some(location.pack),
                Some(*id),
                format!("chunk is {} bytes, its list says {len}", location.raw_len),
            );
        }
        true
    }

    /// A blob that did not read: a finding (storage failures abort).
    fn unreadable(&mut self, id: &BlobId, e: Error) -> Result<()> {
        let Some(code) = object_problem(&e) else {
            return Err(e);
        };
        let location = self.loaded.index.get(id);
        let object = location.map_or_else(|| format!("blob {id}"), |l| pack_path(l.pack_kind, &l.pack));
        self.findings.add(
            code,
            object,
            location.map(|l| l.pack),
            Some(*id),
            format!("blob does not open: {}", super::one_line(&e)),
        );
        Ok(())
    }

    /// The part of a file node its tree alone proves: inline chunks and their length.
    fn visit_file(&mut self, tree_id: BlobId, node: &Node) {
        let NodeKind::File {
            size,
            content: Content::Inline(entries),
            ..
        } = &node.kind
        else {
            return;
        };
        self.visit_chunks(entries);
        if self.merkle {
            let total = entries.iter().fold(0u64, |t, e| t.saturating_add(e.len));
            if total != *size {
                // Named by its directory's tree, so attribution finds it.
                self.findings.add(
                    ErrorCode::SnapshotInvalid,
                    format!("blob {tree_id}"),
                    None,
                    Some(tree_id),
                    format!("file {} is {size} bytes but its chunks hold {total}", node.name_lossy()),
                );
            }
        }
    }

    fn visit_chunks(&mut self, entries: &[ListEntry]) {
        for entry in entries {
            self.walked.data_refs += 1;
            self.check_ref(&entry.id, BlobKind::Data, Some(entry.len));
        }
    }
}
