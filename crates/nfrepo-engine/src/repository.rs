//! Creating and opening a repository, and managing its key slots.
//!
//! Opening reads the config, then tries the password against each key slot,
//! newest key epoch first, until one unwraps a key ring. Nothing else is
//! read: the index is loaded only by the commands that need it.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nfrepo_format::{
    Cipher, ConfigBody, ConfigHeader, KdfParams, KeyHistory, KeyId, KeyRing, KeySlot, MasterKey, RepoId, RepoKeyPair,
    RepoKeys, Sealer, decode_config_body, decode_config_header, encode_config,
};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode, Store};
use zeroize::Zeroizing;

use crate::{Error, Result, UnlockCache};

/// Options for [`Repository::init`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InitOptions {
    /// The cipher every object is sealed with.
    pub cipher: Cipher,
    /// argon2id cost of the first key slot.
    pub kdf: KdfParams,
    /// Target pack size in bytes (4–128 MiB).
    pub pack_size: u32,
    /// zstd level every blob is compressed at ([`ZSTD_LEVELS`]).
    pub zstd_level: i32,
    /// Label recorded in the first key slot (`user@host`).
    pub label: String,
    /// S3 Object Lock retention for every write-once object
    /// (format-spec/object-lock.md); the bucket must have object lock enabled.
    pub object_lock: Option<nfrepo_format::ObjectLock>,
}

/// The pack sizes a repository may have, in MiB (the config decoder
/// refuses any other, so a repository made with one could not be opened).
pub const PACK_SIZE_MIB: std::ops::RangeInclusive<u32> = 4..=128;
/// The zstd levels a repository may compress at: zstd's regular levels
/// without its "ultra" ones, whose windows would make every reader allocate
/// up to 128 MiB.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;
/// The argon2id memory cost a key slot may have, in KiB (argon2's minimum
/// to the 4 GiB that opening refuses to exceed).
pub const KDF_MEMORY_KIB: std::ops::RangeInclusive<u32> = 8..=4 * 1024 * 1024;
/// The argon2id passes a key slot may have (opening refuses more).
pub const KDF_ITERATIONS: std::ops::RangeInclusive<u32> = 1..=64;

impl InitOptions {
    /// Checks every parameter against what opening the repository later accepts.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the parameter and its allowed range.
    pub fn validate(&self) -> Result<()> {
        let mib = 1024 * 1024;
        if !self.pack_size.is_multiple_of(mib) || !PACK_SIZE_MIB.contains(&(self.pack_size / mib)) {
            return Err(Error::Invalid(format!(
                "pack size {} bytes is not a whole number of MiB from {} to {}",
                self.pack_size,
                PACK_SIZE_MIB.start(),
                PACK_SIZE_MIB.end()
            )));
        }
        if !ZSTD_LEVELS.contains(&self.zstd_level) {
            return Err(Error::Invalid(format!(
                "zstd level {} is not from {} to {}",
                self.zstd_level,
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )));
        }
        if let Some(lock) = &self.object_lock {
            lock.validate().map_err(|e| Error::Invalid(e.to_string()))?;
        }
        validate_kdf(&self.kdf)
    }
}

/// Checks argon2id parameters for a new key slot against what opening accepts.
///
/// # Errors
/// [`Error::Invalid`] naming the parameter and its allowed range.
pub fn validate_kdf(kdf: &KdfParams) -> Result<()> {
    let check = |name: &str, value: u32, range: &std::ops::RangeInclusive<u32>| {
        if range.contains(&value) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{name} {value} is outside {}..={}",
                range.start(),
                range.end()
            )))
        }
    };
    check("kdf memory (KiB)", kdf.memory_kib, &KDF_MEMORY_KIB)?;
    check("kdf iterations", kdf.iterations, &KDF_ITERATIONS)?;
    check("kdf parallelism", kdf.parallelism, &(1..=64))?;
    if kdf.memory_kib < 8 * kdf.parallelism {
        return Err(Error::Invalid(format!(
            "kdf memory {} KiB is below 8 KiB per lane",
            kdf.memory_kib
        )));
    }
    Ok(())
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            cipher: Cipher::default(),
            kdf: KdfParams::default(),
            pack_size: ConfigBody::default().pack_size,
            zstd_level: ConfigBody::default().zstd_level,
            label: crate::host::user_at_host(),
            object_lock: None,
        }
    }
}

