//! Key material: the master secret, the subkeys derived from it, key rings
//! and key slots.
//!
//! A repository starts with one 32-byte master secret, drawn at `init` and
//! never stored in the clear. Each key slot (`keys/<id>`) wraps it, or after
//! a key rotation the [`KeyRing`] of every live key epoch, under a key
//! derived with argon2id from one password, so passwords can be added,
//! changed and removed without re-encrypting any data.
//!
//! Subkeys come from BLAKE3's `derive_key` with one context string each, so
//! compromising one use (say, the chunker seed leaking through cut points)
//! reveals nothing about the others.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::envelope::{FORMAT_VERSION, HEADER_LEN, KEY_SLOT_MAGIC, from_postcard, to_postcard};
use crate::seal::{Aad, Cipher, SealedKind, Sealer, SecretKey};
use crate::{Error, RepoId, Result};

mod ring;

pub use ring::{EpochSecret, KeyHistory, KeyRing, RetiredEpoch};

/// Version byte of a key slot that wraps a [`KeyRing`] (keys.md, "Key slot
/// version 2"); version 1 slots wrap one master key.
pub const KEY_SLOT_RING_VERSION: u8 = 2;

const CONTEXT_ID_KEY: &str = "nfrepo 2026-11 blob id key";
const CONTEXT_CHUNKER: &str = "nfrepo 2026-11 chunker seed";
const CONTEXT_SEALING: &str = "nfrepo 2026-11 sealing key";
const CONTEXT_AUDIT: &str = "nfrepo 2026-11 audit mac key";

/// The repository's master secret. Wiped from memory on drop.
#[derive(Clone)]
pub struct MasterKey(SecretKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh random master secret.
    ///
    /// # Errors
    /// [`Error::Random`] if the operating system cannot supply randomness.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| Error::Random)?;
        let key = Self(SecretKey::from_bytes(bytes));
        bytes.zeroize();
        Ok(key)
    }

    /// A master key from known bytes (test vectors and key files).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretKey::from_bytes(bytes))
    }

    /// `blake3::derive_key(context, master key)`: a subkey for one use.
    pub(crate) fn derive_subkey(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, self.0.expose())
    }

    /// Derives the working keys.
    #[must_use]
    pub fn derive(&self) -> RepoKeys {
        let derive = |context| SecretKey::from_bytes(blake3::derive_key(context, self.0.expose()));
        let seed_bytes = blake3::derive_key(CONTEXT_CHUNKER, self.0.expose());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(seed_bytes.get(..8).unwrap_or(&[0; 8]));
        RepoKeys {
            id_key: derive(CONTEXT_ID_KEY),
            chunker_seed: u64::from_le_bytes(seed),
            sealing_key: derive(CONTEXT_SEALING),
            audit_key: derive(CONTEXT_AUDIT),
            epoch: 0,
            older_sealing_keys: Vec::new(),
            older_audit_keys: Vec::new(),
            retired_audit_keys: Vec::new(),
            reference_keys: std::sync::Arc::new(crate::ReferenceKeys::from_epoch_secrets([(0, self.0.expose())])),
        }
    }
}

/// The working keys of an open repository.
#[derive(Clone)]
pub struct RepoKeys {
    /// Key of the keyed BLAKE3 that names blobs.
    pub id_key: SecretKey,
    /// Seed XORed into FastCDC's gear table, so cut points reveal nothing
    /// about content to someone without the key.
    pub chunker_seed: u64,
    /// Key of every sealed message: the current key epoch's.
    pub sealing_key: SecretKey,
    /// Key of the audit log's MACs: the current key epoch's.
    pub audit_key: SecretKey,
    /// The current key epoch (keys.md), which seals everything new.
    pub epoch: u32,
    /// Sealing keys of the older live epochs, newest first: they only open.
    pub older_sealing_keys: Vec<(u32, SecretKey)>,
    /// Audit keys of the older live epochs, newest first: they only verify
    /// the audit entries MACed before a rotation.
    pub older_audit_keys: Vec<(u32, SecretKey)>,
    /// Audit keys of the retired epochs (dropped by a reseal), newest
    /// first: they verify the MACs of the audit entries of those epochs,
    /// whose bodies nothing opens any more.
    pub retired_audit_keys: Vec<(u32, SecretKey)>,
    /// X25519 key pairs and index keys of the live epochs: what opens the
    /// packs and objects of put-only sessions (put-only.md).
    pub reference_keys: std::sync::Arc<crate::ReferenceKeys>,
}

