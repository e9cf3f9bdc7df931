//! Replication: a second copy of a repository, kept byte for byte, without the key.
//!
//! [`replicate`] runs one pass from a source store to a target store. It
//! copies every object of the replicated kinds that the target lacks, and
//! nothing else: no object is ever re-encoded, so the replica is the same
//! repository (same id, same key slots, same password).
//!
//! **Without the key.** Packs, index deltas and snapshots are named by the
//! plain BLAKE3 of their bytes, so every one is streamed from the source to
//! the target ([`Store::get_stream`] into [`Store::put_stream`]) and hashed
//! as its bytes pass; the target's upload is committed only after the last
//! byte, and only if the hash matches the name: otherwise it is aborted (a
//! multipart upload is abandoned, a temp file removed), so an object whose
//! bytes do not match its name is never visible on the target, and it is
//! reported as `BACKUP_CORRUPTED`. Key slots, the config, audit entries
//! and protect/good markers are not content-addressed; they are copied as
//! they are (the config's clear header must name the same repository id as
//! the target's, if it has one). Sessions, GC plans and leases belong to the
//! source's own running operations and are not replicated.
//!
//! **Commit order, valid at every instant.** The source is listed in
//! reverse commit order (markers, snapshots, audit, index deltas, packs,
//! config, keys), so everything a listed snapshot needs was already written
//! when the packs were listed; objects are copied kind by kind in commit
//! order (key slots, config, packs, index deltas, snapshots, audit, protect
//! and good markers), each kind finished before the next starts. Without the
//! key the replicator cannot tell which index delta or snapshot needs which
//! pack, so a pass in which any pack could not be copied copies **no** new
//! index delta, snapshot or marker, and one in which an index delta could
//! not be copied no new snapshot or marker (they are reported as held back):
//! neither an index delta nor a snapshot is ever on the replica before the
//! packs it needs. A kill at any point therefore
//! leaves a valid repository, and the next pass copies only what is missing.
//!
//! **Write-once.** Every put is [`PutMode::CreateNew`](nfrepo_store::PutMode::CreateNew); an identical object
//! already there is success. The one overwrite is a repair: an object whose
//! bytes on the replica do not match its name (found by size in every pass,
//! by hash with `--verify`) is deleted and copied again from verified source bytes.
//! The state object `replica/state` (see `format-spec/replication.md`) is
//! the one object rewritten by every pass.
//!
//! **Deletions wait.** An object the source no longer lists is deleted on
//! the replica only once [`ReplicateOptions::delete_after`] has passed since
//! a pass first saw it missing (recorded in the state), snapshots and
//! markers before index deltas before packs. Anything the source lists is
//! never deleted. A mistaken or malicious gc on the source thus cannot
//! empty the replica at once. (Known limit, see `format-spec/replication.md`:
//! after the source compacts its index, a snapshot forgotten on the source
//! but still kept on the replica is no longer indexed there, though its packs
//! are; `repair index` on the replica indexes them again.)
//!
//! **Bounded.** A streamed object holds at most
//! [`STREAM_PUT_BUFFER`](nfrepo_store::STREAM_PUT_BUFFER) bytes (two 5 MiB
//! parts of an S3 upload) whatever its size; other objects are small and
//! read whole. Every transfer reserves that much of [`MEMORY_BUDGET`]
//! before it starts, so the object bytes in flight over all transfers stay
//! within it, with at most [`ReplicateOptions::jobs`] transfers at once.
//! Listings of packs and audit entries are not held: the source's and the
//! target's are merged as they stream in name order
//! ([`Store::list_stream`]), so memory does not grow with the number of
//! packs; what does is held: the listings of key slots, index deltas,
//! snapshots and markers (bounded by retention and index compaction), and
//! the objects the replica holds that the source no longer lists, which the
//! state records anyway (see `listing`). Retries with backoff are the store layer's
//! ([`nfrepo_store::RetryStore`], which the CLI wraps both stores in), and
//! for a streamed object, whose body the store cannot replay, this module's:
//! the whole transfer is tried again under the same
//! [`RetryPolicy`](nfrepo_store::RetryPolicy).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nfrepo_format::{PassResult, ReplicaState};
use nfrepo_store::{ObjectInfo, ObjectKind, Store};

use crate::{Error, Result, Work};

mod copy;
mod listing;
mod state;
mod status;
mod verify;

