//! Backup session markers: "a backup is running and may reference packs".
//!
//! A backup writes `sessions/<random id>` when it starts and deletes it when
//! it commits or aborts. While it runs it rewrites the marker (the
//! heartbeat); the store's modification time of the marker is the time of the
//! last beat. GC treats a marker whose last beat is older than the expiry as
//! left by a crashed backup. The marker also lists the GC plans the backup
//! saw before it loaded the index: the backup never deduplicates against a
//! pack in those plans, so GC may delete such packs while it runs
//! (`format-spec/gc.md`). It names the parent snapshot's root tree, which
//! the backup reuses, so GC keeps that tree's blobs even if the parent is
//! forgotten meanwhile.
//!
//! The marker also records who runs the backup precisely enough for GC on
//! the same host to see at once that the process is gone ([`ProcessStart`]:
//! boot id, pid namespace, start time), so a backup that died without
//! removing its marker does not hold GC back for the whole expiry.
//!
//! ```text
//! "NFRB" | version | sealed(postcard(SessionMarker)), AAD (SessionMarker, repository id)
//! ```
//!
//! `process` was appended to the body later (format version unchanged): a
//! body that ends after `parent_root` is a marker of an earlier build and
//! decodes with `process: None`. An earlier build fails to open a marker
//! with `process` (trailing bytes) and so treats it as blocking GC until it
//! expires: safe, only slower.

use serde::{Deserialize, Serialize};

use crate::envelope::{SESSION_MAGIC, from_postcard, read_header, seal_object};
use crate::seal::{Aad, SealedKind, Sealer};
use crate::{BlobId, RepoId, Result};

/// The body of a `sessions/<id>` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMarker {
    /// When the backup started, nanoseconds since the Unix epoch (the backup host's clock).
    pub started_ns: i64,
    /// Host that runs the backup.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// The source being backed up.
    pub source: String,
    /// Whether `plans_seen` is final: `false` in the first marker, written before the
    /// backup listed the GC plans. GC treats such a session as having seen no plan.
    pub plans_listed: bool,
    /// Ids of the GC plans the backup read before loading the index, sorted.
    pub plans_seen: Vec<[u8; 32]>,
    /// The root tree of the parent snapshot whose unchanged files the backup
    /// reuses without looking them up; GC treats it as a root while the session lives.
    pub parent_root: Option<BlobId>,
    /// Which process, exactly, on `hostname`; `None` in markers of earlier builds.
    pub process: Option<ProcessStart>,
}

/// What tells a running process apart from an exited one whose pid was
/// reused, or from a process in another container with the same host name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStart {
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The inode number of the process's pid namespace.
    pub pid_namespace: u64,
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub start_ticks: u64,
}

/// The body as earlier builds wrote it: every field up to `parent_root`.
#[derive(Deserialize)]
struct SessionMarkerV1 {
    started_ns: i64,
    hostname: String,
    pid: u32,
    source: String,
    plans_listed: bool,
    plans_seen: Vec<[u8; 32]>,
    parent_root: Option<BlobId>,
}

impl From<SessionMarkerV1> for SessionMarker {
    fn from(v1: SessionMarkerV1) -> Self {
        Self {
            started_ns: v1.started_ns,
            hostname: v1.hostname,
            pid: v1.pid,
            source: v1.source,
            plans_listed: v1.plans_listed,
            plans_seen: v1.plans_seen,
            parent_root: v1.parent_root,
            process: None,
        }
    }
}

