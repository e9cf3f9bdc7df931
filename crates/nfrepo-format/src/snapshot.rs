//! Snapshots: the commit point of a backup.
//!
//! A snapshot names the root tree of what was backed up (a Merkle root over
//! every byte) and records where it came from. It is written last, after its
//! packs and index delta; a backup that died before that left nothing a
//! reader can see.
//!
//! ```text
//! "NFRS" | version | sealed(postcard(Snapshot)), AAD (Snapshot, repository id)
//! ```
//!
//! The snapshot id is the BLAKE3 of those bytes, checked on every load, so a
//! snapshot cannot be altered or renamed without detection.

use serde::{Deserialize, Serialize};

use crate::envelope::{SNAPSHOT_MAGIC, open_object, seal_object};
use crate::seal::{SealedKind, Sealer};
use crate::{BlobId, RepoId, Result, SnapshotId};

/// One backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// The source name snapshots are grouped by (`--source`, or the host's path set).
    pub source: String,
    /// The kind of source (`files`, `stdin`, `command`, `mysql`, ...).
    pub source_kind: String,
    /// Host that made it.
    pub hostname: String,
    /// User that made it.
    pub username: String,
    /// Paths or stream names given on the command line.
    pub paths: Vec<String>,
    /// `key=value` tags, sorted.
    pub tags: Vec<(String, String)>,
    /// The chunking profile used (`files`, `dump` or `rows`: a name in the config).
    pub profile: String,
    /// The snapshot this one was compared against for unchanged files.
    pub parent: Option<SnapshotId>,
    /// The root tree: the Merkle root of the snapshot.
    pub root: BlobId,
    /// Counters.
    pub summary: Summary,
    /// For command sources: what ran and how it ended.
    pub command: Option<CommandRecord>,
    /// Entries that could not be read and were left out.
    pub skipped: Vec<String>,
    /// Free-form facts recorded by the source (tool versions, binlog position...), sorted by key.
    pub extra: Vec<(String, String)>,
    /// The nfrepo version that wrote it.
    pub program_version: String,
}

/// Counters of one backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Files seen.
    pub files: u64,
    /// Directories seen.
    pub dirs: u64,
    /// Other nodes (links, devices...).
    pub others: u64,
    /// Files reused from the parent by metadata, without reading them.
    pub files_unchanged: u64,
    /// Content bytes covered by the snapshot.
    pub bytes: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Blobs added.
    pub blobs_added: u64,
    /// Plaintext bytes of the blobs added.
    pub bytes_added_raw: u64,
    /// Stored (compressed, sealed) bytes of the packs added.
    pub bytes_added_stored: u64,
    /// Packs uploaded.
    pub packs_added: u64,
    /// Storage retries needed.
    pub retries: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// How a source command ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The argv, with secrets removed by the source.
    pub argv: Vec<String>,
    /// Exit code (0 for every committed snapshot).
    pub exit_code: i32,
}

impl Snapshot {
    /// Seals the snapshot; its id is the BLAKE3 of the returned bytes.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<(SnapshotId, Vec<u8>)> {
        let bytes = seal_object("snapshot", SNAPSHOT_MAGIC, SealedKind::Snapshot, self, sealer, repo)?;
        Ok((SnapshotId(crate::content_hash(&bytes)), bytes))
    }

    /// Opens a stored snapshot, checking that it is named by its hash.
    ///
    /// # Errors
    /// [`crate::Error::HashMismatch`] if renamed or altered, or any decoding error.
    pub fn decode(id: &SnapshotId, bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        crate::check_content_id("snapshot", &id.0, bytes)?;
        open_object("snapshot", SNAPSHOT_MAGIC, SealedKind::Snapshot, bytes, sealer, repo)
    }

    /// The header unsealed: the postcard body that [`Self::encode`] seals,
    /// for a host's local cache of decoded headers (it holds no key, but
    /// everything the header says: keep it where the operator's files are).
    ///
    /// # Errors
    /// [`crate::Error::Malformed`] if postcard cannot encode it (it always can).
    pub fn encode_plain(&self) -> Result<Vec<u8>> {
        crate::envelope::to_postcard("snapshot", self)
    }

    /// Decodes what [`Self::encode_plain`] wrote. Nothing authenticates
    /// these bytes: a caller that decides anything on them opens the sealed
    /// object instead.
    ///
    /// # Errors
    /// [`crate::Error::Malformed`] for bytes that are not a header of this build.
    pub fn decode_plain(bytes: &[u8]) -> Result<Self> {
        crate::envelope::from_postcard("snapshot", bytes)
    }

    /// The value of tag `key`.
    #[must_use]
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of fact `key` (the first, among [`Self::extra`]).
    #[must_use]
    pub fn fact(&self, key: &str) -> Option<&str> {
        self.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}
