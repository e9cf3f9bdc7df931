//! `KeyHistory::decode` (`keys/epoch-<n>`, keys.md) with the vectors' key,
//! as the history of epoch 1.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `keys/epoch-…` object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A history that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{KeyHistory, SealedKind};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    let Some((sealer, bytes)) = sealed_input(data, b"NFRH", SealedKind::KeyHistory) else {
        return;
    };
    if let Ok(history) = KeyHistory::decode(&bytes, 1, sealer, &REPO) {
        assert_eq!(history.epoch, 1);
        assert!(history.older.iter().all(|e| e.epoch < 1));
        let encoded = history.encode(sealer, &REPO).expect("a decoded history encodes");
        assert!(KeyHistory::decode(&encoded, 1, sealer, &REPO).expect("round trip") == history);
    }
});
