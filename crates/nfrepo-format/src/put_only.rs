//! Put-only backup sessions: key references, session keys and index keys.
//!
//! A host with a put-only credential ([`PutOnlyCredential`]) holds no key
//! that opens stored data. Each backup session draws an ephemeral X25519 key
//! pair, agrees a **session key** with the repository's public key of one key
//! epoch, and seals its packs, snapshot and session marker under it; the
//! ephemeral secret is dropped at once and the session key when the session
//! ends, so the host cannot open anything it wrote (put-only.md).
//!
//! Such a key cannot be found by trial (keys.md), so whatever a session
//! seals names its key with a [`KeyRef`]:
//!
//! | scheme | [`KeyRef`] | bytes after the scheme byte | key |
//! |---|---|---|---|
//! | `00` | [`KeyRef::Repository`] | none | the repository's sealing keys, any live epoch by trial |
//! | `01` | [`KeyRef::Session`] | epoch (u32 LE), ephemeral public key (32) | `derive_key("nfrepo 2026-12 put-only session key", X25519(e, P) \|\| E \|\| P)` |
//! | `02` | [`KeyRef::Index`] | epoch (u32 LE) | `derive_key("nfrepo 2026-12 index key", epoch secret)` |
//!
//! A holder of the epoch's secret derives the session key from the epoch's
//! X25519 secret and `E` ([`ReferenceKeys`]); a put-only host holds only the
//! index key of its credential's epoch, which opens index deltas (for
//! deduplication) and nothing else.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::seal::{Cipher, Sealer, SecretKey};
use crate::{Error, RepoKeyPair, RepoPublicKey, Result};

mod credential;

pub use credential::{CREDENTIAL_MAGIC, CREDENTIAL_SLOT_VERSION, CredentialSlot, PutOnlyCredential};

const CONTEXT_SESSION_KEY: &str = "nfrepo 2026-12 put-only session key";
const CONTEXT_INDEX_KEY: &str = "nfrepo 2026-12 index key";

/// Scheme byte of [`KeyRef::Repository`].
pub const KEY_SCHEME_REPOSITORY: u8 = 0;
/// Scheme byte of [`KeyRef::Session`].
pub const KEY_SCHEME_SESSION: u8 = 1;
/// Scheme byte of [`KeyRef::Index`].
pub const KEY_SCHEME_INDEX: u8 = 2;

/// The session of a put-only backup: the epoch of the repository key pair it
/// sealed to and its ephemeral public key. Together they name the session key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionRef {
    /// Key epoch of the repository public key the session agreed its key with.
    pub epoch: u32,
    /// The session's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
}

/// Which key sealed an object or a pack (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyRef {
    /// The repository's sealing keys: the current epoch's, or an older live
    /// one found by trial.
    #[default]
    Repository,
    /// The key of one put-only session.
    Session(SessionRef),
    /// The index key of one epoch.
    Index {
        /// The key epoch.
        epoch: u32,
    },
}

impl KeyRef {
    /// The scheme byte.
    #[must_use]
    pub const fn scheme(&self) -> u8 {
        match self {
            Self::Repository => KEY_SCHEME_REPOSITORY,
            Self::Session(_) => KEY_SCHEME_SESSION,
            Self::Index { .. } => KEY_SCHEME_INDEX,
        }
    }

    /// Length of the encoding, scheme byte included (1, 37 or 5).
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        match self {
            Self::Repository => 1,
            Self::Session(_) => 1 + 4 + 32,
            Self::Index { .. } => 1 + 4,
        }
    }

    /// Appends the scheme byte and what follows it.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.scheme());
        match self {
            Self::Repository => {}
            Self::Session(session) => {
                out.extend_from_slice(&session.epoch.to_le_bytes());
                out.extend_from_slice(&session.ephemeral);
            }
            Self::Index { epoch } => out.extend_from_slice(&epoch.to_le_bytes()),
        }
    }

    /// Reads a reference from the start of `bytes`; returns it and the rest.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an unknown scheme or too few bytes.
    pub fn read<'a>(what: &'static str, bytes: &'a [u8]) -> Result<(Self, &'a [u8])> {
        let short = || Error::malformed(what, "key reference truncated");
        let (&scheme, rest) = bytes.split_first().ok_or_else(short)?;
        let epoch_of = |rest: &'a [u8]| -> Result<(u32, &'a [u8])> {
            let (epoch, rest) = rest.split_first_chunk::<4>().ok_or_else(short)?;
            Ok((u32::from_le_bytes(*epoch), rest))
        };
        match scheme {
            KEY_SCHEME_REPOSITORY => Ok((Self::Repository, rest)),
            KEY_SCHEME_SESSION => {
                let (epoch, rest) = epoch_of(rest)?;
                let (ephemeral, rest) = rest.split_first_chunk::<32>().ok_or_else(short)?;
                Ok((
                    Self::Session(SessionRef {
                        epoch,
                        ephemeral: *ephemeral,
                    }),
                    rest,
                ))
            }
            KEY_SCHEME_INDEX => {
                let (epoch, rest) = epoch_of(rest)?;
                Ok((Self::Index { epoch }, rest))
            }
            other => Err(Error::malformed(what, format!("unknown sealing scheme {other}"))),
        }
    }
}

