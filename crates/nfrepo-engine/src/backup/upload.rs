//! Uploading packs: verify, then write once, a bounded number at a time.
//!
//! Uploaded packs are recorded in index deltas as they accumulate (every
//! 65,536 blobs by default: `BackupOptions::index_flush_blobs`), rather than all at commit: the session then
//! holds a bounded list of unindexed packs however large the input, and a
//! run that dies leaves most of its packs indexed already. An index delta
//! always follows the uploads it names, so it never points at a missing pack.
//!
//! Each pack is re-read before upload (trailer opened, every blob opened,
//! decompressed and re-hashed) so a compression or memory bug can never put
//! an unreadable pack in the repository. A sender takes an upload slot
//! before it even closes a pack (the packer waits for it with the open pack
//! still open) and the upload gives it back when done, so at most
//! `concurrency` finished packs exist at once, queued or uploading.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nfrepo_format::{FinishedPack, IndexDelta, IndexedPack, RepoId};
use nfrepo_store::{ErrorKind, PutMode};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Claims;
use super::budget::ByteBudget;
use super::packer::PackSink;
use crate::{Error, Repository, Result};

/// What the uploader did.
#[derive(Debug, Default)]
pub(crate) struct UploadReport {
    /// Packs uploaded but not yet in an index delta.
    pub(crate) unindexed: Vec<IndexedPack>,
    /// Packs uploaded.
    pub(crate) packs: u64,
    /// Their total size.
    pub(crate) stored_bytes: u64,
}

impl UploadReport {
    fn unindexed_blobs(&self) -> usize {
        self.unindexed.iter().map(|p| p.blobs.len()).sum()
    }
}

/// The sending side, used from worker threads.
pub(crate) struct UploadQueue {
    tx: Mutex<Option<mpsc::Sender<(FinishedPack, UploadSlot)>>>,
    failed: Arc<Mutex<Option<Arc<Error>>>>,
    slots: Arc<ByteBudget>,
    /// Bytes of the packs sent and not yet done with (uploaded or failed).
    uploading: Arc<AtomicUsize>,
}

/// One upload slot, given back when the upload ends however it ends (or
/// when a pack it was reserved for is never sent). Once its pack is sent,
/// it also counts the pack's bytes as uploading until then.
pub(crate) struct UploadSlot {
    slots: Arc<ByteBudget>,
    counted: Option<(Arc<AtomicUsize>, usize)>,
}

impl UploadSlot {
    /// A slot already taken from `slots`; given back on drop.
    pub(crate) fn new(slots: Arc<ByteBudget>) -> Self {
        Self { slots, counted: None }
    }

    /// Counts `len` bytes in `uploading` for as long as the slot lives.
    fn count(&mut self, uploading: &Arc<AtomicUsize>, len: usize) {
        uploading.fetch_add(len, Ordering::Relaxed);
        self.counted = Some((uploading.clone(), len));
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Some((uploading, len)) = &self.counted {
            uploading.fetch_sub(*len, Ordering::Relaxed);
        }
        self.slots.release(1);
    }
}

impl PackSink for UploadQueue {
    fn reserve(&self) -> Result<UploadSlot> {
        self.check()?;
        self.slots.acquire(1);
        Ok(UploadSlot::new(self.slots.clone()))
    }

    fn uploading(&self) -> usize {
        self.uploading.load(Ordering::Relaxed)
    }

    fn send(&self, pack: FinishedPack, mut slot: UploadSlot) -> Result<()> {
        self.check()?;
        slot.count(&self.uploading, pack.bytes.len());
        let tx = self
            .tx
            .lock()
            .map_err(|_| Error::Pipeline("upload queue poisoned".into()))?
            .clone()
            .ok_or_else(|| Error::Pipeline("upload queue closed".into()))?;
        tx.blocking_send((pack, slot)).map_err(|_| {
            self.failure()
                .unwrap_or_else(|| Error::Pipeline("uploader stopped".into()))
        })
    }
}

