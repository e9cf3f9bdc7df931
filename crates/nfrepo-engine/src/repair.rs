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
//! Otherwise both run under the maintenance lease ([`crate::lease`]), never
//! beside a GC or each other: a `repair index` during a GC sweep would
//! index again the packs the GC is deleting (format-spec/gc.md).

use std::collections::{HashMap, HashSet};

use nfrepo_format::{
    BlobId, Content, ContentList, IndexDelta, IndexId, IndexedPack, Node, NodeKind, PackId, SnapshotId, Tree,
};
use nfrepo_store::PutMode;

use crate::backup::{BackupOptions, BackupSession, BackupWriter, CommitDetails};
use crate::check::CheckOptions;
use crate::lease::{LeaseRequest, MaintenanceLease, ReplacedLease};
use crate::objects;
use crate::read::{Reader, SnapshotEntry};
use crate::walk::{self, LoadFailure, Pending, Visitor, WalkOptions};
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
    /// The lease of another holder this run replaced, if any.
    pub replaced_lease: Option<ReplacedLease>,
}

/// What `repair snapshots` did (or would do).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SnapshotsRepair {
    /// Each snapshot that reaches damaged data.
    pub snapshots: Vec<SnapshotRepair>,
    /// The lease of another holder this run replaced, if any.
    pub replaced_lease: Option<ReplacedLease>,
}

/// Options for [`Repository::repair_index_with`] and [`Repository::repair_snapshots_with`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RepairOptions {
    /// Report what would be done; write nothing (and take no lease).
    pub dry_run: bool,
    /// `repair snapshots`: find damage by reading every pack.
    pub read_data: bool,
    /// Take the maintenance lease even if another holder's is still valid
    /// (the operator knows that holder is dead).
    pub break_lease: bool,
    /// How long the maintenance lease lasts without renewal.
    pub lease_ttl: std::time::Duration,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            read_data: false,
            break_lease: false,
            lease_ttl: crate::DEFAULT_LEASE_TERM,
        }
    }
}

impl RepairOptions {
    /// Sets dry-run.
    #[must_use]
    pub const fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets whether `repair snapshots` reads every pack.
    #[must_use]
    pub const fn read_data(mut self, read_data: bool) -> Self {
        self.read_data = read_data;
        self
    }

    /// Sets whether to break another holder's valid lease.
    #[must_use]
    pub const fn break_lease(mut self, break_lease: bool) -> Self {
        self.break_lease = break_lease;
        self
    }

    /// The lease for `operation`, unless this is a dry run.
    async fn lease(&self, repo: &Repository, operation: &'static str) -> Result<Option<MaintenanceLease>> {
        if self.dry_run {
            return Ok(None);
        }
        let mut request = LeaseRequest::new(operation, self.lease_ttl);
        request.break_lease = self.break_lease;
        MaintenanceLease::acquire_for(repo, &request, std::time::SystemTime::now())
            .await
            .map(Some)
    }
}

/// Releases `lease` and returns whose lease it replaced.
async fn release(lease: Option<MaintenanceLease>) -> Option<ReplacedLease> {
    let lease = lease?;
    let replaced = lease.replaced().cloned();
    lease.release().await;
    replaced
}

