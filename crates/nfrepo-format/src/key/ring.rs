//! The key ring: the key material of every key epoch a key slot opens.
//!
//! A repository's keys change over its life: `key rotate` draws a new
//! **key epoch** whose sealing key seals everything new, while older epochs
//! stay in the ring so what they sealed still opens (until a reseal drops
//! them). What must not change across epochs, the blob id key and the
//! chunker seed (blob ids and deduplication depend on them), is stored once
//! in the ring, not derived from any epoch's secret, so dropping the epoch
//! it first came from drops nothing else.
//!
//! Crypto guarantees: the ring is only ever stored sealed inside a key slot
//! (keys.md); in memory every secret is wiped on drop. Holding an epoch's
//! secret opens what that epoch sealed and nothing sealed by another epoch.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{CONTEXT_AUDIT, CONTEXT_CHUNKER, CONTEXT_ID_KEY, CONTEXT_SEALING, MasterKey, RepoKeys};
use crate::seal::{Aad, Cipher, SealedKind, Sealer, SecretKey};
use crate::{Error, Result};

/// The secret of one key epoch; its sealing and audit keys derive from it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct EpochSecret {
    /// The epoch number: 0 for the master key drawn at `init`, then one more
    /// for each rotation.
    #[zeroize(skip)]
    pub epoch: u32,
    /// 32 random bytes (for epoch 0 of a repository made before key epochs:
    /// its master key, so that epoch's keys are the ones it always had).
    pub secret: [u8; 32],
}

impl EpochSecret {
    /// What is kept of this epoch once a reseal drops it: its audit key.
    #[must_use]
    pub fn retire(&self) -> RetiredEpoch {
        RetiredEpoch {
            epoch: self.epoch,
            audit_key: blake3::derive_key(CONTEXT_AUDIT, &self.secret),
        }
    }
}

/// What is kept of an epoch that was dropped from the ring: its audit key,
/// so audit entries MACed under it can still be verified (it opens nothing).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct RetiredEpoch {
    /// The epoch number.
    #[zeroize(skip)]
    pub epoch: u32,
    /// `derive_key("nfrepo 2026-11 audit mac key", epoch secret)`.
    pub audit_key: [u8; 32],
}