impl std::fmt::Debug for RepoKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepoKeys(<redacted>)")
    }
}

impl RepoKeys {
    /// The keyed BLAKE3 id of a blob's plaintext.
    #[must_use]
    pub fn blob_id(&self, plaintext: &[u8]) -> crate::BlobId {
        crate::BlobId(*blake3::keyed_hash(self.id_key.expose(), plaintext).as_bytes())
    }

    /// A sealer for `cipher` that seals and opens under the current epoch's
    /// sealing key alone: what a reseal checks every object against.
    #[must_use]
    pub fn current_sealer(&self, cipher: Cipher) -> Sealer {
        Sealer::new(cipher, self.sealing_key.clone())
            .with_epoch(self.epoch)
            .with_reference_keys(std::sync::Arc::new(self.reference_keys.only_epoch(self.epoch)))
    }

    /// A sealer for `cipher` that seals under the current epoch's sealing
    /// key and opens under it and every older live epoch's.
    #[must_use]
    pub fn sealer(&self, cipher: Cipher) -> Sealer {
        let older = self
            .older_sealing_keys
            .iter()
            .map(|(epoch, key)| Sealer::new(cipher, key.clone()).with_epoch(*epoch))
            .collect();
        Sealer::new(cipher, self.sealing_key.clone())
            .with_epoch(self.epoch)
            .with_older(older)
            .with_reference_keys(std::sync::Arc::clone(&self.reference_keys))
    }
}

/// argon2id cost parameters, stored in each key slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, three passes, four lanes: RFC 9106's second recommended
    /// option. The lanes are filled on every core (the `argon2` crate's
    /// `parallel` feature), so on two cores an unlock takes about 0.04 s
    /// less than with one lane (format-spec/keys.md), while a guess costs
    /// an attacker the same memory and the same work. Slots made before
    /// December 2026 have one lane and keep it.
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    /// The smallest parameters argon2 accepts. For tests only: offers no
    /// protection against guessing.
    #[must_use]
    pub const fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn derive(&self, password: &[u8], salt: &[u8; 32]) -> Result<SecretKey> {
        self.derive_with_secret(password, salt, &[])
    }

    /// argon2id of `password` with `salt` and argon2's secret input `secret`
    /// (empty for a key slot; a host's identity for a cached unlock,
    /// unlock.md).
    pub(crate) fn derive_with_secret(&self, password: &[u8], salt: &[u8; 32], secret: &[u8]) -> Result<SecretKey> {
        // Refuse absurd stored parameters before allocating: a forged slot
        // must not make `open` allocate gigabytes.
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 64 || self.parallelism > 64 {
            return Err(Error::Kdf(format!("refusing argon2id parameters {self:?}")));
        }
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let blocks = params.block_count();
        let argon =
            argon2::Argon2::new_with_secret(secret, argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .map_err(|e| Error::Kdf(e.to_string()))?;
        let mut out = [0u8; 32];
        argon
            .hash_password_into_with_memory(password, salt, &mut out, kdf_memory(blocks)?)
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let key = SecretKey::from_bytes(out);
        out.zeroize();
        Ok(key)
    }
}

/// argon2id's working memory of `blocks` 1 KiB blocks (64 MiB by default),
/// zeroed on every core.
///
/// `argon2`'s own allocation zeroes it with one `memset` before the lanes
/// are filled in parallel: the first touch of 16,384 fresh pages, each a
/// page fault, on one thread, a serial start to every command that opens
/// a repository. Written here in parallel, each core faults in its own
/// share of the pages; the memory is the same. On the 2-core VM `nfrepo
/// snapshots` of an empty repository (the default parameters) went from
/// 109-133 to 90-96 ms (15 runs each).
///
/// # Errors
/// [`Error::Kdf`] if the memory cannot be allocated (a clean error, as
/// `argon2`'s own allocation gives, not an abort).
fn kdf_memory(blocks: usize) -> Result<Vec<argon2::Block>> {
    use rayon::iter::ParallelExtend;
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(blocks)
        .map_err(|_| Error::Kdf(format!("cannot allocate argon2id's {blocks} KiB")))?;
    memory.par_extend(rayon::iter::repeat_n(argon2::Block::new(), blocks));
    Ok(memory)
}

