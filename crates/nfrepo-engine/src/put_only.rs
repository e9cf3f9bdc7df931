//! Opening a repository with a put-only credential (format-spec/put-only.md).
//!
//! [`Repository::open_put_only`] checks the credential against its slot
//! under `keys/` and begins one put-only session: the repository it returns
//! seals everything (packs, snapshot, session marker) under that session's
//! key, writes index deltas under the credential's index key, and reads
//! only index deltas sealed under that index key (to deduplicate). It holds
//! no key that opens a pack, a tree or a snapshot; dropping it (every clone)
//! drops the session key, after which nothing it wrote opens without the
//! key epoch's secret.
//!
//! Every command that reads or removes data checks
//! [`Repository::require_keys`] first and fails with `PERMISSION_DENIED` /
//! `PUT_ONLY` before touching storage.

use std::sync::Arc;

use nfrepo_format::{CredentialSlot, KeyRef, PutOnlyCredential, RepoKeys, SecretKey, decode_config_header};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, Store};

use crate::{Error, Repository, Result};

/// What a put-only repository handle carries besides the session's sealer.
#[derive(Clone)]
pub(crate) struct PutOnlyAccess {
    pub(crate) credential: Arc<PutOnlyCredential>,
    pub(crate) index_sealer: nfrepo_format::Sealer,
    /// Where the session remembers the files it stored (`backup::known`).
    pub(crate) known_files_dir: Option<Arc<std::path::PathBuf>>,
}

impl Repository {
    /// Opens the repository at `store` for one put-only backup session with
    /// `credential`.
    ///
    /// # Errors
    /// [`Error::RevokedCredential`] if the credential's slot is missing or is
    /// not this credential's, or the repository rotated to a newer key epoch
    /// (a rotation revokes every credential); [`Error::NotARepository`] if
    /// the config names another repository or cipher; storage errors.
    pub async fn open_put_only(store: Arc<dyn Store>, credential: PutOnlyCredential) -> Result<Self> {
        let location = store.location().to_owned();
        let config_bytes = store.get(&ObjectKey::config()).await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::RepositoryNotFound {
                    location: location.clone(),
                }
            } else {
                Error::store(e)
            }
        })?;
        let (header, _) = decode_config_header(&config_bytes).map_err(|e| Error::decode("config", e))?;
        if header.repo != credential.repo || header.cipher != credential.cipher {
            return Err(Error::NotARepository {
                location,
                detail: "the put-only credential was issued for another repository".into(),
            });
        }
        let revoked = |detail: String| Error::RevokedCredential {
            slot: credential.slot.short(),
            detail,
        };
        let slot_key = ObjectKey::new(ObjectKind::Key, credential.slot.to_hex()).map_err(Error::store)?;
        let slot = match store.get(&slot_key).await {
            Ok(bytes) => CredentialSlot::decode(&bytes).map_err(|e| revoked(format!("unreadable: {e}")))?,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(revoked("removed".into())),
            Err(e) => return Err(Error::store(e)),
        };
        credential
            .check_slot(&slot)
            .map_err(|_| revoked("another credential's".into()))?;
        let newest = crate::repository::newest_history_epoch(store.as_ref()).await?;
        if newest > credential.epoch {
            return Err(revoked(format!(
                "of key epoch {}, and the repository rotated to epoch {newest}",
                credential.epoch
            )));
        }
        let sealer = credential.begin_session().map_err(Error::Format)?;
        let index_sealer = credential.index_sealer();
        let keys = put_only_keys(&credential)?;
        let config = Arc::new(credential.config.clone());
        let store = crate::object_lock::wrap(store, config.object_lock.as_ref());
        Ok(Self::put_only_parts(
            store,
            header,
            config,
            keys,
            sealer,
            PutOnlyAccess {
                credential: Arc::new(credential),
                index_sealer,
                known_files_dir: None,
            },
        ))
    }

    /// Lets the put-only sessions of this handle detect unchanged files with
    /// a record kept under the local cache directory `dir`
    /// ([`nfrepo_store::KnownFiles`]): the host cannot read its earlier
    /// trees. `None`, or a handle opened with a password, changes nothing.
    #[must_use]
    pub fn with_known_files(mut self, dir: Option<std::path::PathBuf>) -> Self {
        if let Some(access) = self.put_only.as_mut() {
            access.known_files_dir = dir.map(Arc::new);
        }
        self
    }

    /// The local cache directory of [`Self::with_known_files`].
    pub(crate) fn known_files_dir(&self) -> Option<&std::path::Path> {
        self.put_only
            .as_ref()?
            .known_files_dir
            .as_deref()
            .map(std::path::PathBuf::as_path)
    }

    /// Whether this handle was opened with a put-only credential.
    #[must_use]
    pub fn is_put_only(&self) -> bool {
        self.put_only.is_some()
    }

    /// The credential of a put-only handle (its label and slot name who
    /// wrote, for reports).
    #[must_use]
    pub fn put_only_credential(&self) -> Option<&PutOnlyCredential> {
        self.put_only.as_ref().map(|p| p.credential.as_ref())
    }

    /// Refuses a put-only handle: every command that reads or removes
    /// stored data calls this before touching storage.
    ///
    /// # Errors
    /// [`Error::PutOnly`] naming `operation`.
    pub fn require_keys(&self, operation: &'static str) -> Result<()> {
        match self.put_only {
            Some(_) => Err(Error::PutOnly { operation }),
            None => Ok(()),
        }
    }

    /// The sealer index deltas are written with: the repository's (which
    /// writes version 2 under the index key when a delta lists a put-only
    /// session's pack), or a put-only session's index key.
    pub(crate) fn index_sealer(&self) -> &nfrepo_format::Sealer {
        self.put_only.as_ref().map_or(self.sealer(), |p| &p.index_sealer)
    }

    /// The key reference this handle seals under (for per-thread codecs).
    pub(crate) fn sealing_reference(&self) -> KeyRef {
        self.sealer().reference()
    }
}