/// Every key a key slot gives: the constant id key and chunker seed, the
/// secrets of the live epochs (oldest first; the last is **current**), and
/// the audit keys of dropped epochs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KeyRing {
    /// Key of the keyed BLAKE3 that names blobs; the same in every epoch.
    pub id_key: [u8; 32],
    /// `derive_key("nfrepo 2026-11 chunker seed", …)` of the first master
    /// key; its first 8 bytes (little-endian) are the chunker seed. The same
    /// in every epoch.
    pub chunker: [u8; 32],
    /// Live epochs, strictly ascending; never empty. The last one seals.
    pub epochs: Vec<EpochSecret>,
    /// Dropped epochs, strictly ascending, all older than the first live one.
    pub retired: Vec<RetiredEpoch>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("epochs", &self.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>())
            .field("retired", &self.retired.iter().map(|e| e.epoch).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// The ring of a repository that has never rotated: epoch 0 is `master`,
    /// and every key is the one `master` derived before key epochs existed.
    #[must_use]
    pub fn from_master(master: &MasterKey) -> Self {
        let secret = *master.0.expose();
        Self {
            id_key: blake3::derive_key(CONTEXT_ID_KEY, &secret),
            chunker: blake3::derive_key(CONTEXT_CHUNKER, &secret),
            epochs: vec![EpochSecret { epoch: 0, secret }],
            retired: Vec::new(),
        }
    }

    /// The current epoch: the one that seals.
    #[must_use]
    pub fn current_epoch(&self) -> u32 {
        self.epochs.last().map_or(0, |e| e.epoch)
    }

    /// The epoch-0 master key, when this ring is exactly what a version-1
    /// key slot holds (one epoch, 0, nothing retired, constants derived
    /// from it), so it can be stored in that older layout.
    #[must_use]
    pub fn as_v1_master(&self) -> Option<MasterKey> {
        match (self.epochs.as_slice(), self.retired.is_empty()) {
            ([only], true) if only.epoch == 0 => {
                let master = MasterKey::from_bytes(only.secret);
                (Self::from_master(&master) == *self).then_some(master)
            }
            _ => None,
        }
    }

    /// This ring with a new current epoch (the next number) drawn from the
    /// operating system's random source; every older epoch stays.
    ///
    /// # Errors
    /// [`Error::Random`] if no randomness could be drawn; [`Error::Malformed`]
    /// if the epoch numbers are exhausted.
    pub fn rotated(&self) -> Result<Self> {
        let epoch = self
            .current_epoch()
            .checked_add(1)
            .ok_or_else(|| Error::malformed("key ring", "no epoch number left"))?;
        self.rotated_to(epoch)
    }

    /// [`Self::rotated`] to epoch number `epoch` (numbers may be skipped:
    /// a number a failed rotation used is never reused).
    ///
    /// # Errors
    /// [`Error::Random`]; [`Error::Malformed`] if `epoch` is not newer than
    /// the current one.
    pub fn rotated_to(&self, epoch: u32) -> Result<Self> {
        if epoch <= self.current_epoch() {
            return Err(Error::malformed("key ring", format!("epoch {epoch} is not newer")));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| Error::Random)?;
        let mut next = self.clone();
        next.epochs.push(EpochSecret { epoch, secret });
        secret.zeroize();
        Ok(next)
    }

    /// Checks the rules a stored ring must follow.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the broken rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::malformed("key ring", why.to_owned()));
        if self.epochs.is_empty() {
            return bad("no live epoch");
        }
        if !self.epochs.windows(2).all(|w| matches!(w, [a, b] if a.epoch < b.epoch)) {
            return bad("live epochs are not strictly ascending");
        }
        if !self
            .retired
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.epoch < b.epoch))
        {
            return bad("retired epochs are not strictly ascending");
        }
        let first_live = self.epochs.first().map_or(0, |e| e.epoch);
        if self.retired.last().is_some_and(|r| r.epoch >= first_live) {
            return bad("a retired epoch is not older than every live one");
        }
        Ok(())
    }

    /// The working keys: the current epoch seals, every live epoch opens.
    #[must_use]
    pub fn derive(&self) -> RepoKeys {
        let derive = |context, secret: &[u8; 32]| SecretKey::from_bytes(blake3::derive_key(context, secret));
        let mut seed = [0u8; 8];
        seed.copy_from_slice(self.chunker.get(..8).unwrap_or(&[0; 8]));
        let zero = [0u8; 32];
        let current = self.epochs.last().map_or(&zero, |e| &e.secret);
        RepoKeys {
            id_key: SecretKey::from_bytes(self.id_key),
            chunker_seed: u64::from_le_bytes(seed),
            sealing_key: derive(CONTEXT_SEALING, current),
            audit_key: derive(CONTEXT_AUDIT, current),
            epoch: self.current_epoch(),
            older_sealing_keys: self
                .epochs
                .iter()
                .rev()
                .skip(1)
                .map(|e| (e.epoch, derive(CONTEXT_SEALING, &e.secret)))
                .collect(),
            older_audit_keys: self
                .epochs
                .iter()
                .rev()
                .skip(1)
                .map(|e| (e.epoch, derive(CONTEXT_AUDIT, &e.secret)))
                .collect(),
            retired_audit_keys: self
                .retired
                .iter()
                .rev()
                .map(|r| (r.epoch, SecretKey::from_bytes(r.audit_key)))
                .collect(),
            reference_keys: std::sync::Arc::new(crate::ReferenceKeys::from_epoch_secrets(
                self.epochs.iter().rev().map(|e| (e.epoch, &e.secret)),
            )),
        }
    }

    /// The X25519 key pairs of the live epochs (public.rs), current first,
    /// then older ones newest first: the order of
    /// [`RepoKeys::older_audit_keys`] after the current audit key.
    #[must_use]
    pub fn key_pairs(&self) -> Vec<crate::RepoKeyPair> {
        self.epochs
            .iter()
            .rev()
            .map(|e| crate::RepoKeyPair::from_epoch_secret(&e.secret))
            .collect()
    }

    /// A sealer for `cipher` that seals under the current epoch and opens
    /// under every live one: shorthand for `self.derive().sealer(cipher)`.
    #[must_use]
    pub fn sealer(&self, cipher: Cipher) -> Sealer {
        self.derive().sealer(cipher)
    }

    /// What a version-2 key slot holds: the constants and the current epoch
    /// only. Older epochs live in the key history, so dropping one after a
    /// reseal needs no password.
    #[must_use]
    pub fn current_only(&self) -> Self {
        Self {
            id_key: self.id_key,
            chunker: self.chunker,
            epochs: self.epochs.last().cloned().into_iter().collect(),
            retired: Vec::new(),
        }
    }

    /// The key history of the current epoch once a reseal has dropped every
    /// older live epoch: no older epoch, and the dropped ones retired (their
    /// audit keys kept beside those retired before).
    #[must_use]
    pub fn dropped_history(history: &KeyHistory) -> KeyHistory {
        let mut retired: Vec<RetiredEpoch> = history.retired.clone();
        retired.extend(history.older.iter().map(EpochSecret::retire));
        retired.sort_by_key(|r| r.epoch);
        retired.dedup_by_key(|r| r.epoch);
        KeyHistory {
            epoch: history.epoch,
            older: Vec::new(),
            retired,
        }
    }

    /// The key history of the current epoch: every older live epoch and the
    /// retired ones.
    #[must_use]
    pub fn history(&self) -> KeyHistory {
        let older = self.epochs.len().saturating_sub(1);
        KeyHistory {
            epoch: self.current_epoch(),
            older: self.epochs.iter().take(older).cloned().collect(),
            retired: self.retired.clone(),
        }
    }

    /// This ring (as a key slot gives it) completed with the key history of
    /// its current epoch.
    ///
    /// # Errors
    /// [`Error::Malformed`] if the history belongs to another epoch, names an
    /// epoch the ring already holds, or the result breaks the ring's rules.
    pub fn with_history(&self, history: &KeyHistory) -> Result<Self> {
        if history.epoch != self.current_epoch() {
            return Err(Error::malformed(
                "key history",
                format!(
                    "is of epoch {} but the key slot's is {}",
                    history.epoch,
                    self.current_epoch()
                ),
            ));
        }
        let mut epochs = history.older.clone();
        epochs.extend(self.epochs.iter().cloned());
        let mut retired = history.retired.clone();
        retired.extend(self.retired.iter().cloned());
        retired.sort_by_key(|r| r.epoch);
        let ring = Self {
            id_key: self.id_key,
            chunker: self.chunker,
            epochs,
            retired,
        };
        ring.validate()?;
        Ok(ring)
    }
}

