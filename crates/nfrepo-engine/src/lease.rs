//! The maintenance lease: at most one bulk maintenance command at a time
//! (`gc`, `repair index`, `repair snapshots`, `key rotate`), without a
//! stale-lock trap.
//!
//! The lease is a chain of sealed objects `lease/gc-<generation>`
//! ([`nfrepo_format::Lease`]; the purpose keeps its old name `gc`, so that
//! earlier builds, whose gc looks only there, still see it). Whoever created
//! the highest generation holds the lease until the store's modification
//! time of that object is more than its term in the past. To take the lease,
//! a command creates the next generation with a conditional put
//! (`CreateNew`): when the chain is empty, when its head has expired, when
//! its head was written by a process of this host that is certainly gone
//! (same boot and pid namespace, pid absent or started at another time), or
//! when the operator breaks it (`--break-lease`). Of two contenders for the
//! same generation exactly one succeeds.
//!
//! The term is short (minutes): while the command works, a background task
//! rewrites the lease every quarter term, so a holder that dies anywhere is
//! replaced within a term. A holder that stalls must never go on deleting
//! beside its successor: before every destructive step it calls
//! [`MaintenanceLease::ensure_held`], which fails if a higher generation
//! exists, if the head is not its own, or if its last renewal is older than
//! half the term (the margin covers clock skew between hosts and the
//! store). Once that has failed the lease is lost for good: the background
//! task stops renewing, so a holder that wakes up after a stall cannot
//! revive a lease another command may already have judged expired.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use nfrepo_format::Lease;
use nfrepo_store::{ErrorKind, ObjectInfo, ObjectKey, ObjectKind, PutMode};

use crate::objects::{self, Fetched, LeaseName, RepoObject};
use crate::{Error, Repository, Result};

/// The purpose name of the maintenance lease (its objects are `lease/gc-*`).
pub(crate) const MAINTENANCE_LEASE: &str = "gc";

/// How long a maintenance lease lasts after each renewal, unless a command's
/// options say otherwise. It is renewed every quarter of it.
pub const DEFAULT_LEASE_TERM: Duration = Duration::from_secs(120);

/// The name the other maintenance commands used for the lease before it
/// covered them all.
pub(crate) type GcLease = MaintenanceLease;

/// Why a command replaced the lease of another holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Takeover {
    /// Its term had run out since its last renewal.
    Expired,
    /// Its holder ran on this host and has exited.
    HolderExited,
    /// The operator broke it (`--break-lease`) while it was still valid.
    Broken,
}

/// A lease this command replaced, and whose it was.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplacedLease {
    /// Its object (`lease/gc-<generation>`).
    pub object: String,
    /// Its holder's host, or empty if the lease did not open.
    pub hostname: String,
    /// Its holder's process id (0 if the lease did not open).
    pub pid: u32,
    /// The command that held it (empty if unknown: an earlier build, or a lease that did not open).
    pub operation: String,
    /// Seconds since its last renewal, by the store's clock.
    pub renewed_secs_ago: u64,
    /// Why it was replaced.
    pub how: Takeover,
}

impl std::fmt::Display for ReplacedLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.how {
            Takeover::Expired => "expired",
            Takeover::HolderExited => "its process has exited",
            Takeover::Broken => "broken by --break-lease",
        };
        write!(
            f,
            "{} held by {} ({how}, renewed {}s ago)",
            self.object,
            holder_text(self),
            self.renewed_secs_ago
        )
    }
}

fn holder_text(lease: &ReplacedLease) -> String {
    if lease.hostname.is_empty() {
        return "an unknown holder".to_owned();
    }
    let operation = if lease.operation.is_empty() {
        "a maintenance command".to_owned()
    } else {
        format!("`{}`", lease.operation)
    };
    format!("{operation} on {} pid {}", lease.hostname, lease.pid)
}

