//! `ParsedAuditEntry::parse` and `open` with the vectors' keys and key pair.
//!
//! Input: `mode || rest`; bit 1 of `mode` picks the cipher.
//! - bit 0 clear (raw): `rest` is a stored `audit/` object; it is parsed
//!   without a key, then its MAC checked and its body opened.
//! - bit 0 set (sealed): `rest` is a postcard body; a record that decodes is
//!   sealed as entry 3 of writer `77 .. 77` (bit 2 clear: with MAC; set:
//!   without) and must open back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::{AuditRecord, AuditSealing, MasterKey, ParsedAuditEntry, RepoKeyPair, WriterId};
use nfrepo_fuzz::{KEYS, NONCE, REPO, cipher_of};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let cipher = cipher_of(mode & 2 != 0);
    let pair = RepoKeyPair::derive(&MasterKey::from_bytes(std::array::from_fn(|i| i as u8)));
    if mode & 1 == 0 {
        if let Ok(parsed) = ParsedAuditEntry::parse(rest) {
            let _ = parsed.hash();
            let _ = parsed.open(&REPO, cipher, &pair, &KEYS.audit_key);
        }
        return;
    }
    let Ok(record) = AuditRecord::decode_body(rest) else {
        return;
    };
    let public = pair.public();
    let sealing = AuditSealing {
        repo: &REPO,
        cipher,
        public: &public,
        audit_key: (mode & 4 == 0).then_some(&KEYS.audit_key),
    };
    let Ok(bytes) = record.seal_with(WriterId([0x77; 32]), 3, [0x55; 32], sealing, [0x60; 32], NONCE) else {
        return;
    };
    let parsed = ParsedAuditEntry::parse(&bytes).expect("a sealed entry parses");
    assert_eq!(parsed.header.seq, 3);
    assert_eq!(
        parsed
            .open(&REPO, cipher, &pair, &KEYS.audit_key)
            .expect("a sealed entry opens"),
        record
    );
});
