//! `BlobCodec::open` with the vectors' key.
//!
//! Input: `mode || rest`. `mode % 3` picks what `rest` is, `(mode / 3) % 3` the
//! blob kind (data, tree, content list), `(mode / 9) % 2` the cipher.
//! - 0: `id (32) || raw_len (u32 LE) || sealed blob`, opened as found in a pack.
//! - 1: `raw_len (u32 LE) || frame`, where the frame (codec byte || payload) is
//!   sealed by the target for the id of the frame's payload, so the fuzzer
//!   reaches the codec byte, zstd and the length and hash checks.
//! - 2: a plaintext, sealed with `BlobCodec::seal` and opened again: must round trip.
//!
//! Whatever opens must be as long as `raw_len` and hash to its id;
//! `BlobCodec::check_with` (what a pack's verification runs) accepts nothing
//! that does not open, and everything `seal` made; and
//! `BlobCodec::open_unhashed_with` (what a restore runs) gives back exactly
//! what opens, and beyond it only what fails the re-hash alone.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{Aad, BlobCodec, BlobId, BlobKind, Cipher};
use nfrepo_fuzz::{KEYS, NONCE, cipher_of, sealer};

thread_local! {
    // Building zstd contexts dominates a run; keep one codec per cipher.
    static CODECS: [RefCell<BlobCodec>; 2] = [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm]
        .map(|c| RefCell::new(BlobCodec::new(KEYS.clone(), sealer(c).clone(), 3).expect("zstd level 3 is valid")));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kind = match (mode / 3) % 3 {
        0 => BlobKind::Data,
        1 => BlobKind::Tree,
        _ => BlobKind::ContentList,
    };
    let aes = (mode / 9) % 2 == 1;
    let sealer = sealer(cipher_of(aes));
    CODECS.with(|codecs| run(&mut codecs[usize::from(aes)].borrow_mut(), sealer, mode, kind, rest));
});

fn run(codec: &mut BlobCodec, sealer: &nfrepo_format::Sealer, mode: u8, kind: BlobKind, rest: &[u8]) {
    match mode % 3 {
        0 => {
            let Some((id, rest)) = rest.split_first_chunk::<32>() else {
                return;
            };
            let Some((raw_len, sealed)) = rest.split_first_chunk::<4>() else {
                return;
            };
            let id = BlobId(*id);
            let raw_len = u32::from_le_bytes(*raw_len);
            let opened = codec.open(kind, &id, raw_len, sealed);
            if let Ok(plain) = &opened {
                assert_eq!(plain.len(), raw_len as usize);
                assert_eq!(KEYS.blob_id(plain), id);
            }
            let checked = codec.check_with(sealer, kind, &id, raw_len, sealed);
            assert!(checked.is_err() || opened.is_ok(), "checked what does not open");
            unhashed_agrees(codec, sealer, kind, &id, raw_len, sealed, &opened);
        }
        1 => {
            let Some((raw_len, frame)) = rest.split_first_chunk::<4>() else {
                return;
            };
            let raw_len = u32::from_le_bytes(*raw_len);
            let id = KEYS.blob_id(frame.get(1..).unwrap_or_default());
            let mut sealed = Vec::new();
            sealer.seal_with_nonce_into(Aad::blob(kind.sealed_kind(), &id), NONCE, frame, &mut sealed);
            let opened = codec.open(kind, &id, raw_len, &sealed);
            if let Ok(plain) = &opened {
                assert_eq!(plain.len(), raw_len as usize);
                assert_eq!(KEYS.blob_id(plain), id);
            }
            let checked = codec.check_with(sealer, kind, &id, raw_len, &sealed);
            assert!(checked.is_err() || opened.is_ok(), "checked what does not open");
            unhashed_agrees(codec, sealer, kind, &id, raw_len, &sealed, &opened);
        }
        _ => {
            let blob = codec.seal(kind, rest).expect("fuzz inputs are small");
            let opened = codec
                .open(kind, &blob.id, blob.raw_len, &blob.sealed)
                .expect("a sealed blob opens");
            assert_eq!(opened, rest);
            codec
                .check_with(sealer, kind, &blob.id, blob.raw_len, &blob.sealed)
                .expect("a sealed blob checks");
            let unhashed = codec
                .open_unhashed_with(sealer, kind, &blob.id, blob.raw_len, &blob.sealed)
                .expect("a sealed blob opens without the re-hash");
            assert_eq!(unhashed, rest);
        }
    }
}

/// `open_unhashed_with` returns what `open` returns, and where `open` fails
/// and it does not, the failure was the re-hash alone.
fn unhashed_agrees(
    codec: &mut BlobCodec,
    sealer: &nfrepo_format::Sealer,
    kind: BlobKind,
    id: &BlobId,
    raw_len: u32,
    sealed: &[u8],
    opened: &nfrepo_format::Result<Vec<u8>>,
) {
    match (codec.open_unhashed_with(sealer, kind, id, raw_len, sealed), opened) {
        (Ok(plain), Ok(opened)) => assert_eq!(&plain, opened),
        (Ok(plain), Err(e)) => {
            assert!(matches!(e, nfrepo_format::Error::HashMismatch { .. }), "{e:?}");
            assert_eq!(plain.len(), raw_len as usize);
        }
        (Err(_), Ok(_)) => panic!("opens with the re-hash, not without it"),
        (Err(_), Err(_)) => {}
    }
}