async fn ensure_held(lease: Option<&MaintenanceLease>) -> Result<()> {
    match lease {
        Some(lease) => lease.ensure_held().await,
        None => Ok(()),
    }
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
    /// As [`Self::repair_index_with`].
    pub async fn repair_index(&self, dry_run: bool) -> Result<IndexRepair> {
        self.repair_index_with(&RepairOptions::default().dry_run(dry_run)).await
    }

    /// Rebuilds the index from pack trailers (see the module docs), under
    /// the maintenance lease unless a dry run.
    ///
    /// # Errors
    /// [`Error::LeaseHeld`] if another maintenance command runs (nothing
    /// done); [`Error::LeaseLost`]; storage failures; nothing is deleted
    /// unless the new delta was written.
    pub async fn repair_index_with(&self, options: &RepairOptions) -> Result<IndexRepair> {
        self.require_keys("repair")?;
        let lease = options.lease(self, "repair index").await?;
        let result = self.repair_index_under(options.dry_run, lease.as_ref()).await;
        let replaced = release(lease).await;
        result.map(|mut report| {
            report.replaced_lease = replaced;
            report
        })
    }

    async fn repair_index_under(&self, dry_run: bool, lease: Option<&MaintenanceLease>) -> Result<IndexRepair> {
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
        ensure_held(lease).await?;
        match self.store().put(&key, bytes.into(), PutMode::CreateNew).await {
            Err(e) if e.kind() != nfrepo_store::ErrorKind::AlreadyExists => return Err(Error::store(e)),
            _ => {}
        }
        report.written = Some(id);
        ensure_held(lease).await?;
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
    /// As [`Self::repair_snapshots_with`].
    pub async fn repair_snapshots(&self, read_data: bool, dry_run: bool) -> Result<Vec<SnapshotRepair>> {
        let options = RepairOptions::default().read_data(read_data).dry_run(dry_run);
        Ok(self.repair_snapshots_with(&options).await?.snapshots)
    }

    /// [`Self::repair_snapshots`], under the maintenance lease unless a dry run.
    ///
    /// # Errors
    /// [`Error::LeaseHeld`] if another maintenance command runs (nothing
    /// done); [`Error::LeaseLost`]; storage failures; a failed write commits
    /// nothing. Run [`Self::repair_index`] first if an index delta is
    /// damaged: the rewrite reads through the index.
    pub async fn repair_snapshots_with(&self, options: &RepairOptions) -> Result<SnapshotsRepair> {
        self.require_keys("repair")?;
        let lease = options.lease(self, "repair snapshots").await?;
        let result = self
            .repair_snapshots_under(options.read_data, options.dry_run, lease.as_ref())
            .await;
        let replaced_lease = release(lease).await;
        result.map(|snapshots| SnapshotsRepair {
            snapshots,
            replaced_lease,
        })
    }

    async fn repair_snapshots_under(
        &self,
        read_data: bool,
        dry_run: bool,
        lease: Option<&MaintenanceLease>,
    ) -> Result<Vec<SnapshotRepair>> {
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
                Some(self.begin_backup(options).await?)
            };
            let mut rewriter = Rewriter {
                reader: &reader,
                repo: self,
                damaged: &damaged,
                stack: Vec::new(),
                lost: HashSet::new(),
                rewritten: Vec::new(),
                root: None,
                removed: Vec::new(),
                counts: CommitDetails::default(),
            };
            let options = WalkOptions {
                dedup: false,
                lists: true,
                concurrency: 16,
            };
            if let Err(e) = walk::walk(&reader, [(Vec::new(), snap.root)], options, &mut rewriter).await {
                if let Some(session) = session {
                    session.abort().await;
                }
                return Err(e);
            }
            if rewriter.root.is_none() {
                rewriter.removed.push("/".to_owned());
            }
            let Rewriter {
                root,
                rewritten,
                mut removed,
                counts,
                ..
            } = rewriter;
            removed.sort();
            if let (Some(writer), Some(_)) = (session.as_ref().map(BackupSession::writer), root)
                && let Err(e) = store_rewritten(writer, rewritten).await
            {
                if let Some(session) = session {
                    session.abort().await;
                }
                return Err(e);
            }
            let repaired = match (session, root) {
                (Some(session), Some(root)) => {
                    if let Err(e) = ensure_held(lease).await {
                        session.abort().await;
                        return Err(e);
                    }
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

/// Rebuilds trees without their damaged entries, on the engine's tree walker.
///
/// The walk visits every path (no seen-set: a removed path is named in
/// every place it appears). A tree that changed gets a new id computed from
/// its plaintext, as a backup session would name it, and is kept (children
/// before parents) for [`store_rewritten`] to store after the walk.
struct Rewriter<'a> {
    reader: &'a Reader,
    repo: &'a Repository,
    damaged: &'a HashSet<BlobId>,
    /// One entry per tree being walked.
    stack: Vec<Rewriting>,
    /// Paths whose blob was pruned or failed to load, with the file or directory to drop.
    lost: HashSet<Vec<u8>>,
    /// Changed trees, children before parents.
    rewritten: Vec<Tree>,
    /// The new root, once the root tree has been left.
    root: Option<BlobId>,
    removed: Vec<String>,
    counts: CommitDetails,
}

/// A tree being rebuilt.
struct Rewriting {
    nodes: Vec<Node>,
    changed: bool,
    /// For each kept node whose fate depends on what lies below it: its
    /// index in `nodes` and its path.
    pending: Vec<(usize, Vec<u8>)>,
}

fn display(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

impl Rewriter<'_> {
    fn chunk_ok(&self, id: &BlobId) -> bool {
        !self.damaged.contains(id) && self.reader.index().contains(id)
    }

    fn lose(&mut self, path: &[u8]) {
        self.lost.insert(path.to_vec());
    }
}

impl Visitor for Rewriter<'_> {
    fn descend(&mut self, path: &[u8], blob: &Pending) -> Result<bool> {
        if self.damaged.contains(&blob.id()) {
            self.lose(path);
            return Ok(false);
        }
        Ok(true)
    }

    fn enter_tree(&mut self, _path: &[u8], _id: &BlobId, tree: &Tree) -> Result<()> {
        self.stack.push(Rewriting {
            nodes: Vec::with_capacity(tree.nodes.len()),
            changed: false,
            pending: Vec::new(),
        });
        Ok(())
    }

    fn visit_node(&mut self, path: &[u8], _parent: &BlobId, node: &Node) -> Result<()> {
        let keep = match &node.kind {
            NodeKind::File {
                content: Content::Inline(entries),
                ..
            } => entries.iter().all(|e| self.chunk_ok(&e.id)),
            // Decided by its lists or its subtree, when the tree is left.
            _ => true,
        };
        let Some(top) = self.stack.last_mut() else {
            return Ok(());
        };
        if keep {
            if matches!(
                node.kind,
                NodeKind::Dir { .. }
                    | NodeKind::File {
                        content: Content::List { .. },
                        ..
                    }
            ) {
                top.pending.push((top.nodes.len(), path.to_vec()));
            }
            top.nodes.push(node.clone());
        } else {
            top.changed = true;
            self.removed.push(display(path));
        }
        Ok(())
    }

    fn visit_list(&mut self, path: &[u8], _blob: &Pending, list: &ContentList) -> Result<()> {
        if list.level <= 1 && !list.entries.iter().all(|e| self.chunk_ok(&e.id)) {
            self.lose(path);
        }
        Ok(())
    }

    fn damaged(&mut self, path: &[u8], _blob: &Pending, failure: LoadFailure) -> Result<()> {
        match failure {
            LoadFailure::Read(e) if !e.is_damage() => Err(e),
            _ => {
                self.lose(path);
                Ok(())
            }
        }
    }

    fn leave_tree(&mut self, path: &[u8], id: &BlobId) -> Result<()> {
        let Some(mut tree) = self.stack.pop() else {
            return Ok(());
        };
        // Drop what was lost below, last first so indices stay valid.
        for (index, child) in tree.pending.iter().rev() {
            if self.lost.remove(child) {
                let node = tree.nodes.remove(*index);
                let suffix = if matches!(node.kind, NodeKind::Dir { .. }) {
                    "/"
                } else {
                    ""
                };
                self.removed.push(format!("{}{suffix}", display(child)));
                tree.changed = true;
            }
        }
        for node in &tree.nodes {
            match &node.kind {
                NodeKind::Dir { .. } => self.counts.dirs += 1,
                NodeKind::File { size, .. } => {
                    self.counts.files += 1;
                    self.counts.bytes += size;
                }
                _ => self.counts.others += 1,
            }
        }
        let new = if tree.changed {
            let tree = Tree { nodes: tree.nodes };
            let plaintext = tree.encode().map_err(|e| Error::Invalid(e.to_string()))?;
            let new = self.repo.keys().blob_id(&plaintext);
            self.rewritten.push(tree);
            new
        } else {
            *id
        };
        match self.stack.last_mut() {
            Some(parent) => {
                if new != *id {
                    parent.changed = true;
                    let index = parent.pending.iter().find(|(_, p)| p == path).map(|(i, _)| *i);
                    if let Some(node) = index.and_then(|i| parent.nodes.get_mut(i)) {
                        node.kind = NodeKind::Dir { tree: new };
                    }
                }
            }
            None => self.root = Some(new),
        }
        Ok(())
    }
}

/// Stores the rewritten trees through `session`, children before parents.
async fn store_rewritten(writer: BackupWriter, trees: Vec<Tree>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        for tree in &trees {
            writer.store_tree(tree)?;
        }
        Ok::<_, Error>(())
    })
    .await
    .map_err(|e| Error::Pipeline(e.to_string()))?
}
