//! `repair`: making a damaged repository usable again, without hiding anything.
//!
//! * [`Repository::repair_index`] rebuilds the index from the packs
//!   themselves: every pack's sealed trailer lists its blobs. The new delta
//!   is written first and names every delta it replaces in `supersedes`;
//!   only then are the old deltas deleted, so a crash at any point leaves a
//!   repository whose readers see either the old index or the new one.
//! * [`Repository::repair_snapshots`] writes, for each snapshot that reaches
//!   damaged or missing data, a new snapshot without the damaged files and
//!   directories. The new snapshot lists every path it left out in
//!   `skipped` (as `damaged: <path>`) and names its original in `extra`
//!   (`repaired_from`); the original is never deleted.
//!
//! Both take `dry_run`, which reports what would be done and writes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use nfrepo_format::{
    BlobId, BlobKind, Content, ContentList, IndexDelta, IndexId, IndexedPack, Node, NodeKind, PackId, SnapshotId, Tree,
};
use nfrepo_store::PutMode;

use crate::backup::{BackupOptions, BackupSession, CommitDetails};
use crate::check::CheckOptions;
use crate::objects;
use crate::read::{Reader, SnapshotEntry};
use crate::{Error, Repository, Result};

/// What `repair index` did (or would do).
#[derive(Clone, Debug, Default)]
pub struct IndexRepair {
    /// Packs indexed from their own trailers.
    pub packs_from_trailers: u64,
    /// Packs whose trailer did not open but whose old index entries were kept.
    pub packs_from_old_index: Vec<PackId>,
    /// Packs that could not be indexed at all (trailer damaged, no old entry): their blobs are lost.
    pub unindexable: Vec<(PackId, String)>,
    /// Packs the old index named that are gone from storage.
    pub missing: Vec<PackId>,
    /// Blobs in the new index.
    pub blobs: u64,
    /// The new delta (none on a dry run).
    pub written: Option<IndexId>,
    /// The deltas it replaces (deleted unless a dry run).
    pub superseded: Vec<IndexId>,
}

/// One snapshot `repair snapshots` rewrote (or would).
#[derive(Clone, Debug)]
pub struct SnapshotRepair {
    /// The damaged original (kept).
    pub original: SnapshotId,
    /// The new snapshot (none on a dry run).
    pub repaired: Option<SnapshotId>,
    /// Paths left out, each a file or directory whose data is damaged.
    pub removed: Vec<String>,
}

