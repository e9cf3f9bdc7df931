//! Packing sealed blobs: one open pack per family, handed to the uploader
//! when it reaches its target size.
//!
//! A full pack is swapped for a fresh one only once the uploader has a slot
//! for it, and the worker waits for that slot holding the pack's lock. So
//! while uploads are slower than sealing (S3), the other workers wait at the
//! lock instead of filling a second pack behind the first: a session holds
//! at most the open pack of each family plus the uploader's slots, never a
//! finished pack waiting in line besides.
//!
//! While finished packs wait for their upload (S3 slower than sealing),
//! the open pack ships early: at what room is left within two data packs'
//! worth of bytes uploading, and at no less than a quarter of its target.
//! On a slow link a session's packs get smaller rather than its memory
//! larger: at most about two data packs uploading, a quarter of one open
//! and waiting for its slot, and the open tree pack, where three full data
//! packs (one open, two uploading) took a first backup of the dump to a
//! loopback SeaweedFS to 94–96 MiB of peak RSS (now 86 MiB, in the same
//! time) and one of 105,000 files to 111–112 MiB (now 98–104 MiB). A
//! ceiling of one and a half packs instead of two lowered neither.
//!
//! Each pack in memory stays within its family's target plus an eighth: a
//! blob that would take a non-empty pack past that bound ships the pack
//! first and opens the next one (a 4 MiB file chunk at the end of a nearly
//! full pack used to double the pack's buffer). Tree packs aim at
//! [`TREE_TARGET`] at most, whatever the repository's pack size: a tree-heavy
//! backup fills one as fast as a data pack, and a full 16 MiB one beside
//! the open data pack and two uploading took a first backup of 105,000
//! files to S3 to 123 MiB of peak RSS.

use std::sync::Mutex;

use nfrepo_format::{PackBuilder, PackKind, RepoId, SealedBlob, Sealer};

use super::upload::UploadSlot;
use crate::{Error, Result};

