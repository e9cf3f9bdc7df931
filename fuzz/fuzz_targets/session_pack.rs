//! Packs of put-only sessions (sealing scheme 01, put-only.md):
//! `decode_pack_sealing` and `read_pack_sealing` with the vectors' keys,
//! which derive the session key from the header's ephemeral key.
//!
//! Input: `mode || rest`. Bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a whole stored pack (seed: the pack of
//!   `put-only.json`).
//! - bit 0 set (sealed): `rest` is `split (u16 LE) || blob area || trailer
//!   plaintext`; the target builds a scheme-01 header for the session of
//!   the vectors' ephemeral secret (`60 .. 7f`), the blob area, and the
//!   trailer sealed under that session's key, so the fuzzer reaches the
//!   entry checks behind the tag.
//!
//! Every entry accepted must lie after the session header and inside the
//! blob area; a session pack never opens under the host's index key.

#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{
    KeyRef, ReferenceKeys, SESSION_PACK_HEADER_LEN, SealedKind, Sealer, begin_session_with, decode_pack_sealing,
    pack_header_len, read_pack_sealing, trailer_len,
};
use nfrepo_fuzz::{KEYS, REPO, cipher_of, seal_object, sealer};

static SESSIONS: LazyLock<[Sealer; 2]> = LazyLock::new(|| {
    let public = KEYS.reference_keys.key_pair(0).expect("epoch 0").public();
    [false, true].map(|aes| {
        begin_session_with(
            &public,
            0,
            cipher_of(aes),
            Arc::new(ReferenceKeys::default()),
            std::array::from_fn(|i| 0x60 + i as u8),
        )
        .expect("a genuine public key")
    })
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let aes = mode & 2 != 0;
    let reader = sealer(cipher_of(aes));
    let built;
    let pack = if mode & 1 == 0 {
        rest
    } else {
        let Some((split, body)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let session = &SESSIONS[usize::from(aes)];
        let KeyRef::Session(reference) = session.reference() else {
            return;
        };
        let split = usize::from(u16::from_le_bytes(*split)).min(body.len());
        let (blobs, trailer) = body.split_at(split);
        let mut bytes = b"NFRP\x01".to_vec();
        bytes.extend_from_slice(&[mode >> 2, 1, 0]);
        bytes.extend_from_slice(&reference.epoch.to_le_bytes());
        bytes.extend_from_slice(&reference.ephemeral);
        bytes.extend_from_slice(blobs);
        let start = bytes.len();
        seal_object(session, SealedKind::PackTrailer, trailer, &mut bytes);
        let len = u32::try_from(bytes.len() - start).expect("fuzz inputs are small");
        bytes.extend_from_slice(&len.to_le_bytes());
        built = bytes;
        &built[..]
    };
    if let Ok((_, sealing, len)) = decode_pack_sealing(pack) {
        assert_eq!(len, pack_header_len(sealing.as_ref()));
        assert!(len <= SESSION_PACK_HEADER_LEN);
    }
    if let Ok((_, sealing, entries)) = read_pack_sealing(pack, reader, &REPO) {
        let tlen = trailer_len(pack.last_chunk::<4>().expect("a decoded pack has a length")).expect("valid");
        let blob_end = (pack.len() - 4 - tlen) as u64;
        for e in entries {
            assert!(u64::from(e.offset) >= pack_header_len(sealing.as_ref()) as u64);
            assert!(u64::from(e.offset) + u64::from(e.sealed_len) <= blob_end);
        }
        if sealing.is_some() {
            let host = Arc::new(ReferenceKeys::index_only(0, nfrepo_format::index_key(&[0; 32])))
                .sealer(cipher_of(aes), &KeyRef::Index { epoch: 0 })
                .expect("an index key");
            assert!(read_pack_sealing(pack, &host, &REPO).is_err());
        }
    }
});