/// The working keys of a put-only session: the credential's id key and
/// chunker seed; its sealing and audit keys are fresh random keys that
/// seal nothing (the session seals with its own sealer, and a put-only
/// handle refuses every command that would use them).
fn put_only_keys(credential: &PutOnlyCredential) -> Result<RepoKeys> {
    let random = || -> Result<SecretKey> {
        let bytes = nfrepo_format::KeyId::random().map_err(Error::Format)?;
        Ok(SecretKey::from_bytes(bytes.0))
    };
    Ok(RepoKeys {
        id_key: credential.id_key.clone(),
        chunker_seed: credential.chunker_seed,
        sealing_key: random()?,
        audit_key: random()?,
        epoch: credential.epoch,
        older_sealing_keys: Vec::new(),
        older_audit_keys: Vec::new(),
        retired_audit_keys: Vec::new(),
        reference_keys: credential.reference_keys(),
    })
}

impl Repository {
    /// Issues a put-only credential for `label` (`key add --put-only`):
    /// writes its slot under `keys/` and returns the credential, whose file
    /// ([`PutOnlyCredential::encode`]) the caller hands to the backup host.
    ///
    /// # Errors
    /// [`Error::PutOnly`] from a put-only handle; [`Error::StaleKeySlot`]
    /// if the key ring is not the newest epoch's; storage errors.
    pub async fn add_put_only_key(&self, label: &str) -> Result<PutOnlyCredential> {
        self.require_keys("key add")?;
        self.require_current_ring()?;
        let (credential, slot) = PutOnlyCredential::issue(
            self.id(),
            self.keys(),
            self.cipher(),
            self.config(),
            label,
            chrono::Utc::now().timestamp(),
        )
        .map_err(Error::Format)?;
        let bytes = slot.encode().map_err(Error::Format)?;
        let key = ObjectKey::new(ObjectKind::Key, credential.slot.to_hex()).map_err(Error::store)?;
        self.store()
            .put(&key, bytes::Bytes::from(bytes), nfrepo_store::PutMode::CreateNew)
            .await
            .map_err(Error::store)?;
        Ok(credential)
    }
}
