//! Authenticated encryption of every stored byte that is not public.
//!
//! A sealed message is laid out as:
//!
//! ```text
//! nonce (24 bytes, random) || ciphertext (len of plaintext) || tag (16 bytes)
//! ```
//!
//! Both ciphers use the same 40-byte overhead and the same layout:
//!
//! - **XChaCha20-Poly1305** uses the 24-byte nonce directly under the sealing key.
//!   Random 192-bit nonces never collide in practice.
//! - **AES-256-GCM** only has a 96-bit nonce, which limits one key to about 2^32
//!   random nonces. Instead of per-pack subkeys we derive a fresh subkey per
//!   message: `subkey = BLAKE3-keyed(sealing key, "nfrepo aes-gcm subkey" || nonce[0..12])`
//!   and use `nonce[12..24]` as the GCM nonce. Every message then has its own
//!   key, which keeps the scheme far from the nonce limits without the pack
//!   needing any header state (so one blob can be opened from an index entry
//!   alone).
//!
//! The associated data ([`Aad`]) binds the object kind and, for blobs, the
//! blob id. A blob moved to another id, or a tree sealed as data, fails to
//! open. What is **not** hidden: the length of each message and the number of
//! blobs per pack.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::put_only::{KeyRef, ReferenceKeys};
use crate::{Error, Result};

/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of the nonce a sealed message starts with.
pub const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8; 8] = b"nfrepo\x00\x01";

/// The AEAD a repository seals with; chosen at `init` and fixed for its life.
///
/// The `Default` is XChaCha20-Poly1305, the portable choice: fast and
/// constant-time in software on every CPU. `nfrepo init` instead picks
/// [`Cipher::preferred`] for the machine it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum Cipher {
    /// XChaCha20-Poly1305 with random 192-bit nonces.
    #[default]
    XChaCha20Poly1305,
    /// AES-256-GCM with a per-message derived subkey (see the module docs).
    Aes256Gcm,
}

impl Cipher {
    /// The byte that names the cipher in the repository config.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::XChaCha20Poly1305 => 1,
            Self::Aes256Gcm => 2,
        }
    }

    /// The cipher named by a config byte.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an unknown code.
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(Self::XChaCha20Poly1305),
            2 => Ok(Self::Aes256Gcm),
            other => Err(Error::malformed("config", format!("unknown cipher code {other}"))),
        }
    }

    /// The faster cipher on this CPU: AES-256-GCM where it computes AES and
    /// the GCM multiplication in hardware (x86-64 with AES-NI and PCLMULQDQ,
    /// AArch64 with its AES and PMULL instructions), else XChaCha20-Poly1305.
    ///
    /// Both give 256-bit keys and the same nonce margin (AES-256-GCM seals
    /// each message under a subkey derived from its random nonce, see the
    /// module docs); with hardware AES, AES-256-GCM opens and seals at more
    /// than twice the speed (format-spec/sealing.md, "Choosing a cipher").
    /// A repository keeps its cipher for life, so a repository made here
    /// and read on a CPU without hardware AES is read with constant-time
    /// software AES: correct, only slower.
    #[must_use]
    pub fn preferred() -> Self {
        if hardware_aes() {
            Self::Aes256Gcm
        } else {
            Self::XChaCha20Poly1305
        }
    }

    /// The name used on the command line and in `--json` output.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::XChaCha20Poly1305 => "xchacha20poly1305",
            Self::Aes256Gcm => "aes256gcm",
        }
    }
}

/// Whether this CPU has instructions for AES rounds and for the carry-less
/// multiplication GHASH needs (checked at run time).
fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// What a sealed message is; bound into its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
#[non_exhaustive]
pub enum SealedKind {
    /// A chunk of file or stream data.
    DataBlob = 1,
    /// A directory tree node.
    TreeBlob = 2,
    /// A content list (part of a file's chunk list).
    ContentListBlob = 3,
    /// A pack trailer.
    PackTrailer = 4,
    /// An index delta body.
    Index = 5,
    /// A snapshot body.
    Snapshot = 6,
    /// The repository config body.
    Config = 7,
    /// A master key wrapped in a key slot.
    KeySlot = 8,
    /// A GC plan body.
    GcPlan = 9,
    /// A backup session marker body.
    SessionMarker = 10,
    /// A lease body.
    Lease = 11,
    /// A snapshot protection marker body.
    ProtectMarker = 12,
    /// A good marker body (a deployment snapshot that passed its checks).
    GoodMarker = 13,
    /// A disaster-recovery drill record body.
    DrillRecord = 14,
    /// An audit log entry body, sealed to the repository public key (audit.md).
    AuditEntry = 15,
    /// A cached unlock: a key slot's wrapping key kept on one host (unlock.md).
    UnlockCache = 16,
    /// A key history body: the older key epochs (keys.md). Numbered apart
    /// from the kinds above so that kinds added beside it never collide.
    KeyHistory = 32,
}

