//! `ProtectMarker::decode` with the vectors' key, stored under the name of
//! snapshot `66 66 .. 66` (the vector's), so most inputs also exercise the
//! check that the body protects the snapshot it is stored under.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `protect/` object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A marker that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{ProtectMarker, SealedKind, SnapshotId};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRX", SealedKind::ProtectMarker) else {
        return;
    };
    let name = SnapshotId([0x66; 32]);
    if let Ok(marker) = ProtectMarker::decode(&name, &bytes, sealer, &REPO) {
        let encoded = marker.encode(sealer, &REPO).expect("a decoded marker encodes");
        assert_eq!(
            ProtectMarker::decode(&name, &encoded, sealer, &REPO).expect("round trip"),
            marker
        );
    }
});