/// An open repository: its storage, config and keys.
///
/// Cheap to clone (shares the store); safe to use from many tasks.
#[derive(Clone)]
pub struct Repository {
    store: Arc<dyn Store>,
    header: ConfigHeader,
    config: Arc<ConfigBody>,
    keys: RepoKeys,
    sealer: Sealer,
    index_cache_dir: Option<Arc<std::path::PathBuf>>,
    /// The newest key epoch any key slot claims when the repository was opened.
    newest_epoch: u32,
    /// The key slot the repository was opened with.
    key_id: Option<KeyId>,
    /// The X25519 key pairs of the live key epochs, current first (audit.md,
    /// keys.md): the current one seals, older ones open what they sealed.
    key_pairs: Arc<Vec<RepoKeyPair>>,
    /// Set when opened with a put-only credential (`crate::put_only`).
    pub(crate) put_only: Option<crate::put_only::PutOnlyAccess>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.store.location())
            .field("id", &self.header.repo)
            .finish_non_exhaustive()
    }
}

/// A key slot as listed by `key list`.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// Its id.
    pub id: KeyId,
    /// Who made it.
    pub label: String,
    /// When, Unix seconds.
    pub created: i64,
    /// Whether it is the slot the repository was opened with.
    pub current: bool,
    /// The key epoch its ring seals under, as the slot says (0 for a
    /// version-1 slot); `None` for a slot that does not decode.
    pub epoch: Option<u32>,
}

/// A key slot as found in `keys/`: its id and, if it decodes, the slot.
pub(crate) struct StoredSlot {
    pub(crate) id: KeyId,
    pub(crate) slot: std::result::Result<KeySlot, nfrepo_format::Error>,
}

/// What a password opened.
pub(crate) struct Unlocked {
    pub(crate) header: ConfigHeader,
    /// The config object as read for `header`: its body is opened from
    /// these bytes, so an open reads the config once.
    pub(crate) config: Bytes,
    pub(crate) ring: KeyRing,
    pub(crate) slot: KeyId,
    /// The newest epoch any decodable slot claims.
    pub(crate) newest_slot_epoch: u32,
    /// The newest epoch a slot claims or a key history (`keys/epoch-<n>`)
    /// is stored for: a rotation to it was at least started.
    pub(crate) newest_epoch: u32,
}

impl Repository {
    /// Creates a repository at `store`, refusing to touch an existing one.
    ///
    /// # Errors
    /// [`Error::RepositoryExists`] if a config (or any key slot) is already there.
    pub async fn init(store: Arc<dyn Store>, password: &[u8], options: InitOptions) -> Result<Self> {
        // Nothing is written before every parameter is known to be openable.
        options.validate()?;
        match store.stat(&ObjectKey::config()).await {
            Ok(_) => {
                return Err(Error::RepositoryExists {
                    location: store.location().to_owned(),
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::store(e)),
        }
        if !store.list(ObjectKind::Snapshot).await.map_err(Error::store)?.is_empty() {
            return Err(Error::RepositoryExists {
                location: store.location().to_owned(),
            });
        }
        let repo = RepoId::random().map_err(Error::Format)?;
        let master = MasterKey::random().map_err(Error::Format)?;
        let header = ConfigHeader {
            repo,
            cipher: options.cipher,
        };
        if options.object_lock.is_some() && !store.object_lock_enabled().await.map_err(Error::store)? {
            return Err(Error::Invalid(format!(
                "--object-lock needs an s3 bucket created with object lock enabled, and {} is not one",
                store.location()
            )));
        }
        // From here on every write-once object, key slot and config included, gets its retention.
        let store = crate::object_lock::wrap(store, options.object_lock.as_ref());
        let body = ConfigBody {
            pack_size: options.pack_size,
            zstd_level: options.zstd_level,
            created: chrono::Utc::now().timestamp(),
            object_lock: options.object_lock,
            ..ConfigBody::default()
        };
        let ring = KeyRing::from_master(&master);
        let keys = ring.derive();
        let sealer = keys.sealer(options.cipher);
        // The key slot goes first: a crash before the config leaves a stray
        // slot that a second init simply ignores, never a config nobody can open.
        let slot = KeySlot::wrap_ring(&ring, password, options.kdf, &repo, body.created, options.label)
            .map_err(Error::Format)?;
        let key_id = put_key_slot(store.as_ref(), &slot).await?;
        let config = encode_config(&header, &body, &sealer).map_err(Error::Format)?;
        store
            .put(&ObjectKey::config(), Bytes::from(config), PutMode::CreateNew)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::RepositoryExists {
                    location: store.location().to_owned(),
                },
                _ => Error::store(e),
            })?;
        Ok(Self {
            store,
            header,
            config: Arc::new(body),
            keys,
            sealer,
            index_cache_dir: None,
            newest_epoch: 0,
            key_id: Some(key_id),
            key_pairs: Arc::new(ring.key_pairs()),
            put_only: None,
        })
    }

