//! The tamper-evident audit log (format-spec/audit.md).
//!
//! Every command that reaches a repository appends exactly one entry through
//! [`AuditWriter::append`]: who, where, what command (secrets redacted by
//! [`redact_command_line`]), with which key slot, what it created and
//! deleted (measured by an [`ActivityStore`] under the repository), and how
//! it ended. Entries are chained per writer and written with a conditional
//! put, never overwritten. [`read_audit`] reads and checks every chain.
//!
//! The append is one small PUT when the writer's local state is intact: no
//! listing, no read. It lists `audit/` only to recover a lost head, after a
//! name clash, and for a checkpoint (at most once a day per writer, and in
//! the commands that read the whole repository anyway).

mod activity;
mod redact;
mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use nfrepo_format::{
    AuditAccess, AuditRecord, AuditSealing, ChainHead, Cipher, ParsedAuditEntry, RepoId, RepoPublicKey, WriterId,
    audit_entry_name, decode_config_header, parse_audit_entry_name,
};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode, Store};

pub use activity::{Activity, ActivityStore, ActivitySummary};
pub use redact::redact_command_line;
pub use verify::{AuditLogEntry, AuditProblem, AuditProblemKind, AuditReport};

use crate::{Error, Repository, Result};
use writer::{Head, LocalState, Locked};

/// How often a writer records every chain's head, at most, unless asked.
pub const CHECKPOINT_INTERVAL_NS: i64 = 24 * 3600 * 1_000_000_000;

/// Attempts at a put whose name another writer took meanwhile.
const CLASH_RETRIES: usize = 32;

/// The name of the public key object under `keys/`.
pub const PUBLIC_KEY_OBJECT: &str = "public";

/// One command, as its audit entry records it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AuditEvent {
    /// The operation (`snapshot`, `audit verify`…).
    pub operation: String,
    /// The command line, already redacted.
    pub command: Vec<String>,
    /// Backup sources the command named.
    pub sources: Vec<String>,
    /// Its error code, empty on success.
    pub code: String,
    /// Its finer error code, empty if none.
    pub detail: String,
    /// Its error message, one line, already redacted.
    pub message: String,
    /// Its exit code.
    pub exit_code: i32,
    /// Record every writer's head in this entry (a checkpoint).
    pub checkpoint: bool,
    /// How long the command ran, milliseconds, when measured (restores
    /// always are: the `high_latency` rule reads it).
    pub duration_ms: Option<u64>,
}

impl AuditEvent {
    /// An event for `operation` run as `command`.
    #[must_use]
    pub fn new(operation: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            operation: operation.into(),
            command,
            ..Self::default()
        }
    }
}

/// Where an entry went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// Its object path.
    pub object: String,
    /// Its sequence number.
    pub seq: u64,
    /// Whether it is a checkpoint.
    pub checkpoint: bool,
}

/// Appends entries for this host, user and cache directory.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    store: Arc<dyn Store>,
    cache_dir: Option<PathBuf>,
    host: String,
    user: String,
}

struct Target<'a> {
    repo: RepoId,
    cipher: Cipher,
    public: RepoPublicKey,
    /// A repository opened with a key: its entries carry the MAC.
    opened: Option<&'a Repository>,
    access: AuditAccess,
}

impl AuditWriter {
    /// A writer appending to the repository in `store`, keeping its state
    /// under `cache_dir` (without one, every append lists `audit/`).
    #[must_use]
    pub fn new(store: Arc<dyn Store>, cache_dir: Option<PathBuf>) -> Self {
        Self {
            store,
            cache_dir,
            host: crate::hostname(),
            user: crate::username(),
        }
    }

