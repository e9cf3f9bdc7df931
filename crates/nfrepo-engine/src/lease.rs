//! The GC lease: at most one GC at a time, without a stale-lock trap.
//!
//! The lease is a chain of sealed objects `lease/gc-<generation>`
//! ([`nfrepo_format::Lease`]). Whoever created the highest generation holds
//! the lease until the store's modification time of that object is more
//! than the TTL in the past; the holder renews by rewriting it. To take the
//! lease, a GC creates the next generation with a conditional put
//! (`CreateNew`): when the chain is empty, or its head has expired. Of two
//! contenders for the same generation exactly one succeeds, so a lease left by
//! a crashed GC is taken over safely, with no manual unlock.
//!
//! A holder that stalls past its TTL may have been superseded. Before every
//! destructive step it calls [`GcLease::ensure_held`], which fails if a higher
//! generation exists or if its own last renewal is older than half the TTL
//! (the margin covers clock skew between hosts and the store).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use nfrepo_format::Lease;
use nfrepo_store::{ErrorKind, ObjectInfo, ObjectKey, ObjectKind, PutMode};

use crate::objects::{self, Fetched, LeaseName, RepoObject};
use crate::{Error, Repository, Result};

/// The purpose name of the GC lease.
pub(crate) const GC_LEASE: &str = "gc";

/// A held lease. Release it with [`GcLease::release`]; dropping it leaves it to expire.
#[derive(Debug)]
pub(crate) struct GcLease {
    repo: Repository,
    key: ObjectKey,
    lease: Lease,
    renewed: Instant,
    ttl: Duration,
}

/// The chain of leases for `purpose`, lowest generation first.
async fn head(repo: &Repository, purpose: &str) -> Result<Vec<(LeaseName, ObjectInfo)>> {
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

impl GcLease {
    /// Takes the lease for `ttl`, if it is free or expired at `now`.
    ///
    /// # Errors
    /// [`Error::LeaseHeld`] naming the holder and when its lease expires.
    pub(crate) async fn acquire(repo: &Repository, ttl: Duration, now: SystemTime) -> Result<Self> {
        // Maintenance writes plans and index deltas: never under a retired key epoch.
        repo.require_current_ring()?;
        Self::acquire_any_epoch(repo, ttl, now).await
    }

    /// [`GcLease::acquire`] for `key rotate`, which judges a stale slot
    /// itself (against the other slots, not against a key history that a
    /// rotation killed before rewriting any slot left behind) and writes
    /// nothing but the lease under the older epoch.
    pub(crate) async fn acquire_any_epoch(repo: &Repository, ttl: Duration, now: SystemTime) -> Result<Self> {
        let chain = head(repo, GC_LEASE).await?;
        let next = match chain.last() {
            None => 1,
            Some((name, info)) => {
                let age = info
                    .last_modified
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or(Duration::ZERO);
                let holder_ttl = match objects::fetch::<Lease>(repo, name, &info.key).await? {
                    Fetched::Good(l) => {
                        Some((Duration::from_secs(l.ttl_secs), format!("{} pid {}", l.hostname, l.pid)))
                    }
                    Fetched::Damaged(e) => {
                        tracing::warn!(lease = %info.key, error = %e, "the gc lease does not open");
                        None
                    }
                    Fetched::Vanished => None,
                };
                // An unreadable (or just released) head counts with our own TTL.
                let (their_ttl, holder) = holder_ttl.unwrap_or((ttl, "an unknown holder".into()));
                if age <= their_ttl {
                    return Err(Error::LeaseHeld(format!(
                        "{} is held by {holder} (renewed {}s ago, expires in {}s)",
                        info.key,
                        age.as_secs(),
                        their_ttl.saturating_sub(age).as_secs()
                    )));
                }
                tracing::warn!(lease = %info.key, age_s = age.as_secs(), "taking over an expired gc lease");
                name.generation + 1
            }
        };
        let lease = Lease {
            generation: next,
            holder: nfrepo_format::KeyId::random().map_err(Error::Format)?.0,
            hostname: crate::host::hostname(),
            pid: std::process::id(),
            acquired_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            ttl_secs: ttl.as_secs(),
        };
        let key = objects::key::<Lease>(&LeaseName {
            purpose: GC_LEASE.to_owned(),
            generation: next,
        })?;
        let bytes = lease.encode(repo.sealer(), &repo.id()).map_err(Error::Format)?;
        match repo.store().put(&key, Bytes::from(bytes), PutMode::CreateNew).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::LeaseHeld(format!("another gc took {key} first")));
            }
            Err(e) => return Err(Error::store(e)),
        }
        // Older generations are dead: their holders see ours and stop.
        for (_, info) in chain {
            if let Err(e) = repo.store().delete(&info.key).await {
                tracing::warn!(lease = %info.key, error = %e, "could not remove an old gc lease");
            }
        }
        Ok(Self {
            repo: repo.clone(),
            key,
            lease,
            renewed: Instant::now(),
            ttl,
        })
    }

    /// Renews the lease (rewrites it, moving its modification time to now).
    ///
    /// # Errors
    /// As [`Self::ensure_held`], or storage errors.
    pub(crate) async fn renew(&mut self) -> Result<()> {
        self.ensure_held().await?;
        let bytes = self
            .lease
            .encode(self.repo.sealer(), &self.repo.id())
            .map_err(Error::Format)?;
        self.repo
            .store()
            .put(&self.key, Bytes::from(bytes), PutMode::Overwrite)
            .await
            .map_err(Error::store)?;
        self.renewed = Instant::now();
        Ok(())
    }

    /// Fails if the lease may have passed to another GC.
    ///
    /// # Errors
    /// [`Error::LeaseHeld`] if a later generation exists or our renewal is too old.
    pub(crate) async fn ensure_held(&self) -> Result<()> {
        if self.renewed.elapsed() > self.ttl / 2 {
            return Err(Error::LeaseHeld(format!(
                "this gc last renewed {} {}s ago, too long to be sure it still holds it",
                self.key,
                self.renewed.elapsed().as_secs()
            )));
        }
        let chain = head(&self.repo, GC_LEASE).await?;
        let Some((name, info)) = chain.last() else {
            return Err(Error::LeaseHeld(format!("{} was removed", self.key)));
        };
        if name.generation != self.lease.generation {
            return Err(Error::LeaseHeld(format!("{} took over this gc's lease", info.key)));
        }
        // Generations restart after a release, so compare the holder too.
        let head = match objects::fetch::<Lease>(&self.repo, name, &info.key).await? {
            Fetched::Good(head) => head,
            Fetched::Damaged(e) => return Err(e),
            Fetched::Vanished => return Err(Error::LeaseHeld(format!("{} was removed", self.key))),
        };
        if head.holder != self.lease.holder {
            return Err(Error::LeaseHeld(format!("{} belongs to another gc", info.key)));
        }
        Ok(())
    }

    /// Gives the lease up.
    pub(crate) async fn release(self) {
        if let Err(e) = self.repo.store().delete(&self.key).await {
            tracing::warn!(lease = %self.key, error = %e, "could not release the gc lease; it will expire");
        }
    }
}
