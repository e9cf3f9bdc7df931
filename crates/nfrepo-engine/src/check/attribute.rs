//! The last pass of a check, run only when something is damaged: walk the
//! selected snapshots again and name every file and directory the damage
//! reaches, so the operator knows what a restore would lose.
//!
//! Runs on the engine's tree walker, once per snapshot (paths differ per
//! snapshot). A tree whose whole subtree turned out clean is remembered and
//! pruned from later walks, so a subtree shared by many snapshots is read
//! again only when damage lies below it.

use std::collections::{HashMap, HashSet};

use nfrepo_format::{BlobId, Content, ContentList, Node, NodeKind, SnapshotId, Tree};

use super::load::Loaded;
use super::{Affected, Findings};
use crate::Result;
use crate::read::{Reader, SnapshotEntry};
use crate::walk::{self, LoadFailure, Pending, Visitor, WalkOptions};

/// Paths listed per finding; beyond this the count is still right in the
/// findings' blobs, but the paths stop (a whole lost tree pack can reach
/// millions of files).
const MAX_PATHS_PER_FINDING: usize = 10_000;

/// Tree and list reads in flight at once.
const CONCURRENCY: usize = 16;

/// Finds the damaged paths of one snapshot at a time.
struct Attributor<'a> {
    damaged: HashMap<BlobId, usize>,
    /// Trees with nothing damaged below them.
    clean: HashSet<BlobId>,
    /// For each tree being walked: whether damage was found below it.
    dirty: Vec<bool>,
    findings: &'a mut Findings,
    snapshot: SnapshotId,
    /// (finding, path) pairs recorded for the current snapshot.
    recorded: HashSet<(usize, Vec<u8>)>,
}

impl Attributor<'_> {
    /// Records that `path` is reached by finding `index`.
    fn hit(&mut self, path: &[u8], index: usize) {
        for dirty in &mut self.dirty {
            *dirty = true;
        }
        if !self.recorded.insert((index, path.to_vec())) {
            return;
        }
        let Some(finding) = self.findings.get_mut(index) else {
            return;
        };
        if finding.affected.len() >= MAX_PATHS_PER_FINDING {
            return;
        }
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            String::from_utf8_lossy(path).into_owned()
        };
        finding.affected.push(Affected {
            snapshot: self.snapshot,
            path,
        });
    }
}

impl Visitor for Attributor<'_> {
    fn descend(&mut self, path: &[u8], blob: &Pending) -> Result<bool> {
        let id = blob.id();
        if let Some(index) = self.damaged.get(&id).copied() {
            self.hit(path, index);
            return Ok(false);
        }
        Ok(!matches!(blob, Pending::Tree(_)) || !self.clean.contains(&id))
    }

    fn enter_tree(&mut self, _path: &[u8], _id: &BlobId, _tree: &Tree) -> Result<()> {
        self.dirty.push(false);
        Ok(())
    }

    fn visit_node(&mut self, path: &[u8], _parent: &BlobId, node: &Node) -> Result<()> {
        if let NodeKind::File {
            content: Content::Inline(entries),
            ..
        } = &node.kind
        {
            let hits: Vec<usize> = entries
                .iter()
                .filter_map(|e| self.damaged.get(&e.id).copied())
                .collect();
            for index in hits {
                self.hit(path, index);
            }
        }
        Ok(())
    }

    fn leave_tree(&mut self, _path: &[u8], id: &BlobId) -> Result<()> {
        if self.dirty.pop() == Some(false) {
            self.clean.insert(*id);
        }
        Ok(())
    }

    fn visit_list(&mut self, path: &[u8], _blob: &Pending, list: &ContentList) -> Result<()> {
        if list.level <= 1 {
            let hits: Vec<usize> = list
                .entries
                .iter()
                .filter_map(|e| self.damaged.get(&e.id).copied())
                .collect();
            for index in hits {
                self.hit(path, index);
            }
        }
        Ok(())
    }

    /// A blob that does not read is a finding of its own already (the walk
    /// pass recorded it); a subtree that cannot be read is not attributed
    /// further, and the tree above it is not clean.
    fn damaged(&mut self, _path: &[u8], _blob: &Pending, _failure: LoadFailure) -> Result<()> {
        for dirty in &mut self.dirty {
            *dirty = true;
        }
        Ok(())
    }
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
        damaged,
        clean: HashSet::new(),
        dirty: Vec::new(),
        findings,
        snapshot: SnapshotId([0; 32]),
        recorded: HashSet::new(),
    };
    let options = WalkOptions {
        dedup: false,
        lists: true,
        concurrency: CONCURRENCY,
    };
    for entry in selected {
        attributor.snapshot = entry.id;
        attributor.recorded.clear();
        walk::walk(reader, [(Vec::new(), entry.snapshot.root)], options, &mut attributor).await?;
    }
    Ok(())
}
