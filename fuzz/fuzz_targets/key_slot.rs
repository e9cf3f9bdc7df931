//! `KeySlot::decode` on arbitrary bytes; a slot that decodes must re-encode to
//! an equal slot, and unwrapping it must fail cleanly or give a key.
//!
//! Unwrapping runs argon2id with the slot's own parameters only when they are
//! tiny, and with `KdfParams::insecure_for_tests()` otherwise, so a forged slot
//! cannot make one run take seconds. Seed: the key slot of `objects.json`
//! (password "test"), which unwraps.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{KdfParams, KeySlot};
use nfrepo_fuzz::REPO;

fuzz_target!(|data: &[u8]| {
    let Ok(mut slot) = KeySlot::decode(data) else {
        return;
    };
    let encoded = slot.encode().expect("a decoded slot encodes");
    assert_eq!(KeySlot::decode(&encoded).expect("re-encoded slot decodes"), slot);
    let tiny = slot.kdf.memory_kib <= 64 && slot.kdf.iterations <= 2 && slot.kdf.parallelism <= 8;
    if !tiny {
        slot.kdf = KdfParams::insecure_for_tests();
    }
    if let Ok(master) = slot.unwrap_key(b"test", &REPO) {
        let _ = master.derive();
    }
});