/// What resolves [`KeyRef`]s to keys: the X25519 key pairs and index keys of
/// the epochs a holder has. A key holder has every live epoch's; a put-only
/// host the index key of its credential's epoch and nothing else.
#[derive(Clone, Default)]
pub struct ReferenceKeys {
    pairs: Vec<(u32, RepoKeyPair)>,
    index_keys: Vec<(u32, SecretKey)>,
}

impl std::fmt::Debug for ReferenceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceKeys")
            .field("pairs", &self.pairs.iter().map(|(e, _)| *e).collect::<Vec<_>>())
            .field(
                "index_keys",
                &self.index_keys.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ReferenceKeys {
    /// The keys of the epochs whose secrets are given (keys.md: the key
    /// pair and the index key are both derived from the epoch secret).
    #[must_use]
    pub fn from_epoch_secrets<'a>(epochs: impl IntoIterator<Item = (u32, &'a [u8; 32])>) -> Self {
        let mut keys = Self::default();
        for (epoch, secret) in epochs {
            keys.pairs.push((epoch, RepoKeyPair::from_epoch_secret(secret)));
            keys.index_keys.push((epoch, index_key(secret)));
        }
        keys
    }

    /// Only the index key of one epoch: what a put-only host holds.
    #[must_use]
    pub fn index_only(epoch: u32, key: SecretKey) -> Self {
        Self {
            pairs: Vec::new(),
            index_keys: vec![(epoch, key)],
        }
    }

    /// These keys restricted to one epoch.
    #[must_use]
    pub fn only_epoch(&self, epoch: u32) -> Self {
        Self {
            pairs: self.pairs.iter().filter(|(e, _)| *e == epoch).cloned().collect(),
            index_keys: self.index_keys.iter().filter(|(e, _)| *e == epoch).cloned().collect(),
        }
    }

    /// The key pair of `epoch`, if held.
    #[must_use]
    pub fn key_pair(&self, epoch: u32) -> Option<&RepoKeyPair> {
        self.pairs.iter().find(|(e, _)| *e == epoch).map(|(_, p)| p)
    }

    /// The index key of `epoch`, if held.
    #[must_use]
    pub fn index_key(&self, epoch: u32) -> Option<&SecretKey> {
        self.index_keys.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k)
    }

    /// The key `reference` names, for `cipher`, as a sealer that writes
    /// that reference and resolves further ones with these keys.
    ///
    /// # Errors
    /// [`Error::MissingKey`] if these keys do not include it (a put-only
    /// host asking for a session's key, or an epoch dropped by a reseal);
    /// [`Error::Authentication`] for a session whose ephemeral key is of low
    /// order (no genuine session has one).
    pub fn sealer(self: &Arc<Self>, cipher: Cipher, reference: &KeyRef) -> Result<Sealer> {
        let (epoch, key) = match reference {
            KeyRef::Repository => {
                return Err(Error::MissingKey {
                    what: "sealed object",
                    detail: "sealed under the repository's keys, which this holder does not have".into(),
                });
            }
            KeyRef::Session(session) => {
                let pair = self.key_pair(session.epoch).ok_or_else(|| Error::MissingKey {
                    what: "put-only session",
                    detail: format!("no secret of key epoch {} to open it", session.epoch),
                })?;
                (session.epoch, pair.session_key(session)?)
            }
            KeyRef::Index { epoch } => {
                let key = self.index_key(*epoch).ok_or_else(|| Error::MissingKey {
                    what: "index",
                    detail: format!("no index key of key epoch {epoch}"),
                })?;
                (*epoch, key.clone())
            }
        };
        Ok(Sealer::new(cipher, key)
            .with_epoch(epoch)
            .with_reference(*reference)
            .with_reference_keys(Arc::clone(self)))
    }
}

