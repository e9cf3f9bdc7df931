//! Key material: the master secret, the subkeys derived from it, and key slots.
//!
//! A repository has one 32-byte master secret, drawn at `init` and never
//! stored in the clear. Each key slot (`keys/<id>`) wraps it under a key
//! derived with argon2id from one password, so passwords can be added,
//! changed and removed without re-encrypting any data.
//!
//! Subkeys come from BLAKE3's `derive_key` with one context string each, so
//! compromising one use (say, the chunker seed leaking through cut points)
//! reveals nothing about the others.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::envelope::{KEY_SLOT_MAGIC, from_postcard, read_header, to_postcard, write_header};
use crate::seal::{Aad, Cipher, SealedKind, Sealer, SecretKey};
use crate::{Error, RepoId, Result};

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
    /// Key of every sealed message.
    pub sealing_key: SecretKey,
    /// Key of the audit log's MACs.
    pub audit_key: SecretKey,
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

    /// A sealer for `cipher` under the sealing key.
    #[must_use]
    pub fn sealer(&self, cipher: Cipher) -> Sealer {
        Sealer::new(cipher, self.sealing_key.clone())
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
    /// 64 MiB, three passes, one lane: about half a second on the reference machine.
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
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
        // Refuse absurd stored parameters before allocating: a forged slot
        // must not make `open` allocate gigabytes.
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 64 || self.parallelism > 64 {
            return Err(Error::Kdf(format!("refusing argon2id parameters {self:?}")));
        }
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, salt, &mut out)
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let key = SecretKey::from_bytes(out);
        out.zeroize();
        Ok(key)
    }
}

/// One way into the repository: the master secret wrapped under a password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|_| Error::Random)?;
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, kdf.derive(password, &salt)?);
        let wrapped = sealer.seal(Aad::object(SealedKind::KeySlot, repo.0), master.0.expose())?;
        Ok(Self {
            kdf,
            salt,
            wrapped,
            created,
            label,
        })
    }

    /// Unwraps the master secret.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] if the password (or the slot) does not authenticate.
    pub fn unwrap_key(&self, password: &[u8], repo: &RepoId) -> Result<MasterKey> {
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, self.kdf.derive(password, &self.salt)?);
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

    /// `NFRK` header + postcard body.
    ///
    /// # Errors
    /// Never in practice; postcard cannot fail on these types.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        write_header(&mut out, KEY_SLOT_MAGIC);
        out.extend(to_postcard("key slot", self)?);
        Ok(out)
    }

    /// Parses a stored key slot.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`] or [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        from_postcard("key slot", read_header("key slot", KEY_SLOT_MAGIC, bytes)?)
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

    #[test]
    fn subkeys_are_distinct() {
        let keys = MasterKey::from_bytes([9; 32]).derive();
        assert_ne!(keys.id_key.expose(), keys.sealing_key.expose());
        assert_ne!(keys.sealing_key.expose(), keys.audit_key.expose());
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
