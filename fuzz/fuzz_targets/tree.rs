//! `Tree::decode` on a tree blob's plaintext. A tree that decodes must
//! re-encode (it passed validation) and decode to the same value.
//!
//! Input: `mode || rest`. Bit 0 clear: `rest` is the whole plaintext; bit 0
//! set: the target puts the `NFRT` header in front, so the fuzzer spends its
//! time in the postcard body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfrepo_format::Tree;
use nfrepo_fuzz::plain_input;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = plain_input(data, b"NFRT\x01") else {
        return;
    };
    if let Ok(tree) = Tree::decode(&bytes) {
        let encoded = tree.encode().expect("a decoded tree is valid");
        assert_eq!(Tree::decode(&encoded).expect("round trip"), tree);
        for node in &tree.nodes {
            assert!(tree.find(&node.name).is_some());
        }
    }
});
