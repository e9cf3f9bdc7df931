//! `GoodMarker::decode` with the vectors' key, stored under the name of
//! snapshot `77 77 .. 77` (the vector's), so most inputs also exercise the
//! check that the body marks the snapshot it is stored under.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `good/` object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A marker that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{GoodMarker, SealedKind, SnapshotId};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRM", SealedKind::GoodMarker) else {
        return;
    };
    let name = SnapshotId([0x77; 32]);
    if let Ok(marker) = GoodMarker::decode(&name, &bytes, sealer, &REPO) {
        let encoded = marker.encode(sealer, &REPO).expect("a decoded marker encodes");
        assert_eq!(
            GoodMarker::decode(&name, &encoded, sealer, &REPO).expect("round trip"),
            marker
        );
    }
});
