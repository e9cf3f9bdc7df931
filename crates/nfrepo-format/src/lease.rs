//! Leases: "one holder at a time, until it stops renewing".
//!
//! The GC lease is a chain of objects `lease/gc-<generation>` (generation in
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

use serde::{Deserialize, Serialize};

use crate::envelope::{LEASE_MAGIC, open_object, seal_object};
use crate::seal::{SealedKind, Sealer};
use crate::{RepoId, Result};

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

    /// Opens a stored lease.
    ///
    /// # Errors
    /// Any decoding or authentication error.
    pub fn decode(bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<Self> {
        open_object("lease", LEASE_MAGIC, SealedKind::Lease, bytes, sealer, repo)
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
    }
}