    /// Appends the entry of one command. With `opened` opened by a key
    /// slot, the entry carries the audit MAC and names the slot; opened
    /// with a put-only credential, it is sealed to the credential's public
    /// key, names the credential and carries no MAC (the credential holds
    /// no audit key); without (a wrong password, a revoked credential, a
    /// command that needs no key), it is sealed to the public key found in
    /// `keys/public` and carries no MAC.
    ///
    /// # Errors
    /// Storage errors; [`Error::Missing`] when no key holder has published
    /// the public key yet (a keyless writer then cannot write).
    pub async fn append(
        &self,
        opened: Option<&Repository>,
        event: &AuditEvent,
        activity: &ActivitySummary,
    ) -> Result<Appended> {
        let target = match opened {
            Some(repo) => match repo.put_only_credential() {
                Some(credential) => Target {
                    repo: repo.id(),
                    cipher: repo.cipher(),
                    public: credential.public,
                    opened: None,
                    access: AuditAccess::Credential {
                        slot: credential.slot,
                        label: credential.label.clone(),
                    },
                },
                None => Target {
                    repo: repo.id(),
                    cipher: repo.cipher(),
                    public: repo.key_pair().public(),
                    opened: Some(repo),
                    access: repo.key_id().map_or(AuditAccess::None, AuditAccess::KeySlot),
                },
            },
            None => self.keyless_target().await?,
        };
        let writer = writer::writer_id(
            &target.repo,
            self.store.location(),
            &self.host,
            &self.user,
            self.cache_dir.as_deref(),
        );
        let locked = Locked::acquire(self.cache_dir.clone(), target.repo, writer).await?;
        let mut state = match locked.read() {
            Some(state) => state,
            None => LocalState {
                head: self.head_by_listing(writer).await?,
                ..LocalState::default()
            },
        };
        // After a key rotation (older live epochs in the ring) the stored
        // key may still be an older epoch's: looked at on every append until
        // a reseal retires the older epochs.
        if let Some(repo) = target.opened
            && (!state.public_key_published || !repo.keys().older_audit_keys.is_empty())
        {
            state.public_key_published = publish_public_key(repo).await?;
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let checkpoint = target.opened.is_some()
            && (event.checkpoint || now.saturating_sub(state.last_checkpoint_ns) >= CHECKPOINT_INTERVAL_NS);
        let mut record = AuditRecord {
            time_ns: now,
            host: self.host.clone(),
            user: self.user.clone(),
            pid: std::process::id(),
            access: target.access.clone(),
            operation: event.operation.clone(),
            command: event.command.clone(),
            sources: event.sources.clone(),
            code: event.code.clone(),
            detail: event.detail.clone(),
            message: event.message.clone(),
            exit_code: event.exit_code,
            objects: activity.objects.clone(),
            snapshots_created: activity.snapshots_created.clone(),
            snapshots_deleted: activity.snapshots_deleted.clone(),
            heads: Vec::new(),
            duration_ms: event.duration_ms,
        };
        for _ in 0..CLASH_RETRIES {
            if checkpoint {
                record.heads = self.heads(writer, state.head).await?;
            }
            let seq = state.head.map_or(0, |h| h.seq + 1);
            let prev = state.head.map_or([0; 32], |h| h.hash);
            let sealing = AuditSealing {
                repo: &target.repo,
                cipher: target.cipher,
                public: &target.public,
                audit_key: target.opened.map(|r| &r.keys().audit_key),
            };
            let bytes = record.seal(writer, seq, prev, sealing).map_err(Error::Format)?;
            let hash = nfrepo_format::content_hash(&bytes);
            let name = audit_entry_name(&writer, seq);
            let key = ObjectKey::new(ObjectKind::Audit, name).map_err(Error::store)?;
            // Through the open repository's store when there is one: on an
            // object-locked repository it gives the entry its retention.
            let store = opened.map_or(&self.store, Repository::store);
            match store.put(&key, Bytes::from(bytes), PutMode::CreateNew).await {
                Ok(()) => {
                    state.head = Some(Head { seq, hash });
                    if checkpoint {
                        state.last_checkpoint_ns = now;
                    }
                    locked.write(&state)?;
                    return Ok(Appended {
                        object: key.path(),
                        seq,
                        checkpoint,
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    tracing::info!(object = %key, "audit entry name taken; finding the writer's head again");
                    state.head = self.head_by_listing(writer).await?;
                }
                Err(e) => return Err(Error::store(e)),
            }
        }
        Err(Error::Pipeline(format!(
            "audit entry not written: its name was taken {CLASH_RETRIES} times in a row"
        )))
    }

    /// The repository id, cipher and public key, read without any key.
    async fn keyless_target(&self) -> Result<Target<'static>> {
        let config = self.store.get(&ObjectKey::config()).await.map_err(Error::store)?;
        let (header, _) = decode_config_header(&config).map_err(|e| Error::decode("config", e))?;
        let key = public_key_object_key()?;
        let bytes = match self.store.get(&key).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::Missing {
                    object: key.path(),
                    detail: "the repository public key is not published yet (a key holder's next command writes it)"
                        .into(),
                });
            }
            Err(e) => return Err(Error::store(e)),
        };
        let public = RepoPublicKey::decode_object(&bytes, &header.repo).map_err(|e| Error::decode(key.path(), e))?;
        Ok(Target {
            repo: header.repo,
            cipher: header.cipher,
            public,
            opened: None,
            access: AuditAccess::None,
        })
    }

    /// This writer's last entry, found by listing `audit/`.
    async fn head_by_listing(&self, writer: WriterId) -> Result<Option<Head>> {
        let listed = self.store.list(ObjectKind::Audit).await.map_err(Error::store)?;
        let last = listed
            .iter()
            .filter_map(|info| parse_audit_entry_name(info.key.name()).map(|entry| (entry, &info.key)))
            .filter(|((w, _), _)| *w == writer)
            .max_by_key(|((_, seq), _)| *seq);
        let Some(((_, seq), key)) = last else {
            return Ok(None);
        };
        let bytes = self.store.get(key).await.map_err(Error::store)?;
        Ok(Some(Head {
            seq,
            hash: nfrepo_format::content_hash(&bytes),
        }))
    }

    /// Every writer's head, for a checkpoint; this writer's is `own`.
    async fn heads(&self, writer: WriterId, own: Option<Head>) -> Result<Vec<ChainHead>> {
        let listed = self.store.list(ObjectKind::Audit).await.map_err(Error::store)?;
        let mut last: std::collections::BTreeMap<WriterId, (u64, ObjectKey)> = std::collections::BTreeMap::new();
        for info in listed {
            if let Some((w, seq)) = parse_audit_entry_name(info.key.name())
                && w != writer
                && last.get(&w).is_none_or(|(s, _)| seq > *s)
            {
                last.insert(w, (seq, info.key));
            }
        }
        let mut heads = Vec::with_capacity(last.len() + 1);
        if let Some(head) = own {
            heads.push(ChainHead {
                writer,
                seq: head.seq,
                hash: head.hash,
            });
        }
        for (w, (seq, key)) in last {
            match self.store.get(&key).await {
                // Only what parses as that entry is recorded: a checkpoint
                // must not vouch for an object stored under a wrong name.
                Ok(bytes)
                    if ParsedAuditEntry::parse(&bytes).is_ok_and(|p| p.header.writer == w && p.header.seq == seq) =>
                {
                    heads.push(ChainHead {
                        writer: w,
                        seq,
                        hash: nfrepo_format::content_hash(&bytes),
                    });
                }
                Ok(_) => tracing::warn!(object = %key, "not recording a malformed audit head in the checkpoint"),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::store(e)),
            }
        }
        Ok(heads)
    }

    /// This writer's last head as the local state records it, if any.
    fn local_head(&self, repo: &Repository) -> Option<(WriterId, Head)> {
        let dir = self.cache_dir.as_ref()?;
        let writer = writer::writer_id(&repo.id(), self.store.location(), &self.host, &self.user, Some(dir));
        let path = dir
            .join("audit")
            .join(repo.id().to_hex())
            .join(format!("{}.state", writer.to_hex()));
        let text = std::fs::read_to_string(path).ok()?;
        let mut fields = text.split_whitespace();
        let seq = fields.next()?.parse().ok()?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(fields.next()?, &mut hash).ok()?;
        Some((writer, Head { seq, hash }))
    }
}