/// `derive_key("nfrepo 2026-12 index key", epoch secret)`: seals index
/// deltas that a put-only host may read.
#[must_use]
pub fn index_key(epoch_secret: &[u8; 32]) -> SecretKey {
    SecretKey::from_bytes(blake3::derive_key(CONTEXT_INDEX_KEY, epoch_secret))
}

impl RepoKeyPair {
    /// The key of a put-only session, as its reader derives it.
    ///
    /// # Errors
    /// [`Error::Authentication`] if the ephemeral key is of low order.
    pub fn session_key(&self, session: &SessionRef) -> Result<SecretKey> {
        let shared = self.agree(&PublicKey::from(session.ephemeral));
        if !shared.was_contributory() {
            return Err(Error::Authentication {
                what: "put-only session",
            });
        }
        Ok(session_key(shared.as_bytes(), &session.ephemeral, &self.public().0))
    }
}

/// Begins a put-only session: draws an ephemeral secret, agrees the
/// session key with `public` (the repository public key of `epoch`), and
/// forgets the ephemeral secret. The returned sealer seals under the session
/// key and writes [`KeyRef::Session`]; it is the only copy of the key, so
/// once it is dropped nothing the session sealed opens without the epoch's
/// secret. `keys` resolves other references (a host's index key).
///
/// # Errors
/// [`Error::Random`] if no randomness could be drawn; [`Error::Malformed`]
/// if `public` is of low order.
pub fn begin_session(public: &RepoPublicKey, epoch: u32, cipher: Cipher, keys: Arc<ReferenceKeys>) -> Result<Sealer> {
    let mut ephemeral = [0u8; 32];
    getrandom::fill(&mut ephemeral).map_err(|_| Error::Random)?;
    let sealer = begin_session_with(public, epoch, cipher, keys, ephemeral);
    ephemeral.zeroize();
    sealer
}

/// [`begin_session`] with a caller-chosen ephemeral secret. Only for test
/// vectors: a reused ephemeral secret means a reused session key.
///
/// # Errors
/// [`Error::Malformed`] if `public` is of low order.
#[doc(hidden)]
pub fn begin_session_with(
    public: &RepoPublicKey,
    epoch: u32,
    cipher: Cipher,
    keys: Arc<ReferenceKeys>,
    ephemeral: [u8; 32],
) -> Result<Sealer> {
    let secret = StaticSecret::from(ephemeral);
    let ephemeral_public = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(public.0));
    if !shared.was_contributory() {
        return Err(Error::malformed(
            "repository public key",
            "a low-order point, not a public key",
        ));
    }
    let key = session_key(shared.as_bytes(), &ephemeral_public, &public.0);
    let reference = KeyRef::Session(SessionRef {
        epoch,
        ephemeral: ephemeral_public,
    });
    Ok(Sealer::new(cipher, key)
        .with_epoch(epoch)
        .with_reference(reference)
        .with_reference_keys(keys))
}