pub use status::{ReplicaStatus, replica_status};
pub use verify::VerifySubset;

use listing::Listings;

/// Object bytes held in memory at once by a pass, across all transfers
/// (four streamed transfers of large objects; eight of objects up to 6 MiB).
/// The process's peak RSS is about this plus 35–45 MiB (the binary, the
/// listings, the HTTP clients' buffers).
pub const MEMORY_BUDGET: u64 = 48 << 20;

/// The default grace period before an object gone from the source is deleted on the replica.
pub const DEFAULT_DELETE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default number of concurrent transfers.
pub const DEFAULT_JOBS: usize = 8;

/// Replicated kinds in commit order: each kind is complete on the replica
/// before the next one starts.
pub(crate) const COPY_ORDER: [ObjectKind; 10] = [
    ObjectKind::Key,
    ObjectKind::Config,
    ObjectKind::Data,
    ObjectKind::Tree,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Audit,
    ObjectKind::Protect,
    ObjectKind::Good,
    ObjectKind::Drill,
];

/// Kinds whose names are the BLAKE3 of their bytes, verifiable without a key.
pub(crate) fn content_addressed(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Data | ObjectKind::Tree | ObjectKind::Index | ObjectKind::Snapshot
    )
}

/// Kinds that refer to packs (index deltas) or snapshots: their new objects
/// are held back in a pass where a pack or index delta could not be copied.
fn commits(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Index | ObjectKind::Snapshot | ObjectKind::Protect | ObjectKind::Good | ObjectKind::Drill
    )
}

/// Options of one replication pass.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReplicateOptions {
    /// Concurrent transfers (at least 1).
    pub jobs: usize,
    /// How long an object must have been missing from the source before it is deleted on the replica.
    pub delete_after: Duration,
    /// Verify the replica instead of copying (see [`VerifySubset`]).
    pub verify: Option<VerifySubset>,
    /// The time of the pass; `None` reads the system clock. Tests inject a fake clock here.
    pub now: Option<SystemTime>,
    /// Progress counters for a display.
    pub work: Option<Arc<Work>>,
    /// Test hook: stop the pass abruptly (as a kill would, without writing
    /// the state) once this many objects have been written to the target.
    #[doc(hidden)]
    pub stop_after_puts: Option<u64>,
}

impl Default for ReplicateOptions {
    fn default() -> Self {
        Self {
            jobs: DEFAULT_JOBS,
            delete_after: DEFAULT_DELETE_AFTER,
            verify: None,
            now: None,
            work: None,
            stop_after_puts: None,
        }
    }
}

/// One object the pass could not copy, verify or delete, with why.
#[derive(Debug)]
pub struct ReplicaProblem {
    /// The object's path, e.g. `data/ab/ab12…`.
    pub object: String,
    /// What went wrong; its [`Error::code`] is the operator's code
    /// (`BACKUP_CORRUPTED` for bytes that do not match their name,
    /// `BACKUP_NOT_FOUND` for an object missing on the replica).
    pub error: Error,
}

/// What a pass did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReplicateReport {
    /// The source's location (credentials removed).
    pub source: String,
    /// The target's location (credentials removed).
    pub target: String,
    /// Objects copied, by kind prefix.
    pub copied: BTreeMap<&'static str, (u64, u64)>,
    /// Objects found already on the target (listed or identical on put).
    pub present: u64,
    /// Objects on the replica whose bytes did not match and were copied again.
    pub repaired: Vec<String>,
    /// Objects listed by the source but gone when fetched (deleted meanwhile).
    pub vanished: u64,
    /// Objects refused or failed, with their errors.
    pub problems: Vec<ReplicaProblem>,
    /// New index deltas, snapshots and markers not copied because a pack or index delta failed in this pass.
    pub held_back: Vec<String>,
    /// Objects deleted on the replica (gone from the source for longer than the grace period).
    pub deleted: Vec<String>,
    /// Objects gone from the source, waiting for their grace period, and the earliest time one is due.
    pub pending_deletions: u64,
    /// When the first pending deletion is due.
    pub next_deletion: Option<SystemTime>,
    /// Objects hashed by `--verify`.
    pub verified: u64,
    /// Objects on the replica the source does not list (`--verify` only), by path.
    pub extra: Vec<String>,
    /// The state written at the end of the pass.
    pub state: Option<ReplicaState>,
}