/// What to take the lease for.
#[derive(Clone, Debug)]
pub(crate) struct LeaseRequest {
    /// The command (`gc`, `repair index`…), recorded in the lease.
    pub(crate) operation: &'static str,
    /// The term.
    pub(crate) ttl: Duration,
    /// Replace a valid lease of another holder (the operator knows it is dead).
    pub(crate) break_lease: bool,
}

impl LeaseRequest {
    pub(crate) fn new(operation: &'static str, ttl: Duration) -> Self {
        Self {
            operation,
            ttl,
            break_lease: false,
        }
    }
}

/// A held lease, renewed in the background until it is released or dropped.
/// Release it with [`MaintenanceLease::release`]; dropping it stops the
/// renewals and leaves it to expire.
#[derive(Debug)]
pub(crate) struct MaintenanceLease {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    replaced: Option<ReplacedLease>,
}

#[derive(Debug)]
struct Shared {
    repo: Repository,
    key: ObjectKey,
    lease: Lease,
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the last successful renewal was sent (before the put: conservative).
    renewed: Instant,
    /// Why the lease is lost, once it is (for good).
    lost: Option<String>,
}

/// The chain of leases for `purpose`, lowest generation first.
async fn chain(repo: &Repository, purpose: &str) -> Result<Vec<(LeaseName, ObjectInfo)>> {
    let mut chain: Vec<(LeaseName, ObjectInfo)> = repo
        .store()
        .list(ObjectKind::Lease)
        .await
        .map_err(Error::store)?
        .into_iter()
        .filter_map(|info| {
            let name = Lease::parse_name(info.key.name()).filter(|n| n.purpose == purpose)?;
            Some((name, info))
        })
        .collect();
    chain.sort_by_key(|(name, _)| name.generation);
    Ok(chain)
}

