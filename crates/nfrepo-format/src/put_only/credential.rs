//! The put-only credential file and its slot under `keys/`.
//!
//! A credential file (`NFRW`) is what `nfrepo key add --put-only` gives a
//! backup host instead of a password. It is not sealed: the file is the
//! secret (mode 0600), like an SSH key without a passphrase. It holds
//!
//! - the id key and chunker seed, so that the host names and cuts chunks as
//!   every other writer does and deduplication works. What they reveal: a
//!   host can tell whether a chunk it *has* is stored (its blob id is in an
//!   index delta it can read), that is equality of chunks, never the
//!   contents of one it does not have;
//! - the index key of one epoch, which opens index deltas sealed under it
//!   (blob ids, pack ids, lengths) and nothing else;
//! - the repository public key of that epoch (carried, not read from
//!   storage, so a substituted `keys/public` cannot redirect it), the
//!   cipher and the config body (chunker profiles, pack size, zstd level,
//!   object lock), which the host cannot read from the sealed config;
//! - the id of its slot (`keys/<id>`) and a random token whose derived check
//!   the slot holds: removing the slot revokes the credential.
//!
//! It holds no key that opens a pack, a tree or a snapshot.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{KeyRef, ReferenceKeys};
use crate::config::{body_plaintext, parse_body};
use crate::envelope::{HEADER_LEN, KEY_SLOT_MAGIC, from_postcard, to_postcard, write_header};
use crate::public::constant_time_eq;
use crate::seal::{Cipher, Sealer, SecretKey};
use crate::{ConfigBody, Error, KeyId, RepoId, RepoKeys, RepoPublicKey, Result};

/// Magic of a put-only credential file.
pub const CREDENTIAL_MAGIC: [u8; 4] = *b"NFRW";
/// Version byte of a credential slot: an `NFRK` key slot of version 3, so
/// that password openers (and nfrepo versions before put-only credentials)
/// skip it as a slot of an unknown version.
pub const CREDENTIAL_SLOT_VERSION: u8 = 3;

const CONTEXT_CHECK: &str = "nfrepo 2026-12 put-only credential check";
const CHECKSUM_LEN: usize = 32;

/// A put-only credential (module docs).
#[derive(Clone)]
pub struct PutOnlyCredential {
    /// The repository it writes to.
    pub repo: RepoId,
    /// The name of its slot under `keys/`.
    pub slot: KeyId,
    /// Who it was issued for (`--label`), shown by `key list`.
    pub label: String,
    /// When it was issued, Unix seconds.
    pub created: i64,
    /// The key epoch whose public key and index key it holds.
    pub epoch: u32,
    /// The repository public key of that epoch.
    pub public: RepoPublicKey,
    /// The repository's cipher.
    pub cipher: Cipher,
    /// The repository's config body.
    pub config: ConfigBody,
    /// The blob id key.
    pub id_key: SecretKey,
    /// The chunker seed.
    pub chunker_seed: u64,
    /// The index key of `epoch`.
    pub index_key: SecretKey,
    token: SecretKey,
}

impl std::fmt::Debug for PutOnlyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutOnlyCredential")
            .field("repo", &self.repo.short())
            .field("slot", &self.slot.short())
            .field("label", &self.label)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// postcard body of the credential file, fields in this order.
#[derive(Serialize, Deserialize)]
struct CredentialBody {
    repo: RepoId,
    slot: KeyId,
    label: String,
    created: i64,
    epoch: u32,
    public: [u8; 32],
    cipher: u8,
    config: Vec<u8>,
    id_key: [u8; 32],
    chunker_seed: u64,
    index_key: [u8; 32],
    token: [u8; 32],
}

impl Drop for CredentialBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.id_key.zeroize();
        self.index_key.zeroize();
        self.token.zeroize();
    }
}

/// The slot of a put-only credential (`keys/<id>`): what lets the
/// credential's holder in, and what `key remove` deletes to revoke it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSlot {
    /// The key epoch the credential was issued for.
    pub epoch: u32,
    /// When it was issued, Unix seconds.
    pub created: i64,
    /// Who it was issued for.
    pub label: String,
    /// The public key the credential seals to.
    pub public: RepoPublicKey,
    /// `derive_key("nfrepo 2026-12 put-only credential check", token ||
    /// repository id)`: the credential's token must derive it.
    pub check: [u8; 32],
}

