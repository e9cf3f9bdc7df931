//! Live backup session markers and their heartbeat.
//!
//! GC must never delete a pack that a running backup may still reference,
//! and it cannot see a backup's in-memory index. So a backup announces
//! itself with `sessions/<random id>` (a sealed [`SessionMarker`]) for as
//! long as it runs, and rewrites it every [`HEARTBEAT_INTERVAL`]: the store's
//! modification time of the marker is its last beat. A marker whose last
//! beat is older than [`SESSION_EXPIRY`] was left by a crashed backup, and GC
//! ignores it, so a crash never blocks collection forever.
//!
//! A backup whose own beats lapse (a hung process, a partitioned network)
//! may already be considered dead by GC, which may then have deleted packs
//! it deduplicated against. It therefore refuses to commit when its last
//! successful beat is older than half the expiry ([`LiveSession::ensure_alive`]);
//! the margin covers clock skew between the backup host and the store.
//!
//! **Failure.** A backup that fails or is aborted deletes its marker
//! ([`LiveSession::finish`]); one dropped without either (a panic, an early
//! return) spawns the deletion on the runtime, best effort: the runtime may
//! already be shutting down. For what is left behind, the marker records the
//! process exactly ([`nfrepo_format::ProcessStart`]), and GC on the *same*
//! host (same host name, boot and pid namespace) treats a marker whose
//! process is gone as dead at once ([`live_sessions`]) instead of waiting for
//! the expiry. A marker from another host is judged by its beat alone.
//!
//! **Before the commit point** the backup checks, with
//! [`LiveSession::verify_before_commit`], that its marker is still there
//! (so no GC has declared it dead) and that every pack it deduplicated
//! against is still stored (one listing, [`Error::DedupPackMissing`]
//! otherwise) and in no plan it promised to avoid.
//!
//! **Storage that refuses deletes.** A put-only host may run with S3
//! credentials that can put but not delete (format-spec/put-only.md). Its
//! marker then stays when its session ends, and expires by time like a
//! crashed backup's: GC treats it as live for [`SESSION_EXPIRY`] after its
//! last beat (its plans and parent tree are honoured as for any backup),
//! then removes it with its own credentials. A refused delete is not an
//! error of the backup ([`remove_marker`]).
//!
//! The protocol between markers and GC plans is in `format-spec/gc.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nfrepo_format::{BlobId, PackId, PackKind, SessionMarker};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode};

use crate::objects::{self, Fetched, RepoObject};
use crate::{Error, Repository, Result};

/// How long after its last beat a session marker counts as abandoned.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(3600);
/// How often a running backup rewrites its marker.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(300);

struct State {
    marker: SessionMarker,
    last_beat: Instant,
}

/// A running backup's marker; beats until [`LiveSession::finish`] or drop.
pub(crate) struct LiveSession {
    repo: Repository,
    key: ObjectKey,
    state: Arc<Mutex<State>>,
    beat: tokio::task::JoinHandle<()>,
    /// Set once the marker is deleted (or its deletion handed to the runtime).
    finished: AtomicBool,
}

impl LiveSession {
    /// Writes the first marker, which does not yet list plans (so GC treats
    /// the session as having seen none), and starts the heartbeat.
    pub(crate) async fn start(repo: &Repository, source: &str, started_ns: i64) -> Result<Self> {
        let id = nfrepo_format::KeyId::random().map_err(Error::Format)?;
        let key = objects::key::<SessionMarker>(&id)?;
        let marker = SessionMarker {
            started_ns,
            hostname: crate::host::hostname(),
            pid: std::process::id(),
            source: source.to_owned(),
            plans_listed: false,
            plans_seen: Vec::new(),
            parent_root: None,
            process: crate::host::this_process(),
        };
        write(repo, &key, &marker).await?;
        let state = Arc::new(Mutex::new(State {
            marker,
            last_beat: Instant::now(),
        }));
        let beat = tokio::spawn(heartbeat(repo.clone(), key.clone(), state.clone()));
        Ok(Self {
            repo: repo.clone(),
            key,
            state,
            beat,
            finished: AtomicBool::new(false),
        })
    }

    /// The marker's name (a random id), which also names the session in
    /// the host's record (`crate::backup::listing`).
    pub(crate) fn name(&self) -> &str {
        self.key.name()
    }