/// Which entries of the log to show: `audit log`'s options and the admin
/// panel's audit filters, so the two select alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditFilter {
    /// Entries at or after this time (nanoseconds since the Unix epoch).
    pub since_ns: Option<i64>,
    /// Entries before this time.
    pub until_ns: Option<i64>,
    /// Entries naming this source, or written by this host.
    pub source: Option<String>,
    /// Entries of this operation (`snapshot`, `serve restore`…), exactly.
    pub operation: Option<String>,
    /// Only entries of failed commands (with an error code).
    pub failed_only: bool,
}

impl AuditFilter {
    /// Whether `record` is selected.
    #[must_use]
    pub fn matches(&self, record: &nfrepo_format::AuditRecord) -> bool {
        self.since_ns.is_none_or(|t| record.time_ns >= t)
            && self.until_ns.is_none_or(|t| record.time_ns < t)
            && self
                .source
                .as_deref()
                .is_none_or(|s| record.sources.iter().any(|x| x == s) || record.host == s)
            && self.operation.as_deref().is_none_or(|o| record.operation == o)
            && (!self.failed_only || !record.code.is_empty())
    }
}

/// Reads every entry of the log and checks every chain (and `keys/public`).
/// `writer`, when given, adds this host's own last head to what checkpoints
/// record, so a tail deleted since is found even without a checkpoint.
///
/// # Errors
/// Storage errors; problems with entries are in the report, not errors.
pub async fn read_audit(repo: &Repository, writer: Option<&AuditWriter>) -> Result<AuditReport> {
    let local = writer.and_then(|w| w.local_head(repo));
    verify::read_and_verify(repo, local).await
}

