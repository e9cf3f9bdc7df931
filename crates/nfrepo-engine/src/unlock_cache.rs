//! The cached unlock (format-spec/unlock.md): paying a key slot's argon2id
//! once per expiry on a host that opens the repository every few minutes.
//!
//! # Protocol
//!
//! Opening with an [`UnlockCache`] ([`crate::Repository::open_cached`]):
//!
//! 1. Read the config header and every key slot, as any open does.
//! 2. Read `<cache dir>/unlock/<repository id>` ([`nfrepo_store::SecretFile`]:
//!    `0600`, never through a link, refused when others can read it) and open
//!    it with the password and this host's identity. It is used only when
//!    all of these hold: it opens (same password, same host, same
//!    repository, unchanged bytes); it has not expired and was not made in
//!    the future; the slot it names is still stored with the same salt and
//!    argon2id parameters; no readable slot claims a newer key epoch (where
//!    the full path would try that slot first); and the cached key opens
//!    the stored slot. The key ring then comes from the stored slot, exactly
//!    as with the password, so `key passwd`, `key remove` and `key rotate`
//!    end every cached unlock of that slot with no action on the host.
//! 3. Otherwise the open takes the full path (argon2id on each slot, newest
//!    epoch first) and, once it succeeds, writes a new cache file that
//!    expires after the configured time. A cache file that is damaged,
//!    expired, or names a slot that changed is removed; one that only fails
//!    to open (another password, another host) is left for its owner.
//!
//! Nothing here can make an open succeed that the full path would refuse:
//! a wrong password never opens the cache file, and a right one reaches the
//! same slot and the same ring. Every failure of the cache itself (an
//! unreadable directory, no host identity, a full disk) is a warning and the
//! full path, never a failed backup.
//!
//! # Host identity
//!
//! `blake3::derive_key("nfrepo 2026-12 unlock cache host", machine id)`,
//! the machine id read from `/etc/machine-id`, else
//! `/var/lib/dbus/machine-id`. A host without either cannot cache: the
//! file would not be bound to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nfrepo_format::{CachedUnlock, KeyId, KeySlot, RepoId, SecretKey, UnlockCacheFile};
use nfrepo_store::SecretFile;

use crate::{Error, Result};

/// The longest a cached unlock may live: past a week, an operator should
/// run the host without one.
pub const MAX_UNLOCK_CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How far in the future a cache file's creation time may be (clock steps)
/// before it is distrusted.
const CLOCK_SLACK_SECS: i64 = 300;

const HOST_CONTEXT: &str = "nfrepo 2026-12 unlock cache host";

const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// Where and for how long this host caches its unlock of a repository.
#[derive(Clone)]
pub struct UnlockCache {
    dir: PathBuf,
    ttl: Duration,
    host: [u8; 32],
    kdf: nfrepo_format::KdfParams,
}

impl std::fmt::Debug for UnlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlockCache")
            .field("dir", &self.dir)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl UnlockCache {
    /// Caching under the cache directory `dir` for `ttl`, bound to this host.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a zero `ttl` or one above
    /// [`MAX_UNLOCK_CACHE_TTL`], or when this host has no machine id.
    pub fn new(dir: PathBuf, ttl: Duration) -> Result<Self> {
        let host = host_identity().ok_or_else(|| {
            Error::Invalid(format!(
                "a cached unlock needs a host identity, and neither {} nor {} holds one",
                MACHINE_ID_FILES[0], MACHINE_ID_FILES[1]
            ))
        })?;
        Self::for_host(dir, ttl, host)
    }

    /// As [`Self::new`] with a given host identity (tests simulate hosts).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn for_host(dir: PathBuf, ttl: Duration, host: [u8; 32]) -> Result<Self> {
        if ttl.is_zero() || ttl > MAX_UNLOCK_CACHE_TTL {
            return Err(Error::Invalid(format!(
                "an unlock cache lives between one second and {} days, not {} s",
                MAX_UNLOCK_CACHE_TTL.as_secs() / 86_400,
                ttl.as_secs()
            )));
        }
        Ok(Self {
            dir,
            ttl,
            host,
            kdf: UnlockCacheFile::DEFAULT_KDF,
        })
    }

    /// With argon2id parameters for the cache key other than the default
    /// (tests use tiny ones).
    #[must_use]
    pub const fn with_kdf(mut self, kdf: nfrepo_format::KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    /// Removes this host's cached unlock of `repo` under the cache directory
    /// `dir` (`nfrepo key lock`); whether there was one.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the file exists and cannot be removed.
    pub fn forget(dir: &Path, repo: &RepoId) -> Result<bool> {
        file(dir, repo)?.remove().map_err(|e| Error::Invalid(e.to_string()))
    }

    /// The cached entry for `repo` that `password` opens on this host, if one
    /// is there and still current; see the module docs for what is removed.
    pub(crate) fn load(&self, repo: &RepoId, password: &[u8]) -> Option<CachedUnlock> {
        let file = file(&self.dir, repo).ok()?;
        let bytes = match file.read() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "not using the cached unlock");
                return None;
            }
        };
        let opened = UnlockCacheFile::decode(&bytes).and_then(|f| f.open(password, &self.host, repo));
        let entry = match opened {
            Ok(entry) => entry,
            Err(nfrepo_format::Error::WrongPassword) => {
                tracing::debug!(path = %file.path().display(), "the cached unlock is another password's or another host's");
                return None;
            }
            Err(e) => {
                tracing::warn!(path = %file.path().display(), error = %e, "removing a damaged cached unlock");
                discard(&file);
                return None;
            }
        };
        let now = now();
        if now >= entry.expires || entry.created > now + CLOCK_SLACK_SECS {
            tracing::debug!(path = %file.path().display(), "the cached unlock expired");
            discard(&file);
            return None;
        }
        Some(entry)
    }

    /// Caches `wrapping_key`, which opened `slot` (stored as `id`), for
    /// `repo`; a failure is a warning.
    pub(crate) fn store(&self, repo: &RepoId, password: &[u8], id: KeyId, slot: &KeySlot, wrapping_key: &SecretKey) {
        let created = now();
        let entry = CachedUnlock {
            slot: id,
            slot_kdf: slot.kdf,
            slot_salt: slot.salt,
            wrapping_key: wrapping_key.clone(),
            created,
            expires: created.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        let written = file(&self.dir, repo).and_then(|file| {
            let bytes = UnlockCacheFile::seal(&entry, password, &self.host, repo, self.kdf)
                .and_then(|sealed| sealed.encode())
                .map_err(Error::Format)?;
            file.write(&bytes).map_err(|e| Error::Invalid(e.to_string()))
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not cache the unlock; the next run derives the key again");
        }
    }

    /// Throws away the cached unlock of `repo` (it named a slot that changed).
    pub(crate) fn discard(&self, repo: &RepoId) {
        if let Ok(file) = file(&self.dir, repo) {
            discard(&file);
        }
    }
}

fn file(dir: &Path, repo: &RepoId) -> Result<SecretFile> {
    SecretFile::unlock(dir, &repo.to_hex()).map_err(|e| Error::Invalid(e.to_string()))
}

fn discard(file: &SecretFile) {
    if let Err(e) = file.remove() {
        tracing::warn!(error = %e, "could not remove the cached unlock");
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// This host's identity (module docs), `None` without a machine id.
fn host_identity() -> Option<[u8; 32]> {
    MACHINE_ID_FILES.iter().find_map(|path| {
        let id = std::fs::read_to_string(path).ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| blake3::derive_key(HOST_CONTEXT, id.as_bytes()))
    })
}
