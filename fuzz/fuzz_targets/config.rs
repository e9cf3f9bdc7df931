//! `decode_config_header` then `decode_config_body` with the vectors' key.
//!
//! Input: `mode || rest`.
//! - bit 0 clear (raw): `rest` is a stored config object; the body is opened
//!   with the cipher its header names.
//! - bit 0 set (sealed): `rest` is the postcard body; the target builds a
//!   config for the vectors' repository, with the cipher of bit 1, around it.
//!
//! A body that decodes must survive an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{SealedKind, decode_config_body, decode_config_header, encode_config};
use nfrepo_fuzz::{REPO, cipher_of, seal_object, sealer};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let built;
    let bytes = if mode & 1 == 0 {
        rest
    } else {
        let cipher = cipher_of(mode & 2 != 0);
        let mut out = b"NFRC\x01".to_vec();
        out.extend_from_slice(&REPO.0);
        out.push(cipher.code());
        seal_object(sealer(cipher), SealedKind::Config, rest, &mut out);
        built = out;
        &built[..]
    };
    let Ok((header, sealed)) = decode_config_header(bytes) else {
        return;
    };
    let sealer = sealer(header.cipher);
    if let Ok(body) = decode_config_body(&header, sealed, sealer) {
        let encoded = encode_config(&header, &body, sealer).expect("a decoded config encodes");
        let (again, sealed) = decode_config_header(&encoded).expect("round trip header");
        assert_eq!(again, header);
        assert_eq!(
            decode_config_body(&again, sealed, sealer).expect("round trip body"),
            body
        );
    }
});