/// The key history of one key epoch (`keys/epoch-<n>`, keys.md): the
/// secrets of the older epochs that still open something, and the audit
/// keys of dropped ones. Sealed under epoch `n`'s own sealing key, so only a
/// holder of epoch `n` (a key slot rewritten by the rotation) can read it;
/// a key slot of an older epoch opens nothing here.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KeyHistory {
    /// The epoch this history belongs to (and is sealed under).
    #[zeroize(skip)]
    pub epoch: u32,
    /// Older live epochs, strictly ascending, all before `epoch`.
    pub older: Vec<EpochSecret>,
    /// Dropped epochs, strictly ascending, all before the first of `older`.
    pub retired: Vec<RetiredEpoch>,
}

impl std::fmt::Debug for KeyHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHistory")
            .field("epoch", &self.epoch)
            .field("older", &self.older.iter().map(|e| e.epoch).collect::<Vec<_>>())
            .field("retired", &self.retired.iter().map(|e| e.epoch).collect::<Vec<_>>())
            .finish()
    }
}

impl KeyHistory {
    /// The object name: `epoch-` and the epoch in 20 zero-padded digits.
    #[must_use]
    pub fn name(epoch: u32) -> String {
        format!("epoch-{epoch:020}")
    }

    /// The epoch a name made by [`Self::name`] stands for.
    #[must_use]
    pub fn parse_name(name: &str) -> Option<u32> {
        let digits = name.strip_prefix("epoch-")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// `NFRH` header + the body sealed by `sealer` (epoch `self.epoch`'s
    /// sealer alone), AAD = (key history, repository id).
    ///
    /// # Errors
    /// [`Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &crate::RepoId) -> Result<Vec<u8>> {
        let body = zeroize::Zeroizing::new(crate::envelope::to_postcard("key history", self)?);
        let mut out = Vec::with_capacity(body.len() + crate::envelope::HEADER_LEN + crate::SEAL_OVERHEAD);
        out.extend_from_slice(&crate::envelope::KEY_HISTORY_MAGIC);
        out.push(crate::envelope::FORMAT_VERSION);
        sealer.seal_into(Aad::object(SealedKind::KeyHistory, repo.0), &body, &mut out)?;
        Ok(out)
    }

