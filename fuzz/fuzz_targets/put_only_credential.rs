//! `PutOnlyCredential::decode` (credential files, `NFRW`) and
//! `CredentialSlot::decode` (`keys/<id>`, `NFRK` version 3) on arbitrary
//! bytes. Input: `mode || rest`; bit 0 of `mode` picks the decoder. For a
//! credential with bit 1 set, `rest` lacks its checksum and the target
//! appends it, so the fuzzer reaches the postcard body and the config
//! checks. What decodes must survive an encode/decode round trip. Seeds:
//! `credential_bytes` and `credential_slot_bytes` of `put-only.json`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{CredentialSlot, PutOnlyCredential};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut summed = rest.to_vec();
        if mode & 2 != 0 {
            summed.extend_from_slice(&nfrepo_format::content_hash(rest));
        }
        if let Ok(credential) = PutOnlyCredential::decode(&summed) {
            let encoded = credential.encode().expect("a decoded credential encodes");
            let again = PutOnlyCredential::decode(&encoded).expect("round trip");
            assert_eq!(again.encode().expect("encodes"), encoded);
            let _ = credential.index_sealer();
        }
    } else if let Ok(slot) = CredentialSlot::decode(rest) {
        let encoded = slot.encode().expect("a decoded slot encodes");
        assert_eq!(CredentialSlot::decode(&encoded).expect("round trip"), slot);
        assert!(CredentialSlot::is_credential_slot(&encoded));
    }
});