pub(crate) fn public_key_object_key() -> Result<ObjectKey> {
    ObjectKey::new(ObjectKind::Key, PUBLIC_KEY_OBJECT).map_err(Error::store)
}

/// Writes `keys/public` if it is missing. Returns whether the stored object
/// holds this repository's key; a different one is left for `audit verify`
/// and `check` to report.
async fn publish_public_key(repo: &Repository) -> Result<bool> {
    let key = public_key_object_key()?;
    let public = repo.key_pair().public();
    match repo.store().get(&key).await {
        Ok(bytes) => match public.verify_object(&bytes, &repo.id(), &repo.keys().audit_key) {
            Ok(()) => Ok(true),
            // The key pair of an older live epoch: a key rotation happened
            // since; the current epoch's key pair replaces it.
            Err(_) if older_epoch_public_key(repo, &bytes) => {
                let bytes = public.encode_object(&repo.id(), &repo.keys().audit_key);
                repo.store()
                    .put(&key, Bytes::from(bytes), PutMode::Overwrite)
                    .await
                    .map_err(Error::store)?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "the stored public key is not this repository's");
                Ok(false)
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let bytes = public.encode_object(&repo.id(), &repo.keys().audit_key);
            match repo.store().put(&key, Bytes::from(bytes), PutMode::CreateNew).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Error::store(e)),
            }
        }
        Err(e) => Err(Error::store(e)),
    }
}

/// Whether `bytes` is the `keys/public` object of an older live key epoch.
fn older_epoch_public_key(repo: &Repository, bytes: &[u8]) -> bool {
    repo.audit_keys()
        .iter()
        .skip(1)
        .any(|(pair, audit_key)| pair.public().verify_object(bytes, &repo.id(), audit_key).is_ok())
}

/// What is wrong with `keys/public`, if anything. Reading writes nothing
/// (a replica must not gain an object its source lacks): a missing object
/// is a problem only once the log has entries, because the first entry a
/// key holder writes publishes it first.
async fn check_public_key(repo: &Repository, log_has_entries: bool) -> Result<Option<String>> {
    let key = public_key_object_key()?;
    match repo.store().get(&key).await {
        // An older live epoch's key is still the repository's (it opens
        // what was sealed to it); the next append of a key holder replaces it.
        Ok(bytes) => Ok(repo
            .key_pair()
            .public()
            .verify_object(&bytes, &repo.id(), &repo.keys().audit_key)
            .err()
            .filter(|_| !older_epoch_public_key(repo, &bytes))
            .map(|e| format!("{key}: {e}: it does not hold this repository's public key"))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(log_has_entries.then(|| {
            format!("{key} is missing though the audit log has entries: wrong-password attempts cannot be logged")
        })),
        Err(e) => Err(Error::store(e)),
    }
}