impl Repository {
    /// Rebuilds the index from pack trailers (see the module docs).
    ///
    /// # Errors
    /// Storage failures; nothing is deleted unless the new delta was written.
    pub async fn repair_index(&self, dry_run: bool) -> Result<IndexRepair> {
        use futures::stream::{self, StreamExt};
        let mut report = IndexRepair::default();
        // The old deltas that still open, for packs whose trailer is damaged.
        // Every delta there now is superseded, damaged or not; a storage
        // failure stops the repair, since deleting a delta nobody could read
        // would lose the only record of packs whose trailers are damaged.
        let deltas = objects::load_all::<IndexDelta>(self).await?;
        let mut old: HashMap<PackId, IndexedPack> = HashMap::new();
        report.superseded = deltas
            .good
            .iter()
            .map(|d| d.id)
            .chain(deltas.damaged.iter().map(|d| d.id))
            .collect();
        for damaged in &deltas.damaged {
            tracing::warn!(delta = %damaged.key, error = %damaged.error, "an index delta does not open; the packs' trailers replace it");
        }
        for delta in deltas.good {
            for pack in delta.object.packs {
                old.entry(pack.id).or_insert(pack);
            }
        }
        report.superseded.sort();
        let listed = objects::list_packs(self).await?;
        let present: HashSet<PackId> = listed.iter().map(|(id, _)| *id).collect();
        report.missing = old.keys().filter(|id| !present.contains(id)).copied().collect();
        report.missing.sort();
        let results: Vec<(PackId, Result<IndexedPack>)> = stream::iter(listed)
            .map(|(id, info)| async move { (id, self.read_pack_trailer(&info).await) })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut packs = Vec::new();
        for (id, result) in results {
            match result {
                Ok(pack) => {
                    report.packs_from_trailers += 1;
                    packs.push(pack);
                }
                Err(e) if !e.is_damage() => return Err(e),
                Err(e) => match old.remove(&id) {
                    Some(pack) => {
                        report.packs_from_old_index.push(id);
                        packs.push(pack);
                    }
                    None => report.unindexable.push((id, crate::check::one_line(&e))),
                },
            }
        }
        packs.sort_by_key(|p| p.id);
        report.packs_from_old_index.sort();
        report.unindexable.sort();
        report.blobs = packs.iter().map(|p| p.blobs.len() as u64).sum();
        if dry_run {
            return Ok(report);
        }
        let delta = IndexDelta {
            packs,
            supersedes: report.superseded.clone(),
        };
        let (id, bytes) = delta.encode(self.sealer(), &self.id()).map_err(Error::Format)?;
        let key = objects::key::<IndexDelta>(&id)?;
        match self.store().put(&key, bytes.into(), PutMode::CreateNew).await {
            Err(e) if e.kind() != nfrepo_store::ErrorKind::AlreadyExists => return Err(Error::store(e)),
            _ => {}
        }
        report.written = Some(id);
        for old in &report.superseded {
            if *old == id {
                continue;
            }
            let key = objects::key::<IndexDelta>(old)?;
            self.store().delete(&key).await.map_err(Error::store)?;
        }
        report.superseded.retain(|old| *old != id);
        Ok(report)
    }

    /// Writes repaired copies of the snapshots that reach damaged data (see the module docs).
    /// With `read_data` the damage is found by reading every pack, otherwise
    /// by the structure check (missing packs, unreadable trees, unindexed blobs).
    ///
    /// # Errors
    /// Storage failures; a failed write commits nothing. Run [`Self::repair_index`]
    /// first if an index delta is damaged: the rewrite reads through the index.
    pub async fn repair_snapshots(&self, read_data: bool, dry_run: bool) -> Result<Vec<SnapshotRepair>> {
        let options = CheckOptions {
            read_data: read_data.then_some(crate::check::ReadDataSubset::All),
            ..CheckOptions::default()
        };
        let report = self.check(&options).await?;
        let damaged: HashSet<BlobId> = report.findings.iter().flat_map(|f| f.blobs.iter().copied()).collect();
        let targets = report.damaged_snapshots();
        // Snapshots that do not open are findings of the check, not a reason to stop.
        let snapshots: Vec<SnapshotEntry> = self
            .readable_snapshots()
            .await?
            .into_iter()
            .filter(|e| targets.contains(&e.id))
            .collect();
        let reader = self.reader().await?;
        let mut out = Vec::new();
        for entry in snapshots {
            let snap = &entry.snapshot;
            let session = if dry_run {
                None
            } else {
                let mut options =
                    BackupOptions::new(snap.source.clone(), snap.source_kind.clone(), snap.profile.clone())
                        .paths(snap.paths.clone())
                        .tags(snap.tags.clone());
                options.use_parent = false;
                Some(Arc::new(self.begin_backup(options).await?))
            };
            let mut rewriter = Rewriter {
                reader: &reader,
                damaged: &damaged,
                session: session.clone(),
                removed: Vec::new(),
                counts: CommitDetails::default(),
            };
            let root = rewriter.tree(snap.root, Vec::new()).await?;
            let mut removed = std::mem::take(&mut rewriter.removed);
            removed.sort();
            let counts = std::mem::take(&mut rewriter.counts);
            drop(rewriter);
            let session = match session {
                Some(session) => {
                    Some(Arc::try_unwrap(session).map_err(|_| Error::Pipeline("backup session still in use".into()))?)
                }
                None => None,
            };
            let repaired = match (session, root) {
                (Some(session), Some(root)) => {
                    let mut details = counts;
                    details.command = snap.command.clone();
                    details.skipped = snap.skipped.clone();
                    details.skipped.extend(removed.iter().map(|p| format!("damaged: {p}")));
                    details.extra = snap.extra.clone();
                    details.extra.push(("repaired_from".into(), entry.id.to_hex()));
                    details
                        .extra
                        .push(("repaired_original_time_ns".into(), snap.time_ns.to_string()));
                    Some(session.commit(root, details).await?.0)
                }
                (Some(session), None) => {
                    session.abort().await;
                    None
                }
                _ => None,
            };
            out.push(SnapshotRepair {
                original: entry.id,
                repaired,
                removed,
            });
        }
        Ok(out)
    }
}