impl PutOnlyCredential {
    /// Issues a credential for the current epoch of `keys`, and its slot.
    ///
    /// # Errors
    /// [`Error::Random`] if no randomness could be drawn; [`Error::MissingKey`]
    /// if `keys` lack the current epoch's key pair.
    pub fn issue(
        repo: RepoId,
        keys: &RepoKeys,
        cipher: Cipher,
        config: &ConfigBody,
        label: &str,
        created: i64,
    ) -> Result<(Self, CredentialSlot)> {
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).map_err(|_| Error::Random)?;
        let issued = Self::issue_with(repo, keys, cipher, config, label, created, KeyId::random()?, token);
        zeroize::Zeroize::zeroize(&mut token);
        issued
    }

    /// [`Self::issue`] with a chosen slot id and token: only for test vectors.
    ///
    /// # Errors
    /// As [`Self::issue`].
    #[doc(hidden)]
    #[expect(clippy::too_many_arguments, reason = "test-vector constructor mirroring issue")]
    pub fn issue_with(
        repo: RepoId,
        keys: &RepoKeys,
        cipher: Cipher,
        config: &ConfigBody,
        label: &str,
        created: i64,
        slot: KeyId,
        token: [u8; 32],
    ) -> Result<(Self, CredentialSlot)> {
        let missing = || Error::MissingKey {
            what: "put-only credential",
            detail: format!("no keys of the current epoch {}", keys.epoch),
        };
        let public = keys.reference_keys.key_pair(keys.epoch).ok_or_else(missing)?.public();
        let index_key = keys.reference_keys.index_key(keys.epoch).ok_or_else(missing)?.clone();
        let credential = Self {
            repo,
            slot,
            label: label.to_owned(),
            created,
            epoch: keys.epoch,
            public,
            cipher,
            config: config.clone(),
            id_key: keys.id_key.clone(),
            chunker_seed: keys.chunker_seed,
            index_key,
            token: SecretKey::from_bytes(token),
        };
        let slot = CredentialSlot {
            epoch: keys.epoch,
            created,
            label: label.to_owned(),
            public,
            check: credential.check(),
        };
        Ok((credential, slot))
    }

    fn check(&self) -> [u8; 32] {
        let mut material = [0u8; 64];
        let (token, repo) = material.split_at_mut(32);
        token.copy_from_slice(self.token.expose());
        repo.copy_from_slice(&self.repo.0);
        let check = blake3::derive_key(CONTEXT_CHECK, &material);
        zeroize::Zeroize::zeroize(&mut material);
        check
    }

    /// Checks that `slot` (read from `keys/<self.slot>`) is this
    /// credential's: same epoch and public key, and the token derives its
    /// check. A credential whose slot is missing or fails this is revoked.
    ///
    /// # Errors
    /// [`Error::Authentication`] if the slot is another credential's.
    pub fn check_slot(&self, slot: &CredentialSlot) -> Result<()> {
        if slot.epoch != self.epoch || slot.public != self.public || !constant_time_eq(&slot.check, &self.check()) {
            return Err(Error::Authentication {
                what: "credential slot",
            });
        }
        Ok(())
    }

    /// What resolves the host's key references: the index key of its epoch.
    #[must_use]
    pub fn reference_keys(&self) -> Arc<ReferenceKeys> {
        Arc::new(ReferenceKeys::index_only(self.epoch, self.index_key.clone()))
    }

    /// Begins a backup session ([`super::begin_session`]): a sealer under a
    /// fresh session key, which this credential can never derive again.
    ///
    /// # Errors
    /// As [`super::begin_session`].
    pub fn begin_session(&self) -> Result<Sealer> {
        super::begin_session(&self.public, self.epoch, self.cipher, self.reference_keys())
    }

    /// The sealer of the index key: opens and writes (version-2) index deltas.
    #[must_use]
    pub fn index_sealer(&self) -> Sealer {
        Sealer::new(self.cipher, self.index_key.clone())
            .with_epoch(self.epoch)
            .with_reference(KeyRef::Index { epoch: self.epoch })
            .with_reference_keys(self.reference_keys())
    }

    /// The credential file: `NFRW`, version, postcard body, BLAKE3 of the
    /// bytes before it (so a damaged file is told from a revoked one).
    ///
    /// # Errors
    /// Only if postcard fails, which it does not for this type.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = CredentialBody {
            repo: self.repo,
            slot: self.slot,
            label: self.label.clone(),
            created: self.created,
            epoch: self.epoch,
            public: self.public.0,
            cipher: self.cipher.code(),
            config: body_plaintext(&self.config)?,
            id_key: *self.id_key.expose(),
            chunker_seed: self.chunker_seed,
            index_key: *self.index_key.expose(),
            token: *self.token.expose(),
        };
        let mut out = Vec::new();
        write_header(&mut out, CREDENTIAL_MAGIC);
        out.extend_from_slice(&to_postcard("credential", &body)?);
        let sum = crate::content_hash(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Parses a credential file.
    ///
    /// # Errors
    /// [`Error::BadMagic`] for another kind of file, [`Error::UnsupportedVersion`],
    /// [`Error::HashMismatch`] for a damaged file, [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "credential";
        let cut = bytes
            .len()
            .checked_sub(CHECKSUM_LEN)
            .filter(|cut| *cut >= HEADER_LEN)
            .ok_or_else(|| Error::malformed(what, "shorter than its header and checksum"))?;
        let (content, sum) = bytes.split_at(cut);
        let rest = crate::envelope::read_header(what, CREDENTIAL_MAGIC, content)?;
        let actual = crate::content_hash(content);
        if actual != sum {
            return Err(Error::HashMismatch {
                what,
                expected: hex::encode(sum),
                actual: hex::encode(actual),
            });
        }
        let body: CredentialBody = from_postcard(what, rest)?;
        let public = RepoPublicKey(body.public);
        Ok(Self {
            repo: body.repo,
            slot: body.slot,
            label: body.label.clone(),
            created: body.created,
            epoch: body.epoch,
            public,
            cipher: Cipher::from_code(body.cipher)?,
            config: parse_body(&body.config)?,
            id_key: SecretKey::from_bytes(body.id_key),
            chunker_seed: body.chunker_seed,
            index_key: SecretKey::from_bytes(body.index_key),
            token: SecretKey::from_bytes(body.token),
        })
    }
}