    /// Opens the repository at `store` with `password`.
    ///
    /// # Errors
    /// [`Error::RepositoryNotFound`], [`Error::NotARepository`], [`Error::WrongPassword`],
    /// [`Error::Unreachable`], or [`Error::Corrupted`] for a damaged config.
    pub async fn open(store: Arc<dyn Store>, password: &[u8]) -> Result<Self> {
        Self::open_cached(store, password, None).await
    }

    /// Opens the repository at `store` with `password`, through this host's
    /// cached unlock when `cache` is given (`crate::unlock_cache`): the key
    /// slot's argon2id is skipped while a cached key for it is current, and
    /// a new one is cached after a full open.
    ///
    /// # Errors
    /// As [`Self::open`]; a failure of the cache itself is only a warning.
    pub async fn open_cached(store: Arc<dyn Store>, password: &[u8], cache: Option<&UnlockCache>) -> Result<Self> {
        let Unlocked {
            header,
            config: config_bytes,
            ring,
            newest_epoch,
            slot,
            ..
        } = Self::unlock_with(store.as_ref(), password, cache).await?;
        let keys = ring.derive();
        let sealer = keys.sealer(header.cipher);
        let (_, sealed) = decode_config_header(&config_bytes).map_err(|e| Error::decode("config", e))?;
        let body = match decode_config_body(&header, sealed, &sealer) {
            Ok(body) => body,
            // The config was sealed again under a newer epoch by a reseal,
            // which dropped this slot's epoch: an old slot put back.
            Err(nfrepo_format::Error::Authentication { .. }) if ring.current_epoch() < newest_epoch => {
                return Err(Error::RetiredKeyEpoch {
                    epoch: ring.current_epoch(),
                    newest: newest_epoch,
                });
            }
            Err(e) => return Err(Error::decode("config", e)),
        };
        let store = crate::object_lock::wrap(store, body.object_lock.as_ref());
        Ok(Self {
            store,
            header,
            config: Arc::new(body),
            keys,
            sealer,
            index_cache_dir: None,
            newest_epoch,
            key_id: Some(slot),
            key_pairs: Arc::new(ring.key_pairs()),
            put_only: None,
        })
    }

    /// A put-only handle (`crate::put_only`): no key pairs, no key slot.
    pub(crate) fn put_only_parts(
        store: Arc<dyn Store>,
        header: ConfigHeader,
        config: Arc<ConfigBody>,
        keys: RepoKeys,
        sealer: Sealer,
        access: crate::put_only::PutOnlyAccess,
    ) -> Self {
        Self {
            store,
            header,
            config,
            newest_epoch: keys.epoch,
            keys,
            sealer,
            index_cache_dir: None,
            key_id: None,
            key_pairs: Arc::new(Vec::new()),
            put_only: Some(access),
        }
    }

    /// Finds the key slot `password` opens (the full path: argon2id on each).
    pub(crate) async fn unlock(store: &dyn Store, password: &[u8]) -> Result<Unlocked> {
        Self::unlock_with(store, password, None).await
    }

