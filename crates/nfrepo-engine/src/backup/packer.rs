//! Packing sealed blobs: one open pack per family, handed to the uploader
//! when it reaches the target size.
//!
//! A full pack is swapped for a fresh one only once the uploader has a slot
//! for it, and the worker waits for that slot holding the pack's lock. So
//! while uploads are slower than sealing (S3), the other workers wait at the
//! lock instead of filling a second pack behind the first: a session holds
//! at most the open pack of each family plus the uploader's slots, never a
//! finished pack waiting in line besides.

use std::sync::Mutex;

use nfrepo_format::{PackBuilder, PackKind, RepoId, SealedBlob, Sealer};

use super::upload::UploadSlot;
use crate::{Error, Result};

/// Sends finished packs on; implemented by the upload queue.
pub(crate) trait PackSink: Send + Sync {
    /// Waits for room for one more pack.
    fn reserve(&self) -> Result<UploadSlot>;
    /// Sends a pack in the room `slot` reserved.
    fn send(&self, pack: nfrepo_format::FinishedPack, slot: UploadSlot) -> Result<()>;
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

/// Bytes reserved for a new open pack of `kind`: a data pack fills to the
/// target and a chunk past it; tree packs are mostly small.
const fn capacity(kind: PackKind, target: usize) -> usize {
    match kind {
        PackKind::Tree => 1 << 20,
        _ => target + target / 8,
    }
}

impl Packer {
    pub(crate) fn new(target: usize, sealer: Sealer, repo: RepoId) -> Self {
        Self {
            data: Mutex::new(fresh(PackKind::Data, capacity(PackKind::Data, target), &sealer)),
            tree: Mutex::new(fresh(PackKind::Tree, capacity(PackKind::Tree, target), &sealer)),
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
                // Waits with the lock held: the backpressure the module docs describe.
                let slot = sink.reserve()?;
                let next = fresh(kind, capacity(kind, self.target), &self.sealer);
                Some((std::mem::replace(&mut *open, next), slot))
            } else {
                None
            }
        };
        match full {
            Some((builder, slot)) => sink.send(builder.finish(&self.sealer, &self.repo).map_err(Error::Format)?, slot),
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
                let slot = sink.reserve()?;
                sink.send(builder.finish(&self.sealer, &self.repo).map_err(Error::Format)?, slot)?;
            }
        }
        Ok(())
    }
}

fn poisoned() -> Error {
    Error::Pipeline("a packing worker panicked".into())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use nfrepo_format::{BlobId, BlobKind, Cipher, FinishedPack, RepoId, SealedBlob, Sealer, SecretKey};

    use super::{PackKind, PackSink, Packer};
    use crate::Result;
    use crate::backup::budget::ByteBudget;
    use crate::backup::upload::UploadSlot;

    /// A sink that records, each time a full pack asks for a slot, whether
    /// other workers could still add to the data pack at that moment.
    struct Watching {
        packer: Arc<Packer>,
        open_while_waiting: Mutex<Vec<bool>>,
        sent: Mutex<Vec<FinishedPack>>,
        slots: Arc<ByteBudget>,
    }

    impl PackSink for Watching {
        fn reserve(&self) -> Result<UploadSlot> {
            let open = self.packer.slot(PackKind::Data).try_lock().is_ok();
            self.open_while_waiting.lock().unwrap().push(open);
            self.slots.acquire(1);
            Ok(UploadSlot::new(self.slots.clone()))
        }

        fn send(&self, pack: FinishedPack, slot: UploadSlot) -> Result<()> {
            drop(slot);
            self.sent.lock().unwrap().push(pack);
            Ok(())
        }
    }

    fn blob(n: u8, len: usize) -> SealedBlob {
        SealedBlob {
            id: BlobId([n; 32]),
            kind: BlobKind::Data,
            raw_len: u32::try_from(len).unwrap(),
            sealed: vec![n; len],
        }
    }

    #[test]
    fn a_full_pack_waits_for_its_upload_slot_before_a_new_pack_is_opened() {
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes([9; 32]));
        let packer = Arc::new(Packer::new(4096, sealer, RepoId([1; 32])));
        let sink = Watching {
            packer: packer.clone(),
            open_while_waiting: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
            slots: Arc::new(ByteBudget::new(1)),
        };
        for n in 0..10 {
            packer.add(&blob(n, 1500), &sink).unwrap();
        }
        packer.flush(&sink).unwrap();

        // Every pack that filled up asked for its slot with the pack still
        // locked: no worker could start filling the next one meanwhile.
        let waits = sink.open_while_waiting.lock().unwrap().clone();
        assert_eq!(waits.len(), 4, "three full packs and the flushed rest");
        assert!(waits[..3].iter().all(|open| !open), "{waits:?}");
        // Nothing was lost on the way: every blob is in exactly one pack, in order.
        let sent = sink.sent.lock().unwrap();
        let ids: Vec<u8> = sent.iter().flat_map(|p| p.entries.iter().map(|e| e.id.0[0])).collect();
        assert_eq!(ids, (0..10).collect::<Vec<u8>>());
    }
}
