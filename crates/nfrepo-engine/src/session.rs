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
//! The protocol between markers and GC plans is in `format-spec/gc.md`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nfrepo_format::{BlobId, SessionMarker};
use nfrepo_store::{ObjectKey, ObjectKind, PutMode};

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
        })
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

    /// Stops the heartbeat and deletes the marker.
    pub(crate) async fn finish(&self) {
        self.beat.abort();
        if let Err(e) = self.repo.store().delete(&self.key).await {
            tracing::warn!(marker = %self.key, error = %e, "could not remove the session marker");
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Pipeline("session marker state poisoned".into()))
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.beat.abort();
    }
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

/// The markers of sessions that are alive at `now` (last beat within [`SESSION_EXPIRY`]).
/// Returns `(live, expired)`.
pub(crate) async fn live_sessions(
    repo: &Repository,
    now: std::time::SystemTime,
) -> Result<(Vec<SeenSession>, Vec<ObjectKey>)> {
    let mut live = Vec::new();
    let mut expired = Vec::new();
    for info in repo.store().list(ObjectKind::Session).await.map_err(Error::store)? {
        let beat_age = info
            .last_modified
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        if beat_age > SESSION_EXPIRY {
            expired.push(info.key);
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
        live.push(SeenSession { key: info.key, marker });
    }
    Ok((live, expired))
}