    /// The id of the repository at `store`, from its config header, read
    /// without any key (`nfrepo key lock` names the host's cache file by it).
    ///
    /// # Errors
    /// [`Error::RepositoryNotFound`], [`Error::NotARepository`],
    /// [`Error::Unreachable`], or [`Error::Corrupted`] for a damaged header.
    pub async fn read_id(store: &dyn Store) -> Result<RepoId> {
        Ok(Self::read_header(store).await?.0.repo)
    }

    /// The config's header, and the config's bytes it was read from.
    async fn read_header(store: &dyn Store) -> Result<(ConfigHeader, Bytes)> {
        let location = store.location().to_owned();
        let config_bytes = match store.get(&ObjectKey::config()).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let anything = store
                    .list(ObjectKind::Key)
                    .await
                    .map(|l| !l.is_empty())
                    .unwrap_or(false)
                    || store
                        .list(ObjectKind::Snapshot)
                        .await
                        .map(|l| !l.is_empty())
                        .unwrap_or(false);
                return Err(if anything {
                    Error::NotARepository {
                        location,
                        detail: "the config object is missing".into(),
                    }
                } else {
                    Error::RepositoryNotFound { location }
                });
            }
            Err(e) => return Err(Error::store(e)),
        };
        let (header, _) = decode_config_header(&config_bytes).map_err(|e| match e {
            nfrepo_format::Error::BadMagic { .. } => Error::NotARepository {
                location: location.clone(),
                detail: "its config is not an nfrepo config".into(),
            },
            other => Error::decode("config", other),
        })?;
        Ok((header, config_bytes))
    }

    async fn unlock_with(store: &dyn Store, password: &[u8], cache: Option<&UnlockCache>) -> Result<Unlocked> {
        let location = store.location().to_owned();
        let (header, config) = Self::read_header(store).await?;
        // One listing of `keys/` gives both the slots and the key histories.
        let listed = store.list(ObjectKind::Key).await.map_err(Error::store)?;
        let newest_history = newest_history_in(&listed);
        let mut slots = fetch_slots(store, listed).await?;
        let newest_slot_epoch = slots
            .iter()
            .filter_map(|s| s.slot.as_ref().ok().map(KeySlot::claimed_epoch))
            .max()
            .unwrap_or(0);
        let newest_epoch = newest_history.max(newest_slot_epoch);
        // Newest epoch first: a password may open both its rewritten slot
        // and a stale copy of it put back into `keys/`; the newest wins.
        slots.sort_by_key(|s| std::cmp::Reverse(s.slot.as_ref().map_or(0, KeySlot::claimed_epoch)));
        let unlocked = |ring, slot| Unlocked {
            header,
            config: config.clone(),
            ring,
            slot,
            newest_slot_epoch,
            newest_epoch,
        };
        if let Some(cache) = cache
            && let Some(entry) = cache.load(&header.repo, password)
        {
            let current = slots.iter().find_map(|s| match &s.slot {
                Ok(slot)
                    if s.id == entry.slot
                        && slot.salt == entry.slot_salt
                        && slot.kdf == entry.slot_kdf
                        && slot.claimed_epoch() == newest_slot_epoch =>
                {
                    Some(slot)
                }
                _ => None,
            });
            match current.map(|slot| (slot, slot.unwrap_ring_with(&entry.wrapping_key, &header.repo))) {
                Some((slot, Ok(ring))) => {
                    let ring = Self::ring_with_history(store, &header, slot, ring, newest_epoch).await?;
                    tracing::debug!(key = %entry.slot, expires = entry.expires, "opened with this host's cached unlock");
                    return Ok(unlocked(ring, entry.slot));
                }
                // The slot was removed or rewritten (key passwd, key rotate), or
                // a newer epoch's slot must be tried first: the full path decides.
                _ => cache.discard(&header.repo),
            }
        }
        for stored in slots {
            let slot = match stored.slot {
                Ok(slot) => slot,
                // A put-only credential's slot (put-only.md): no password opens it.
                Err(nfrepo_format::Error::UnsupportedVersion {
                    version: nfrepo_format::CREDENTIAL_SLOT_VERSION,
                    ..
                }) => continue,
                Err(e) => {
                    tracing::warn!(key = %stored.id, error = %e, "skipping an unreadable key slot");
                    continue;
                }
            };
            let opened = slot
                .wrapping_key(password)
                .and_then(|key| Ok((slot.unwrap_ring_with(&key, &header.repo)?, key)));
            match opened {
                Ok((ring, key)) => {
                    let ring = Self::ring_with_history(store, &header, &slot, ring, newest_epoch).await?;
                    if let Some(cache) = cache {
                        cache.store(&header.repo, password, stored.id, &slot, &key);
                    }
                    return Ok(unlocked(ring, stored.id));
                }
                Err(nfrepo_format::Error::WrongPassword) => {}
                Err(e) => tracing::warn!(key = %stored.id, error = %e, "skipping a key slot"),
            }
        }
        Err(Error::WrongPassword { location })
    }

    /// The ring `slot` opened to, with the older epochs of its key history
    /// (a version-2 slot).
    async fn ring_with_history(
        store: &dyn Store,
        header: &ConfigHeader,
        slot: &KeySlot,
        ring: KeyRing,
        newest_epoch: u32,
    ) -> Result<KeyRing> {
        if slot.epoch.is_none() {
            return Ok(ring);
        }
        match with_history(store, header, &ring).await {
            // A reseal deletes the histories of the epochs it retires.
            Err(Error::Missing { .. }) if ring.current_epoch() < newest_epoch => Err(Error::RetiredKeyEpoch {
                epoch: ring.current_epoch(),
                newest: newest_epoch,
            }),
            other => other,
        }
    }

    /// The storage.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The repository id.
    #[must_use]
    pub const fn id(&self) -> RepoId {
        self.header.repo
    }

    /// The cipher.
    #[must_use]
    pub const fn cipher(&self) -> Cipher {
        self.header.cipher
    }

    /// Refuses this repository unless its config names `required`: the
    /// check behind a policy such as "AES-256 at rest" (`--require-cipher`).
    ///
    /// # Errors
    /// [`Error::CipherNotAllowed`] naming both ciphers.
    pub fn require_cipher(&self, required: Cipher) -> Result<()> {
        if self.header.cipher == required {
            return Ok(());
        }
        Err(Error::CipherNotAllowed {
            location: self.store.location().to_owned(),
            found: self.header.cipher.name(),
            required: required.name(),
        })
    }

    /// The sealed config.
    #[must_use]
    pub fn config(&self) -> &ConfigBody {
        &self.config
    }

    /// This repository as if its config were `config` (for tests of
    /// repositories an older release made).
    #[cfg(test)]
    pub(crate) fn with_config(mut self, config: ConfigBody) -> Self {
        self.config = Arc::new(config);
        self
    }

    /// The working keys.
    #[must_use]
    pub const fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    /// The key slot this repository was opened with.
    #[must_use]
    pub const fn key_id(&self) -> Option<KeyId> {
        self.key_id
    }

    /// The repository's X25519 key pair (keys.md, "Repository key pair").
    #[must_use]
    pub fn key_pair(&self) -> &RepoKeyPair {
        // Never empty: a ring has at least one live epoch.
        &self.key_pairs[0]
    }

    /// The key pairs of the live key epochs, current first, with each
    /// epoch's audit key: what opens and verifies the audit entries of each.
    #[must_use]
    pub fn audit_keys(&self) -> Vec<(&RepoKeyPair, &nfrepo_format::SecretKey)> {
        std::iter::once(&self.keys.audit_key)
            .chain(self.keys.older_audit_keys.iter().map(|(_, key)| key))
            .zip(self.key_pairs.iter())
            .map(|(key, pair)| (pair, key))
            .collect()
    }

    /// The sealer for every object.
    #[must_use]
    pub const fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The key epoch everything this process writes is sealed under.
    #[must_use]
    pub const fn epoch(&self) -> u32 {
        self.keys.epoch
    }

    /// Refuses to go on when the key slot that opened the repository is
    /// stale: another slot claims a newer key epoch, or a key history of a
    /// newer epoch exists, so a rotation (`key rotate`) did not rewrite
    /// this password's slot, did not finish, or the slots were rolled back
    /// to older copies. Whatever this process wrote would be sealed under a key the
    /// rotation retires, so every command that writes calls this first;
    /// reading stays possible.
    ///
    /// # Errors
    /// [`Error::StaleKeySlot`].
    pub fn require_current_ring(&self) -> Result<()> {
        if self.keys.epoch < self.newest_epoch {
            return Err(Error::StaleKeySlot {
                epoch: self.keys.epoch,
                newest: self.newest_epoch,
            });
        }
        Ok(())
    }

    /// This repository with only the current key epoch's keys: it seals as
    /// before and opens only what the current epoch sealed. A reseal checks
    /// every object against it (keys.md, "Reseal"). Never hand it to
    /// [`crate::codec::with_codec`], whose per-thread codec is keyed by
    /// repository id alone.
    pub(crate) fn current_epoch_only(&self) -> Self {
        let mut keys = self.keys.clone();
        keys.older_sealing_keys.clear();
        keys.older_audit_keys.clear();
        let sealer = keys.current_sealer(self.header.cipher);
        Self {
            keys,
            sealer,
            key_pairs: Arc::new(self.key_pairs.iter().take(1).cloned().collect()),
            ..self.clone()
        }
    }

    /// This repository under `ring` (what a rotation just wrote), on the
    /// same store and key slot.
    pub(crate) fn rekeyed(&self, ring: &KeyRing) -> Self {
        let keys = ring.derive();
        let sealer = keys.sealer(self.header.cipher);
        Self {
            newest_epoch: self.newest_epoch.max(ring.current_epoch()),
            keys,
            sealer,
            key_pairs: Arc::new(ring.key_pairs()),
            ..self.clone()
        }
    }

    /// Keeps the index in a local cache under `dir` (see [`crate::Index`])
    /// instead of in memory; `None` keeps it in memory.
    #[must_use]
    pub fn with_index_cache(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.index_cache_dir = dir.map(Arc::new);
        self
    }

    /// The local cache directory for the index, if any.
    #[must_use]
    pub fn index_cache_dir(&self) -> Option<&std::path::Path> {
        self.index_cache_dir.as_deref().map(std::path::PathBuf::as_path)
    }

    /// Lists the key slots; `current` marks the one `password` opens.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_keys(&self, password: &[u8]) -> Result<Vec<KeyInfo>> {
        self.require_keys("key")?;
        let mut out = Vec::new();
        for stored in read_slots(self.store.as_ref()).await? {
            out.push(match stored.slot {
                Ok(slot) => KeyInfo {
                    id: stored.id,
                    current: slot.unwrap_ring(password, &self.header.repo).is_ok(),
                    epoch: Some(slot.claimed_epoch()),
                    label: slot.label,
                    created: slot.created,
                },
                // Listed, so that `key remove` can name it; it opens nothing.
                Err(e) => KeyInfo {
                    id: stored.id,
                    label: format!("(unreadable: {e})"),
                    created: 0,
                    current: false,
                    epoch: None,
                },
            });
        }
        out.sort_by_key(|k| (k.created, k.id));
        Ok(out)
    }

    /// Adds a key slot for `new_password`, proving access with `password`.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] if `password` opens no slot.
    pub async fn add_key(&self, password: &[u8], new_password: &[u8], kdf: KdfParams, label: String) -> Result<KeyId> {
        self.require_keys("key")?;
        validate_kdf(&kdf)?;
        let unlocked = Self::unlock(self.store.as_ref(), password).await?;
        if unlocked.ring.current_epoch() < unlocked.newest_epoch {
            return Err(Error::StaleKeySlot {
                epoch: unlocked.ring.current_epoch(),
                newest: unlocked.newest_epoch,
            });
        }
        let slot = KeySlot::wrap_ring(
            &unlocked.ring.current_only(),
            new_password,
            kdf,
            &self.header.repo,
            chrono::Utc::now().timestamp(),
            label,
        )
        .map_err(Error::Format)?;
        put_key_slot(self.store.as_ref(), &slot).await
    }

    /// Removes a key slot. Refuses to remove the last one, or the one `password` opens.
    ///
    /// # Errors
    /// [`Error::Invalid`] for those refusals; [`Error::Missing`] for an unknown id.
    pub async fn remove_key(&self, password: &[u8], id: &KeyId) -> Result<()> {
        self.require_keys("key")?;
        let keys = self.list_keys(password).await?;
        let target = keys.iter().find(|k| k.id == *id).ok_or_else(|| Error::Missing {
            object: format!("keys/{id}"),
            detail: "no such key slot".into(),
        })?;
        if target.current {
            return Err(Error::Invalid(
                "refusing to remove the key slot this password opens; use another password".into(),
            ));
        }
        if keys.len() < 2 {
            return Err(Error::Invalid("refusing to remove the last key slot".into()));
        }
        let key = ObjectKey::new(ObjectKind::Key, id.to_hex()).map_err(Error::store)?;
        self.store.delete(&key).await.map_err(Error::store)
    }

    /// Changes the password: adds a slot for `new_password`, then removes the old slot.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] if `password` opens no slot.
    pub async fn change_password(&self, password: &[u8], new_password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        self.require_keys("key")?;
        let old_id = Self::unlock(self.store.as_ref(), password).await?.slot;
        let new_id = self
            .add_key(password, new_password, kdf, crate::host::user_at_host())
            .await?;
        let key = ObjectKey::new(ObjectKind::Key, old_id.to_hex()).map_err(Error::store)?;
        self.store.delete(&key).await.map_err(Error::store)?;
        Ok(new_id)
    }
}