/// One way into the repository: the master secret (version 1) or the key
/// ring (version 2) wrapped under a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySlot {
    /// The argon2id parameters used for this slot.
    pub kdf: KdfParams,
    /// The argon2id salt.
    pub salt: [u8; 32],
    /// The master secret, sealed with XChaCha20-Poly1305 under the
    /// password-derived key, with the repository id as associated data.
    pub wrapped: Vec<u8>,
    /// When the slot was made (Unix seconds).
    pub created: i64,
    /// Who made it (`user@host`), for `key list`.
    pub label: String,
    /// `None` for a version-1 slot, whose `wrapped` is the epoch-0 master
    /// key; `Some(e)` for a version-2 slot, whose `wrapped` is a key ring
    /// with current epoch `e`. Stored in the clear so that opening can try
    /// the newest slots first and see a stale one; checked against the ring
    /// when the slot is opened.
    pub epoch: Option<u32>,
}

/// The postcard body of a version-1 slot, and the first five fields of a
/// version-2 one (which adds its `epoch` after them).
#[derive(Serialize, Deserialize)]
struct SlotBody {
    kdf: KdfParams,
    salt: [u8; 32],
    wrapped: Vec<u8>,
    created: i64,
    label: String,
}

impl KeySlot {
    /// Wraps `master` under `password`.
    ///
    /// # Errors
    /// [`Error::Kdf`] for invalid parameters, [`Error::Random`] if no salt could be drawn.
    pub fn wrap(
        master: &MasterKey,
        password: &[u8],
        kdf: KdfParams,
        repo: &RepoId,
        created: i64,
        label: String,
    ) -> Result<Self> {
        let mut slot = Self::seal_under(master.0.expose(), password, kdf, repo)?;
        (slot.created, slot.label) = (created, label);
        Ok(slot)
    }

    /// Wraps `ring` under `password`: as a version-1 slot when the ring is
    /// only the epoch-0 master key (so nfrepo versions before key epochs can
    /// still open a repository that never rotated), else as version 2.
    ///
    /// # Errors
    /// As [`Self::wrap`]; [`Error::Malformed`] for a ring that breaks its rules.
    pub fn wrap_ring(
        ring: &KeyRing,
        password: &[u8],
        kdf: KdfParams,
        repo: &RepoId,
        created: i64,
        label: String,
    ) -> Result<Self> {
        ring.validate()?;
        if let Some(master) = ring.as_v1_master() {
            return Self::wrap(&master, password, kdf, repo, created, label);
        }
        let plain = zeroize::Zeroizing::new(to_postcard("key ring", ring)?);
        let mut slot = Self::seal_under(&plain, password, kdf, repo)?;
        (slot.created, slot.label, slot.epoch) = (created, label, Some(ring.current_epoch()));
        Ok(slot)
    }

