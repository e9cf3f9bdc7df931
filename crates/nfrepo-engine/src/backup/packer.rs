//! Packing sealed blobs: one open pack per family, handed to the uploader
//! when it reaches the target size.

use std::sync::Mutex;

use nfrepo_format::{PackBuilder, PackKind, RepoId, SealedBlob, Sealer};

use crate::{Error, Result};

/// Sends finished packs on; implemented by the upload queue.
pub(crate) trait PackSink: Send + Sync {
    fn send(&self, pack: nfrepo_format::FinishedPack) -> Result<()>;
}

/// The open data and tree packs of one session.
pub(crate) struct Packer {
    data: Mutex<PackBuilder>,
    tree: Mutex<PackBuilder>,
    target: usize,
    sealer: Sealer,
    repo: RepoId,
}

/// An empty pack for `sealer`: a put-only session's packs name the session
/// in their header (pack.md). A packer is never given an index key's
/// sealer; if it were, the repository's header is written and `finish`
/// refuses the mismatch.
fn fresh(kind: PackKind, capacity: usize, sealer: &Sealer) -> PackBuilder {
    PackBuilder::for_sealer(kind, capacity, sealer).unwrap_or_else(|_| PackBuilder::new(kind, capacity))
}

impl Packer {
    pub(crate) fn new(target: usize, sealer: Sealer, repo: RepoId) -> Self {
        Self {
            data: Mutex::new(fresh(PackKind::Data, target + target / 8, &sealer)),
            tree: Mutex::new(fresh(PackKind::Tree, 1 << 20, &sealer)),
            target,
            sealer,
            repo,
        }
    }

    fn slot(&self, kind: PackKind) -> &Mutex<PackBuilder> {
        match kind {
            PackKind::Tree => &self.tree,
            _ => &self.data,
        }
    }

    /// Adds a blob; ships the pack if it is now full. The lock is released
    /// before sealing the trailer and sending, so other workers keep packing.
    pub(crate) fn add(&self, blob: &SealedBlob, sink: &dyn PackSink) -> Result<()> {
        let kind = PackKind::for_blob(blob.kind);
        let full = {
            let mut open = self.slot(kind).lock().map_err(|_| poisoned())?;
            open.add(blob).map_err(Error::Format)?;
            if open.len() >= self.target {
                let capacity = if kind == PackKind::Data {
                    self.target + self.target / 8
                } else {
                    1 << 20
                };
                Some(std::mem::replace(&mut *open, fresh(kind, capacity, &self.sealer)))
            } else {
                None
            }
        };
        match full {
            Some(builder) => sink.send(builder.finish(&self.sealer, &self.repo).map_err(Error::Format)?),
            None => Ok(()),
        }
    }

    /// Ships whatever is in the open packs.
    pub(crate) fn flush(&self, sink: &dyn PackSink) -> Result<()> {
        for kind in [PackKind::Data, PackKind::Tree] {
            let builder = {
                let mut open = self.slot(kind).lock().map_err(|_| poisoned())?;
                std::mem::replace(&mut *open, fresh(kind, 0, &self.sealer))
            };
            if !builder.is_empty() {
                sink.send(builder.finish(&self.sealer, &self.repo).map_err(Error::Format)?)?;
            }
        }
        Ok(())
    }
}

fn poisoned() -> Error {
    Error::Pipeline("a packing worker panicked".into())
}
