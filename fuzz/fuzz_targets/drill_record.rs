//! `DrillRecord::decode` with the vectors' key, stored under the name of
//! drill `88 88 .. 88` (the vector's), so most inputs also exercise the
//! check that the body records the drill it is stored under.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `drill/` object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A record that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{DrillId, DrillRecord, SealedKind};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRD", SealedKind::DrillRecord) else {
        return;
    };
    let name = DrillId([0x88; 32]);
    if let Ok(record) = DrillRecord::decode(&name, &bytes, sealer, &REPO) {
        let encoded = record.encode(sealer, &REPO).expect("a decoded record encodes");
        assert_eq!(
            DrillRecord::decode(&name, &encoded, sealer, &REPO).expect("round trip"),
            record
        );
    }
});