impl UploadQueue {
    /// Fails if an upload already failed, so the backup stops early.
    pub(crate) fn check(&self) -> Result<()> {
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The uploader's first failure, typed as it happened (a storage
    /// permission error stays one), shared with every worker it stops.
    fn failure(&self) -> Option<Error> {
        self.failed.lock().ok()?.clone().map(Error::Shared)
    }

    /// Closes the queue so the uploader finishes.
    pub(crate) fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

/// Starts the uploader task on the current runtime.
pub(crate) fn start(
    repo: Repository,
    claims: Arc<Claims>,
    concurrency: usize,
    flush_blobs: usize,
) -> (UploadQueue, tokio::task::JoinHandle<Result<UploadReport>>) {
    let concurrency = concurrency.max(1);
    let (tx, rx) = mpsc::channel(concurrency);
    let failed = Arc::new(Mutex::new(None));
    let queue = UploadQueue {
        tx: Mutex::new(Some(tx)),
        failed: failed.clone(),
        slots: Arc::new(ByteBudget::new(concurrency)),
        uploading: Arc::new(AtomicUsize::new(0)),
    };
    let task = tokio::spawn(run(repo, claims, rx, flush_blobs.max(1), failed));
    (queue, task)
}

async fn run(
    repo: Repository,
    claims: Arc<Claims>,
    mut rx: mpsc::Receiver<(FinishedPack, UploadSlot)>,
    flush_blobs: usize,
    failed: Arc<Mutex<Option<Arc<Error>>>>,
) -> Result<UploadReport> {
    let mut tasks = JoinSet::new();
    let mut outcome = Outcome {
        report: UploadReport::default(),
        first_error: None,
        failed,
    };
    let mut open = true;
    while open || !tasks.is_empty() {
        tokio::select! {
            received = rx.recv(), if open => match received {
                Some((pack, slot)) => {
                    let uploader = repo.clone();
                    tasks.spawn(async move {
                        let result = upload_one(&uploader, pack).await;
                        drop(slot);
                        result
                    });
                }
                None => open = false,
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                outcome.record(done);
                if outcome.first_error.is_none() && outcome.report.unindexed_blobs() >= flush_blobs {
                    let delta = IndexDelta {
                        packs: std::mem::take(&mut outcome.report.unindexed),
                        supersedes: Vec::new(),
                    };
                    match repo.write_index_delta(&delta).await {
                        Ok(id) => claims.indexed(id, &delta),
                        Err(e) => outcome.fail(e),
                    }
                }
            }
        }
    }
    match outcome.first_error {
        Some(e) => Err(Error::from_shared(e)),
        None => Ok(outcome.report),
    }
}

/// The uploader's running tally, and its first failure.
struct Outcome {
    report: UploadReport,
    first_error: Option<Arc<Error>>,
    failed: Arc<Mutex<Option<Arc<Error>>>>,
}

impl Outcome {
    fn record(&mut self, result: std::result::Result<Result<IndexedPack>, tokio::task::JoinError>) {
        match result {
            Ok(Ok(pack)) => {
                self.report.stored_bytes += pack.size;
                self.report.packs += 1;
                self.report.unindexed.push(pack);
            }
            Ok(Err(e)) => self.fail(e),
            Err(join) => self.fail(Error::Pipeline(format!("upload task failed: {join}"))),
        }
    }

    /// Records a failure; senders see it at their next call and stop.
    fn fail(&mut self, error: Error) {
        let error = self.first_error.get_or_insert(error.into_shared()).clone();
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(error);
        }
    }
}

/// Verifies a finished pack (trailer opened, every blob opened, decompressed
/// and re-hashed, trailer equal to the blobs written) and only then uploads
/// it. Every writer of packs goes through here: backups and gc's repack.
///
/// # Errors
/// [`Error::Pipeline`] if the pack fails verification (nothing is written);
/// storage errors.
pub(crate) async fn upload_one(repo: &Repository, pack: FinishedPack) -> Result<IndexedPack> {
    let repo_id: RepoId = repo.id();
    let verifier = repo.clone();
    let pack = tokio::task::spawn_blocking(move || -> Result<FinishedPack> {
        let mut codec = verifier.codec()?;
        let unverified = |detail: String, source| Error::Unverified {
            pack: pack.id.to_hex(),
            detail,
            source,
        };
        let (_, entries, faults) = nfrepo_format::verify_pack(&pack.id, &pack.bytes, &mut codec, &repo_id)
            .map_err(|e| unverified("the pack does not open".into(), Some(e)))?;
        if let Some(fault) = faults.into_iter().next() {
            return Err(unverified(format!("blob {}", fault.id), Some(fault.error)));
        }
        if entries != pack.entries {
            return Err(unverified("its trailer does not match its blobs".into(), None));
        }
        Ok(pack)
    })
    .await
    .map_err(|e| Error::Pipeline(e.to_string()))??;
    let key = crate::read::pack_object_key(pack.kind, &pack.id)?;
    let size = pack.bytes.len() as u64;
    match repo
        .store()
        .put(&key, Bytes::from(pack.bytes), PutMode::CreateNew)
        .await
    {
        // Same name means same bytes: someone (an earlier, interrupted run) uploaded it already.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::store(e)),
        Ok(()) => {}
    }
    tracing::debug!(pack = %pack.id, size, "uploaded pack");
    Ok(IndexedPack {
        id: pack.id,
        kind: pack.kind,
        size,
        blobs: pack.entries,
        sealing: pack.sealing,
    })
}