impl SessionMarker {
    /// Seals the marker. Its name is random, not a hash: the heartbeat rewrites it in place.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<Vec<u8>> {
        seal_object(
            "session marker",
            SESSION_MAGIC,
            SealedKind::SessionMarker,
            self,
            sealer,
            repo,
        )
    }

    /// Opens a stored marker, of this build or an earlier one (without `process`).
    ///
    /// # Errors
    /// Any decoding or authentication error.
    pub fn decode(bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        const WHAT: &str = "session marker";
        let sealed = read_header(WHAT, SESSION_MAGIC, bytes)?;
        let body = sealer.open(WHAT, Aad::object(SealedKind::SessionMarker, repo.0), sealed)?;
        match from_postcard::<Self>(WHAT, &body) {
            Ok(marker) => Ok(marker),
            Err(current) => from_postcard::<SessionMarkerV1>(WHAT, &body)
                .map(Self::from)
                .map_err(|_| current),
        }
    }

    /// Whether the backup promised not to use the packs of plan `id`.
    #[must_use]
    pub fn has_seen(&self, id: &[u8; 32]) -> bool {
        self.plans_listed && self.plans_seen.binary_search(id).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, Error, MasterKey};

    #[test]
    fn round_trip_and_tamper() {
        let sealer = MasterKey::from_bytes([1; 32]).derive().sealer(Cipher::Aes256Gcm);
        let repo = RepoId([2; 32]);
        let marker = SessionMarker {
            started_ns: 5,
            hostname: "h".into(),
            pid: 7,
            source: "db".into(),
            plans_listed: true,
            plans_seen: vec![[1; 32], [4; 32]],
            parent_root: Some(BlobId([8; 32])),
            process: Some(ProcessStart {
                boot_id: "b0".into(),
                pid_namespace: 4_026_531_836,
                start_ticks: 99,
            }),
        };
        let mut bytes = marker.encode(&sealer, &repo).unwrap();
        let back = SessionMarker::decode(&bytes, &sealer, &repo).unwrap();
        assert_eq!(back, marker);
        assert!(back.has_seen(&[4; 32]));
        assert!(!back.has_seen(&[3; 32]));
        let unlisted = SessionMarker {
            plans_listed: false,
            ..marker
        };
        assert!(!unlisted.has_seen(&[4; 32]));
        bytes[12] ^= 1;
        assert!(matches!(
            SessionMarker::decode(&bytes, &sealer, &repo),
            Err(Error::Authentication { .. })
        ));
    }

    /// Issue 9, bug 6: markers written before `process` existed still open.
    #[test]
    fn r9_a_marker_of_an_earlier_build_decodes_without_process() {
        #[derive(Serialize)]
        struct V1 {
            started_ns: i64,
            hostname: String,
            pid: u32,
            source: String,
            plans_listed: bool,
            plans_seen: Vec<[u8; 32]>,
            parent_root: Option<BlobId>,
        }
        let sealer = MasterKey::from_bytes([1; 32])
            .derive()
            .sealer(Cipher::XChaCha20Poly1305);
        let repo = RepoId([2; 32]);
        let old = V1 {
            started_ns: 5,
            hostname: "h".into(),
            pid: 7,
            source: "db".into(),
            plans_listed: true,
            plans_seen: vec![[1; 32]],
            parent_root: None,
        };
        let bytes = seal_object(
            "session marker",
            SESSION_MAGIC,
            SealedKind::SessionMarker,
            &old,
            &sealer,
            &repo,
        )
        .unwrap();
        let marker = SessionMarker::decode(&bytes, &sealer, &repo).unwrap();
        assert_eq!(marker.pid, 7);
        assert_eq!(marker.process, None);
        assert!(marker.has_seen(&[1; 32]));
        // Garbage after a complete marker is still refused.
        let mut longer = postcard::to_allocvec(&SessionMarker::default()).unwrap();
        longer.extend_from_slice(&[1, 2, 3]);
        let bytes = seal_object(
            "session marker",
            SESSION_MAGIC,
            SealedKind::SessionMarker,
            &Raw(longer),
            &sealer,
            &repo,
        );
        assert!(matches!(
            SessionMarker::decode(&bytes.unwrap(), &sealer, &repo),
            Err(Error::Malformed { .. })
        ));
    }

    /// Serializes as its bytes verbatim (postcard writes a tuple of u8 without a length).
    struct Raw(Vec<u8>);

    impl Serialize for Raw {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut tuple = serializer.serialize_tuple(self.0.len())?;
            for byte in &self.0 {
                tuple.serialize_element(byte)?;
            }
            tuple.end()
        }
    }
}