/// Associated data for one sealed message: its kind and, for blobs, its id.
#[derive(Clone, Copy, Debug)]
pub struct Aad {
    kind: SealedKind,
    id: [u8; 32],
}

impl Aad {
    /// Associated data for a blob: binds the kind and the blob id.
    #[must_use]
    pub const fn blob(kind: SealedKind, id: &crate::BlobId) -> Self {
        Self { kind, id: id.0 }
    }

    /// Associated data for a whole object whose id is the hash of its stored
    /// bytes (and so cannot be known before sealing); `context` binds whatever
    /// else is fixed, such as the repository id.
    #[must_use]
    pub const fn object(kind: SealedKind, context: [u8; 32]) -> Self {
        Self { kind, id: context }
    }

    fn to_bytes(self) -> [u8; 41] {
        let mut out = [0u8; 41];
        let (domain, rest) = out.split_at_mut(AAD_DOMAIN.len());
        domain.copy_from_slice(AAD_DOMAIN);
        let (kind, id) = rest.split_at_mut(1);
        kind.copy_from_slice(&[self.kind as u8]);
        id.copy_from_slice(&self.id);
        out
    }
}

/// A 32-byte symmetric key that is wiped from memory on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(pub(crate) [u8; 32]);

impl SecretKey {
    /// Wraps raw key bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes; handle with care.
    #[must_use]
    pub const fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Seals and opens messages with one cipher, under the key of one key
/// epoch (keys.md), and opens messages of older epochs too.
///
/// Sealing always uses the current epoch's key. Opening tries the current
/// epoch first, then each older epoch this sealer was given, newest first
/// (trial decryption: no object names the epoch it was sealed under; see
/// keys.md, "Which epoch sealed an object"). A message that opens under no
/// epoch is [`Error::Authentication`], as with a single key.
///
/// Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Sealer {
    cipher: Cipher,
    key: SecretKey,
    chacha: XChaCha20Poly1305,
    epoch: u32,
    older: std::sync::Arc<[Sealer]>,
    reference: KeyRef,
    reference_keys: std::sync::Arc<ReferenceKeys>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("cipher", &self.cipher)
            .field("epoch", &self.epoch)
            .field("older", &self.older.iter().map(|s| s.epoch).collect::<Vec<_>>())
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `cipher` under `key`, as key epoch 0 with no older epochs.
    #[must_use]
    pub fn new(cipher: Cipher, key: SecretKey) -> Self {
        let chacha = XChaCha20Poly1305::new(&(*key.expose()).into());
        Self {
            cipher,
            key,
            chacha,
            epoch: 0,
            older: std::sync::Arc::from(Vec::new()),
            reference: KeyRef::Repository,
            reference_keys: std::sync::Arc::default(),
        }
    }

    /// This sealer, naming its key as `reference` in what it writes: whole
    /// objects sealed by it get a version-2 header naming the reference
    /// (put-only.md), packs a header with its sealing scheme.
    #[must_use]
    pub const fn with_reference(mut self, reference: KeyRef) -> Self {
        self.reference = reference;
        self
    }

    /// This sealer, resolving key references ([`Self::resolve`]) with `keys`.
    #[must_use]
    pub fn with_reference_keys(mut self, keys: std::sync::Arc<ReferenceKeys>) -> Self {
        self.reference_keys = keys;
        self
    }

    /// The key reference this sealer writes: [`KeyRef::Repository`] unless
    /// it seals for a put-only session or under an index key.
    #[must_use]
    pub const fn reference(&self) -> KeyRef {
        self.reference
    }

