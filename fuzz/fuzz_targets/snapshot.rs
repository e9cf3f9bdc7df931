//! `Snapshot::decode` with the vectors' key; the id is computed from the bytes
//! so the hash check passes and decoding goes on.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored snapshot object.
//! - bit 0 set (sealed): `rest` is the postcard body; the target seals it.
//!
//! A snapshot that decodes must survive an encode/decode round trip.
//!
//! `rest` is also given to `Snapshot::decode_plain`, the decoder of the
//! headers a host's snapshot cache keeps unsealed (in the sealed mode it is
//! exactly such a header); one that decodes must survive
//! `encode_plain`/`decode_plain`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{SealedKind, Snapshot, SnapshotId, content_hash};
use nfrepo_fuzz::{REPO, sealed_input};

fuzz_target!(|data: &[u8]| {
    if let Some(rest) = data.get(1..)
        && let Ok(snapshot) = Snapshot::decode_plain(rest)
    {
        let plain = snapshot.encode_plain().expect("a decoded header encodes");
        assert_eq!(Snapshot::decode_plain(&plain).expect("plain round trip"), snapshot);
    }
    let Some((sealer, bytes)) = sealed_input(data, b"NFRS", SealedKind::Snapshot) else {
        return;
    };
    let id = SnapshotId(content_hash(&bytes));
    if let Ok(snapshot) = Snapshot::decode(&id, &bytes, sealer, &REPO) {
        let (id, encoded) = snapshot.encode(sealer, &REPO).expect("a decoded snapshot encodes");
        assert_eq!(
            Snapshot::decode(&id, &encoded, sealer, &REPO).expect("round trip"),
            snapshot
        );
    }
});
