//! The repository key pair, and sealing a message to the repository's public key.
//!
//! Every repository has one X25519 key pair, derived from the master key
//! (keys.md, "Repository key pair"): anyone who holds the public key can
//! seal a message that only a holder of the master key can open. Writers
//! that hold no key use it: an audit entry for a wrong password, and (next)
//! put-only backup credentials.
//!
//! A message sealed to the public key:
//!
//! ```text
//! ephemeral public key (32) || nonce (24) || ciphertext || tag (16)
//! ```
//!
//! The writer draws an ephemeral X25519 key pair per message, computes the
//! shared secret with the repository public key, derives a one-message key
//! `blake3::derive_key("nfrepo 2026-12 public seal key", shared || ephemeral
//! public || repository public)`, and seals with the repository's AEAD and
//! the usual associated data (sealing.md). The ephemeral secret is dropped
//! at once: the writer cannot open what it sealed.
//!
//! What it does **not** give: authenticity of the writer. Anyone with the
//! public key can seal; authenticity comes from elsewhere (the audit MAC,
//! a content hash). A shared secret that is all zeros (a low-order public
//! key, which a genuine key pair never has) is refused on both sides.

use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::seal::{Aad, Cipher, SEAL_OVERHEAD, Sealer, SecretKey};
use crate::{Error, MasterKey, RepoId, Result};

const CONTEXT_KEY_PAIR: &str = "nfrepo 2026-12 repository x25519 secret";
const CONTEXT_SEAL_KEY: &str = "nfrepo 2026-12 public seal key";
const PUBLIC_OBJECT_MAC_DOMAIN: &[u8] = b"nfrepo public key object";

/// Bytes a message sealed to the public key adds to its plaintext (72).
pub const PUBLIC_SEAL_OVERHEAD: usize = 32 + SEAL_OVERHEAD;

/// Magic of the public key object (`keys/public`).
pub const PUBLIC_KEY_MAGIC: [u8; 4] = *b"NFRU";

/// Length of the public key object.
pub const PUBLIC_KEY_OBJECT_LEN: usize = 5 + 32 + 32 + 32;

/// The repository's X25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoPublicKey(pub [u8; 32]);

/// The repository's X25519 key pair, derived from the master key.
#[derive(Clone)]
pub struct RepoKeyPair {
    secret: StaticSecret,
    public: RepoPublicKey,
}

impl std::fmt::Debug for RepoKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoKeyPair")
            .field("public", &hex::encode(self.public.0))
            .finish_non_exhaustive()
    }
}

impl RepoKeyPair {
    /// The key pair of the repository whose master key is `master`:
    /// the secret is `blake3::derive_key("nfrepo 2026-12 repository x25519
    /// secret", master)`, clamped by X25519 as usual.
    #[must_use]
    pub fn derive(master: &MasterKey) -> Self {
        Self::from_subkey(master.derive_subkey(CONTEXT_KEY_PAIR))
    }

    /// The key pair of one key epoch (keys.md, "Key epochs"): derived from
    /// the epoch's secret as [`RepoKeyPair::derive`] does from the master
    /// key, which is epoch 0's secret, so both agree on a repository that
    /// never rotated.
    #[must_use]
    pub fn from_epoch_secret(epoch_secret: &[u8; 32]) -> Self {
        Self::from_subkey(blake3::derive_key(CONTEXT_KEY_PAIR, epoch_secret))
    }

