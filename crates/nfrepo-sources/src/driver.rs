//! The one backup driver: any [`Source`] into a repository.
//!
//! [`run_backup`] is the only place outside the engine that runs the commit
//! protocol (begin → feed → abort or commit):
//!
//! 1. the source's [`Source::prepare`] runs on the blocking pool; if it
//!    fails, no session is started and nothing is written;
//! 2. the session begins, and the source feeds a [`BackupWriter`] on the
//!    blocking pool while the caller's progress callback is called every
//!    [`PROGRESS_EVERY`];
//! 3. any failure of the source — an error, a command that exits non-zero
//!    or is killed, a panic of the worker — aborts the session: no snapshot
//!    is written, and packs already uploaded are adopted by the next backup;
//! 4. otherwise the session commits, recording the storage retries counted
//!    while it ran.
//!
//! The session is committed or aborted by value and the worker holds only a
//! writer clone, so nothing has to wait for an `Arc` to become unique.

use std::sync::Arc;
use std::time::Duration;

use nfrepo_engine::{BackupOptions, BackupWriter, Progress, Repository};
use nfrepo_format::{Snapshot, SnapshotId};

use crate::source::{Source, SourceOutcome};
use crate::{Error, Result};

/// How often the progress callback is called while a source runs.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Reads a running total of storage retries (e.g. a retrying store's counter).
pub type RetryCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How to record one backup.
#[derive(Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// The source name snapshots are grouped by (parent lookup, retention).
    pub name: String,
    /// `key=value` tags.
    pub tags: Vec<(String, String)>,
    /// Chunking profile; `None` for the source's default.
    pub profile: Option<String>,
    /// Skip files unchanged since the parent snapshot.
    pub use_parent: bool,
    /// Where to read storage retries from; the snapshot records how many
    /// happened during this backup.
    pub retries: Option<RetryCounter>,
    /// Record the SHA-256 of every dump, stream and bucket object
    /// ([`nfrepo_engine::BackupOptions::sha256`]).
    pub sha256: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("profile", &self.profile)
            .field("use_parent", &self.use_parent)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// A backup filed under source `name`, with defaults otherwise.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tags: Vec::new(),
            profile: None,
            use_parent: true,
            retries: None,
            sha256: false,
        }
    }

    /// Records the SHA-256 of every dump, stream and bucket object.
    #[must_use]
    pub fn sha256(mut self, sha256: bool) -> Self {
        self.sha256 = sha256;
        self
    }

    /// Sets the tags.
    #[must_use]
    pub fn tags(mut self, tags: Vec<(String, String)>) -> Self {
        self.tags = tags;
        self
    }

    /// Sets the chunking profile.
    #[must_use]
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Whether to use the parent snapshot to skip unchanged files.
    #[must_use]
    pub const fn use_parent(mut self, use_parent: bool) -> Self {
        self.use_parent = use_parent;
        self
    }

    /// Sets where storage retries are counted.
    #[must_use]
    pub fn retries(mut self, counter: RetryCounter) -> Self {
        self.retries = Some(counter);
        self
    }
}

/// A committed backup.
#[derive(Clone, Debug)]
pub struct BackupReport {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Problems that did not stop the backup; each skipped entry is also in
    /// `snapshot.skipped`.
    pub warnings: Vec<String>,
}

impl BackupReport {
    /// Whether some entries could not be read and were left out.
    #[must_use]
    pub fn partial(&self) -> bool {
        !self.snapshot.skipped.is_empty()
    }
}

/// Runs `source` into `repo` and commits one snapshot (see the module docs).
/// `progress` is called on the caller's task while the source runs, and
/// once more when it has finished.
///
/// # Errors
/// The source's errors ([`Error::SourceNotFound`], [`Error::CommandFailed`]…),
/// [`Error::WorkerPanicked`], and engine errors from beginning or committing.
/// Whatever the error, no snapshot was written.
pub async fn run_backup(
    repo: &Repository,
    source: Box<dyn Source>,
    options: &RunOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<BackupReport> {
    let (source, paths) = blocking(move || {
        let mut source = source;
        let paths = source.prepare()?;
        Ok((source, paths))
    })
    .await?;
    let profile = options
        .profile
        .clone()
        .unwrap_or_else(|| source.default_profile().to_owned());
    let mut backup = BackupOptions::new(options.name.clone(), source.kind(), profile)
        .paths(paths)
        .tags(options.tags.clone())
        .sha256(options.sha256);
    backup.use_parent = options.use_parent;
    let retries = || options.retries.as_ref().map_or(0, |count| count());
    let retries_before = retries();
    let session = repo.begin_backup(backup).await?;
    let writer = session.writer();
    let fed = feed(source, writer.clone(), progress).await;
    progress(writer.progress());
    drop(writer);
    match fed {
        Ok(outcome) => {
            let mut details = outcome.details;
            details.retries = retries().saturating_sub(retries_before);
            let (id, snapshot) = session.commit(outcome.root, details).await?;
            Ok(BackupReport {
                id,
                snapshot,
                warnings: outcome.warnings,
            })
        }
        Err(e) => {
            tracing::warn!(source = %options.name, error = %e, "backup failed; nothing committed");
            session.abort().await;
            Err(e)
        }
    }
}

/// Runs the source's feeding step on the blocking pool, calling `progress`
/// meanwhile.
async fn feed(
    mut source: Box<dyn Source>,
    writer: BackupWriter,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<SourceOutcome> {
    let shown = writer.clone();
    let mut worker = tokio::task::spawn_blocking(move || source.back_up(&writer));
    loop {
        match tokio::time::timeout(PROGRESS_EVERY, &mut worker).await {
            Ok(joined) => return joined.map_err(worker_failed)?,
            Err(_elapsed) => progress(shown.progress()),
        }
    }
}

/// Runs `work` on the blocking pool; a panic becomes [`Error::WorkerPanicked`].
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(worker_failed)?
}

/// A task that panicked (or was cancelled), as [`Error::WorkerPanicked`].
pub(crate) fn worker_failed(e: tokio::task::JoinError) -> Error {
    let what = match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned()),
        Err(e) => e.to_string(),
    };
    Error::WorkerPanicked(what)
}
