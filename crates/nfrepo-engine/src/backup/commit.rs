//! Ending a backup: commit (index delta, then the snapshot: the commit
//! point) or abort (nothing visible; uploaded packs are adopted later).

use bytes::Bytes;
use nfrepo_format::{BlobId, IndexDelta, Snapshot, SnapshotId, Summary};
use nfrepo_store::{ObjectKey, PutMode};

use super::{BackupSession, CommitDetails, upload};
use crate::{Error, Repository, Result};

impl BackupSession {
    /// Flushes, waits for uploads, writes the index delta and then the
    /// snapshot naming `root`. Nothing is visible to readers before this returns.
    ///
    /// Call it once every source thread is done with its writers: writes
    /// still running are cut off and fail.
    ///
    /// Just before writing the snapshot it checks that every pack it
    /// deduplicated against is still stored and not planned for deletion
    /// (`crate::session::LiveSession::verify_before_commit`). On any failure
    /// nothing is committed and the session is aborted (its marker removed).
    ///
    /// # Errors
    /// Any upload failure, or a failed pre-commit check; the snapshot is then not written.
    pub async fn commit(self, root: BlobId, details: CommitDetails) -> Result<(SnapshotId, Snapshot)> {
        match self.try_commit(root, details).await {
            Ok(done) => Ok(done),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn try_commit(&self, root: BlobId, details: CommitDetails) -> Result<(SnapshotId, Snapshot)> {
        let report = self.finish_uploads().await?;
        self.live.ensure_alive()?;
        let shared = &self.writer.shared;
        let repo = shared.repo();
        if !report.unindexed.is_empty() {
            let delta = IndexDelta {
                packs: report.unindexed,
                supersedes: Vec::new(),
            };
            let id = repo.write_index_delta(&delta).await?;
            shared.claims().indexed(id, &delta);
        }
        let mut tags = self.options.tags.clone();
        tags.sort();
        let mut extra = details.extra;
        extra.sort();
        let (bytes_read, blobs_added, bytes_added_raw) = shared.totals();
        let snapshot = Snapshot {
            time_ns: self.time_ns,
            source: self.options.source.clone(),
            source_kind: self.options.source_kind.clone(),
            hostname: crate::host::hostname(),
            username: crate::host::username(),
            paths: self.options.paths.clone(),
            tags,
            profile: self.options.profile.clone(),
            parent: self.writer.parent().map(|p| p.id),
            root,
            summary: Summary {
                files: details.files,
                dirs: details.dirs,
                others: details.others,
                files_unchanged: details.files_unchanged,
                bytes: details.bytes,
                bytes_read,
                blobs_added,
                bytes_added_raw,
                bytes_added_stored: report.stored_bytes,
                packs_added: report.packs,
                retries: details.retries,
                duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            },
            command: details.command,
            skipped: details.skipped,
            extra,
            program_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let (id, bytes) = snapshot.encode(repo.sealer(), &repo.id()).map_err(Error::Format)?;
        let key = crate::objects::key::<nfrepo_format::Snapshot>(&id)?;
        let deduplicated = shared
            .claims()
            .deduplicated
            .lock()
            .map_err(|_| Error::Pipeline("deduplication record poisoned".into()))?
            .clone();
        self.live.verify_before_commit(&deduplicated).await?;
        let sealed = bytes.clone();
        put_once(repo, &key, bytes).await?;
        crate::snapshot_cache::remember(repo, id, sealed, &snapshot).await;
        // The files this session read are remembered once it has committed
        // (earlier batches may already be written: each entry is checked
        // against the index before it is trusted).
        if let Some(known) = shared.known.clone() {
            let flushed = tokio::task::spawn_blocking(move || known.flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "known-files cache not updated");
            }
        }
        self.live.finish().await;
        super::listing::end(self.record.clone(), self.live.name().to_owned(), true).await;
        tracing::info!(snapshot = %id, "snapshot committed");
        Ok((id, snapshot))
    }

    /// Stops without committing. Uploaded packs stay and the next backup adopts them.
    ///
    /// Packs already full when this is called (including those the sealing
    /// workers are finishing) are still uploaded; the open ones are dropped.
    pub async fn abort(self) {
        let shared = self.writer.shared.clone();
        shared.close();
        let _ = tokio::task::spawn_blocking(move || {
            shared.budget.wait_idle();
            shared.queue.close();
        })
        .await;
        self.writer.shared.queue.close();
        let uploader = self.uploader.lock().ok().and_then(|mut u| u.take());
        if let Some(task) = uploader {
            let _ = task.await;
        }
        self.live.finish().await;
        // Its packs are adopted by the next backup of this host, which lists them.
        super::listing::end(self.record.clone(), self.live.name().to_owned(), false).await;
    }

    async fn finish_uploads(&self) -> Result<upload::UploadReport> {
        // Waiting for the workers and flushing may block on the bounded
        // queue, so this runs off the runtime.
        let shared = self.writer.shared.clone();
        shared.close();
        let flush = tokio::task::spawn_blocking(move || shared.flush());
        let uploader = self
            .uploader
            .lock()
            .map_err(|_| Error::Pipeline("uploader handle poisoned".into()))?
            .take()
            .ok_or_else(|| Error::Pipeline("uploads already finished".into()))?;
        let flushed = flush.await.map_err(|e| Error::Pipeline(e.to_string()))?;
        let report = uploader.await.map_err(|e| Error::Pipeline(e.to_string()))?;
        flushed?;
        report
    }
}

impl Repository {
    /// Writes an index delta; its packs must already be uploaded.
    ///
    /// # Errors
    /// Storage and encoding errors.
    pub async fn write_index_delta(&self, delta: &IndexDelta) -> Result<nfrepo_format::IndexId> {
        let (id, bytes) = delta.encode(self.index_sealer(), &self.id()).map_err(Error::Format)?;
        let key = crate::objects::key::<IndexDelta>(&id)?;
        put_once(self, &key, bytes).await?;
        Ok(id)
    }
}

async fn put_once(repo: &Repository, key: &ObjectKey, bytes: Vec<u8>) -> Result<()> {
    match repo.store().put(key, Bytes::from(bytes), PutMode::CreateNew).await {
        Err(e) if e.kind() == nfrepo_store::ErrorKind::AlreadyExists => Ok(()),
        other => other.map_err(Error::store),
    }
}