    /// Records the plans the backup read before loading the index, and the
    /// parent tree it reuses. From now on GC may delete packs of those plans.
    pub(crate) async fn confirm(&self, mut plans_seen: Vec<[u8; 32]>, parent_root: Option<BlobId>) -> Result<()> {
        plans_seen.sort_unstable();
        plans_seen.dedup();
        let marker = {
            let mut state = self.lock()?;
            state.marker.plans_listed = true;
            state.marker.plans_seen = plans_seen;
            state.marker.parent_root = parent_root;
            state.marker.clone()
        };
        write(&self.repo, &self.key, &marker).await?;
        self.lock()?.last_beat = Instant::now();
        Ok(())
    }

    /// Fails if the heartbeat lapsed for so long that GC may have declared this session dead.
    pub(crate) fn ensure_alive(&self) -> Result<()> {
        let since = self.lock()?.last_beat.elapsed();
        if since > SESSION_EXPIRY / 2 {
            return Err(Error::Pipeline(format!(
                "the session marker {} was last renewed {}s ago; GC may have treated this backup as dead, \
                 so it is not committed (run it again)",
                self.key,
                since.as_secs()
            )));
        }
        Ok(())
    }

    /// Checks, just before the commit point, what GC must not have undone:
    /// the marker is still stored (no GC declared this session dead), and
    /// every pack in `deduplicated` (the packs this session found blobs in
    /// instead of storing them) is still stored and in no plan this session
    /// saw, whose packs GC may delete while it runs. A pack in a plan written
    /// after this session started is safe: GC keeps it while this marker
    /// lives, and sees the snapshot, which references it, once it is gone.
    ///
    /// # Errors
    /// [`Error::Pipeline`] (a failed backup) naming what went wrong; storage errors.
    pub(crate) async fn verify_before_commit(&self, deduplicated: &HashMap<PackId, PackKind>) -> Result<()> {
        self.ensure_alive()?;
        let store = self.repo.store();
        match store.get(&self.key).await {
            Ok(_) => {}
            Err(e) if e.kind() == nfrepo_store::ErrorKind::NotFound => {
                return Err(Error::Pipeline(format!(
                    "the session marker {} was removed, so GC may have treated this backup as dead; \
                     it is not committed (run it again)",
                    self.key
                )));
            }
            Err(e) => return Err(Error::store(e)),
        }
        let missing = missing_packs(&self.repo, deduplicated).await?;
        if !missing.is_empty() {
            return Err(Error::DedupPackMissing { packs: missing });
        }
        let seen = self.lock()?.marker.clone();
        for stored in crate::gc::read_plans(&self.repo).await? {
            if !seen.has_seen(&stored.id) {
                continue;
            }
            if let Some(pack) = stored
                .plan
                .packs
                .iter()
                .map(|p| p.id)
                .find(|p| deduplicated.contains_key(p))
            {
                return Err(Error::Pipeline(format!(
                    "pack {pack}, which this backup deduplicated against, is planned for deletion by GC; \
                     it is not committed (run it again)"
                )));
            }
        }
        Ok(())
    }

    /// Stops the heartbeat and deletes the marker.
    pub(crate) async fn finish(&self) {
        self.beat.abort();
        self.finished.store(true, Ordering::SeqCst);
        remove_marker(self.repo.store().as_ref(), &self.key).await;
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Pipeline("session marker state poisoned".into()))
    }
}

impl Drop for LiveSession {
    /// Dropped without [`Self::finish`]: deletes the marker on the runtime,
    /// best effort (see the module docs for what covers a runtime that is
    /// shutting down).
    fn drop(&mut self) {
        self.beat.abort();
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        let store = self.repo.store().clone();
        let key = self.key.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { remove_marker(store.as_ref(), &key).await });
            }
            Err(_) => tracing::warn!(
                marker = %key,
                "a backup ended outside the runtime; its session marker stays until GC sees the process gone"
            ),
        }
    }
}

/// Deletes a finished session's marker, best effort. Storage that refuses
/// deletes (a put-only host's S3 credentials, an append-only server) leaves
/// it to expire ([`SESSION_EXPIRY`] after its last beat), which GC then
/// removes: said at info level, since it is how such a host runs.
pub(crate) async fn remove_marker(store: &dyn nfrepo_store::Store, key: &ObjectKey) {
    match store.delete(key).await {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::AppendOnly) => tracing::info!(
            marker = %key,
            "the storage refuses deletes: the session marker stays until it expires, then gc removes it"
        ),
        Err(e) => tracing::warn!(marker = %key, error = %e, "could not remove the session marker"),
    }
}

/// Deduplicated packs up to which [`missing_packs`] asks for each one
/// (a `stat`; a `HEAD` on S3) rather than listing their families: a small
/// backup then costs a few requests, not a listing of every pack.
const STAT_AT_MOST: usize = 64;

