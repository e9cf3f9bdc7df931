//! `SessionMarker::decode` with the vectors' key.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `sessions/` object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A marker that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{SealedKind, SessionMarker};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRB", SealedKind::SessionMarker) else {
        return;
    };
    if let Ok(marker) = SessionMarker::decode(&bytes, sealer, &REPO) {
        let encoded = marker.encode(sealer, &REPO).expect("a decoded marker encodes");
        assert_eq!(
            SessionMarker::decode(&encoded, sealer, &REPO).expect("round trip"),
            marker
        );
    }
});
