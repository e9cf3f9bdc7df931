//! Leases: "one holder at a time, until it stops renewing".
//!
//! The maintenance lease (still named `gc`, so that earlier builds see it) is
//! a chain of objects `lease/gc-<generation>` (generation in
//! 20 zero-padded decimal digits, so names sort by generation). The holder of
//! the highest generation holds the lease while the store's modification time
//! of that object plus `ttl_secs` is in the future; it renews by rewriting the
//! object. A new holder, when the chain is empty or the highest lease has
//! expired, creates the next generation with a conditional put: of two
//! contenders exactly one succeeds, so an expired lease left by a crashed GC is
//! taken over without a manual unlock and without two winners.
//!
//! ```text
//! "NFRQ" | version | sealed(postcard(Lease)), AAD (Lease, repository id)
//! ```
//!
//! `process` and `operation` were appended to the body later (format version
//! unchanged): a body that ends after `ttl_secs` is a lease of an earlier
//! build and decodes with `process: None` and an empty `operation`. An
//! earlier build fails to open a lease with them and counts it as held by an
//! unknown holder until it expires: safe, only slower.

use serde::{Deserialize, Serialize};

use crate::envelope::{LEASE_MAGIC, from_postcard, read_header, seal_object};
use crate::seal::{Aad, SealedKind, Sealer};
use crate::{ProcessStart, RepoId, Result};

/// The body of a `lease/<name>` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Which generation of the chain this is (also in the object's name).
    pub generation: u64,
    /// A random id of the holder, so it recognises its own lease.
    pub holder: [u8; 32],
    /// Host of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When the lease was taken, nanoseconds since the Unix epoch (holder's clock).
    pub acquired_ns: i64,
    /// How long the lease lasts after each renewal, in seconds.
    pub ttl_secs: u64,
    /// Which process, exactly, on `hostname`; `None` in leases of earlier builds.
    pub process: Option<ProcessStart>,
    /// The command that holds it (`gc`, `repair index`…); empty in leases of earlier builds.
    pub operation: String,
}

/// The body as earlier builds wrote it: every field up to `ttl_secs`.
#[derive(Deserialize)]
struct LeaseV1 {
    generation: u64,
    holder: [u8; 32],
    hostname: String,
    pid: u32,
    acquired_ns: i64,
    ttl_secs: u64,
}

impl From<LeaseV1> for Lease {
    fn from(v1: LeaseV1) -> Self {
        Self {
            generation: v1.generation,
            holder: v1.holder,
            hostname: v1.hostname,
            pid: v1.pid,
            acquired_ns: v1.acquired_ns,
            ttl_secs: v1.ttl_secs,
            process: None,
            operation: String::new(),
        }
    }
}

impl Lease {
    /// The object name of generation `generation` of the lease called `purpose`.
    #[must_use]
    pub fn object_name(purpose: &str, generation: u64) -> String {
        format!("{purpose}-{generation:020}")
    }

    /// Seals the lease.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if no nonce could be drawn.
    pub fn encode(&self, sealer: &Sealer, repo: &RepoId) -> Result<Vec<u8>> {
        seal_object("lease", LEASE_MAGIC, SealedKind::Lease, self, sealer, repo)
    }

    /// Opens a stored lease, of this build or an earlier one (without
    /// `process` and `operation`).
    ///
    /// # Errors
    /// Any decoding or authentication error.
    pub fn decode(bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        const WHAT: &str = "lease";
        let sealed = read_header(WHAT, LEASE_MAGIC, bytes)?;
        let body = sealer.open(WHAT, Aad::object(SealedKind::Lease, repo.0), sealed)?;
        match from_postcard::<Self>(WHAT, &body) {
            Ok(lease) => Ok(lease),
            Err(current) => from_postcard::<LeaseV1>(WHAT, &body)
                .map(Self::from)
                .map_err(|_| current),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, Error, MasterKey};

    #[test]
    fn round_trip_and_names() {
        let sealer = MasterKey::from_bytes([1; 32])
            .derive()
            .sealer(Cipher::XChaCha20Poly1305);
        let repo = RepoId([2; 32]);
        let lease = Lease {
            generation: 3,
            holder: [9; 32],
            hostname: "h".into(),
            pid: 1,
            acquired_ns: 2,
            ttl_secs: 600,
            process: Some(ProcessStart {
                boot_id: "b".into(),
                pid_namespace: 4,
                start_ticks: 5,
            }),
            operation: "repair index".into(),
        };
        let mut bytes = lease.encode(&sealer, &repo).unwrap();
        assert_eq!(Lease::decode(&bytes, &sealer, &repo).unwrap(), lease);
        assert_eq!(Lease::object_name("gc", 3), "gc-00000000000000000003");
        assert!(Lease::object_name("gc", 10) > Lease::object_name("gc", 9));
        bytes[0] = b'X';
        assert!(matches!(
            Lease::decode(&bytes, &sealer, &repo),
            Err(Error::BadMagic { .. })
        ));
        bytes[0] = b'N';
        bytes[12] ^= 1;
        assert!(matches!(
            Lease::decode(&bytes, &sealer, &repo),
            Err(Error::Authentication { .. })
        ));
    }

    /// Issue 17: leases written before `process` and `operation` existed still
    /// open; a body with a partial tail does not.
    #[test]
    fn r17_a_lease_of_an_earlier_build_decodes_without_process() {
        #[derive(Serialize)]
        struct V1 {
            generation: u64,
            holder: [u8; 32],
            hostname: String,
            pid: u32,
            acquired_ns: i64,
            ttl_secs: u64,
        }
        #[derive(Serialize)]
        struct Partial {
            old: V1,
            process: Option<ProcessStart>,
        }
        let sealer = MasterKey::from_bytes([1; 32])
            .derive()
            .sealer(Cipher::XChaCha20Poly1305);
        let repo = RepoId([2; 32]);
        let old = V1 {
            generation: 7,
            holder: [3; 32],
            hostname: "h".into(),
            pid: 9,
            acquired_ns: 1,
            ttl_secs: 3600,
        };
        let bytes = seal_object("lease", LEASE_MAGIC, SealedKind::Lease, &old, &sealer, &repo).unwrap();
        let lease = Lease::decode(&bytes, &sealer, &repo).unwrap();
        assert_eq!((lease.generation, lease.pid, lease.ttl_secs), (7, 9, 3600));
        assert_eq!(lease.process, None);
        assert_eq!(lease.operation, "");
        // The old body plus only `process` (no `operation`) is malformed.
        let partial = Partial { old, process: None };
        let bytes = seal_object("lease", LEASE_MAGIC, SealedKind::Lease, &partial, &sealer, &repo).unwrap();
        assert!(matches!(
            Lease::decode(&bytes, &sealer, &repo),
            Err(Error::Malformed { .. })
        ));
    }
}
