//! `KeySlot::decode` on arbitrary bytes, version 1 (a master key) and
//! version 2 (a key ring, keys.md "Key epochs"); a slot that decodes must
//! re-encode to an equal slot, and unwrapping it must fail cleanly or give a
//! key ring that follows its rules.
//!
//! Unwrapping runs argon2id with the slot's own parameters only when they are
//! tiny, and with `KdfParams::insecure_for_tests()` otherwise, so a forged slot
//! cannot make one run take seconds. Seeds: the key slot of `objects.json`
//! (version 1) and the one of `key-epochs.json` (version 2), both with
//! password "test", which unwrap.

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
    if let Ok(ring) = slot.unwrap_ring(b"test", &REPO) {
        ring.validate().expect("an unwrapped ring follows its rules");
        assert_eq!(ring.current_epoch(), slot.claimed_epoch());
        let _ = ring.derive();
    }
    if slot.epoch.is_none()
        && let Ok(master) = slot.unwrap_key(b"test", &REPO)
    {
        let _ = master.derive();
    }
});
