//! The repository config: the one object every command reads first.
//!
//! ```text
//! "NFRC" | version | repository id (32) | cipher code (1) | sealed(postcard(ConfigBody)),
//!                                           AAD (Config, repository id)
//! ```
//!
//! The id and cipher are in the clear because they are needed to open the
//! body (and key slots bind the id). Everything else, including the chunker
//! profiles, is sealed.

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
}

impl ConfigBody {
    /// The profile called `name`.
    #[must_use]
    pub fn profile(&self, name: &str) -> Option<ChunkerProfile> {
        self.profiles.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }
}

impl Default for ConfigBody {
    fn default() -> Self {
        Self {
            pack_size: 16 * 1024 * 1024,
            zstd_level: 3,
            profiles: vec![
                ("files".into(), ChunkerProfile::FILES),
                ("dump".into(), ChunkerProfile::DUMP),
            ],
            created: 0,
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
    let plain = to_postcard("config", body)?;
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
    let body: ConfigBody = from_postcard("config", &plain)?;
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