/// Sends finished packs on; implemented by the upload queue.
pub(crate) trait PackSink: Send + Sync {
    /// Waits for room for one more pack.
    fn reserve(&self) -> Result<UploadSlot>;
    /// Bytes of the packs sent and not yet uploaded.
    fn uploading(&self) -> usize;
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

/// The largest target of a tree pack (pack.md, "Writing").
pub(crate) const TREE_TARGET: usize = 4 << 20;

/// The size a pack of `kind` is shipped at, for the repository's `target`.
const fn target_of(kind: PackKind, target: usize) -> usize {
    match kind {
        PackKind::Tree if target > TREE_TARGET => TREE_TARGET,
        _ => target,
    }
}

/// The size a pack of `kind` is shipped at while `uploading` bytes of
/// packs wait for their upload: its target while that leaves room for it
/// within two data packs' worth, else what room is left, and never below
/// a quarter of the target (see the module docs).
fn ship_at(kind: PackKind, target: usize, uploading: usize) -> usize {
    let own = target_of(kind, target);
    (2 * target).saturating_sub(uploading).clamp(own / 4, own)
}

/// The bound a pack of `kind` stays within: its target and an eighth.
const fn bound(kind: PackKind, target: usize) -> usize {
    let target = target_of(kind, target);
    target + target / 8
}

/// Bytes reserved for a new open pack of `kind`: a data pack fills to its
/// bound; tree packs are mostly small.
const fn capacity(kind: PackKind, target: usize) -> usize {
    match kind {
        PackKind::Tree => 1 << 20,
        _ => bound(kind, target),
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

    /// Adds a blob. Ships the open pack first if the blob would take it
    /// past its bound, or after adding if it reached its target (at most
    /// one pack per call, so a worker never holds two upload slots; a pack
    /// that a lone large blob filled goes with the next call or the flush).
    /// The lock is released before sealing the trailer and sending, so
    /// other workers keep packing.
    pub(crate) fn add(&self, blob: &SealedBlob, sink: &dyn PackSink) -> Result<()> {
        let kind = PackKind::for_blob(blob.kind);
        let full = {
            let mut open = self.slot(kind).lock().map_err(|_| poisoned())?;
            let mut full = None;
            if !open.is_empty() && open.len() + blob.sealed.len() > bound(kind, self.target) {
                full = Some(self.swap(kind, &mut open, sink)?);
            }
            open.add(blob).map_err(Error::Format)?;
            if full.is_none() && open.len() >= ship_at(kind, self.target, sink.uploading()) {
                full = Some(self.swap(kind, &mut open, sink)?);
            }
            full
        };
        match full {
            Some((builder, slot)) => sink.send(builder.finish(&self.sealer, &self.repo).map_err(Error::Format)?, slot),
            None => Ok(()),
        }
    }

    /// Takes the open pack of `kind` out for shipping, with its upload slot,
    /// and opens a fresh one. Waits for the slot with the pack's lock held:
    /// the backpressure the module docs describe.
    fn swap(&self, kind: PackKind, open: &mut PackBuilder, sink: &dyn PackSink) -> Result<(PackBuilder, UploadSlot)> {
        let slot = sink.reserve()?;
        let next = fresh(kind, capacity(kind, self.target), &self.sealer);
        Ok((std::mem::replace(open, next), slot))
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
        /// What the sink says is uploading.
        uploading: usize,
    }

    impl PackSink for Watching {
        fn reserve(&self) -> Result<UploadSlot> {
            let open = self.packer.slot(PackKind::Data).try_lock().is_ok();
            self.open_while_waiting.lock().unwrap().push(open);
            self.slots.acquire(1);
            Ok(UploadSlot::new(self.slots.clone()))
        }

        fn uploading(&self) -> usize {
            self.uploading
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

    /// Fills a packer of `target` with `blobs` (kind and sealed length),
    /// flushes it, and returns each pack's kind and its blobs' first bytes.
    fn packed(target: usize, blobs: &[(BlobKind, usize)]) -> Vec<(PackKind, Vec<u8>)> {
        packed_while_uploading(target, 0, blobs)
    }

    /// [`packed`] with a sink that always has `uploading` bytes in upload.
    fn packed_while_uploading(
        target: usize,
        uploading: usize,
        blobs: &[(BlobKind, usize)],
    ) -> Vec<(PackKind, Vec<u8>)> {
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes([9; 32]));
        let packer = Arc::new(Packer::new(target, sealer, RepoId([1; 32])));
        let sink = Watching {
            packer: packer.clone(),
            open_while_waiting: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
            slots: Arc::new(ByteBudget::new(1)),
            uploading,
        };
        for (n, (kind, len)) in blobs.iter().enumerate() {
            let mut blob = blob(u8::try_from(n).unwrap(), *len);
            blob.kind = *kind;
            packer.add(&blob, &sink).unwrap();
        }
        packer.flush(&sink).unwrap();
        let sent = sink.sent.lock().unwrap();
        sent.iter()
            .map(|p| (p.kind, p.entries.iter().map(|e| e.id.0[0]).collect()))
            .collect()
    }

    #[test]
    fn a_blob_that_would_take_a_pack_past_its_bound_goes_to_the_next_pack() {
        // Target 4096, bound 4608: 3000 + 2000 would pass it, so the first
        // pack goes with one blob; 2000 + 2500 reaches the target and goes.
        let data = |len| (BlobKind::Data, len);
        let packs = packed(4096, &[data(3000), data(2000), data(2500), data(100)]);
        assert_eq!(
            packs,
            vec![
                (PackKind::Data, vec![0]),
                (PackKind::Data, vec![1, 2]),
                (PackKind::Data, vec![3]),
            ]
        );
    }

    #[test]
    fn a_lone_blob_past_the_target_is_shipped_by_the_next_call_one_pack_per_call() {
        let data = |len| (BlobKind::Data, len);
        // Blob 1 ships pack [0] before it is added, then fills its own pack
        // past the target; blob 2 ships it (one pack per call: a worker
        // never holds two upload slots, which would deadlock on one slot).
        let packs = packed(4096, &[data(100), data(6000), data(100)]);
        assert_eq!(
            packs,
            vec![
                (PackKind::Data, vec![0]),
                (PackKind::Data, vec![1]),
                (PackKind::Data, vec![2]),
            ]
        );
    }

    #[test]
    fn the_open_pack_ships_early_while_packs_wait_for_their_upload() {
        // Packs start with an 8-byte header; blobs of 1100 bytes.
        let blobs = [(BlobKind::Data, 1100); 5];
        let packs = |uploading| -> Vec<Vec<u8>> {
            packed_while_uploading(4096, uploading, &blobs)
                .into_iter()
                .map(|(kind, ids)| {
                    assert_eq!(kind, PackKind::Data);
                    ids
                })
                .collect()
        };
        // Nothing uploading: packs fill to the target (4096).
        assert_eq!(packs(0), vec![vec![0, 1, 2, 3], vec![4]]);
        // A pack and a half uploading leave room for half a pack (2048).
        assert_eq!(packs(6144), vec![vec![0, 1], vec![2, 3], vec![4]]);
        // No room left: a quarter of the target (1024), not less.
        assert_eq!(packs(8192), vec![vec![0], vec![1], vec![2], vec![3], vec![4]]);
    }

    #[test]
    fn tree_packs_ship_at_the_tree_target_whatever_the_pack_size() {
        let tree = |len| (BlobKind::Tree, len);
        let mib = 1 << 20;
        // A 16 MiB repository: trees go in packs of about 4 MiB, data blobs
        // still fill their own.
        let packs = packed(
            16 * mib,
            &[
                tree(mib),
                tree(mib),
                tree(mib),
                tree(mib),
                tree(mib),
                (BlobKind::Data, mib),
            ],
        );
        assert_eq!(
            packs,
            vec![
                (PackKind::Tree, vec![0, 1, 2, 3]),
                (PackKind::Data, vec![5]),
                (PackKind::Tree, vec![4]),
            ]
        );
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
            uploading: 0,
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