impl MaintenanceLease {
    /// Takes the lease for `gc` for `ttl` (see [`Self::acquire_for`]).
    ///
    /// # Errors
    /// As [`Self::acquire_for`].
    #[allow(
        dead_code,
        reason = "the call of the other maintenance commands before the lease covered them all"
    )]
    pub(crate) async fn acquire(repo: &Repository, ttl: Duration, now: SystemTime) -> Result<Self> {
        Self::acquire_for(repo, &LeaseRequest::new("gc", ttl), now).await
    }

    /// Takes the lease, if it is free, expired, left by an exited process
    /// of this host, or broken on request.
    ///
    /// # Errors
    /// [`Error::StaleKeySlot`] under a retired key epoch (maintenance writes
    /// plans and index deltas); [`Error::LeaseHeld`] naming the holder and
    /// when its lease expires; storage errors.
    pub(crate) async fn acquire_for(repo: &Repository, request: &LeaseRequest, now: SystemTime) -> Result<Self> {
        repo.require_current_ring()?;
        Self::acquire_any_epoch_for(repo, request, now).await
    }

    /// [`Self::acquire`] for `key rotate`, which judges a stale slot
    /// itself (against the other slots, not against a key history that a
    /// rotation killed before rewriting any slot left behind) and writes
    /// nothing but the lease under the older epoch.
    pub(crate) async fn acquire_any_epoch(repo: &Repository, ttl: Duration, now: SystemTime) -> Result<Self> {
        Self::acquire_any_epoch_for(repo, &LeaseRequest::new("key rotate", ttl), now).await
    }

    async fn acquire_any_epoch_for(repo: &Repository, request: &LeaseRequest, now: SystemTime) -> Result<Self> {
        let chain = chain(repo, MAINTENANCE_LEASE).await?;
        let mut replaced = None;
        let next = match chain.last() {
            None => 1,
            Some((name, info)) => {
                let found = judge(repo, name, info, request, now).await?;
                tracing::warn!(lease = %info.key, how = ?found.how, "replacing the maintenance lease of another holder");
                replaced = Some(found);
                name.generation + 1
            }
        };
        let here = crate::host::hostname();
        let lease = Lease {
            generation: next,
            holder: nfrepo_format::KeyId::random().map_err(Error::Format)?.0,
            hostname: here,
            pid: std::process::id(),
            acquired_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            ttl_secs: request.ttl.as_secs().max(1),
            process: crate::host::this_process(),
            operation: request.operation.to_owned(),
        };
        let key = objects::key::<Lease>(&LeaseName {
            purpose: MAINTENANCE_LEASE.to_owned(),
            generation: next,
        })?;
        let bytes = lease.encode(repo.sealer(), &repo.id()).map_err(Error::Format)?;
        let sent = Instant::now();
        match repo.store().put(&key, Bytes::from(bytes), PutMode::CreateNew).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::LeaseHeld(format!(
                    "another maintenance command took {key} first; {ADVICE}"
                )));
            }
            Err(e) => return Err(Error::store(e)),
        }
        // Older generations are dead: their holders see ours and stop.
        for (_, info) in chain {
            if let Err(e) = repo.store().delete(&info.key).await {
                tracing::warn!(lease = %info.key, error = %e, "could not remove an old maintenance lease");
            }
        }
        let shared = Arc::new(Shared {
            repo: repo.clone(),
            key,
            lease,
            ttl: request.ttl,
            state: Mutex::new(State {
                renewed: sent,
                lost: None,
            }),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let renewer = tokio::spawn(renew_in_background(shared.clone(), stopped));
        Ok(Self {
            shared,
            stop: Some(stop),
            renewer: Some(renewer),
            replaced,
        })
    }

    /// The lease this command replaced to take its own, if any.
    pub(crate) fn replaced(&self) -> Option<&ReplacedLease> {
        self.replaced.as_ref()
    }

    /// Renews the lease now (the background task does so every quarter term).
    ///
    /// # Errors
    /// As [`Self::ensure_held`], or storage errors.
    pub(crate) async fn renew(&mut self) -> Result<()> {
        self.shared.renew().await
    }

    /// Fails if the lease may have passed to another command.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if a later generation exists, the head is not
    /// ours, or our last renewal is too old; storage errors.
    pub(crate) async fn ensure_held(&self) -> Result<()> {
        self.shared.check().await
    }

    /// Stops the renewals and gives the lease up. A lease that is no longer
    /// ours is left alone: after a takeover and a release, the next holder
    /// may have started the chain again under the same name.
    pub(crate) async fn release(mut self) {
        self.stop_renewing().await;
        if let Err(e) = self.shared.check().await {
            tracing::info!(lease = %self.shared.key, error = %e, "not releasing a lease this command no longer holds");
            return;
        }
        if let Err(e) = self.shared.repo.store().delete(&self.shared.key).await {
            tracing::warn!(lease = %self.shared.key, error = %e, "could not release the maintenance lease; it will expire");
        }
    }

    /// Stops the background task after its renewal in flight, if any, so
    /// that no rewrite lands after the release.
    async fn stop_renewing(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send_replace(true);
        }
        if let Some(renewer) = self.renewer.take()
            && let Err(e) = renewer.await
        {
            tracing::warn!(error = %e, "the lease renewal task failed");
        }
    }
}

impl Drop for MaintenanceLease {
    fn drop(&mut self) {
        // The task sees the closed channel and ends; the lease expires.
        if let Some(stop) = self.stop.take() {
            stop.send_replace(true);
        }
    }
}

/// What an operator can do about a held lease.
const ADVICE: &str = "wait for it to finish and try again, or, if that process is known to be dead, \
                      run again with --break-lease";

