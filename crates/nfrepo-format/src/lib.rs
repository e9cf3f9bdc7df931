//! nfrepo's on-disk format: every stored object, as bytes and as types.
//!
//! This crate turns repository objects into bytes and back: ids, keys and
//! key slots, sealing (AEAD), compression, chunking parameters, packs, index
//! deltas, tree nodes, content lists, snapshots, the config, audit entries
//! and the repository key pair. It is the
//! normative companion of `format-spec/`.
//!
//! It is **not** a storage layer: it does no I/O, has no async, and knows
//! nothing of paths or object stores. Every decoder takes hostile bytes and
//! returns an [`Error`], never panics; each one has a fuzz target.
//!
//! How the pieces relate: a [`MasterKey`] (unwrapped from a [`KeySlot`])
//! derives [`RepoKeys`]; a [`BlobCodec`] uses them to name, compress and seal
//! blobs; a [`PackBuilder`] gathers sealed blobs into packs; an
//! [`IndexDelta`] records which pack holds which blob; [`Tree`] and
//! [`ContentList`] blobs form a Merkle tree whose root a [`Snapshot`] names.
//!
//! ```
//! use nfrepo_format::{BlobCodec, BlobKind, Cipher, MasterKey};
//!
//! let keys = MasterKey::from_bytes([7; 32]).derive();
//! let mut codec = BlobCodec::new(keys.clone(), keys.sealer(Cipher::XChaCha20Poly1305), 3)?;
//! let blob = codec.seal(BlobKind::Data, b"hello")?;
//! assert_eq!(codec.open(BlobKind::Data, &blob.id, blob.raw_len, &blob.sealed)?, b"hello");
//! # Ok::<(), nfrepo_format::Error>(())
//! ```

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![deny(clippy::indexing_slicing)]
#![warn(clippy::expect_used)]

mod audit;
mod blob;
mod chunker;
mod config;
mod content;
mod drill;
mod envelope;
mod error;
mod gc_plan;
mod good;
mod id;
mod index;
mod key;
mod lease;
mod pack;
mod protect;
mod public;
mod put_only;
mod replica;
mod seal;
mod session;
mod snapshot;
mod stream_hash;
mod tree;
mod unlock;

pub use audit::{
    AUDIT_HEADER_LEN, AUDIT_MAGIC, AuditAccess, AuditAuth, AuditHeader, AuditRecord, AuditSealing, ChainHead,
    MAX_AUDIT_ENTRY_LEN, ObjectCount, ParsedAuditEntry, entry_name as audit_entry_name,
    parse_entry_name as parse_audit_entry_name,
};
pub use blob::{BlobCodec, BlobKind, MAX_BLOB_LEN, SealedBlob};
pub use chunker::{Chunker, ChunkerProfile, Chunks, Guided, Precedent, PrecedentBuilder};
pub use config::{ConfigBody, ConfigHeader, ObjectLock, decode_config_body, decode_config_header, encode_config};
pub use content::{
    Content, ContentList, ContentListBuilder, EmittedList, INLINE_MAX_ENTRIES, LIST_CUT_MODULUS, LIST_MAX_ENTRIES,
    LIST_MIN_ENTRIES, ListEntry, MAX_DEPTH,
};
pub use drill::{DrillCheck, DrillPhase, DrillRecord};
pub use envelope::FORMAT_VERSION;
pub use error::{Error, Result};
pub use gc_plan::{GcPlan, PlanReason, PlannedPack};
pub use good::GoodMarker;
pub use id::{BlobId, DrillId, IndexId, KeyId, PackId, RepoId, SnapshotId, WriterId, content_hash};
pub use index::{IndexDelta, IndexedPack};
pub use key::{
    EpochSecret, KEY_SLOT_RING_VERSION, KdfParams, KeyHistory, KeyRing, KeySlot, MasterKey, RepoKeys, RetiredEpoch,
};
pub use lease::Lease;
pub use pack::{
    BlobFault, FinishedPack, MAX_PACK_LEN, PACK_HEADER_LEN, PackBuilder, PackEntry, PackKind, SESSION_PACK_HEADER_LEN,
    check_entry_kinds, decode_pack_header, decode_pack_sealing, decode_session_trailer, decode_trailer,
    pack_header_len, pack_sealer, read_pack_entries, read_pack_sealing, trailer_len, verify_pack,
};
pub use protect::ProtectMarker;
pub use public::{PUBLIC_KEY_MAGIC, PUBLIC_KEY_OBJECT_LEN, PUBLIC_SEAL_OVERHEAD, RepoKeyPair, RepoPublicKey};
pub use put_only::{
    CREDENTIAL_MAGIC, CREDENTIAL_SLOT_VERSION, CredentialSlot, KEY_SCHEME_INDEX, KEY_SCHEME_REPOSITORY,
    KEY_SCHEME_SESSION, KeyRef, PutOnlyCredential, ReferenceKeys, SessionRef, begin_session, begin_session_with,
    index_key,
};
pub use replica::{Backlog, PassResult, REPLICA_MAGIC, ReplicaObject, ReplicaState};
pub use seal::{Aad, Cipher, NONCE_LEN, SEAL_OVERHEAD, SealedKind, Sealer, SecretKey};
pub use session::{ProcessStart, SessionMarker};
pub use snapshot::{CommandRecord, Snapshot, Summary};
pub use stream_hash::StreamHash;
pub use tree::{Metadata, Node, NodeKind, Tree, Xattr};
pub use unlock::{CachedUnlock, UnlockCacheFile};

/// Checks that `bytes` hash (plain BLAKE3) to the id they are stored under.
///
/// # Errors
/// [`Error::HashMismatch`] if they do not.
pub fn check_content_id(what: &'static str, id: &[u8; 32], bytes: &[u8]) -> Result<()> {
    let actual = content_hash(bytes);
    if &actual == id {
        Ok(())
    } else {
        Err(Error::HashMismatch {
            what,
            expected: hex::encode(id),
            actual: hex::encode(actual),
        })
    }
}