    fn from_subkey(mut bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        let public = RepoPublicKey(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The X25519 shared secret with `peer`.
    pub(crate) fn agree(&self, peer: &PublicKey) -> x25519_dalek::SharedSecret {
        self.secret.diffie_hellman(peer)
    }

    /// The public half.
    #[must_use]
    pub const fn public(&self) -> RepoPublicKey {
        self.public
    }

    /// Opens a message sealed to this key pair's public key.
    ///
    /// # Errors
    /// [`Error::Malformed`] if it is shorter than [`PUBLIC_SEAL_OVERHEAD`];
    /// [`Error::Authentication`] if the tag does not verify (altered, sealed
    /// to another key, or under other associated data) or the ephemeral key
    /// is of low order.
    pub fn open(&self, what: &'static str, cipher: Cipher, aad: Aad, sealed: &[u8]) -> Result<Vec<u8>> {
        let (ephemeral, rest) = sealed
            .split_at_checked(32)
            .filter(|(_, rest)| rest.len() >= SEAL_OVERHEAD)
            .ok_or_else(|| {
                Error::malformed(
                    what,
                    format!(
                        "message sealed to the public key of {} bytes is too short",
                        sealed.len()
                    ),
                )
            })?;
        let mut ephemeral_bytes = [0u8; 32];
        ephemeral_bytes.copy_from_slice(ephemeral);
        let shared = self.secret.diffie_hellman(&PublicKey::from(ephemeral_bytes));
        if !shared.was_contributory() {
            return Err(Error::Authentication { what });
        }
        let key = message_key(shared.as_bytes(), &ephemeral_bytes, &self.public.0);
        Sealer::new(cipher, key).open(what, aad, rest)
    }
}

impl RepoPublicKey {
    /// Seals `plaintext` to this public key with a fresh ephemeral key and nonce.
    ///
    /// # Errors
    /// [`Error::Random`] if no randomness could be drawn; [`Error::Malformed`]
    /// if this "public key" is of low order (no genuine key pair has one).
    pub fn seal(&self, cipher: Cipher, aad: Aad, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut ephemeral = [0u8; 32];
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut ephemeral).map_err(|_| Error::Random)?;
        getrandom::fill(&mut nonce).map_err(|_| Error::Random)?;
        let sealed = self.seal_with(cipher, aad, ephemeral, nonce, plaintext);
        ephemeral.zeroize();
        sealed
    }

    /// Seals with a caller-chosen ephemeral secret and nonce. Only for test
    /// vectors: reusing an ephemeral secret links messages and, with a
    /// reused nonce, destroys confidentiality.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a low-order public key.
    #[doc(hidden)]
    pub fn seal_with(
        &self,
        cipher: Cipher,
        aad: Aad,
        ephemeral: [u8; 32],
        nonce: [u8; 24],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let secret = StaticSecret::from(ephemeral);
        let ephemeral_public = PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&PublicKey::from(self.0));
        if !shared.was_contributory() {
            return Err(Error::malformed(
                "repository public key",
                "a low-order point, not a public key",
            ));
        }
        let key = message_key(shared.as_bytes(), &ephemeral_public, &self.0);
        let mut out = Vec::with_capacity(plaintext.len() + PUBLIC_SEAL_OVERHEAD);
        out.extend_from_slice(&ephemeral_public);
        Sealer::new(cipher, key).seal_with_nonce_into(aad, nonce, plaintext, &mut out);
        Ok(out)
    }

    /// The public key object stored at `keys/public` (keys.md): `NFRU`,
    /// version, the repository id, the public key, and a keyed BLAKE3 MAC
    /// under the audit key, so that a key holder can tell a substituted key.
    #[must_use]
    pub fn encode_object(&self, repo: &RepoId, audit_key: &SecretKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(PUBLIC_KEY_OBJECT_LEN);
        crate::envelope::write_header(&mut out, PUBLIC_KEY_MAGIC);
        out.extend_from_slice(&repo.0);
        out.extend_from_slice(&self.0);
        let mac = object_mac(audit_key, &out);
        out.extend_from_slice(&mac);
        out
    }

