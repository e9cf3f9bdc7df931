//! `Lease::decode` with the vectors' key.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `lease/` object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A lease that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{Lease, SealedKind};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRQ", SealedKind::Lease) else {
        return;
    };
    if let Ok(lease) = Lease::decode(&bytes, sealer, &REPO) {
        let encoded = lease.encode(sealer, &REPO).expect("a decoded lease encodes");
        assert_eq!(Lease::decode(&encoded, sealer, &REPO).expect("round trip"), lease);
    }
});
