//! The repository config: the one object every command reads first.
//!
//! ```text
//! "NFRC" | version | repository id (32) | cipher code (1) | sealed(postcard(ConfigBody)),
//!                                           AAD (Config, repository id)
//! ```
//!
//! The id and cipher are in the clear because they are needed to open the
//! body (and key slots bind the id). Everything else, including the chunker
//! profiles and the object-lock retention, is sealed.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerProfile;
use crate::envelope::{CONFIG_MAGIC, from_postcard, read_header, to_postcard, write_header};
use crate::seal::{Aad, Cipher, SealedKind, Sealer};
use crate::{Error, RepoId, Result};

/// The clear part of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigHeader {
    /// The repository id.
    pub repo: RepoId,
    /// The cipher of every sealed object.
    pub cipher: Cipher,
}

/// The sealed part of the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBody {
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// zstd level for blobs.
    pub zstd_level: i32,
    /// Chunker profiles by name, fixed at init so dedup survives new defaults.
    pub profiles: Vec<(String, ChunkerProfile)>,
    /// When the repository was made, Unix seconds.
    pub created: i64,
    /// S3 Object Lock retention, set by `init --object-lock`. Encoded after the
    /// fields above only when present, so configs without it keep their bytes.
    #[serde(skip)]
    pub object_lock: Option<ObjectLock>,
}

/// The object-lock retention every host applies to what it writes
/// (format-spec/object-lock.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLock {
    /// `1` governance, `2` compliance ([`ObjectLock::GOVERNANCE`], [`ObjectLock::COMPLIANCE`]).
    pub mode: u8,
    /// Retention of packs, index deltas, snapshots, key slots and other write-once objects, seconds (≥ 1).
    pub retain_secs: u64,
    /// Retention of audit entries and the config, seconds (≥ `retain_secs`).
    pub audit_retain_secs: u64,
}

impl ObjectLock {
    /// Governance mode: a principal with `s3:BypassGovernanceRetention` can lift it.
    pub const GOVERNANCE: u8 = 1;
    /// Compliance mode: nobody can shorten it.
    pub const COMPLIANCE: u8 = 2;
    /// The longest retention accepted, 100 years in seconds.
    pub const MAX_SECS: u64 = 100 * 366 * 86_400;

    /// Checks the mode and periods, as decoding does.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.mode, Self::GOVERNANCE | Self::COMPLIANCE) {
            return Err(Error::malformed(
                "config",
                format!("unknown object lock mode {}", self.mode),
            ));
        }
        if self.retain_secs == 0 || self.audit_retain_secs < self.retain_secs || self.audit_retain_secs > Self::MAX_SECS
        {
            return Err(Error::malformed(
                "config",
                format!(
                    "object lock retention {} s (audit {} s) out of range",
                    self.retain_secs, self.audit_retain_secs
                ),
            ));
        }
        Ok(())
    }
}

impl ConfigBody {
    /// The profile called `name`.
    #[must_use]
    pub fn profile(&self, name: &str) -> Option<ChunkerProfile> {
        self.profiles.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }

    /// The profile a backup asking for `name` uses, with its name: `name`
    /// itself, or in a repository made before a built-in profile existed,
    /// the one it falls back to ([`ChunkerProfile::fallback`]).
    #[must_use]
    pub fn resolve_profile<'a>(&self, name: &'a str) -> Option<(&'a str, ChunkerProfile)> {
        if let Some(profile) = self.profile(name) {
            return Some((name, profile));
        }
        let fallback = ChunkerProfile::fallback(name)?;
        self.profile(fallback).map(|profile| (fallback, profile))
    }
}

impl Default for ConfigBody {
    fn default() -> Self {
        Self {
            pack_size: 16 * 1024 * 1024,
            // Level 1, not zstd's default 3: on the 8-16 KiB chunks of
            // database dumps it compresses as well or better at 1.5-2x the
            // speed, and within 2 % on file trees (blob.md, "Level").
            zstd_level: 1,
            profiles: vec![
                ("files".into(), ChunkerProfile::FILES),
                ("dump".into(), ChunkerProfile::DUMP),
                ("rows".into(), ChunkerProfile::ROWS),
            ],
            created: 0,
            object_lock: None,
        }
    }
}

/// Encodes the config object.
///
/// # Errors
/// [`Error::Random`] if no nonce could be drawn.
pub fn encode_config(header: &ConfigHeader, body: &ConfigBody, sealer: &Sealer) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_header(&mut out, CONFIG_MAGIC);
    out.extend_from_slice(&header.repo.0);
    out.push(header.cipher.code());
    let plain = body_plaintext(body)?;
    sealer.seal_into(Aad::object(SealedKind::Config, header.repo.0), &plain, &mut out)?;
    Ok(out)
}

/// Reads the clear header; returns it and the sealed body.
///
/// # Errors
/// [`Error::BadMagic`] when the object is not an nfrepo config, or [`Error::Malformed`].
pub fn decode_config_header(bytes: &[u8]) -> Result<(ConfigHeader, &[u8])> {
    let rest = read_header("config", CONFIG_MAGIC, bytes)?;
    let (repo, rest) = rest
        .split_at_checked(32)
        .ok_or_else(|| Error::malformed("config", "truncated"))?;
    let (cipher, sealed) = rest
        .split_first()
        .ok_or_else(|| Error::malformed("config", "truncated"))?;
    let repo: [u8; 32] = repo.try_into().map_err(|_| Error::malformed("config", "truncated"))?;
    Ok((
        ConfigHeader {
            repo: RepoId(repo),
            cipher: Cipher::from_code(*cipher)?,
        },
        sealed,
    ))
}