impl CredentialSlot {
    /// `NFRK`, version 3, postcard body.
    ///
    /// # Errors
    /// Only if postcard fails, which it does not for this type.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = KEY_SLOT_MAGIC.to_vec();
        out.push(CREDENTIAL_SLOT_VERSION);
        out.extend_from_slice(&to_postcard("credential slot", self)?);
        Ok(out)
    }

    /// Parses a credential slot.
    ///
    /// # Errors
    /// [`Error::BadMagic`]; [`Error::UnsupportedVersion`] for a password
    /// slot (version 1 or 2) or an unknown version; [`Error::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "credential slot";
        let (head, rest) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or_else(|| Error::malformed(what, "shorter than its header"))?;
        if head.get(..4) != Some(&KEY_SLOT_MAGIC[..]) {
            return Err(Error::BadMagic { what });
        }
        match head.get(4) {
            Some(&CREDENTIAL_SLOT_VERSION) => from_postcard(what, rest),
            Some(&version) => Err(Error::UnsupportedVersion { what, version }),
            None => Err(Error::malformed(what, "shorter than its header")),
        }
    }

    /// Whether stored key-slot bytes are a credential slot (by version byte).
    #[must_use]
    pub fn is_credential_slot(bytes: &[u8]) -> bool {
        bytes.get(..4) == Some(&KEY_SLOT_MAGIC[..]) && bytes.get(4) == Some(&CREDENTIAL_SLOT_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    fn issued() -> (PutOnlyCredential, CredentialSlot) {
        let keys = MasterKey::from_bytes([7; 32]).derive();
        PutOnlyCredential::issue(
            RepoId([2; 32]),
            &keys,
            Cipher::Aes256Gcm,
            &ConfigBody::default(),
            "host-a",
            1_700_000_000,
        )
        .unwrap()
    }

    #[test]
    fn credential_round_trip_and_damage() {
        let (credential, slot) = issued();
        let bytes = credential.encode().unwrap();
        let back = PutOnlyCredential::decode(&bytes).unwrap();
        assert_eq!(back.encode().unwrap(), bytes);
        back.check_slot(&slot).unwrap();
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(matches!(
            PutOnlyCredential::decode(&damaged),
            Err(Error::HashMismatch { .. })
        ));
        assert!(matches!(
            PutOnlyCredential::decode(&bytes[..30]),
            Err(Error::HashMismatch { .. } | Error::Malformed { .. })
        ));
        assert!(format!("{credential:?}").contains("host-a"));
        assert!(!format!("{credential:?}").contains(&hex::encode(credential.index_key.expose())));
    }

    #[test]
    fn another_credentials_slot_is_refused() {
        let (credential, slot) = issued();
        let (_, other) = issued();
        assert!(matches!(
            credential.check_slot(&other),
            Err(Error::Authentication { .. })
        ));
        let bytes = slot.encode().unwrap();
        assert!(CredentialSlot::is_credential_slot(&bytes));
        assert_eq!(CredentialSlot::decode(&bytes).unwrap(), slot);
        // A password slot reader skips it as an unknown version.
        assert!(matches!(
            crate::KeySlot::decode(&bytes),
            Err(Error::UnsupportedVersion { version: 3, .. })
        ));
    }
}
