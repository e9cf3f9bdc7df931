//! Pack parsing: `decode_pack_header`, `trailer_len` and `read_pack_entries`.
//!
//! Input: `mode || rest`. Bit 1 of `mode` picks the cipher (clear:
//! XChaCha20-Poly1305, set: AES-256-GCM).
//! - bit 0 clear (raw): `rest` is a whole stored pack.
//! - bit 0 set (sealed): `rest` is `split (u16 LE) || blob area || trailer plaintext`;
//!   the target builds `header || blob area || sealed trailer || length`, with
//!   the pack kind byte `mode >> 2`, so the fuzzer reaches the entry checks.
//!
//! Every entry accepted must lie inside the blob area.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{PACK_HEADER_LEN, SealedKind, decode_pack_header, read_pack_entries, trailer_len};
use nfrepo_fuzz::{REPO, cipher_of, seal_object, sealer};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sealer = sealer(cipher_of(mode & 2 != 0));
    let built;
    let pack = if mode & 1 == 0 {
        rest
    } else {
        let Some((split, body)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let split = usize::from(u16::from_le_bytes(*split)).min(body.len());
        let (blobs, trailer) = body.split_at(split);
        let mut bytes = b"NFRP\x01".to_vec();
        bytes.extend_from_slice(&[mode >> 2, 0, 0]);
        bytes.extend_from_slice(blobs);
        let start = bytes.len();
        seal_object(sealer, SealedKind::PackTrailer, trailer, &mut bytes);
        let len = u32::try_from(bytes.len() - start).expect("fuzz inputs are small");
        bytes.extend_from_slice(&len.to_le_bytes());
        built = bytes;
        &built[..]
    };
    let _ = decode_pack_header(pack);
    if let Some(last) = pack.last_chunk::<4>() {
        let _ = trailer_len(last);
    }
    let _ = trailer_len(pack.get(..4.min(pack.len())).unwrap_or_default());
    if let Ok((_, entries)) = read_pack_entries(pack, sealer, &REPO) {
        let tlen = trailer_len(pack.last_chunk::<4>().expect("a decoded pack has a length")).expect("valid");
        let blob_end = (pack.len() - 4 - tlen) as u64;
        for e in entries {
            assert!(u64::from(e.offset) >= PACK_HEADER_LEN as u64);
            assert!(u64::from(e.offset) + u64::from(e.sealed_len) <= blob_end);
        }
    }
});
