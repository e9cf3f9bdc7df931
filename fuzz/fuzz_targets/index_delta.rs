//! `IndexDelta::decode` with the vectors' key; the id is computed from the
//! bytes so the hash check passes and decoding goes on.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored index object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A delta that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{IndexDelta, IndexId, SealedKind, content_hash};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRI", SealedKind::Index) else {
        return;
    };
    let id = IndexId(content_hash(&bytes));
    if let Ok(delta) = IndexDelta::decode(&id, &bytes, sealer, &REPO) {
        let (id, encoded) = delta.encode(sealer, &REPO).expect("a decoded delta encodes");
        assert_eq!(
            IndexDelta::decode(&id, &encoded, sealer, &REPO).expect("round trip"),
            delta
        );
    }
});