    /// Opens a stored key history with `sealer` and checks that it is the
    /// history of `epoch` and that its epochs are in order.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`],
    /// [`Error::Authentication`] (altered, or not sealed under `sealer`'s
    /// key), [`Error::Malformed`].
    pub fn decode(bytes: &[u8], epoch: u32, sealer: &Sealer, repo: &crate::RepoId) -> Result<Self> {
        let what = "key history";
        let sealed = crate::envelope::read_header(what, crate::envelope::KEY_HISTORY_MAGIC, bytes)?;
        let body = zeroize::Zeroizing::new(sealer.open(what, Aad::object(SealedKind::KeyHistory, repo.0), sealed)?);
        let history: Self = crate::envelope::from_postcard(what, &body)?;
        if history.epoch != epoch {
            return Err(Error::malformed(
                what,
                format!("stored as epoch {epoch} but records epoch {}", history.epoch),
            ));
        }
        let older: Vec<u32> = history.older.iter().map(|e| e.epoch).collect();
        let retired: Vec<u32> = history.retired.iter().map(|e| e.epoch).collect();
        let ascending = |v: &[u32]| v.windows(2).all(|w| matches!(w, [a, b] if a < b));
        if !ascending(&older) || !ascending(&retired) {
            return Err(Error::malformed(what, "epochs are not strictly ascending"));
        }
        let first_live = older.first().copied().unwrap_or(epoch);
        if older.last().is_some_and(|e| *e >= epoch) || retired.last().is_some_and(|e| *e >= first_live) {
            return Err(Error::malformed(what, "an older epoch is not older"));
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn epoch_zero_ring_derives_the_keys_of_its_master() {
        let master = MasterKey::from_bytes([9; 32]);
        let (ring, plain) = (KeyRing::from_master(&master).derive(), master.derive());
        assert_eq!(ring.id_key.expose(), plain.id_key.expose());
        assert_eq!(ring.sealing_key.expose(), plain.sealing_key.expose());
        assert_eq!(ring.audit_key.expose(), plain.audit_key.expose());
        assert_eq!(ring.chunker_seed, plain.chunker_seed);
        assert!(KeyRing::from_master(&master).as_v1_master().is_some());
    }

    #[test]
    fn rotation_keeps_ids_and_seed_and_changes_the_sealing_key() {
        let ring = KeyRing::from_master(&MasterKey::from_bytes([9; 32]));
        let next = ring.rotated().unwrap();
        next.validate().unwrap();
        assert_eq!(next.current_epoch(), 1);
        assert!(next.as_v1_master().is_none());
        let (old, new) = (ring.derive(), next.derive());
        assert_eq!(old.id_key.expose(), new.id_key.expose());
        assert_eq!(old.chunker_seed, new.chunker_seed);
        assert_ne!(old.sealing_key.expose(), new.sealing_key.expose());
        assert_ne!(old.audit_key.expose(), new.audit_key.expose());
        let aad = Aad::object(SealedKind::Index, [0; 32]);
        let sealed_old = old.sealer(Cipher::Aes256Gcm).seal(aad, b"x").unwrap();
        let sealed_new = new.sealer(Cipher::Aes256Gcm).seal(aad, b"y").unwrap();
        let both = new.sealer(Cipher::Aes256Gcm);
        assert_eq!(both.open_epoch("index", aad, &sealed_old).unwrap().0, 0);
        assert_eq!(both.open_epoch("index", aad, &sealed_new).unwrap().0, 1);
        assert!(matches!(
            old.sealer(Cipher::Aes256Gcm).open("index", aad, &sealed_new),
            Err(Error::Authentication { .. })
        ));
    }

    #[test]
    fn history_splits_and_rejoins_the_ring() {
        let repo = crate::RepoId([3; 32]);
        let ring = KeyRing::from_master(&MasterKey::from_bytes([1; 32]))
            .rotated()
            .unwrap()
            .rotated()
            .unwrap();
        let slot_part = ring.current_only();
        assert_eq!(slot_part.epochs.len(), 1);
        let history = ring.history();
        assert_eq!(history.epoch, 2);
        assert!(slot_part.with_history(&history).unwrap() == ring);
        let sealer = slot_part.sealer(Cipher::XChaCha20Poly1305);
        let bytes = history.encode(&sealer, &repo).unwrap();
        assert_eq!(&bytes[..5], b"NFRH\x01");
        assert!(KeyHistory::decode(&bytes, 2, &sealer, &repo).unwrap() == history);
        // Stored under another epoch's name, or opened with another epoch's key: refused.
        assert!(matches!(
            KeyHistory::decode(&bytes, 1, &sealer, &repo),
            Err(Error::Malformed { .. })
        ));
        let older = KeyRing::from_master(&MasterKey::from_bytes([1; 32])).sealer(Cipher::XChaCha20Poly1305);
        assert!(matches!(
            KeyHistory::decode(&bytes, 2, &older, &repo),
            Err(Error::Authentication { .. })
        ));
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(matches!(
            KeyHistory::decode(&flipped, 2, &sealer, &repo),
            Err(Error::Authentication { .. })
        ));
        assert!(matches!(
            slot_part.with_history(&KeyRing::from_master(&MasterKey::from_bytes([1; 32])).history()),
            Err(Error::Malformed { .. })
        ));
        assert_eq!(KeyHistory::parse_name(&KeyHistory::name(7)), Some(7));
        assert_eq!(KeyHistory::parse_name("epoch-7"), None);
    }

    #[test]
    fn dropping_older_epochs_keeps_their_audit_keys_only() {
        let ring = KeyRing::from_master(&MasterKey::from_bytes([1; 32]))
            .rotated()
            .unwrap()
            .rotated()
            .unwrap();
        let old_audit = ring.derive().older_audit_keys;
        let dropped = KeyRing::dropped_history(&ring.history());
        assert_eq!(dropped.epoch, 2);
        assert!(dropped.older.is_empty());
        assert_eq!(dropped.retired.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![0, 1]);
        let after = ring.current_only().with_history(&dropped).unwrap();
        let keys = after.derive();
        assert!(keys.older_sealing_keys.is_empty(), "no older epoch opens anything");
        let retired: Vec<_> = keys.retired_audit_keys.iter().map(|(e, k)| (*e, *k.expose())).collect();
        let before: Vec<_> = old_audit.iter().map(|(e, k)| (*e, *k.expose())).collect();
        assert_eq!(retired, before, "newest first, the audit keys the live epochs had");
        // Dropping twice changes nothing.
        assert!(KeyRing::dropped_history(&dropped) == dropped);
    }

    #[test]
    fn validate_refuses_broken_rings() {
        let good = KeyRing::from_master(&MasterKey::from_bytes([1; 32])).rotated().unwrap();
        let mut empty = good.clone();
        empty.epochs.clear();
        let mut unordered = good.clone();
        unordered.epochs.reverse();
        let mut retired_late = good.clone();
        retired_late.retired.push(RetiredEpoch {
            epoch: 0,
            audit_key: [0; 32],
        });
        for ring in [empty, unordered, retired_late] {
            assert!(matches!(ring.validate(), Err(Error::Malformed { .. })), "{ring:?}");
        }
    }
}
