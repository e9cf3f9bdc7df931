//! Reading a repository: snapshots, the index, blobs, trees and file content.
//!
//! A [`Reader`] pairs an open repository with its loaded index. Blobs are
//! fetched with range requests (one per blob, one per run of adjacent
//! blobs when streaming file content, one per block of a tree pack for
//! trees and content lists: [`windows`]), opened (authenticated, decompressed,
//! re-hashed) on the blocking pool, and never returned unless they verify:
//! a damaged blob is an [`Error::Corrupted`] naming the pack and blob.

mod content;
mod index_load;
mod plan;
mod seek;
mod snapshots;
mod span;
mod verified;
mod windows;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use nfrepo_format::{BlobCodec, BlobId, BlobKind, ContentList, Node, NodeKind, Tree};
use nfrepo_store::{ObjectKey, ObjectKind};

pub use self::plan::{
    BatchFile, FileToRestore, PackRead, Placement, PlanLimits, PlannedChunk, RestoreBatch, RestorePlanner, group_reads,
};
pub use self::seek::{ChunkAt, locate_entry};
pub(crate) use self::snapshots::sort_oldest_first;
pub use self::snapshots::{SnapshotEntry, select_snapshot};
pub use self::span::SpanPart;
use crate::index::{BlobLocation, Index};
use crate::{Error, Repository, Result};

/// How many metadata objects (index deltas, snapshots) are fetched at once.
const LIST_CONCURRENCY: usize = 16;

impl Repository {
    /// A blob codec for this repository (one per worker thread).
    ///
    /// # Errors
    /// If zstd rejects the configured level.
    pub fn codec(&self) -> Result<BlobCodec> {
        BlobCodec::new(self.keys().clone(), self.sealer().clone(), self.config().zstd_level).map_err(Error::Format)
    }

    /// Opens a reader: loads the index.
    ///
    /// # Errors
    /// As [`Self::load_index`].
    pub async fn reader(&self) -> Result<Reader> {
        self.require_keys("read")?;
        let index = self.load_index().await?;
        Ok(Reader::new(self.clone(), Arc::new(index)))
    }
}

