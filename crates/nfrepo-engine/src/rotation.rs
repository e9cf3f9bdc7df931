//! Key rotation: a new key epoch, every kept key slot rewritten to it, every
//! other slot revoked (format-spec/keys.md, "Key epochs").
//!
//! Order, and why a kill at any moment is safe:
//!
//! 1. The new epoch's key history (`keys/epoch-<n>`, the older epochs sealed
//!    under the new one) is written before any slot names the new epoch, so
//!    every slot that does can always open everything older.
//! 2. The caller's own slot is rewritten first, in place (one atomic put),
//!    so whoever started the rotation can always finish it with the same
//!    password.
//! 3. Every other kept slot is rewritten in place, with its own password,
//!    argon2id parameters and label.
//! 4. Only then are the other slots deleted.
//!
//! A rotation killed before step 4 leaves slots of the old epoch beside
//! slots of the new one. Every password still opens the repository (the
//! old-epoch ones can read but not write: [`Error::StaleKeySlot`]), and the
//! next `key rotate` with a password of the new epoch sees the stale slots
//! and finishes this rotation instead of drawing another epoch.
//!
//! Rotations run under the maintenance lease ([`crate::lease`]), with a
//! short term: two at once could each draw a different epoch of the same
//! number, and a gc or repair beside one would write under the old epoch.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nfrepo_format::{KeyId, KeyRing, KeySlot};
use nfrepo_store::{ObjectKey, ObjectKind, PutMode};
use zeroize::Zeroizing;

use crate::lease::GcLease;
use crate::repository::{history_key, overwrite_key_slot, read_slots};
use crate::{Error, Repository, Result};

/// Options for [`Repository::rotate_keys`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RotateOptions {
    /// Passwords of other key slots to keep: each slot one of them opens is
    /// rewritten to the new epoch under the same password. Every slot none
    /// of them (nor the caller's password) opens is revoked.
    pub keep_passwords: Vec<Zeroizing<Vec<u8>>>,
    /// How long the maintenance lease lasts unrenewed; `None` for the
    /// default (30 s: a killed rotation blocks the next one that long).
    pub lease_ttl: Option<Duration>,
}

impl std::fmt::Debug for RotateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateOptions")
            .field("keep_passwords", &self.keep_passwords.len())
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

impl RotateOptions {
    /// Keeps the slots these passwords open.
    #[must_use]
    pub fn keep_passwords(mut self, passwords: Vec<Zeroizing<Vec<u8>>>) -> Self {
        self.keep_passwords = passwords;
        self
    }

    /// Sets the lease TTL.
    #[must_use]
    pub const fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }
}

/// One key slot named in a [`RotateReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRef {
    /// The slot's id (its name under `keys/`).
    pub id: KeyId,
    /// Its label, or why it could not be read.
    pub label: String,
}

/// What [`Repository::rotate_keys`] did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RotateReport {
    /// The key epoch that now seals everything new.
    pub epoch: u32,
    /// The epoch that sealed before (the same as `epoch` when `resumed`).
    pub previous_epoch: u32,
    /// Whether this run finished an interrupted rotation instead of drawing a new epoch.
    pub resumed: bool,
    /// Slots rewritten to `epoch` by this run (same id, same password).
    pub rewritten: Vec<SlotRef>,
    /// Kept slots already at `epoch` (rewritten by the interrupted run).
    pub already_current: Vec<SlotRef>,
    /// Slots deleted: their passwords open nothing any more.
    pub revoked: Vec<SlotRef>,
}

const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

impl Repository {
    /// Rotates the repository's keys: draws a new key epoch that seals
    /// everything written from now on, rewrites the caller's key slot and
    /// the slots of `options.keep_passwords` to it, and deletes every other
    /// slot. Finishes an interrupted rotation instead when one is found.
    ///
    /// What was sealed before stays sealed under the older epochs, which
    /// the rewritten slots still open (through the key history); holders of
    /// a revoked password or an old key can read that, and nothing new.
    ///
    /// # Errors
    /// [`Error::WrongPassword`]; [`Error::StaleKeySlot`] when `password`'s
    /// slot is older than another slot (use a password the rotation kept);
    /// [`Error::UnknownKeepPassword`] (before anything is written);
    /// [`Error::LeaseHeld`]; storage errors.
    pub async fn rotate_keys(&self, password: &[u8], options: RotateOptions) -> Result<RotateReport> {
        self.require_keys("key rotate")?;
        let ttl = options.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        let mut lease = GcLease::acquire_any_epoch(self, ttl, SystemTime::now()).await?;
        let result = self.rotate_under_lease(password, &options, &mut lease).await;
        lease.release().await;
        result.map(|(report, _)| report)
    }

    /// [`Self::rotate_keys`], then [`Self::reseal`] under the new epoch
    /// (`key rotate --reseal`): everything sealed before is sealed again
    /// and, once nothing older is left, the older epochs are dropped.
    ///
    /// # Errors
    /// As [`Self::rotate_keys`] and [`Self::reseal`]; a failed reseal leaves
    /// the rotation done (`gc --reseal` continues it).
    pub async fn rotate_keys_and_reseal(
        &self,
        password: &[u8],
        options: RotateOptions,
        reseal: &crate::ResealOptions,
    ) -> Result<(RotateReport, crate::ResealReport)> {
        self.require_keys("key rotate")?;
        let ttl = options.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        let mut lease = GcLease::acquire_any_epoch(self, ttl, SystemTime::now()).await?;
        let result = self.rotate_under_lease(password, &options, &mut lease).await;
        lease.release().await;
        let (rotated, ring) = result?;
        let resealed = self.rekeyed(&ring).reseal(reseal).await?;
        Ok((rotated, resealed))
    }

