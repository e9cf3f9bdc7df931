//! Creating and opening a repository, and managing its key slots.
//!
//! Opening reads the config, then tries the password against each key slot
//! until one unwraps the master key. Nothing else is read: the index is
//! loaded only by the commands that need it.

use std::sync::Arc;

use bytes::Bytes;
use nfrepo_format::{
    Cipher, ConfigBody, ConfigHeader, KdfParams, KeyId, KeySlot, MasterKey, RepoId, RepoKeyPair, RepoKeys, Sealer,
    decode_config_body, decode_config_header, encode_config,
};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode, Store};
use zeroize::Zeroizing;

use crate::{Error, Result};

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
    /// Label recorded in the first key slot (`user@host`).
    pub label: String,
}

/// The pack sizes a repository may have, in MiB (the config decoder
/// refuses any other, so a repository made with one could not be opened).
pub const PACK_SIZE_MIB: std::ops::RangeInclusive<u32> = 4..=128;
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
            label: crate::host::user_at_host(),
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
    /// The key slot the repository was opened with.
    key_id: Option<KeyId>,
    /// The X25519 key pair derived from the master key (audit.md, keys.md).
    key_pair: Arc<RepoKeyPair>,
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
        let body = ConfigBody {
            pack_size: options.pack_size,
            created: chrono::Utc::now().timestamp(),
            ..ConfigBody::default()
        };
        let keys = master.derive();
        let sealer = keys.sealer(options.cipher);
        // The key slot goes first: a crash before the config leaves a stray
        // slot that a second init simply ignores, never a config nobody can open.
        let slot =
            KeySlot::wrap(&master, password, options.kdf, &repo, body.created, options.label).map_err(Error::Format)?;
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
            key_id: Some(key_id),
            key_pair: Arc::new(RepoKeyPair::derive(&master)),
        })
    }

    /// Opens the repository at `store` with `password`.
    ///
    /// # Errors
    /// [`Error::RepositoryNotFound`], [`Error::NotARepository`], [`Error::WrongPassword`],
    /// [`Error::Unreachable`], or [`Error::Corrupted`] for a damaged config.
    pub async fn open(store: Arc<dyn Store>, password: &[u8]) -> Result<Self> {
        let (header, (master, key_id)) = Self::unlock(store.as_ref(), password).await?;
        let keys = master.derive();
        let sealer = keys.sealer(header.cipher);
        let config_bytes = store.get(&ObjectKey::config()).await.map_err(Error::store)?;
        let (_, sealed) = decode_config_header(&config_bytes).map_err(|e| Error::decode("config", e))?;
        let body = decode_config_body(&header, sealed, &sealer).map_err(|e| Error::decode("config", e))?;
        Ok(Self {
            store,
            header,
            config: Arc::new(body),
            keys,
            sealer,
            index_cache_dir: None,
            key_id: Some(key_id),
            key_pair: Arc::new(RepoKeyPair::derive(&master)),
        })
    }

    async fn unlock(store: &dyn Store, password: &[u8]) -> Result<(ConfigHeader, (MasterKey, KeyId))> {
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
        let slots = store.list(ObjectKind::Key).await.map_err(Error::store)?;
        for info in slots {
            let Ok(id) = info.key.name().parse::<KeyId>() else {
                continue;
            };
            let bytes = store.get(&info.key).await.map_err(Error::store)?;
            let Ok(slot) = KeySlot::decode(&bytes) else {
                tracing::warn!(key = %info.key, "skipping an unreadable key slot");
                continue;
            };
            match slot.unwrap_key(password, &header.repo) {
                Ok(master) => return Ok((header, (master, id))),
                Err(nfrepo_format::Error::WrongPassword) => {}
                Err(e) => tracing::warn!(key = %info.key, error = %e, "skipping a key slot"),
            }
        }
        Err(Error::WrongPassword { location })
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

    /// The sealed config.
    #[must_use]
    pub fn config(&self) -> &ConfigBody {
        &self.config
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
        &self.key_pair
    }

    /// The sealer for every object.
    #[must_use]
    pub const fn sealer(&self) -> &Sealer {
        &self.sealer
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
        let mut out = Vec::new();
        for info in self.store.list(ObjectKind::Key).await.map_err(Error::store)? {
            let Ok(id) = info.key.name().parse::<KeyId>() else {
                continue;
            };
            let bytes = self.store.get(&info.key).await.map_err(Error::store)?;
            let slot = KeySlot::decode(&bytes).map_err(|e| Error::decode(info.key.to_string(), e))?;
            let current = slot.unwrap_key(password, &self.header.repo).is_ok();
            out.push(KeyInfo {
                id,
                label: slot.label,
                created: slot.created,
                current,
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
        validate_kdf(&kdf)?;
        let (_, (master, _)) = Self::unlock(self.store.as_ref(), password).await?;
        let slot = KeySlot::wrap(
            &master,
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
        let (_, (_, old_id)) = Self::unlock(self.store.as_ref(), password).await?;
        let new_id = self
            .add_key(password, new_password, kdf, crate::host::user_at_host())
            .await?;
        let key = ObjectKey::new(ObjectKind::Key, old_id.to_hex()).map_err(Error::store)?;
        self.store.delete(&key).await.map_err(Error::store)?;
        Ok(new_id)
    }
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
}
