//! `UnlockCacheFile::decode` and `open` (a host's cached unlock, `NFRU`,
//! unlock.md) on arbitrary bytes. Input: `mode || rest`. Mode bit 0 clear:
//! `rest` is a stored file; what decodes must survive a round trip, and is
//! opened with the vectors' password and host (argon2id with the file's own
//! parameters only when they are tiny, else with the test-only ones, so a
//! forged file cannot make one run take seconds). Bit 0 set: `rest` is a
//! plaintext body, which the target seals under the cache key of
//! `unlock.json` (salt `60 .. 7f`, parameters 8 KiB, 1 pass, 1 lane) so the
//! fuzzer reaches the postcard decoder behind the tag. An opened entry must
//! expire after it was made. Seeds: `bytes` and `body` of `unlock.json`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{Aad, Cipher, KdfParams, SealedKind, Sealer, SecretKey, UnlockCacheFile};
use nfrepo_fuzz::{NONCE, REPO};

/// `host` and `cache_key` of format-spec/vectors/unlock.json.
const HOST: [u8; 32] = hex32("cb67dc85a37723102a2cf6d485481fcccb82860de5e472776e5a441401afa9dd");
const CACHE_KEY: [u8; 32] = hex32("deb45a8e7e5684b0dc2c7f097b7f04ce4454a16deda1621906c47196fae0ac17");
const SALT: [u8; 32] = {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = 0x60 + i as u8;
        i += 1;
    }
    out
};

const fn hex32(text: &str) -> [u8; 32] {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }
    let bytes = text.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = digit(bytes[2 * i]) << 4 | digit(bytes[2 * i + 1]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = if mode & 1 == 0 {
        let Ok(file) = UnlockCacheFile::decode(rest) else {
            return;
        };
        let encoded = file.encode().expect("a decoded file encodes");
        assert_eq!(UnlockCacheFile::decode(&encoded).expect("round trip"), file);
        file
    } else {
        let mut sealed = Vec::new();
        Sealer::new(Cipher::XChaCha20Poly1305, SecretKey::from_bytes(CACHE_KEY)).seal_with_nonce_into(
            Aad::object(SealedKind::UnlockCache, REPO.0),
            NONCE,
            rest,
            &mut sealed,
        );
        UnlockCacheFile {
            kdf: KdfParams::insecure_for_tests(),
            salt: SALT,
            sealed,
        }
    };
    let tiny = file.kdf.memory_kib <= 64 && file.kdf.iterations <= 2 && file.kdf.parallelism <= 8;
    if !tiny {
        file.kdf = KdfParams::insecure_for_tests();
    }
    if let Ok(entry) = file.open(b"test", &HOST, &REPO) {
        assert!(
            entry.expires > entry.created,
            "an opened cache expires after it was made"
        );
    }
});
