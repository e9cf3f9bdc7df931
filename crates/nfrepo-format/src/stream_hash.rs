//! The plain BLAKE3 of a stream fed in pieces.

/// Bytes of a stream hashed at once by [`StreamHash`]: 64 BLAKE3 chunks,
/// enough for the widest SIMD path (16 lanes).
pub(crate) const STREAM_HASH_PIECE: usize = 64 << 10;

/// The plain BLAKE3 of a whole stream (a file node's `blake3`), fed in
/// pieces of any length: the content-defined chunks of a backup, the
/// chunks a restore or `cat` reads back.
///
/// `blake3::Hasher::update` runs at SIMD width only over input that covers
/// whole power-of-two subtrees of the stream; a content-defined chunk
/// starts anywhere, so hashing each chunk as it came ran at about 1.3 GB/s
/// on the project's 2-core benchmark machine (AVX-512, blake3 1.8), against about
/// 7 GB/s for the same bytes in 64 KiB pieces aligned to the stream. Bytes
/// are therefore gathered into pieces of 64 KiB (`STREAM_HASH_PIECE`), at
/// stream offsets that are multiples of it, and each piece is hashed once
/// full (straight from the input when it covers whole pieces). The hash is
/// the same whichever way the bytes are split.
#[derive(Clone, Default)]
pub struct StreamHash {
    hasher: blake3::Hasher,
    pending: Vec<u8>,
}

impl StreamHash {
    /// Continues a hash whose bytes so far `hasher` has taken; later pieces
    /// are then no longer aligned, which costs speed only.
    #[must_use]
    pub fn from_hasher(hasher: blake3::Hasher) -> Self {
        Self {
            hasher,
            pending: Vec::new(),
        }
    }

    /// Adds `bytes` to the stream.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.pending.is_empty() && bytes.len() >= STREAM_HASH_PIECE {
                let (whole, rest) = bytes.split_at(bytes.len() - bytes.len() % STREAM_HASH_PIECE);
                self.hasher.update(whole);
                bytes = rest;
                continue;
            }
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(STREAM_HASH_PIECE);
            }
            let (head, rest) = bytes.split_at((STREAM_HASH_PIECE - self.pending.len()).min(bytes.len()));
            self.pending.extend_from_slice(head);
            bytes = rest;
            if self.pending.len() == STREAM_HASH_PIECE {
                self.hasher.update(&self.pending);
                self.pending.clear();
            }
        }
    }

    /// The hasher over every byte so far, the gathered ones included.
    pub fn settled(&mut self) -> &blake3::Hasher {
        if !self.pending.is_empty() {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
        &self.hasher
    }

    /// BLAKE3 of every byte added.
    #[must_use]
    pub fn finalize(mut self) -> [u8; 32] {
        *self.settled().finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{STREAM_HASH_PIECE, StreamHash};

    proptest! {
        /// However a stream is split into chunks, and wherever its hash is
        /// settled (as a resumable stream's is before each chunk) or taken
        /// over by a new hasher (as a resumed stream's is), the gathered
        /// hash is BLAKE3 of the whole stream.
        #[test]
        fn the_gathered_hash_is_blake3_of_the_stream(
            len in 0..(3 * STREAM_HASH_PIECE + 5000),
            cuts in proptest::collection::vec(1..(2 * STREAM_HASH_PIECE), 0..40),
            settle_every in 0..4usize,
            resume_at in proptest::option::of(0..40usize),
        ) {
            let stream: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
            let mut hash = StreamHash::default();
            let mut rest = &stream[..];
            for (n, cut) in cuts.iter().chain(std::iter::repeat(&4096)).enumerate() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, after) = rest.split_at((*cut).min(rest.len()));
                if settle_every > 0 && n % settle_every == 0 {
                    let _ = hash.settled();
                }
                if resume_at == Some(n) {
                    hash = StreamHash::from_hasher(hash.settled().clone());
                }
                hash.update(chunk);
                rest = after;
            }
            prop_assert_eq!(hash.finalize(), *blake3::hash(&stream).as_bytes());
        }
    }
}