    /// Reads the public key object without any key: checks its header and
    /// that it names `repo`, but cannot check its MAC (see
    /// [`RepoPublicKey::verify_object`]).
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Malformed`]
    /// for a wrong length or another repository's key.
    pub fn decode_object(bytes: &[u8], repo: &RepoId) -> Result<Self> {
        let what = "public key object";
        let rest = crate::envelope::read_header(what, PUBLIC_KEY_MAGIC, bytes)?;
        if bytes.len() != PUBLIC_KEY_OBJECT_LEN {
            return Err(Error::malformed(
                what,
                format!("{} bytes, expected {PUBLIC_KEY_OBJECT_LEN}", bytes.len()),
            ));
        }
        let (stored_repo, rest) = rest
            .split_at_checked(32)
            .ok_or_else(|| Error::malformed(what, "short"))?;
        let (public, _) = rest
            .split_at_checked(32)
            .ok_or_else(|| Error::malformed(what, "short"))?;
        if stored_repo != repo.0 {
            return Err(Error::malformed(what, "it names another repository"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(public);
        Ok(Self(key))
    }

    /// Checks the object's MAC under `audit_key` and that it holds `self`.
    ///
    /// # Errors
    /// What [`RepoPublicKey::decode_object`] returns; [`Error::Authentication`]
    /// if the MAC does not verify or the key is not this one.
    pub fn verify_object(&self, bytes: &[u8], repo: &RepoId, audit_key: &SecretKey) -> Result<()> {
        let stored = Self::decode_object(bytes, repo)?;
        let (body, mac) = bytes
            .split_at_checked(PUBLIC_KEY_OBJECT_LEN - 32)
            .ok_or_else(|| Error::malformed("public key object", "short"))?;
        let expected = object_mac(audit_key, body);
        if stored != *self || !constant_time_eq(mac, &expected) {
            return Err(Error::Authentication {
                what: "public key object",
            });
        }
        Ok(())
    }
}

fn message_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> SecretKey {
    agreed_key(CONTEXT_SEAL_KEY, shared, ephemeral, recipient)
}

/// `blake3::derive_key(context, shared || ephemeral || recipient)`: the key
/// both sides of an X25519 agreement derive (a message's, or a put-only
/// session's).
pub(crate) fn agreed_key(context: &str, shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> SecretKey {
    let mut material = [0u8; 96];
    let (a, rest) = material.split_at_mut(32);
    let (b, c) = rest.split_at_mut(32);
    a.copy_from_slice(shared);
    b.copy_from_slice(ephemeral);
    c.copy_from_slice(recipient);
    let key = SecretKey::from_bytes(blake3::derive_key(context, &material));
    material.zeroize();
    key
}

fn object_mac(audit_key: &SecretKey, body: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(audit_key.expose());
    hasher.update(PUBLIC_OBJECT_MAC_DOMAIN);
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

/// Compares two MACs without an early exit.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SealedKind;

    fn pair() -> RepoKeyPair {
        RepoKeyPair::derive(&MasterKey::from_bytes([7; 32]))
    }

    #[test]
    fn round_trip_with_both_ciphers() {
        for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
            let aad = Aad::object(SealedKind::AuditEntry, [1; 32]);
            let sealed = pair().public().seal(cipher, aad, b"wrong password").unwrap();
            assert_eq!(sealed.len(), 14 + PUBLIC_SEAL_OVERHEAD);
            assert_eq!(pair().open("entry", cipher, aad, &sealed).unwrap(), b"wrong password");
        }
    }

    #[test]
    fn another_key_pair_aad_or_a_flipped_byte_fails() {
        let aad = Aad::object(SealedKind::AuditEntry, [1; 32]);
        let cipher = Cipher::XChaCha20Poly1305;
        let mut sealed = pair().public().seal(cipher, aad, b"x").unwrap();
        let other = RepoKeyPair::derive(&MasterKey::from_bytes([8; 32]));
        assert!(matches!(
            other.open("entry", cipher, aad, &sealed),
            Err(Error::Authentication { .. })
        ));
        let other_aad = Aad::object(SealedKind::AuditEntry, [2; 32]);
        assert!(matches!(
            pair().open("entry", cipher, other_aad, &sealed),
            Err(Error::Authentication { .. })
        ));
        sealed[3] ^= 1;
        assert!(matches!(
            pair().open("entry", cipher, aad, &sealed),
            Err(Error::Authentication { .. })
        ));
        assert!(matches!(
            pair().open("entry", cipher, aad, &[0; 71]),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let aad = Aad::object(SealedKind::AuditEntry, [1; 32]);
        assert!(matches!(
            RepoPublicKey([0; 32]).seal(Cipher::XChaCha20Poly1305, aad, b"x"),
            Err(Error::Malformed { .. })
        ));
        let mut forged = vec![0u8; 32];
        forged.extend_from_slice(&[0; 40]);
        assert!(matches!(
            pair().open("entry", Cipher::XChaCha20Poly1305, aad, &forged),
            Err(Error::Authentication { .. })
        ));
    }

    #[test]
    fn public_key_object_round_trip_and_substitution() {
        let master = MasterKey::from_bytes([7; 32]);
        let audit = master.derive().audit_key;
        let repo = RepoId([3; 32]);
        let object = pair().public().encode_object(&repo, &audit);
        assert_eq!(object.len(), PUBLIC_KEY_OBJECT_LEN);
        assert_eq!(RepoPublicKey::decode_object(&object, &repo).unwrap(), pair().public());
        pair().public().verify_object(&object, &repo, &audit).unwrap();
        assert!(matches!(
            RepoPublicKey::decode_object(&object, &RepoId([4; 32])),
            Err(Error::Malformed { .. })
        ));
        let forged = RepoKeyPair::derive(&MasterKey::from_bytes([9; 32]))
            .public()
            .encode_object(&repo, &SecretKey::from_bytes([0; 32]));
        assert!(matches!(
            pair().public().verify_object(&forged, &repo, &audit),
            Err(Error::Authentication { .. })
        ));
    }
}