    /// The keys this sealer resolves references with.
    #[must_use]
    pub const fn reference_keys(&self) -> &std::sync::Arc<ReferenceKeys> {
        &self.reference_keys
    }

    /// A sealer for the key `reference` names: this one if it is that key,
    /// else one derived from this sealer's reference keys (the session key
    /// of a put-only session from the epoch's X25519 secret, or an index
    /// key). Opening with it involves no trial.
    ///
    /// # Errors
    /// [`Error::MissingKey`] if this holder does not have that key (a
    /// put-only host asked for a session's key or the repository's keys);
    /// [`Error::Authentication`] for a forged session of low order.
    pub fn resolve(&self, reference: &KeyRef) -> Result<Self> {
        if *reference == self.reference {
            return Ok(self.clone());
        }
        self.reference_keys.sealer(self.cipher, reference)
    }

    /// This sealer, naming its key as key epoch `epoch`.
    #[must_use]
    pub fn with_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// This sealer, also opening messages sealed under the keys of `older`
    /// epochs (tried in the order given, after the current key).
    #[must_use]
    pub fn with_older(mut self, older: Vec<Self>) -> Self {
        self.older = std::sync::Arc::from(older);
        self
    }

    /// The key epoch new messages are sealed under.
    #[must_use]
    pub const fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The key epochs this sealer opens, current first.
    #[must_use]
    pub fn epochs(&self) -> Vec<u32> {
        std::iter::once(self.epoch)
            .chain(self.older.iter().map(|s| s.epoch))
            .collect()
    }

    /// The cipher in use.
    #[must_use]
    pub const fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Seals `plaintext` with a fresh random nonce, appending the result to `out`.
    ///
    /// # Errors
    /// [`Error::Random`] if no nonce could be drawn.
    pub fn seal_into(&self, aad: Aad, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| Error::Random)?;
        self.seal_with_nonce_into(aad, nonce, plaintext, out);
        Ok(())
    }

    /// Seals `plaintext`, returning a new buffer.
    ///
    /// # Errors
    /// [`Error::Random`] if no nonce could be drawn.
    pub fn seal(&self, aad: Aad, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Seals with a caller-chosen nonce. Only for test vectors: reusing a nonce
    /// under the same key destroys confidentiality.
    #[doc(hidden)]
    pub fn seal_with_nonce_into(&self, aad: Aad, nonce: [u8; NONCE_LEN], plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        // Encryption only fails for messages over the cipher's length limit
        // (2^38 bytes for GCM), far above any blob the format allows.
        if !self.encrypt_after(aad, nonce, start + NONCE_LEN, out) {
            out.truncate(start);
        }
    }

    /// Seals a message laid out in place: `message` is [`NONCE_LEN`]
    /// reserved bytes followed by the plaintext. A fresh random nonce goes
    /// into the reserved bytes, the plaintext is encrypted where it is and
    /// the tag appended: the bytes [`Self::seal`] returns for that
    /// plaintext, without a second buffer of the message's size (reserve
    /// [`SEAL_OVERHEAD`] bytes beyond the plaintext to spare a reallocation).
    ///
    /// # Errors
    /// [`Error::Random`] if no nonce could be drawn; [`Error::TooLarge`] if
    /// `message` is shorter than a nonce or longer than the cipher seals.
    pub fn seal_in_place(&self, aad: Aad, message: &mut Vec<u8>) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| Error::Random)?;
        let too_large = |detail: &str| Error::TooLarge {
            what: "sealed message",
            detail: detail.into(),
        };
        message
            .get_mut(..NONCE_LEN)
            .ok_or_else(|| too_large("shorter than its nonce"))?
            .copy_from_slice(&nonce);
        if self.encrypt_after(aad, nonce, NONCE_LEN, message) {
            Ok(())
        } else {
            Err(too_large("over the cipher's limit"))
        }
    }

    /// Encrypts `out[body_start..]` in place under `nonce` and appends the
    /// tag; false (and `out` untouched past `body_start`'s plaintext) if the
    /// cipher refuses the length.
    fn encrypt_after(&self, aad: Aad, nonce: [u8; NONCE_LEN], body_start: usize, out: &mut Vec<u8>) -> bool {
        let aad_bytes = aad.to_bytes();
        let body = out.get_mut(body_start..).unwrap_or_default();
        let tag = match self.cipher {
            Cipher::XChaCha20Poly1305 => self
                .chacha
                .encrypt_inout_detached(&nonce.into(), &aad_bytes, body.into()),
            Cipher::Aes256Gcm => {
                let (subkey_salt, gcm_nonce) = split_nonce(&nonce);
                aes_for(&self.key, subkey_salt).encrypt_inout_detached(&gcm_nonce.into(), &aad_bytes, body.into())
            }
        };
        match tag {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                true
            }
            Err(_) => false,
        }
    }

    /// Opens a sealed message, verifying its tag against `aad`, under the
    /// current epoch's key or any older one.
    ///
    /// # Errors
    /// [`Error::Malformed`] if it is shorter than the overhead;
    /// [`Error::Authentication`] if the tag verifies under no key.
    pub fn open(&self, what: &'static str, aad: Aad, sealed: &[u8]) -> Result<Vec<u8>> {
        self.open_epoch(what, aad, sealed).map(|(_, plain)| plain)
    }

    /// [`Self::open`], also telling which key epoch opened the message.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_epoch(&self, what: &'static str, aad: Aad, sealed: &[u8]) -> Result<(u32, Vec<u8>)> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::malformed(
                what,
                format!("sealed message of {} bytes is too short", sealed.len()),
            ));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::malformed(what, "nonce"))?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::malformed(what, "tag"))?;
        let aad_bytes = aad.to_bytes();
        for sealer in std::iter::once(self).chain(self.older.iter()) {
            if let Some(plain) = sealer.open_one(&nonce, &aad_bytes, ciphertext, &tag) {
                return Ok((sealer.epoch, plain));
            }
        }
        Err(Error::Authentication { what })
    }

    /// Opens under this sealer's own key only; `None` if the tag does not verify.
    fn open_one(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad_bytes: &[u8; 41],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
    ) -> Option<Vec<u8>> {
        let mut plaintext = ciphertext.to_vec();
        let verified = match self.cipher {
            Cipher::XChaCha20Poly1305 => self.chacha.decrypt_inout_detached(
                &(*nonce).into(),
                aad_bytes,
                plaintext.as_mut_slice().into(),
                &(*tag).into(),
            ),
            Cipher::Aes256Gcm => {
                let (subkey_salt, gcm_nonce) = split_nonce(nonce);
                aes_for(&self.key, subkey_salt).decrypt_inout_detached(
                    &gcm_nonce.into(),
                    aad_bytes,
                    plaintext.as_mut_slice().into(),
                    &(*tag).into(),
                )
            }
        };
        verified.ok().map(|()| plaintext)
    }
}