/// Opens the sealed body.
///
/// # Errors
/// [`Error::Authentication`] if altered or opened with another key.
pub fn decode_config_body(header: &ConfigHeader, sealed: &[u8], sealer: &Sealer) -> Result<ConfigBody> {
    let plain = sealer.open("config", Aad::object(SealedKind::Config, header.repo.0), sealed)?;
    parse_body(&plain)
}

/// The config body's plaintext: postcard `ConfigBody`, then the object
/// lock when present. A put-only credential carries the same bytes.
pub(crate) fn body_plaintext(body: &ConfigBody) -> Result<Vec<u8>> {
    let mut plain = to_postcard("config", body)?;
    if let Some(lock) = &body.object_lock {
        plain.extend_from_slice(&to_postcard("config", lock)?);
    }
    Ok(plain)
}

/// The inverse of [`body_plaintext`], with every check of the config.
pub(crate) fn parse_body(plain: &[u8]) -> Result<ConfigBody> {
    let (mut body, rest): (ConfigBody, _) =
        postcard::take_from_bytes(plain).map_err(|e| Error::malformed("config", e.to_string()))?;
    if !rest.is_empty() {
        let lock: ObjectLock = from_postcard("config", rest)?;
        lock.validate()?;
        body.object_lock = Some(lock);
    }
    for (_, profile) in &body.profiles {
        profile.validate()?;
    }
    if !(4 * 1024 * 1024..=128 * 1024 * 1024).contains(&body.pack_size) {
        return Err(Error::malformed(
            "config",
            format!("pack size {} out of range", body.pack_size),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, MasterKey};

    /// The object-lock vector of `format-spec/vectors/object-lock.json`.
    fn locked_body() -> ConfigBody {
        ConfigBody {
            created: 1_700_000_000,
            object_lock: Some(ObjectLock {
                mode: ObjectLock::COMPLIANCE,
                retain_secs: 30 * 86_400,
                audit_retain_secs: 365 * 86_400,
            }),
            // The level the vector was made with (the default was 3 then).
            zstd_level: 3,
            ..ConfigBody::default()
        }
    }

    fn vector() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../format-spec/vectors/object-lock.json")).unwrap()
    }

    fn seal(body: &ConfigBody) -> (ConfigHeader, Sealer, Vec<u8>) {
        let keys = MasterKey::from_bytes([7; 32]).derive();
        let header = ConfigHeader {
            repo: RepoId([0x20; 32]),
            cipher: Cipher::XChaCha20Poly1305,
        };
        let sealer = keys.sealer(header.cipher);
        let bytes = encode_config(&header, body, &sealer).unwrap();
        (header, sealer, bytes)
    }

    #[test]
    fn object_lock_is_appended_only_when_set() {
        let v = vector();
        let mut plain = to_postcard("config", &locked_body()).unwrap();
        let without = hex::encode(&plain);
        assert_eq!(
            without,
            v["body_without_lock"].as_str().unwrap(),
            "old configs keep their bytes"
        );
        let lock = locked_body().object_lock.unwrap();
        plain.extend_from_slice(&to_postcard("config", &lock).unwrap());
        assert_eq!(hex::encode(&plain), v["body_with_lock"].as_str().unwrap());

        let (header, sealer, bytes) = seal(&locked_body());
        let (_, sealed) = decode_config_header(&bytes).unwrap();
        assert_eq!(decode_config_body(&header, sealed, &sealer).unwrap(), locked_body());
        let unlocked = ConfigBody {
            object_lock: None,
            ..locked_body()
        };
        let (header, sealer, bytes) = seal(&unlocked);
        let (_, sealed) = decode_config_header(&bytes).unwrap();
        assert_eq!(decode_config_body(&header, sealed, &sealer).unwrap(), unlocked);
    }

    #[test]
    fn bad_object_lock_is_malformed() {
        let bad = [
            ObjectLock {
                mode: 0,
                retain_secs: 60,
                audit_retain_secs: 60,
            },
            ObjectLock {
                mode: 3,
                retain_secs: 60,
                audit_retain_secs: 60,
            },
            ObjectLock {
                mode: 2,
                retain_secs: 0,
                audit_retain_secs: 60,
            },
            ObjectLock {
                mode: 2,
                retain_secs: 60,
                audit_retain_secs: 59,
            },
            ObjectLock {
                mode: 1,
                retain_secs: 60,
                audit_retain_secs: ObjectLock::MAX_SECS + 1,
            },
        ];
        for lock in bad {
            let body = ConfigBody {
                object_lock: Some(lock),
                ..locked_body()
            };
            let (header, sealer, bytes) = seal(&body);
            let (_, sealed) = decode_config_header(&bytes).unwrap();
            let err = decode_config_body(&header, sealed, &sealer).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{lock:?}: {err}");
        }
    }
}