    /// `plain` sealed under `argon2id(password, fresh salt)`, AAD (key slot,
    /// repository id); `created`, `label` and `epoch` left for the caller.
    fn seal_under(plain: &[u8], password: &[u8], kdf: KdfParams, repo: &RepoId) -> Result<Self> {
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|_| Error::Random)?;
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, kdf.derive(password, &salt)?);
        let wrapped = sealer.seal(Aad::object(SealedKind::KeySlot, repo.0), plain)?;
        Ok(Self {
            kdf,
            salt,
            wrapped,
            created: 0,
            label: String::new(),
            epoch: None,
        })
    }

    /// The epoch this slot's ring seals under, as its clear field says (0
    /// for a version-1 slot); authenticated only once the slot is opened.
    #[must_use]
    pub fn claimed_epoch(&self) -> u32 {
        self.epoch.unwrap_or(0)
    }

    /// Unwraps the key ring: for a version-1 slot, the ring of its master key.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] if the password (or the slot) does not
    /// authenticate; [`Error::Malformed`] if the opened ring breaks its rules
    /// or its current epoch is not the slot's clear `epoch`.
    pub fn unwrap_ring(&self, password: &[u8], repo: &RepoId) -> Result<KeyRing> {
        self.unwrap_ring_with(&self.wrapping_key(password)?, repo)
    }

    /// The key this slot's contents are sealed under for `password`:
    /// `argon2id(password, salt)` with the slot's parameters (the slow step
    /// of opening, which a cached unlock skips, unlock.md).
    ///
    /// # Errors
    /// [`Error::Kdf`] for parameters argon2 refuses or that are too large.
    pub fn wrapping_key(&self, password: &[u8]) -> Result<SecretKey> {
        self.kdf.derive(password, &self.salt)
    }

    /// [`Self::unwrap_ring`] with the wrapping key already derived.
    ///
    /// # Errors
    /// As [`Self::unwrap_ring`]: [`Error::WrongPassword`] when the key does
    /// not open the slot.
    pub fn unwrap_ring_with(&self, wrapping_key: &SecretKey, repo: &RepoId) -> Result<KeyRing> {
        let Some(claimed) = self.epoch else {
            return Ok(KeyRing::from_master(&self.unwrap_key_with(wrapping_key, repo)?));
        };
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, wrapping_key.clone());
        let plain = zeroize::Zeroizing::new(
            sealer
                .open("key slot", Aad::object(SealedKind::KeySlot, repo.0), &self.wrapped)
                .map_err(|_| Error::WrongPassword)?,
        );
        let ring: KeyRing = from_postcard("key ring", &plain)?;
        ring.validate()?;
        if ring.current_epoch() != claimed {
            return Err(Error::malformed(
                "key slot",
                format!(
                    "says epoch {claimed} but its ring's current epoch is {}",
                    ring.current_epoch()
                ),
            ));
        }
        Ok(ring)
    }

    /// Unwraps the master secret of a version-1 slot. A version-2 slot holds
    /// a ring instead ([`Self::unwrap_ring`]) and gives [`Error::Malformed`].
    ///
    /// # Errors
    /// [`Error::WrongPassword`] if the password (or the slot) does not authenticate.
    pub fn unwrap_key(&self, password: &[u8], repo: &RepoId) -> Result<MasterKey> {
        if self.epoch.is_some() {
            return Err(Error::malformed("key slot", "a version-2 slot wraps a key ring"));
        }
        self.unwrap_key_with(&self.wrapping_key(password)?, repo)
    }

    fn unwrap_key_with(&self, wrapping_key: &SecretKey, repo: &RepoId) -> Result<MasterKey> {
        if self.epoch.is_some() {
            return Err(Error::malformed("key slot", "a version-2 slot wraps a key ring"));
        }
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, wrapping_key.clone());
        let mut plain = sealer
            .open("key slot", Aad::object(SealedKind::KeySlot, repo.0), &self.wrapped)
            .map_err(|_| Error::WrongPassword)?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::malformed("key slot", "wrapped key is not 32 bytes"))?;
        plain.zeroize();
        Ok(MasterKey::from_bytes(bytes))
    }

    /// `NFRK` header (version 1, or 2 when `epoch` is set) + postcard body.
    ///
    /// # Errors
    /// Never in practice; postcard cannot fail on these types.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = KEY_SLOT_MAGIC.to_vec();
        out.push(if self.epoch.is_some() {
            KEY_SLOT_RING_VERSION
        } else {
            FORMAT_VERSION
        });
        let body = SlotBody {
            kdf: self.kdf,
            salt: self.salt,
            wrapped: self.wrapped.clone(),
            created: self.created,
            label: self.label.clone(),
        };
        out.extend(to_postcard("key slot", &body)?);
        if let Some(epoch) = self.epoch {
            out.extend(to_postcard("key slot", &epoch)?);
        }
        Ok(out)
    }

    /// Parses a stored key slot of version 1 or 2.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`] or [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "key slot";
        let (head, body) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or_else(|| Error::malformed(what, "shorter than its header"))?;
        if head.get(..4) != Some(&KEY_SLOT_MAGIC[..]) {
            return Err(Error::BadMagic { what });
        }
        let holds_ring = match head.get(4).copied() {
            Some(FORMAT_VERSION) => false,
            Some(KEY_SLOT_RING_VERSION) => true,
            Some(version) => return Err(Error::UnsupportedVersion { what, version }),
            None => return Err(Error::malformed(what, "shorter than its header")),
        };
        // Version 2 is the version-1 body followed by the epoch.
        let (b, rest): (SlotBody, &[u8]) = if holds_ring {
            postcard::take_from_bytes(body).map_err(|e| Error::malformed(what, e.to_string()))?
        } else {
            (from_postcard(what, body)?, &[])
        };
        Ok(Self {
            kdf: b.kdf,
            salt: b.salt,
            wrapped: b.wrapped,
            created: b.created,
            label: b.label,
            epoch: if holds_ring {
                Some(from_postcard(what, rest)?)
            } else {
                None
            },
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip() {
        let master = MasterKey::from_bytes([9; 32]);
        let repo = RepoId([1; 32]);
        let slot = KeySlot::wrap(&master, b"pw", KdfParams::insecure_for_tests(), &repo, 0, "t".into()).unwrap();
        let decoded = KeySlot::decode(&slot.encode().unwrap()).unwrap();
        assert_eq!(decoded, slot);
        let back = decoded.unwrap_key(b"pw", &repo).unwrap();
        assert_eq!(back.0.expose(), &[9; 32]);
    }

    #[test]
    fn wrong_password_and_wrong_repo() {
        let master = MasterKey::from_bytes([9; 32]);
        let repo = RepoId([1; 32]);
        let slot = KeySlot::wrap(&master, b"pw", KdfParams::insecure_for_tests(), &repo, 0, String::new()).unwrap();
        assert!(matches!(slot.unwrap_key(b"nope", &repo), Err(Error::WrongPassword)));
        assert!(matches!(
            slot.unwrap_key(b"pw", &RepoId([2; 32])),
            Err(Error::WrongPassword)
        ));
    }

    /// argon2id's memory that cannot be had is a KDF error, not an abort;
    /// memory that can is every block, zeroed.
    #[test]
    fn kdf_memory_is_all_blocks_or_a_clean_error() {
        assert!(matches!(kdf_memory(usize::MAX / 64), Err(Error::Kdf(_))));
        let memory = kdf_memory(2048).unwrap();
        assert_eq!(memory.len(), 2048);
        assert!(
            memory
                .iter()
                .all(|block| AsRef::<[u64]>::as_ref(block).iter().all(|&w| w == 0))
        );
    }

    #[test]
    fn subkeys_are_distinct() {
        let keys = MasterKey::from_bytes([9; 32]).derive();
        assert_ne!(keys.id_key.expose(), keys.sealing_key.expose());
        assert_ne!(keys.sealing_key.expose(), keys.audit_key.expose());
    }

    #[test]
    fn ring_slot_round_trip_and_checks() {
        let repo = RepoId([1; 32]);
        let master = MasterKey::from_bytes([9; 32]);
        let epoch0 = KeyRing::from_master(&master);
        // A never-rotated ring is stored as a version-1 slot.
        let v1 = KeySlot::wrap_ring(&epoch0, b"pw", KdfParams::insecure_for_tests(), &repo, 0, "a".into()).unwrap();
        assert_eq!(v1.epoch, None);
        assert_eq!(v1.encode().unwrap()[4], 1);
        assert!(v1.unwrap_ring(b"pw", &repo).unwrap() == epoch0);
        let ring = epoch0.rotated().unwrap().rotated().unwrap();
        let slot = KeySlot::wrap_ring(&ring, b"pw", KdfParams::insecure_for_tests(), &repo, 5, "b".into()).unwrap();
        let bytes = slot.encode().unwrap();
        assert_eq!(&bytes[..5], b"NFRK\x02");
        let decoded = KeySlot::decode(&bytes).unwrap();
        assert_eq!(decoded, slot);
        assert_eq!(decoded.claimed_epoch(), 2);
        assert!(decoded.unwrap_ring(b"pw", &repo).unwrap() == ring);
        assert!(matches!(decoded.unwrap_ring(b"no", &repo), Err(Error::WrongPassword)));
        assert!(matches!(decoded.unwrap_key(b"pw", &repo), Err(Error::Malformed { .. })));
        // A clear epoch that differs from the ring's is refused once opened.
        let mut lying = decoded.clone();
        lying.epoch = Some(7);
        assert!(matches!(lying.unwrap_ring(b"pw", &repo), Err(Error::Malformed { .. })));
        // A version byte flipped between 1 and 2 never opens as the other kind.
        let mut as_v1 = bytes.clone();
        as_v1[4] = 1;
        if let Ok(slot) = KeySlot::decode(&as_v1) {
            assert!(slot.unwrap_key(b"pw", &repo).is_err());
        }
        let mut v1_bytes = v1.encode().unwrap();
        v1_bytes[4] = 2;
        if let Ok(slot) = KeySlot::decode(&v1_bytes) {
            assert!(slot.unwrap_ring(b"pw", &repo).is_err());
        }
        let mut v3 = bytes;
        v3[4] = 3;
        assert!(matches!(
            KeySlot::decode(&v3),
            Err(Error::UnsupportedVersion { version: 3, .. })
        ));
    }

    #[test]
    fn corrupt_header_detected() {
        let master = MasterKey::from_bytes([9; 32]);
        let slot = KeySlot::wrap(
            &master,
            b"pw",
            KdfParams::insecure_for_tests(),
            &RepoId([1; 32]),
            0,
            String::new(),
        )
        .unwrap();
        let mut bytes = slot.encode().unwrap();
        bytes[0] = b'X';
        assert!(matches!(KeySlot::decode(&bytes), Err(Error::BadMagic { .. })));
    }
}
