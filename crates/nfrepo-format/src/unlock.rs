//! A cached unlock: the wrapping key of one key slot, kept in one host's
//! cache directory so that the next runs skip argon2id (unlock.md).
//!
//! Opening a repository costs one argon2id derivation per key slot tried
//! (64 MiB, three passes: about a quarter to half a second). A host that
//! backs up every five minutes pays it hundreds of times a day. A cached
//! unlock pays it once per expiry: the slot's wrapping key (the argon2id
//! output, not the key ring) is sealed under a much cheaper argon2id of the
//! same password with the host's identity as argon2's secret input, so the
//! file opens only with the password, only on the host that wrote it, and
//! only until its expiry. The key ring is still unwrapped from the stored
//! slot on every open, so changing or removing the slot, or a rotation,
//! makes the cached key useless.
//!
//! This module is bytes only: sealing, opening, encoding. When the cache is
//! used, refreshed and thrown away is `nfrepo_engine::unlock_cache`'s job.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::envelope::{UNLOCK_CACHE_MAGIC, from_postcard, read_header, to_postcard, write_header};
use crate::seal::{Aad, Cipher, SealedKind, Sealer, SecretKey};
use crate::{Error, KdfParams, KeyId, RepoId, Result};

/// What a cached unlock holds once opened.
#[derive(Clone, Debug)]
pub struct CachedUnlock {
    /// The key slot whose wrapping key this is.
    pub slot: KeyId,
    /// That slot's argon2id parameters when the key was derived.
    pub slot_kdf: KdfParams,
    /// That slot's salt when the key was derived: a slot rewritten under
    /// its old name (`key passwd`, `key rotate`) has a new salt, and the
    /// cached key no longer applies.
    pub slot_salt: [u8; 32],
    /// `argon2id(password, slot salt)`: opens the slot (keys.md, "Wrapping").
    pub wrapping_key: SecretKey,
    /// When it was cached (Unix seconds).
    pub created: i64,
    /// After this (Unix seconds) the cache is not used.
    pub expires: i64,
}

/// The postcard plaintext of a cached unlock.
#[derive(Serialize, Deserialize)]
struct Body {
    slot: KeyId,
    slot_kdf: KdfParams,
    slot_salt: [u8; 32],
    wrapping_key: [u8; 32],
    created: i64,
    expires: i64,
}

/// A cached unlock as stored: the clear parameters of its own argon2id and
/// the sealed [`CachedUnlock`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnlockCacheFile {
    /// argon2id parameters of the cache's key (not of the slot).
    pub kdf: KdfParams,
    /// argon2id salt of the cache's key, random per file.
    pub salt: [u8; 32],
    /// The [`CachedUnlock`] sealed with XChaCha20-Poly1305.
    pub sealed: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct FileBody {
    kdf: KdfParams,
    salt: [u8; 32],
    sealed: Vec<u8>,
}

impl UnlockCacheFile {
    /// The cache key's default cost: 8 MiB, one pass, one lane, about a
    /// fiftieth of a key slot's default. A guess at the password against a
    /// stolen cache file still costs a memory-hard derivation.
    pub const DEFAULT_KDF: KdfParams = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    /// The largest cost a reader accepts for a cache key: a planted file
    /// must not make every run slow.
    pub const MAX_KDF: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };

    /// Seals `entry` for `repo` under `argon2id(password, fresh salt,
    /// secret = host)` with `kdf`.
    ///
    /// # Errors
    /// [`Error::Kdf`] for parameters above [`Self::MAX_KDF`] or that argon2
    /// refuses; [`Error::Random`] if no salt could be drawn.
    pub fn seal(entry: &CachedUnlock, password: &[u8], host: &[u8; 32], repo: &RepoId, kdf: KdfParams) -> Result<Self> {
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|_| Error::Random)?;
        let sealer = Sealer::new(Cipher::XChaCha20Poly1305, cache_key(kdf, password, &salt, host)?);
        let body = Body {
            slot: entry.slot,
            slot_kdf: entry.slot_kdf,
            slot_salt: entry.slot_salt,
            wrapping_key: *entry.wrapping_key.expose(),
            created: entry.created,
            expires: entry.expires,
        };
        let plain = Zeroizing::new(to_postcard("unlock cache", &body)?);
        let Body { mut wrapping_key, .. } = body;
        zeroize::Zeroize::zeroize(&mut wrapping_key);
        let sealed = sealer.seal(Aad::object(SealedKind::UnlockCache, repo.0), &plain)?;
        Ok(Self { kdf, salt, sealed })
    }

    /// Opens the cached unlock with `password` on the host `host`.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] when the tag does not verify: another
    /// password, another host, another repository, or a changed file;
    /// [`Error::Kdf`] for parameters above [`Self::MAX_KDF`];
    /// [`Error::Malformed`] for a plaintext that does not decode or whose
    /// expiry is not after its creation.
    pub fn open(&self, password: &[u8], host: &[u8; 32], repo: &RepoId) -> Result<CachedUnlock> {
        let sealer = Sealer::new(
            Cipher::XChaCha20Poly1305,
            cache_key(self.kdf, password, &self.salt, host)?,
        );
        let plain = Zeroizing::new(
            sealer
                .open(
                    "unlock cache",
                    Aad::object(SealedKind::UnlockCache, repo.0),
                    &self.sealed,
                )
                .map_err(|_| Error::WrongPassword)?,
        );
        let mut body: Body = from_postcard("unlock cache", &plain)?;
        let entry = CachedUnlock {
            slot: body.slot,
            slot_kdf: body.slot_kdf,
            slot_salt: body.slot_salt,
            wrapping_key: SecretKey::from_bytes(body.wrapping_key),
            created: body.created,
            expires: body.expires,
        };
        zeroize::Zeroize::zeroize(&mut body.wrapping_key);
        if entry.expires <= entry.created {
            return Err(Error::malformed("unlock cache", "expires before it was made"));
        }
        Ok(entry)
    }

    /// `NFRU`, version 1, postcard body.
    ///
    /// # Errors
    /// Never in practice; postcard cannot fail on these types.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.sealed.len() + 48);
        write_header(&mut out, UNLOCK_CACHE_MAGIC);
        out.extend(to_postcard(
            "unlock cache",
            &FileBody {
                kdf: self.kdf,
                salt: self.salt,
                sealed: self.sealed.clone(),
            },
        )?);
        Ok(out)
    }

    /// Parses stored bytes without opening them.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let body: FileBody = from_postcard("unlock cache", read_header("unlock cache", UNLOCK_CACHE_MAGIC, bytes)?)?;
        Ok(Self {
            kdf: body.kdf,
            salt: body.salt,
            sealed: body.sealed,
        })
    }
}