/// The packs of `wanted` that the store does not have, sorted: a `stat` of
/// each when they are few ([`STAT_AT_MOST`]), otherwise one listing of each
/// pack family `wanted` has, however many packs it names.
async fn missing_packs(repo: &Repository, wanted: &HashMap<PackId, PackKind>) -> Result<Vec<PackId>> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    if wanted.len() <= STAT_AT_MOST {
        let mut missing: Vec<PackId> = stream::iter(wanted.iter())
            .map(|(id, kind)| async move {
                let key = crate::read::pack_object_key(*kind, id)?;
                match repo.store().stat(&key).await {
                    Ok(_) => Ok(None),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(*id)),
                    Err(e) => Err(Error::store(e)),
                }
            })
            .buffer_unordered(8)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;
        missing.sort_unstable();
        return Ok(missing);
    }
    let mut present = std::collections::HashSet::new();
    for (kind, pack_kind) in [(ObjectKind::Data, PackKind::Data), (ObjectKind::Tree, PackKind::Tree)] {
        if !wanted.values().any(|k| *k == pack_kind) {
            continue;
        }
        for info in repo.store().list(kind).await.map_err(Error::store)? {
            if let Ok(id) = info.key.name().parse::<PackId>() {
                present.insert(id);
            }
        }
    }
    let mut missing: Vec<PackId> = wanted.keys().filter(|id| !present.contains(id)).copied().collect();
    missing.sort_unstable();
    Ok(missing)
}

async fn heartbeat(repo: Repository, key: ObjectKey, state: Arc<Mutex<State>>) {
    loop {
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        let Some(marker) = state.lock().ok().map(|s| s.marker.clone()) else {
            return;
        };
        match write(&repo, &key, &marker).await {
            Ok(()) => {
                if let Ok(mut s) = state.lock() {
                    s.last_beat = Instant::now();
                }
            }
            Err(e) => tracing::warn!(marker = %key, error = %e, "session heartbeat failed"),
        }
    }
}

async fn write(repo: &Repository, key: &ObjectKey, marker: &SessionMarker) -> Result<()> {
    let bytes = marker.encode(repo.sealer(), &repo.id()).map_err(Error::Format)?;
    repo.store()
        .put(key, Bytes::from(bytes), PutMode::Overwrite)
        .await
        .map_err(Error::store)
}

/// A session marker as GC sees it.
#[derive(Clone, Debug)]
pub(crate) struct SeenSession {
    pub(crate) key: ObjectKey,
    /// `None` when the marker does not open (GC then treats it as blocking everything until it expires).
    pub(crate) marker: Option<SessionMarker>,
}

/// The markers of sessions that are alive at `now`: last beat within
/// [`SESSION_EXPIRY`], and not left by a process of this host that is gone.
/// Returns `(live, dead)`; GC deletes the dead ones.
pub(crate) async fn live_sessions(
    repo: &Repository,
    now: std::time::SystemTime,
) -> Result<(Vec<SeenSession>, Vec<ObjectKey>)> {
    let mut live = Vec::new();
    let mut dead = Vec::new();
    let here = crate::host::hostname();
    for info in repo.store().list(ObjectKind::Session).await.map_err(Error::store)? {
        let beat_age = info
            .last_modified
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        if beat_age > SESSION_EXPIRY {
            dead.push(info.key);
            continue;
        }
        // A name that is not a session id is still someone's marker: it blocks like a damaged one.
        let id = SessionMarker::parse_name(info.key.name()).unwrap_or(nfrepo_format::KeyId([0; 32]));
        let marker = match objects::fetch::<SessionMarker>(repo, &id, &info.key).await? {
            Fetched::Good(marker) => Some(marker),
            Fetched::Damaged(e) => {
                tracing::warn!(marker = %info.key, error = %e, "a session marker does not open; treating it as blocking");
                None
            }
            // Finished between the listing and the read.
            Fetched::Vanished => continue,
        };
        if let Some(m) = &marker
            && process_is_gone(m, &here)
        {
            tracing::info!(marker = %info.key, host = %m.hostname, pid = m.pid, "the backup of this session marker has exited");
            dead.push(info.key);
            continue;
        }
        live.push(SeenSession { key: info.key, marker });
    }
    Ok((live, dead))
}

/// Whether `marker` was written by a process of this host (`here`) that is
/// certainly no longer running. Markers of other hosts, or of earlier
/// builds without a process stamp, are never judged this way.
pub(crate) fn process_is_gone(marker: &SessionMarker, here: &str) -> bool {
    marker
        .process
        .as_ref()
        .is_some_and(|process| crate::host::process_exited(&marker.hostname, marker.pid, process, here))
}