/// Decides whether the head of the chain may be replaced, and how; fails
/// with [`Error::LeaseHeld`] if not.
async fn judge(
    repo: &Repository,
    name: &LeaseName,
    info: &ObjectInfo,
    request: &LeaseRequest,
    now: SystemTime,
) -> Result<ReplacedLease> {
    let age = info
        .last_modified
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or(Duration::ZERO);
    let holder = match objects::fetch::<Lease>(repo, name, &info.key).await? {
        Fetched::Good(l) => Some(l),
        Fetched::Damaged(e) => {
            tracing::warn!(lease = %info.key, error = %e, "the maintenance lease does not open");
            None
        }
        Fetched::Vanished => None,
    };
    // An unreadable (or just released) head counts with our own term.
    let their_ttl = holder.as_ref().map_or(request.ttl, |l| Duration::from_secs(l.ttl_secs));
    let mut replaced = ReplacedLease {
        object: info.key.to_string(),
        hostname: holder.as_ref().map(|l| l.hostname.clone()).unwrap_or_default(),
        pid: holder.as_ref().map_or(0, |l| l.pid),
        operation: holder.as_ref().map(|l| l.operation.clone()).unwrap_or_default(),
        renewed_secs_ago: age.as_secs(),
        how: Takeover::Expired,
    };
    if age > their_ttl {
        return Ok(replaced);
    }
    let here = crate::host::hostname();
    if let Some(l) = &holder
        && let Some(process) = &l.process
        && crate::host::process_exited(&l.hostname, l.pid, process, &here)
    {
        replaced.how = Takeover::HolderExited;
        return Ok(replaced);
    }
    if request.break_lease {
        replaced.how = Takeover::Broken;
        return Ok(replaced);
    }
    Err(Error::LeaseHeld(format!(
        "{} is held by {} (renewed {}s ago, expires in {}s unless renewed); {ADVICE}",
        info.key,
        holder_text(&replaced),
        age.as_secs(),
        their_ttl.saturating_sub(age).as_secs()
    )))
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the lease lost for good and returns the error to report.
    fn lose(&self, why: String) -> Error {
        let mut state = self.state();
        let why = state.lost.get_or_insert(why).clone();
        Error::LeaseLost(why)
    }

    async fn check(&self) -> Result<()> {
        let elapsed = {
            let state = self.state();
            if let Some(why) = &state.lost {
                return Err(Error::LeaseLost(why.clone()));
            }
            state.renewed.elapsed()
        };
        if elapsed > self.ttl / 2 {
            return Err(self.lose(format!(
                "this command last renewed {} {}s ago, too long to be sure it still holds it",
                self.key,
                elapsed.as_secs()
            )));
        }
        let chain = chain(&self.repo, MAINTENANCE_LEASE).await?;
        let Some((name, info)) = chain.last() else {
            return Err(self.lose(format!("{} was removed", self.key)));
        };
        if name.generation != self.lease.generation {
            return Err(self.lose(format!("{} replaced this command's lease {}", info.key, self.key)));
        }
        // Generations restart after a release, so compare the holder too.
        let head = match objects::fetch::<Lease>(&self.repo, name, &info.key).await? {
            Fetched::Good(head) => head,
            Fetched::Damaged(e) => return Err(e),
            Fetched::Vanished => return Err(self.lose(format!("{} was removed", self.key))),
        };
        if head.holder != self.lease.holder {
            return Err(self.lose(format!("{} belongs to another command", info.key)));
        }
        Ok(())
    }

    async fn renew(&self) -> Result<()> {
        self.check().await?;
        let bytes = self
            .lease
            .encode(self.repo.sealer(), &self.repo.id())
            .map_err(Error::Format)?;
        let sent = Instant::now();
        self.repo
            .store()
            .put(&self.key, Bytes::from(bytes), PutMode::Overwrite)
            .await
            .map_err(Error::store)?;
        let mut state = self.state();
        if state.lost.is_none() {
            state.renewed = sent;
        }
        Ok(())
    }
}

/// Renews every quarter term (sooner again after a failed renewal) until
/// told to stop or the lease is lost.
async fn renew_in_background(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = (shared.ttl / 4).max(Duration::from_millis(50));
    let retry = (shared.ttl / 16).max(Duration::from_millis(50));
    let mut wait = period;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        match shared.renew().await {
            Ok(()) => wait = period,
            Err(e @ Error::LeaseLost(_)) => {
                tracing::warn!(lease = %shared.key, error = %e, "the maintenance lease is lost; renewals stop");
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %shared.key, error = %e, "renewing the maintenance lease failed; retrying");
                wait = retry;
            }
        }
    }
}