fn session_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> SecretKey {
    crate::public::agreed_key(CONTEXT_SESSION_KEY, shared, ephemeral, recipient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{Aad, SealedKind};
    use crate::{KeyRing, MasterKey};

    fn ring_keys() -> Arc<ReferenceKeys> {
        Arc::new(ReferenceKeys::from_epoch_secrets([(0, &[7u8; 32])]))
    }

    #[test]
    fn a_session_opens_with_the_epoch_secret_and_not_without() {
        let keys = ring_keys();
        let public = keys.key_pair(0).unwrap().public();
        let host_keys = Arc::new(ReferenceKeys::index_only(0, index_key(&[7; 32])));
        let session = begin_session(&public, 0, Cipher::XChaCha20Poly1305, host_keys).unwrap();
        let aad = Aad::object(SealedKind::Snapshot, [1; 32]);
        let sealed = session.seal(aad, b"put only").unwrap();
        let reader = keys.sealer(Cipher::XChaCha20Poly1305, &session.reference()).unwrap();
        assert_eq!(reader.open("snapshot", aad, &sealed).unwrap(), b"put only");
        // The host's own keys resolve no session, and the index key opens nothing sealed under it.
        let host = session.reference_keys();
        assert!(matches!(
            host.sealer(Cipher::XChaCha20Poly1305, &session.reference()),
            Err(Error::MissingKey { .. })
        ));
        let index = host
            .sealer(Cipher::XChaCha20Poly1305, &KeyRef::Index { epoch: 0 })
            .unwrap();
        assert!(matches!(
            index.open("snapshot", aad, &sealed),
            Err(Error::Authentication { .. })
        ));
        // Another epoch's secret derives another key.
        let other = Arc::new(ReferenceKeys::from_epoch_secrets([(0, &[8u8; 32])]));
        let wrong = other.sealer(Cipher::XChaCha20Poly1305, &session.reference()).unwrap();
        assert!(matches!(
            wrong.open("snapshot", aad, &sealed),
            Err(Error::Authentication { .. })
        ));
    }

    #[test]
    fn epoch_zero_keys_agree_with_the_master_key_pair() {
        let master = MasterKey::from_bytes([7; 32]);
        let keys = ReferenceKeys::from_epoch_secrets([(0, &[7u8; 32])]);
        assert_eq!(
            keys.key_pair(0).unwrap().public(),
            RepoKeyPair::derive(&master).public()
        );
        let ring = KeyRing::from_master(&master);
        assert_eq!(
            ring.derive().reference_keys.key_pair(0).unwrap().public(),
            RepoKeyPair::derive(&master).public()
        );
    }

    #[test]
    fn key_refs_round_trip_and_reject_junk() {
        let refs = [
            KeyRef::Repository,
            KeyRef::Session(SessionRef {
                epoch: 7,
                ephemeral: [9; 32],
            }),
            KeyRef::Index { epoch: u32::MAX },
        ];
        for r in refs {
            let mut out = Vec::new();
            r.write(&mut out);
            out.push(0xee);
            assert_eq!(out.len(), r.encoded_len() + 1);
            assert_eq!(KeyRef::read("x", &out).unwrap(), (r, &[0xee][..]));
            for cut in 0..r.encoded_len() {
                assert!(matches!(KeyRef::read("x", &out[..cut]), Err(Error::Malformed { .. })));
            }
        }
        assert!(matches!(KeyRef::read("x", &[3]), Err(Error::Malformed { .. })));
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        let session = SessionRef {
            epoch: 0,
            ephemeral: [0; 32],
        };
        assert!(matches!(
            ring_keys().sealer(Cipher::XChaCha20Poly1305, &KeyRef::Session(session)),
            Err(Error::Authentication { .. })
        ));
    }

    #[test]
    fn objects_of_a_session_get_a_version_2_header_and_open_by_reference() {
        let keys = MasterKey::from_bytes([7; 32]).derive();
        let repo = crate::RepoId([2; 32]);
        let (credential, _) = crate::PutOnlyCredential::issue(
            repo,
            &keys,
            Cipher::XChaCha20Poly1305,
            &crate::ConfigBody::default(),
            "host",
            0,
        )
        .unwrap();
        let session = credential.begin_session().unwrap();
        let delta = crate::IndexDelta::default();
        let (id, bytes) = delta.encode(&credential.index_sealer(), &repo).unwrap();
        assert_eq!(&bytes[..6], b"NFRI\x02\x02");
        // The host reads its index deltas; the password holder too.
        assert_eq!(
            crate::IndexDelta::decode(&id, &bytes, &credential.index_sealer(), &repo).unwrap(),
            delta
        );
        let reader = keys.sealer(Cipher::XChaCha20Poly1305);
        assert_eq!(crate::IndexDelta::decode(&id, &bytes, &reader, &repo).unwrap(), delta);
        // A snapshot sealed by the session: version 2, scheme 01; only the key holder opens it.
        let snapshot = crate::Snapshot {
            time_ns: 1,
            source: "host".into(),
            source_kind: "files".into(),
            hostname: "host".into(),
            username: "root".into(),
            paths: vec!["/etc".into()],
            tags: Vec::new(),
            profile: "files".into(),
            parent: None,
            root: crate::BlobId([5; 32]),
            summary: crate::Summary::default(),
            command: None,
            skipped: Vec::new(),
            extra: Vec::new(),
            program_version: "test".into(),
        };
        let (snapshot_id, bytes) = snapshot.encode(&session, &repo).unwrap();
        assert_eq!(&bytes[..6], b"NFRS\x02\x01");
        assert_eq!(
            crate::Snapshot::decode(&snapshot_id, &bytes, &reader, &repo).unwrap(),
            snapshot
        );
        assert!(matches!(
            crate::Snapshot::decode(&snapshot_id, &bytes, &credential.index_sealer(), &repo),
            Err(Error::MissingKey { .. })
        ));
        // Under the session's key alone (no trial) it opens; a version-2 header naming scheme 00 does not.
        let mut forged = bytes.clone();
        forged[5] = 0;
        let forged_id = crate::SnapshotId(crate::content_hash(&forged));
        assert!(matches!(
            crate::Snapshot::decode(&forged_id, &forged, &reader, &repo),
            Err(Error::Malformed { .. })
        ));
    }
}