/// The object key of the key history of `epoch` (`keys/epoch-<n>`).
pub(crate) fn history_key(epoch: u32) -> Result<ObjectKey> {
    ObjectKey::new(ObjectKind::Key, KeyHistory::name(epoch)).map_err(Error::store)
}

/// `ring`, as a version-2 key slot gives it, completed with the key history
/// of its epoch (the older epochs, keys.md).
async fn with_history(store: &dyn Store, header: &ConfigHeader, ring: &KeyRing) -> Result<KeyRing> {
    let epoch = ring.current_epoch();
    let key = history_key(epoch)?;
    let bytes = match store.get(&key).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::Missing {
                object: key.to_string(),
                detail: format!(
                    "the key history of epoch {epoch} is gone: nothing sealed under an older key epoch can be opened"
                ),
            });
        }
        Err(e) => return Err(Error::store(e)),
    };
    let sealer = ring.current_only().sealer(header.cipher);
    let history =
        KeyHistory::decode(&bytes, epoch, &sealer, &header.repo).map_err(|e| Error::decode(key.to_string(), e))?;
    ring.with_history(&history)
        .map_err(|e| Error::decode(key.to_string(), e))
}

/// The newest epoch with a key history under `keys/` (0 if none).
pub(crate) async fn newest_history_epoch(store: &dyn Store) -> Result<u32> {
    Ok(newest_history_in(
        &store.list(ObjectKind::Key).await.map_err(Error::store)?,
    ))
}