fn cache_key(kdf: KdfParams, password: &[u8], salt: &[u8; 32], host: &[u8; 32]) -> Result<SecretKey> {
    let max = UnlockCacheFile::MAX_KDF;
    if kdf.memory_kib > max.memory_kib || kdf.iterations > max.iterations || kdf.parallelism > max.parallelism {
        return Err(Error::Kdf(format!("refusing unlock cache argon2id parameters {kdf:?}")));
    }
    kdf.derive_with_secret(password, salt, host)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a panic is a test failure"
    )]

    use super::*;

    const HOST: [u8; 32] = [7; 32];
    const REPO: RepoId = RepoId([9; 32]);

    fn entry() -> CachedUnlock {
        CachedUnlock {
            slot: KeyId([1; 32]),
            slot_kdf: KdfParams::default(),
            slot_salt: [2; 32],
            wrapping_key: SecretKey::from_bytes([3; 32]),
            created: 1_700_000_000,
            expires: 1_700_003_600,
        }
    }

    fn sealed() -> UnlockCacheFile {
        UnlockCacheFile::seal(&entry(), b"pw", &HOST, &REPO, KdfParams::insecure_for_tests()).unwrap()
    }

    #[test]
    fn round_trips_through_bytes_and_opens_with_the_password_on_the_host() {
        let file = sealed();
        let decoded = UnlockCacheFile::decode(&file.encode().unwrap()).unwrap();
        assert_eq!(decoded, file);
        let opened = decoded.open(b"pw", &HOST, &REPO).unwrap();
        let want = entry();
        assert_eq!(
            (
                opened.slot,
                opened.slot_kdf,
                opened.slot_salt,
                opened.created,
                opened.expires
            ),
            (want.slot, want.slot_kdf, want.slot_salt, want.created, want.expires)
        );
        assert_eq!(opened.wrapping_key.expose(), want.wrapping_key.expose());
    }

    #[test]
    fn another_password_host_or_repository_does_not_open_it() {
        let file = sealed();
        for (password, host, repo) in [
            (&b"pw2"[..], HOST, REPO),
            (&b"pw"[..], [8; 32], REPO),
            (&b"pw"[..], HOST, RepoId([10; 32])),
        ] {
            assert!(matches!(file.open(password, &host, &repo), Err(Error::WrongPassword)));
        }
    }

    #[test]
    fn a_changed_byte_does_not_open() {
        let mut file = sealed();
        file.sealed[30] ^= 1;
        assert!(matches!(file.open(b"pw", &HOST, &REPO), Err(Error::WrongPassword)));
        let mut file = sealed();
        file.salt[0] ^= 1;
        assert!(matches!(file.open(b"pw", &HOST, &REPO), Err(Error::WrongPassword)));
    }

    #[test]
    fn parameters_above_the_limit_are_refused_before_deriving() {
        let mut file = sealed();
        file.kdf.memory_kib = UnlockCacheFile::MAX_KDF.memory_kib + 1;
        assert!(matches!(file.open(b"pw", &HOST, &REPO), Err(Error::Kdf(_))));
        let mut big = UnlockCacheFile::MAX_KDF;
        big.iterations += 1;
        assert!(matches!(
            UnlockCacheFile::seal(&entry(), b"pw", &HOST, &REPO, big),
            Err(Error::Kdf(_))
        ));
    }

    #[test]
    fn an_expiry_before_creation_is_malformed() {
        let mut bad = entry();
        bad.expires = bad.created;
        let file = UnlockCacheFile::seal(&bad, b"pw", &HOST, &REPO, KdfParams::insecure_for_tests()).unwrap();
        assert!(matches!(file.open(b"pw", &HOST, &REPO), Err(Error::Malformed { .. })));
    }

    #[test]
    fn another_magic_is_refused() {
        let mut bytes = sealed().encode().unwrap();
        bytes[3] = b'K';
        assert!(matches!(UnlockCacheFile::decode(&bytes), Err(Error::BadMagic { .. })));
    }
}
