//! `ContentList::decode` on a list blob's plaintext. A list that decodes must
//! re-encode and decode to the same value.
//!
//! Input: `mode || rest`. Bit 0 clear: `rest` is the whole plaintext; bit 0
//! set: the target puts the `NFRL` header in front.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::ContentList;
use nfrepo_fuzz::plain_input;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = plain_input(data, b"NFRL\x01") else {
        return;
    };
    if let Ok(list) = ContentList::decode(&bytes) {
        let encoded = list.encode().expect("a decoded list encodes");
        assert_eq!(ContentList::decode(&encoded).expect("round trip"), list);
        let _ = list.entries.iter().try_fold(0u64, |sum, e| sum.checked_add(e.len));
    }
});