/// The newest epoch with a key history among `listed` (a listing of `keys/`).
fn newest_history_in(listed: &[nfrepo_store::ObjectInfo]) -> u32 {
    listed
        .iter()
        .filter_map(|info| KeyHistory::parse_name(info.key.name()))
        .max()
        .unwrap_or(0)
}

/// Every object under `keys/` whose name is a key id, fetched and decoded.
pub(crate) async fn read_slots(store: &dyn Store) -> Result<Vec<StoredSlot>> {
    fetch_slots(store, store.list(ObjectKind::Key).await.map_err(Error::store)?).await
}

/// Slots fetched at once from a remote store: an open pays one round trip
/// for them, not one per slot.
const SLOT_FETCH_CONCURRENCY: usize = 8;

/// The objects of `listed` (a listing of `keys/`) whose name is a key id,
/// fetched (a few at once) and decoded, in the listing's order.
async fn fetch_slots(store: &dyn Store, listed: Vec<nfrepo_store::ObjectInfo>) -> Result<Vec<StoredSlot>> {
    let fetched: Vec<Option<StoredSlot>> = futures::stream::iter(
        listed
            .into_iter()
            .filter_map(|info| Some((info.key.name().parse::<KeyId>().ok()?, info.key))),
    )
    .map(|(id, key)| async move {
        match store.get(&key).await {
            Ok(bytes) => Ok(Some(StoredSlot {
                id,
                slot: KeySlot::decode(&bytes),
            })),
            // Removed between the listing and the read (a concurrent `key remove`).
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::store(e)),
        }
    })
    .buffered(SLOT_FETCH_CONCURRENCY)
    .try_collect()
    .await?;
    Ok(fetched.into_iter().flatten().collect())
}