/// Reads blobs, trees and file content of one repository through its index.
#[derive(Clone)]
pub struct Reader {
    repo: Repository,
    index: Arc<Index>,
    trees: Arc<Mutex<lru::LruCache<BlobId, Arc<Tree>>>>,
    /// Content lists met while seeking ([`Reader::chunk_at`]): a seek
    /// reads the lists from the root down, and the next seek in the same
    /// file finds them here.
    lists: Arc<Mutex<lru::LruCache<BlobId, Arc<ContentList>>>>,
    /// Blocks of tree packs that metadata blobs are cut from ([`windows`]).
    windows: windows::Windows,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("blobs", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader over `index`.
    #[must_use]
    pub fn new(repo: Repository, index: Arc<Index>) -> Self {
        let capacity = NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN);
        // A list holds at most 1024 entries (48 KiB decoded): 64 of them
        // keep the lists above the chunks of a few dozen large files.
        let lists = NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN);
        Self {
            repo,
            index,
            trees: Arc::new(Mutex::new(lru::LruCache::new(capacity))),
            lists: Arc::new(Mutex::new(lru::LruCache::new(lists))),
            windows: windows::windows(),
        }
    }

    /// The repository.
    #[must_use]
    pub const fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The index.
    #[must_use]
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Where a blob is stored.
    ///
    /// # Errors
    /// [`Error::Missing`] if no index entry names it.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.index.get(id).ok_or_else(|| Error::Missing {
            object: format!("blob {id}"),
            detail: match self.index.cache_failure() {
                Some(failure) => format!("not found, and the local index cache failed: {failure}"),
                None => "not in any index".into(),
            },
        })
    }

    /// Fetches, opens and verifies one blob.
    ///
    /// # Errors
    /// [`Error::Missing`], storage errors, or [`Error::Corrupted`] naming pack and blob.
    pub async fn read_blob(&self, id: &BlobId, expect: BlobKind) -> Result<Vec<u8>> {
        match self.read_blob_once(id, expect).await {
            // The local cache may have located it wrongly: ask the repository (crate::index).
            Err(e) if self.index.may_recover(&e) => {
                self.index.recover(&self.repo).await?;
                self.read_blob_once(id, expect).await
            }
            other => other,
        }
    }

    /// Reads a blob from its first copy; a copy whose pack is gone is
    /// skipped (the pack is excluded from the index, see [`Index::mark_absent`])
    /// while another copy is indexed.
    pub(crate) async fn read_blob_once(&self, id: &BlobId, expect: BlobKind) -> Result<Vec<u8>> {
        loop {
            let location = self.locate_kind(id, expect)?;
            match self.read_blob_at(id, location).await {
                Err(e) if pack_gone(&e) && self.index.mark_absent(location.pack) && self.index.get(id).is_some() => {
                    tracing::warn!(blob = %id, pack = %location.pack, "an indexed pack is gone; reading another copy");
                }
                other => return other,
            }
        }
    }

    async fn read_blob_at(&self, id: &BlobId, location: BlobLocation) -> Result<Vec<u8>> {
        let sealed = if location.pack_kind == nfrepo_format::PackKind::Tree
            && u64::from(location.sealed_len) <= windows::WINDOW_BYTES
        {
            self.sealed_from_window(&location).await?
        } else {
            let start = u64::from(location.offset);
            self.repo
                .store()
                .get_range(&pack_key(&location)?, start..start + u64::from(location.sealed_len))
                .await
                .map_err(Error::store)?
        };
        let repo = self.repo.clone();
        let id = *id;
        tokio::task::spawn_blocking(move || {
            crate::codec::with_codec(&repo, |codec| {
                let what = || format!("blob {id} in pack {}", location.pack);
                let sealer = nfrepo_format::pack_sealer(repo.sealer(), location.sealing.as_ref())
                    .map_err(|e| Error::decode(what(), e))?;
                codec
                    .open_with(&sealer, location.kind, &id, location.raw_len, &sealed)
                    .map_err(|e| Error::decode(what(), e))
            })
        })
        .await
        .map_err(|e| Error::Pipeline(e.to_string()))?
    }

    /// Loads a tree (cached).
    ///
    /// # Errors
    /// As [`Self::read_blob`], or [`Error::Corrupted`] if it does not decode.
    pub async fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(tree) = self
            .trees
            .lock()
            .map_err(|_| Error::Pipeline("tree cache poisoned".into()))?
            .get(id)
        {
            return Ok(tree.clone());
        }
        let bytes = self.read_blob(id, BlobKind::Tree).await?;
        let tree = Arc::new(Tree::decode(&bytes).map_err(|e| Error::decode(format!("tree {id}"), e))?);
        if let Ok(mut cache) = self.trees.lock() {
            cache.put(*id, tree.clone());
        }
        Ok(tree)
    }

    /// Resolves `path` (slash-separated, relative to the root) to its node.
    /// The root itself resolves to `None`.
    ///
    /// # Errors
    /// [`Error::PathNotFound`].
    pub async fn resolve(&self, snapshot: &SnapshotEntry, path: &str) -> Result<Option<Node>> {
        let mut tree_id = snapshot.snapshot.root;
        let mut node = None;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        for (i, part) in parts.iter().enumerate() {
            let tree = self.tree(&tree_id).await?;
            let found = tree.find(part.as_bytes()).cloned().ok_or_else(|| Error::PathNotFound {
                snapshot: snapshot.id.short(),
                path: path.to_owned(),
            })?;
            match &found.kind {
                NodeKind::Dir { tree } => tree_id = *tree,
                _ if i + 1 < parts.len() => {
                    return Err(Error::PathNotFound {
                        snapshot: snapshot.id.short(),
                        path: path.to_owned(),
                    });
                }
                _ => {}
            }
            node = Some(found);
        }
        Ok(node)
    }

    /// Where a blob of an expected kind is stored.
    pub(crate) fn locate_kind(&self, id: &BlobId, expect: BlobKind) -> Result<BlobLocation> {
        let location = self.locate(id)?;
        if location.kind != expect {
            return Err(Error::Missing {
                object: format!("blob {id}"),
                detail: format!("indexed as {:?}, expected {expect:?}", location.kind),
            });
        }
        Ok(location)
    }
}

/// Whether `err` says a pack object does not exist (as opposed to being damaged or unreachable).
pub(crate) fn pack_gone(err: &Error) -> bool {
    matches!(err, Error::Store(e) if e.kind() == nfrepo_store::ErrorKind::NotFound)
}

/// The store key of the pack holding a blob.
pub(crate) fn pack_key(location: &BlobLocation) -> Result<ObjectKey> {
    pack_object_key(location.pack_kind, &location.pack)
}

/// The store key of a pack: data packs under `data/`, tree packs under `tree/`.
pub(crate) fn pack_object_key(kind: nfrepo_format::PackKind, id: &nfrepo_format::PackId) -> Result<ObjectKey> {
    let kind = match kind {
        nfrepo_format::PackKind::Tree => ObjectKind::Tree,
        _ => ObjectKind::Data,
    };
    ObjectKey::new(kind, id.to_hex()).map_err(Error::store)
}
