//! `GcPlan::decode` with the vectors' key; the id is computed from the bytes
//! so the hash check passes and decoding goes on.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `gc/` object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A plan that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{GcPlan, SealedKind, content_hash};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRG", SealedKind::GcPlan) else {
        return;
    };
    if let Ok(plan) = GcPlan::decode(&content_hash(&bytes), &bytes, sealer, &REPO) {
        let (id, encoded) = plan.encode(sealer, &REPO).expect("a decoded plan encodes");
        assert_eq!(GcPlan::decode(&id, &encoded, sealer, &REPO).expect("round trip"), plan);
    }
});