    async fn rotate_under_lease(
        &self,
        password: &[u8],
        options: &RotateOptions,
        lease: &mut GcLease,
    ) -> Result<(RotateReport, KeyRing)> {
        let store = self.store().as_ref();
        let repo = self.id();
        let caller = Self::unlock(store, password).await?;
        let current = caller.ring.current_epoch();
        // Against slots only: a key history newer than every slot is left by
        // a rotation that died before rewriting any slot (or by slots rolled
        // back); its epoch is skipped, never reused.
        if current < caller.newest_slot_epoch {
            return Err(Error::StaleKeySlot {
                epoch: current,
                newest: caller.newest_slot_epoch,
            });
        }
        let mut slots: Vec<(KeyId, KeySlot)> = read_slots(store)
            .await?
            .into_iter()
            .filter_map(|s| s.slot.ok().map(|slot| (s.id, slot)))
            .collect();
        slots.sort_by_key(|(_, slot)| std::cmp::Reverse(slot.claimed_epoch()));
        let resumed = slots.iter().any(|(_, slot)| slot.claimed_epoch() < current);

        // Which slot each kept password opens; all found before anything is written.
        let mut keep: Vec<(KeyId, KeySlot, &[u8])> = Vec::new();
        if let Some((id, slot)) = slots.iter().find(|(id, _)| *id == caller.slot) {
            keep.push((*id, slot.clone(), password));
        }
        for (position, kept) in options.keep_passwords.iter().enumerate() {
            let kept: &[u8] = kept;
            let found = slots
                .iter()
                .filter(|(id, _)| !keep.iter().any(|(k, _, _)| k == id))
                .find(|(_, slot)| slot.unwrap_ring(kept, &repo).is_ok());
            match found {
                Some((id, slot)) => keep.push((*id, slot.clone(), kept)),
                // The same password given twice (or the caller's) keeps nothing more.
                None if kept == password || options.keep_passwords.iter().take(position).any(|p| **p == *kept) => {}
                None => {
                    return Err(Error::UnknownKeepPassword {
                        position: position + 1,
                        location: store.location().to_owned(),
                    });
                }
            }
        }

        let target = if resumed {
            caller.ring.clone()
        } else {
            let epoch = caller
                .newest_epoch
                .max(current)
                .checked_add(1)
                .ok_or_else(|| Error::Invalid("no key epoch number left".into()))?;
            let next = caller.ring.rotated_to(epoch).map_err(Error::Format)?;
            lease.renew().await?;
            self.put_history(&next).await?;
            next
        };
        let epoch = target.current_epoch();
        let slot_ring = target.current_only();
        let mut report = RotateReport {
            epoch,
            previous_epoch: if resumed { current } else { caller.ring.current_epoch() },
            resumed,
            rewritten: Vec::new(),
            already_current: Vec::new(),
            revoked: Vec::new(),
        };
        let now = chrono::Utc::now().timestamp();
        for (id, slot, kept) in &keep {
            let named = SlotRef {
                id: *id,
                label: slot.label.clone(),
            };
            if slot.claimed_epoch() == epoch {
                report.already_current.push(named);
                continue;
            }
            let rewritten = KeySlot::wrap_ring(&slot_ring, kept, slot.kdf, &repo, now, slot.label.clone())
                .map_err(Error::Format)?;
            lease.renew().await?;
            overwrite_key_slot(store, id, &rewritten).await?;
            tracing::info!(key = %id, epoch, "rewrote a key slot to the new key epoch");
            report.rewritten.push(named);
        }

        // Revoke: every slot not kept that is older than the new epoch or
        // unreadable, listed again so that a slot added meanwhile is seen.
        lease.renew().await?;
        for stored in read_slots(store).await? {
            if keep.iter().any(|(id, _, _)| *id == stored.id) {
                continue;
            }
            let label = match &stored.slot {
                Ok(slot) if slot.claimed_epoch() >= epoch => continue,
                Ok(slot) => slot.label.clone(),
                Err(e) => format!("(unreadable: {e})"),
            };
            let key = ObjectKey::new(ObjectKind::Key, stored.id.to_hex()).map_err(Error::store)?;
            lease.ensure_held().await?;
            store.delete(&key).await.map_err(Error::store)?;
            tracing::info!(key = %stored.id, "revoked a key slot");
            report.revoked.push(SlotRef { id: stored.id, label });
        }
        Ok((report, target))
    }

    /// Writes the key history of `ring`'s current epoch, sealed under that
    /// epoch alone, with a conditional put: an epoch number once used is
    /// never written again (its secret may still be held somewhere).
    async fn put_history(&self, ring: &KeyRing) -> Result<()> {
        let epoch = ring.current_epoch();
        let sealer = ring.current_only().sealer(self.cipher());
        let bytes = Zeroizing::new(ring.history().encode(&sealer, &self.id()).map_err(Error::Format)?);
        self.store()
            .put(&history_key(epoch)?, Bytes::copy_from_slice(&bytes), PutMode::CreateNew)
            .await
            .map_err(Error::store)
    }
}