impl ReplicateReport {
    /// The code the pass fails with: the first problem's, if any.
    #[must_use]
    pub fn failure_code(&self) -> Option<crate::ErrorCode> {
        self.problems.first().map(|p| p.error.code(crate::Operation::Backup))
    }

    /// Objects and bytes copied in all.
    #[must_use]
    pub fn copied_total(&self) -> (u64, u64) {
        self.copied.values().fold((0, 0), |(n, b), &(dn, db)| (n + dn, b + db))
    }

    /// How the pass ended.
    #[must_use]
    pub fn result(&self) -> PassResult {
        self.state.as_ref().map_or(PassResult::Partial, |s| s.result)
    }
}

/// Shared by the workers of a pass.
pub(crate) struct Pass<'a> {
    pub(crate) source: &'a dyn Store,
    pub(crate) target: &'a dyn Store,
    pub(crate) options: &'a ReplicateOptions,
    pub(crate) repo: nfrepo_format::RepoId,
    pub(crate) puts: AtomicU64,
    pub(crate) budget: tokio::sync::Semaphore,
}

impl Pass<'_> {
    /// Counts a put toward the test hook; an error once the hook's limit is reached.
    pub(crate) fn count_put(&self) -> Result<()> {
        let done = self.puts.fetch_add(1, Ordering::SeqCst);
        match self.options.stop_after_puts {
            Some(limit) if done >= limit => Err(Error::Pipeline(format!(
                "replication stopped by the test hook after {limit} objects"
            ))),
            _ => Ok(()),
        }
    }

    fn work(&self) -> Option<&Work> {
        self.options.work.as_deref()
    }
}

/// Nanoseconds since the epoch (0 before it).
pub(crate) fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The time `ns` nanoseconds after the epoch.
pub(crate) fn from_nanos(ns: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// Runs one replication pass from `source` to `target` (or, with
/// [`ReplicateOptions::verify`], verifies the target against the source),
/// and writes the replica state on the target.
///
/// Per-object failures are in [`ReplicateReport::problems`], not errors: the
/// pass goes on with the rest.
///
/// # Errors
/// The source has no repository ([`Error::RepositoryNotFound`]); the target
/// holds another repository ([`Error::Invalid`]); a listing fails or a key
/// slot or the config cannot be copied (the replica could not be opened);
/// the state cannot be written.
pub async fn replicate(source: &dyn Store, target: &dyn Store, options: &ReplicateOptions) -> Result<ReplicateReport> {
    let started = options.now.unwrap_or_else(SystemTime::now);
    let repo = copy::source_repo_id(source).await?;
    let pass = Pass {
        source,
        target,
        options,
        repo,
        puts: AtomicU64::new(0),
        budget: tokio::sync::Semaphore::new(budget_permits(MEMORY_BUDGET)),
    };
    let previous = state::load(target, &repo).await?;
    let listings = Listings::take(source, target).await?;
    let mut report = ReplicateReport {
        source: source.location().to_owned(),
        target: target.location().to_owned(),
        ..ReplicateReport::default()
    };
    let mut next = state::fresh(&pass, previous.as_ref(), started);
    let behind = if let Some(subset) = options.verify {
        let behind = verify::run(&pass, &listings, subset, previous.as_ref(), &mut next, &mut report).await?;
        next.result = PassResult::Verified;
        behind
    } else {
        let damaged = previous.as_ref().map(|s| s.damaged.clone()).unwrap_or_default();
        let copied = copy::run(&pass, &listings, &damaged, &mut report).await?;
        state::delete_expired(
            &pass,
            &listings,
            &copied.extra,
            previous.as_ref(),
            started,
            &mut next,
            &mut report,
        )
        .await;
        next.copied_objects = copied.objects;
        next.copied_bytes = copied.bytes;
        next.result = if report.problems.is_empty() {
            PassResult::Complete
        } else {
            PassResult::Partial
        };
        copied.behind
    };
    state::finish(&listings, behind, &mut next);
    next.pass_finished_ns = nanos(options.now.unwrap_or_else(SystemTime::now));
    state::save(target, &next).await?;
    report.state = Some(next);
    Ok(report)
}

/// The semaphore permits for `bytes` of budget (KiB units; the semaphore's limit is far above).
pub(crate) fn budget_permits(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX).max(1)
}

/// The listing entry's object as its path, for messages.
pub(crate) fn path(info: &ObjectInfo) -> String {
    info.key.path()
}
