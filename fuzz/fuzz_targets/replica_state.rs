//! `ReplicaState::decode` (the plain `replica/state` object).
//!
//! Input: `mode || rest`.
//! - bit 0 clear (raw): `rest` is a stored `replica/state` object.
//! - bit 0 set (built): `rest` is the postcard body; the target adds the
//!   header and a correct checksum, so inputs reach the body decoder.
//!
//! A state that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{ReplicaState, content_hash};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let built;
    let bytes = if mode & 1 == 0 {
        rest
    } else {
        let mut object = b"NFRR\x01".to_vec();
        object.extend_from_slice(rest);
        let sum = content_hash(&object);
        object.extend_from_slice(&sum);
        built = object;
        &built[..]
    };
    if let Ok(state) = ReplicaState::decode(bytes) {
        let encoded = state.encode().expect("a decoded state encodes");
        assert_eq!(ReplicaState::decode(&encoded).expect("round trip"), state);
    }
});