fn split_nonce(nonce: &[u8; NONCE_LEN]) -> ([u8; 12], [u8; 12]) {
    let mut salt = [0u8; 12];
    let mut gcm = [0u8; 12];
    let (a, b) = nonce.split_at(12);
    salt.copy_from_slice(a);
    gcm.copy_from_slice(b);
    (salt, gcm)
}

fn aes_for(key: &SecretKey, salt: [u8; 12]) -> Aes256Gcm {
    let mut hasher = blake3::Hasher::new_keyed(key.expose());
    hasher.update(b"nfrepo aes-gcm subkey");
    hasher.update(&salt);
    let mut subkey = *hasher.finalize().as_bytes();
    let aes = Aes256Gcm::new(&subkey.into());
    subkey.zeroize();
    aes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlobId;
    use proptest::prelude::*;

    fn sealers() -> [Sealer; 2] {
        [
            Sealer::new(Cipher::XChaCha20Poly1305, SecretKey([1; 32])),
            Sealer::new(Cipher::Aes256Gcm, SecretKey([1; 32])),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for sealer in sealers() {
                let aad = Aad::blob(SealedKind::DataBlob, &BlobId([3; 32]));
                let sealed = sealer.seal(aad, &data).unwrap();
                prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
                prop_assert_eq!(sealer.open("blob", aad, &sealed).unwrap(), data.clone());
            }
        }

        #[test]
        fn sealing_in_place_gives_what_sealing_a_copy_gives(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for sealer in sealers() {
                let aad = Aad::blob(SealedKind::DataBlob, &BlobId([3; 32]));
                let mut message = vec![0xee; NONCE_LEN];
                message.extend_from_slice(&data);
                sealer.seal_in_place(aad, &mut message).unwrap();
                prop_assert_eq!(message.len(), data.len() + SEAL_OVERHEAD);
                prop_assert_eq!(sealer.open("blob", aad, &message).unwrap(), data.clone());
                // The same layout as a sealed copy: nonce, ciphertext, tag.
                let nonce: [u8; NONCE_LEN] = message[..NONCE_LEN].try_into().unwrap();
                let mut copy = Vec::new();
                sealer.seal_with_nonce_into(aad, nonce, &data, &mut copy);
                prop_assert_eq!(&copy, &message);
            }
        }
    }

    #[test]
    fn sealing_in_place_refuses_a_message_without_room_for_the_nonce() {
        let sealer = &sealers()[0];
        let aad = Aad::blob(SealedKind::DataBlob, &BlobId([3; 32]));
        let mut message = vec![0; NONCE_LEN - 1];
        let err = sealer.seal_in_place(aad, &mut message).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    what: "sealed message",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(message, vec![0; NONCE_LEN - 1]);
    }

    #[test]
    fn flipped_bit_fails_authentication() {
        for sealer in sealers() {
            let aad = Aad::blob(SealedKind::DataBlob, &BlobId([3; 32]));
            let mut sealed = sealer.seal(aad, b"hello world").unwrap();
            sealed[30] ^= 1;
            assert!(matches!(
                sealer.open("blob", aad, &sealed),
                Err(Error::Authentication { .. })
            ));
        }
    }

    #[test]
    fn swapped_id_or_kind_fails() {
        for sealer in sealers() {
            let aad = Aad::blob(SealedKind::DataBlob, &BlobId([3; 32]));
            let sealed = sealer.seal(aad, b"hello").unwrap();
            let other_id = Aad::blob(SealedKind::DataBlob, &BlobId([4; 32]));
            let other_kind = Aad::blob(SealedKind::TreeBlob, &BlobId([3; 32]));
            assert!(matches!(
                sealer.open("blob", other_id, &sealed),
                Err(Error::Authentication { what: "blob" })
            ));
            assert!(matches!(
                sealer.open("blob", other_kind, &sealed),
                Err(Error::Authentication { what: "blob" })
            ));
        }
    }

    #[test]
    fn wrong_key_fails() {
        let a = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey([1; 32]));
        let b = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey([2; 32]));
        let aad = Aad::object(SealedKind::Snapshot, [0; 32]);
        let sealed = a.seal(aad, b"x").unwrap();
        assert!(matches!(
            b.open("snapshot", aad, &sealed),
            Err(Error::Authentication { what: "snapshot" })
        ));
    }

    #[test]
    fn older_epochs_open_and_the_current_one_seals() {
        for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
            let old = Sealer::new(cipher, SecretKey([1; 32]));
            let ring = Sealer::new(cipher, SecretKey([2; 32]))
                .with_epoch(1)
                .with_older(vec![old.clone()]);
            let aad = Aad::object(SealedKind::Snapshot, [0; 32]);
            let by_old = old.seal(aad, b"old").unwrap();
            assert_eq!(ring.open_epoch("snapshot", aad, &by_old).unwrap(), (0, b"old".to_vec()));
            let by_ring = ring.seal(aad, b"new").unwrap();
            assert_eq!(
                ring.open_epoch("snapshot", aad, &by_ring).unwrap(),
                (1, b"new".to_vec())
            );
            // The old key alone opens nothing the ring sealed.
            assert!(matches!(
                old.open("snapshot", aad, &by_ring),
                Err(Error::Authentication { what: "snapshot" })
            ));
            let mut damaged = by_old.clone();
            damaged[30] ^= 1;
            assert!(matches!(
                ring.open("snapshot", aad, &damaged),
                Err(Error::Authentication { what: "snapshot" })
            ));
            assert_eq!(ring.epochs(), vec![1, 0]);
        }
    }

    #[test]
    fn short_input_is_malformed() {
        let s = Sealer::new(Cipher::XChaCha20Poly1305, SecretKey([1; 32]));
        let aad = Aad::object(SealedKind::Snapshot, [0; 32]);
        assert!(matches!(
            s.open("snapshot", aad, &[0; 10]),
            Err(Error::Malformed { .. })
        ));
    }
}