/// Rebuilds trees without their damaged entries.
struct Rewriter<'a> {
    reader: &'a Reader,
    damaged: &'a HashSet<BlobId>,
    session: Option<Arc<BackupSession>>,
    removed: Vec<String>,
    counts: CommitDetails,
}

fn display(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = prefix.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

impl Rewriter<'_> {
    /// The id of tree `id` without its damaged entries, or `None` if the tree itself is lost.
    fn tree(&mut self, id: BlobId, path: Vec<u8>) -> BoxFuture<'_, Result<Option<BlobId>>> {
        Box::pin(async move {
            if self.damaged.contains(&id) {
                self.removed.push(format!("{}/", display(&path)));
                return Ok(None);
            }
            let tree = match self.reader.tree(&id).await {
                Ok(tree) => tree,
                Err(e) if e.is_damage() => {
                    self.removed.push(format!("{}/", display(&path)));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let mut nodes = Vec::with_capacity(tree.nodes.len());
            let mut changed = false;
            for node in &tree.nodes {
                let child = join(&path, &node.name);
                match &node.kind {
                    NodeKind::Dir { tree } => match self.tree(*tree, child).await? {
                        Some(new) => {
                            changed |= new != *tree;
                            self.counts.dirs += 1;
                            nodes.push(Node {
                                kind: NodeKind::Dir { tree: new },
                                ..node.clone()
                            });
                        }
                        None => changed = true,
                    },
                    NodeKind::File { content, size, .. } => {
                        if self.content_intact(content).await? {
                            self.counts.files += 1;
                            self.counts.bytes += size;
                            nodes.push(node.clone());
                        } else {
                            self.removed.push(display(&child));
                            changed = true;
                        }
                    }
                    _ => {
                        self.counts.others += 1;
                        nodes.push(node.clone());
                    }
                }
            }
            if !changed {
                return Ok(Some(id));
            }
            let new = match &self.session {
                Some(session) => {
                    let session = session.clone();
                    let tree = Tree { nodes };
                    tokio::task::spawn_blocking(move || session.store_tree(&tree))
                        .await
                        .map_err(|e| Error::Pipeline(e.to_string()))??
                }
                // A dry run names nothing new; any id other than the old one marks the change.
                None => BlobId([0; 32]),
            };
            Ok(Some(new))
        })
    }

    /// Whether every chunk and list of a file's content is readable.
    async fn content_intact(&mut self, content: &Content) -> Result<bool> {
        let mut lists = match content {
            Content::Inline(entries) => return Ok(entries.iter().all(|e| self.chunk_ok(&e.id))),
            Content::List { root, .. } => vec![*root],
        };
        while let Some(id) = lists.pop() {
            if self.damaged.contains(&id) {
                return Ok(false);
            }
            let bytes = match self.reader.read_blob(&id, BlobKind::ContentList).await {
                Ok(bytes) => bytes,
                Err(e) if e.is_damage() => return Ok(false),
                Err(e) => return Err(e),
            };
            let Ok(list) = ContentList::decode(&bytes) else {
                return Ok(false);
            };
            if list.level > 1 {
                lists.extend(list.entries.iter().map(|e| e.id));
            } else if !list.entries.iter().all(|e| self.chunk_ok(&e.id)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn chunk_ok(&self, id: &BlobId) -> bool {
        !self.damaged.contains(id) && self.reader.index().contains(id)
    }
}
