//! Uploading packs: verify, then write once, a bounded number at a time.
//!
//! Each pack is re-read before upload (trailer opened, every blob opened,
//! decompressed and re-hashed) so a compression or memory bug can never put
//! an unreadable pack in the repository. The bounded queue and semaphore
//! keep at most `1 + concurrency` finished packs in memory (plus the one a
//! sealing worker may be handing over).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nfrepo_format::{FinishedPack, IndexedPack, RepoId};
use nfrepo_store::{ErrorKind, PutMode};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::packer::PackSink;
use crate::{Error, Repository, Result};

/// What the uploader did.
#[derive(Debug, Default)]
pub(crate) struct UploadReport {
    pub(crate) packs: Vec<IndexedPack>,
    pub(crate) stored_bytes: u64,
}

/// The sending side, used from worker threads.
pub(crate) struct UploadQueue {
    tx: Mutex<Option<mpsc::Sender<FinishedPack>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl PackSink for UploadQueue {
    fn send(&self, pack: FinishedPack) -> Result<()> {
        self.check()?;
        let tx = self
            .tx
            .lock()
            .map_err(|_| Error::Pipeline("upload queue poisoned".into()))?
            .clone()
            .ok_or_else(|| Error::Pipeline("upload queue closed".into()))?;
        tx.blocking_send(pack).map_err(|_| {
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

    fn failure(&self) -> Option<Error> {
        self.failed.lock().ok()?.as_ref().map(|m| Error::Pipeline(m.clone()))
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
    concurrency: usize,
) -> (UploadQueue, tokio::task::JoinHandle<Result<UploadReport>>) {
    let (tx, rx) = mpsc::channel(1);
    let failed = Arc::new(Mutex::new(None));
    let queue = UploadQueue {
        tx: Mutex::new(Some(tx)),
        failed: failed.clone(),
    };
    let task = tokio::spawn(run(repo, rx, concurrency, failed));
    (queue, task)
}

async fn run(
    repo: Repository,
    mut rx: mpsc::Receiver<FinishedPack>,
    concurrency: usize,
    failed: Arc<Mutex<Option<String>>>,
) -> Result<UploadReport> {
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut report = UploadReport::default();
    let mut first_error: Option<Error> = None;
    let mut record = |result: std::result::Result<Result<IndexedPack>, tokio::task::JoinError>,
                      report: &mut UploadReport| {
        match result {
            Ok(Ok(pack)) => {
                report.stored_bytes += pack.size;
                report.packs.push(pack);
            }
            Ok(Err(e)) => {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
                first_error.get_or_insert(e);
            }
            Err(join) => {
                let e = Error::Pipeline(format!("upload task failed: {join}"));
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
                first_error.get_or_insert(e);
            }
        }
    };
    loop {
        // Take a slot before taking a pack, so no finished pack waits here
        // in memory on top of the one in the channel.
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Pipeline("upload semaphore closed".into()))?;
        let Some(pack) = rx.recv().await else { break };
        let repo = repo.clone();
        tasks.spawn(async move {
            let result = upload_one(&repo, pack).await;
            drop(permit);
            result
        });
        while let Some(done) = tasks.try_join_next() {
            record(done, &mut report);
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(done, &mut report);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn upload_one(repo: &Repository, pack: FinishedPack) -> Result<IndexedPack> {
    let repo_id: RepoId = repo.id();
    let verifier = repo.clone();
    let pack = tokio::task::spawn_blocking(move || -> Result<FinishedPack> {
        let mut codec = verifier.codec()?;
        let (_, entries, faults) = nfrepo_format::verify_pack(&pack.id, &pack.bytes, &mut codec, &repo_id)
            .map_err(|e| Error::Pipeline(format!("pack {} failed verification before upload: {e}", pack.id)))?;
        if let Some(fault) = faults.first() {
            return Err(Error::Pipeline(format!(
                "pack {} failed verification before upload: blob {}: {}",
                pack.id, fault.id, fault.error
            )));
        }
        if entries != pack.entries {
            return Err(Error::Pipeline(format!(
                "pack {} trailer does not match its blobs",
                pack.id
            )));
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
    })
}