/// Writes `slot` under the existing name `id`, replacing what is there
/// (one atomic put: a reader sees the old slot or the new one).
pub(crate) async fn overwrite_key_slot(store: &dyn Store, id: &KeyId, slot: &KeySlot) -> Result<()> {
    let bytes = Zeroizing::new(slot.encode().map_err(Error::Format)?);
    let key = ObjectKey::new(ObjectKind::Key, id.to_hex()).map_err(Error::store)?;
    store
        .put(&key, Bytes::copy_from_slice(&bytes), PutMode::Overwrite)
        .await
        .map_err(Error::store)
}

async fn put_key_slot(store: &dyn Store, slot: &KeySlot) -> Result<KeyId> {
    let id = KeyId::random().map_err(Error::Format)?;
    let bytes = Zeroizing::new(slot.encode().map_err(Error::Format)?);
    let key = ObjectKey::new(ObjectKind::Key, id.to_hex()).map_err(Error::store)?;
    store
        .put(&key, Bytes::copy_from_slice(&bytes), PutMode::CreateNew)
        .await
        .map_err(Error::store)?;
    Ok(id)
}

#[cfg(test)]
mod init_validation_tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    // Issue 9, bug 11: `init --pack-size-mib 0` wrote a repository no command could open.
    #[tokio::test]
    async fn init_writes_nothing_with_a_bad_parameter() {
        let store: Arc<dyn Store> = Arc::new(nfrepo_store::MemoryStore::new());
        let bad = [
            InitOptions {
                pack_size: 0,
                ..InitOptions::default()
            },
            InitOptions {
                pack_size: 129 * 1024 * 1024,
                ..InitOptions::default()
            },
            InitOptions {
                pack_size: 4 * 1024 * 1024 + 1,
                ..InitOptions::default()
            },
            InitOptions {
                kdf: KdfParams {
                    memory_kib: 0,
                    ..KdfParams::default()
                },
                ..InitOptions::default()
            },
            InitOptions {
                kdf: KdfParams {
                    iterations: 65,
                    ..KdfParams::default()
                },
                ..InitOptions::default()
            },
        ];
        for options in bad {
            let err = Repository::init(store.clone(), b"pw", options).await.unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        }
        assert!(store.list(ObjectKind::Key).await.unwrap().is_empty());
        assert!(store.stat(&ObjectKey::config()).await.is_err());
        let ok = InitOptions {
            pack_size: 4 * 1024 * 1024,
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        Repository::init(store, b"pw", ok).await.unwrap();
    }

    // Issue 12, item 6: a policy can demand AES-256-GCM.
    #[tokio::test]
    async fn require_cipher_refuses_another_cipher() {
        let store: Arc<dyn Store> = Arc::new(nfrepo_store::MemoryStore::new());
        let options = InitOptions {
            cipher: Cipher::XChaCha20Poly1305,
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        let repo = Repository::init(store, b"pw", options).await.unwrap();
        repo.require_cipher(Cipher::XChaCha20Poly1305).unwrap();
        let err = repo.require_cipher(Cipher::Aes256Gcm).unwrap_err();
        assert!(
            matches!(
                err,
                Error::CipherNotAllowed {
                    found: "xchacha20poly1305",
                    required: "aes256gcm",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(crate::Operation::Inspect), crate::ErrorCode::PermissionDenied);
        assert_eq!(err.detail_code(), Some("CIPHER_NOT_ALLOWED"));
    }
}
