//! Blobs: the unit of dedup, compression and sealing.
//!
//! A blob's plaintext is named by its keyed BLAKE3 ([`crate::RepoKeys::blob_id`]),
//! then compressed and sealed on its own so it can be read from a pack by a
//! single range request:
//!
//! ```text
//! sealed( codec (1 byte: 0 = stored, 1 = zstd) || payload )   with AAD = (kind, blob id)
//! ```
//!
//! Compression is skipped when a cheap probe shows the data does not shrink,
//! and the stored form is used whenever zstd's output is not smaller.

use serde::{Deserialize, Serialize};

use crate::seal::{Aad, NONCE_LEN, SEAL_OVERHEAD, SealedKind, Sealer};
use crate::{BlobId, Error, RepoKeys, Result};

const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// Chunks at least this long are probed before being compressed.
const PROBE_THRESHOLD: usize = 64 * 1024;
const PROBE_LEN: usize = 16 * 1024;
/// The probe must shrink the sample to this share (in 1/100) to be worth compressing.
const PROBE_MAX_PERCENT: usize = 95;
/// Largest raw blob the format accepts: 64 MiB (the chunker never makes more than 16).
pub const MAX_BLOB_LEN: usize = 64 * 1024 * 1024;
/// Compressed blobs over this many bytes are checked by
/// [`BlobCodec::check_with`] without being decompressed whole.
const STREAMED_CHECK: usize = 256 * 1024;

/// The outcome of checking a blob of `len` bytes hashing to `actual`
/// against its index entry (`id`, `raw_len`), as [`BlobCodec::open`] reports it.
fn check_hashed(id: &BlobId, raw_len: usize, len: usize, actual: BlobId) -> Result<()> {
    if len != raw_len {
        return Err(Error::malformed(
            "blob",
            format!("holds {len} bytes, the index says {raw_len}"),
        ));
    }
    if actual != *id {
        return Err(Error::HashMismatch {
            what: "blob",
            expected: id.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(())
}

/// What a blob holds; also decides which pack family it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BlobKind {
    /// File or stream data; stored in data packs.
    Data,
    /// A directory tree node; stored in tree packs.
    Tree,
    /// A content list; stored in tree packs.
    ContentList,
}

impl BlobKind {
    /// The sealed kind bound into the blob's associated data.
    #[must_use]
    pub const fn sealed_kind(self) -> SealedKind {
        match self {
            Self::Data => SealedKind::DataBlob,
            Self::Tree => SealedKind::TreeBlob,
            Self::ContentList => SealedKind::ContentListBlob,
        }
    }

    /// Whether the blob goes to a tree pack (kept hot; read by GC and browse).
    #[must_use]
    pub const fn is_metadata(self) -> bool {
        !matches!(self, Self::Data)
    }
}

/// A blob ready to be put in a pack.
#[derive(Clone, Debug)]
pub struct SealedBlob {
    /// Keyed BLAKE3 of the plaintext.
    pub id: BlobId,
    /// The kind.
    pub kind: BlobKind,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// The sealed bytes as they go into the pack.
    pub sealed: Vec<u8>,
}

/// Compresses, seals, opens and verifies blobs. Holds a reusable zstd
/// context, so keep one per worker thread.
pub struct BlobCodec {
    keys: RepoKeys,
    sealer: Sealer,
    compressor: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl std::fmt::Debug for BlobCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCodec")
            .field("sealer", &self.sealer)
            .finish_non_exhaustive()
    }
}

impl BlobCodec {
    /// A codec compressing at zstd `level`.
    ///
    /// # Errors
    /// [`Error::Compression`] if zstd rejects the level.
    pub fn new(keys: RepoKeys, sealer: Sealer, level: i32) -> Result<Self> {
        let zerr = |e: std::io::Error| Error::Compression {
            what: "blob",
            detail: e.to_string(),
        };
        Ok(Self {
            keys,
            sealer,
            compressor: zstd::bulk::Compressor::new(level).map_err(zerr)?,
            probe: zstd::bulk::Compressor::new(1).map_err(zerr)?,
            decompressor: zstd::bulk::Decompressor::new().map_err(zerr)?,
        })
    }

    /// The keys in use.
    #[must_use]
    pub const fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    /// The sealer in use.
    #[must_use]
    pub const fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The id `plaintext` would get.
    #[must_use]
    pub fn id_of(&self, plaintext: &[u8]) -> BlobId {
        self.keys.blob_id(plaintext)
    }

    /// Names, compresses and seals a blob.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_BLOB_LEN`]; [`Error::Random`] if no nonce could be drawn.
    pub fn seal(&mut self, kind: BlobKind, plaintext: &[u8]) -> Result<SealedBlob> {
        let id = self.id_of(plaintext);
        self.seal_with_id(kind, id, plaintext)
    }

    /// Like [`Self::seal`] when the id is already known.
    ///
    /// # Errors
    /// As [`Self::seal`].
    pub fn seal_with_id(&mut self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<SealedBlob> {
        if plaintext.len() > MAX_BLOB_LEN {
            return Err(Error::TooLarge {
                what: "blob",
                detail: format!("{} bytes, the limit is {MAX_BLOB_LEN}", plaintext.len()),
            });
        }
        let raw_len = u32::try_from(plaintext.len()).map_err(|_| Error::TooLarge {
            what: "blob",
            detail: "over 4 GiB".into(),
        })?;
        // The sealed message is built in one buffer: room for the nonce,
        // the codec byte, the compressed bytes written straight behind it,
        // then sealed in place (a 4 MiB chunk held three buffers of up to
        // 8 MiB while it was sealed: compressed, framed and sealed copies).
        let message = |codec: u8, payload_capacity: usize| {
            let mut message = Vec::with_capacity(NONCE_LEN + 1 + payload_capacity + SEAL_OVERHEAD);
            message.resize(NONCE_LEN, 0);
            message.push(codec);
            message
        };
        let mut sealed = None;
        if self.worth_compressing(plaintext) {
            let mut compressed =
                std::io::Cursor::new(message(CODEC_ZSTD, zstd::zstd_safe::compress_bound(plaintext.len())));
            compressed.set_position((NONCE_LEN + 1) as u64);
            if let Ok(n) = self.compressor.compress_to_buffer(plaintext, &mut compressed)
                && n < plaintext.len()
            {
                sealed = Some(compressed.into_inner());
            }
        }
        let mut sealed = sealed.unwrap_or_else(|| {
            let mut stored = message(CODEC_STORED, plaintext.len());
            stored.extend_from_slice(plaintext);
            stored
        });
        self.sealer
            .seal_in_place(Aad::blob(kind.sealed_kind(), &id), &mut sealed)?;
        Ok(SealedBlob {
            id,
            kind,
            raw_len,
            sealed,
        })
    }

    fn worth_compressing(&mut self, plaintext: &[u8]) -> bool {
        if plaintext.len() < PROBE_THRESHOLD {
            return true;
        }
        let sample = plaintext.get(..PROBE_LEN).unwrap_or(plaintext);
        match self.probe.compress(sample) {
            Ok(c) => c.len() * 100 <= sample.len() * PROBE_MAX_PERCENT,
            Err(_) => true,
        }
    }

    /// Opens a sealed blob, decompresses it, and checks that it hashes to `id`.
    ///
    /// # Errors
    /// [`Error::Authentication`] if the seal fails (corruption, or a blob moved
    /// from elsewhere), [`Error::Compression`] or [`Error::HashMismatch`].
    pub fn open(&mut self, kind: BlobKind, id: &BlobId, raw_len: u32, sealed: &[u8]) -> Result<Vec<u8>> {
        let framed = self.sealer.open("blob", Aad::blob(kind.sealed_kind(), id), sealed)?;
        self.unframe(id, raw_len, framed)
    }

    /// [`Self::open`] with another sealer than the codec's: the key of the
    /// pack the blob is in (a put-only session's, `crate::pack_sealer`).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with(
        &mut self,
        sealer: &Sealer,
        kind: BlobKind,
        id: &BlobId,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let framed = sealer.open("blob", Aad::blob(kind.sealed_kind(), id), sealed)?;
        self.unframe(id, raw_len, framed)
    }

    /// [`Self::open_with`] without the last step: the blob is authenticated
    /// (its seal binds `kind` and `id`), decompressed and its length
    /// checked, but its plaintext is not hashed again to `id`.
    ///
    /// The seal already proves that a holder of the repository's key sealed
    /// this plaintext under this id; the re-hash only catches a writer that
    /// sealed other bytes than it named. A caller may skip it only where
    /// every byte it opens this way is checked against a hash of the same
    /// strength before anything relies on it, and where a failed check is
    /// followed by opening the same blobs with [`Self::open_with`], so that
    /// the damaged blob is still named: the restore checks each file's
    /// whole BLAKE3 before the file is renamed into place
    /// (format-spec/blob.md, "Opening without the re-hash").
    ///
    /// # Errors
    /// As [`Self::open`], except [`Error::HashMismatch`].
    pub fn open_unhashed_with(
        &mut self,
        sealer: &Sealer,
        kind: BlobKind,
        id: &BlobId,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let framed = sealer.open("blob", Aad::blob(kind.sealed_kind(), id), sealed)?;
        self.unframe_unhashed(raw_len, framed)
    }

    /// Checks a sealed blob as [`Self::open_with`] does (authenticated,
    /// decompressed, re-hashed to `id`) without keeping its plaintext: what
    /// a pack's verification before upload needs. A stored blob is hashed
    /// where it lies and a compressed one over 256 KiB is decompressed
    /// through a small buffer into the hash, so two uploads
    /// verifying 4 MiB chunks at once do not each hold a 4 MiB copy.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn check_with(
        &mut self,
        sealer: &Sealer,
        kind: BlobKind,
        id: &BlobId,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<()> {
        let framed = sealer.open("blob", Aad::blob(kind.sealed_kind(), id), sealed)?;
        let len = raw_len as usize;
        match framed.split_first() {
            Some((&CODEC_STORED, payload)) if len <= MAX_BLOB_LEN => {
                check_hashed(id, len, payload.len(), self.id_of(payload))
            }
            Some((&CODEC_ZSTD, payload)) if len > STREAMED_CHECK && len <= MAX_BLOB_LEN => {
                use std::io::Read;
                let compression = |e: std::io::Error| Error::Compression {
                    what: "blob",
                    detail: e.to_string(),
                };
                let mut decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(compression)?;
                let mut hasher = blake3::Hasher::new_keyed(self.keys.id_key.expose());
                let mut buffer = vec![0u8; 64 << 10];
                let mut total = 0usize;
                loop {
                    let n = decoder.read(&mut buffer).map_err(compression)?;
                    if n == 0 {
                        break;
                    }
                    total += n;
                    if total > len {
                        break;
                    }
                    hasher.update(buffer.get(..n).unwrap_or_default());
                }
                check_hashed(id, len, total, BlobId(*hasher.finalize().as_bytes()))
            }
            _ => self.unframe(id, raw_len, framed).map(drop),
        }
    }

    /// Decompresses an opened blob and checks that it hashes to `id`.
    fn unframe(&mut self, id: &BlobId, raw_len: u32, framed: Vec<u8>) -> Result<Vec<u8>> {
        let plaintext = self.unframe_unhashed(raw_len, framed)?;
        check_hashed(id, raw_len as usize, plaintext.len(), self.id_of(&plaintext))?;
        Ok(plaintext)
    }

    /// The plaintext of an opened frame, of exactly `raw_len` bytes. A
    /// stored payload stays in the frame's buffer (moved down over the
    /// codec byte).
    fn unframe_unhashed(&mut self, raw_len: u32, mut framed: Vec<u8>) -> Result<Vec<u8>> {
        let raw_len = raw_len as usize;
        if raw_len > MAX_BLOB_LEN {
            return Err(Error::malformed("blob", format!("raw length {raw_len} over the limit")));
        }
        let plaintext = match framed.first().copied() {
            None => return Err(Error::malformed("blob", "empty frame")),
            Some(CODEC_STORED) => {
                framed.drain(..1);
                framed
            }
            Some(CODEC_ZSTD) => self
                .decompressor
                .decompress(framed.get(1..).unwrap_or_default(), raw_len)
                .map_err(|e| Error::Compression {
                    what: "blob",
                    detail: e.to_string(),
                })?,
            Some(other) => return Err(Error::malformed("blob", format!("unknown codec {other}"))),
        };
        if plaintext.len() != raw_len {
            return Err(Error::malformed(
                "blob",
                format!("holds {} bytes, the index says {raw_len}", plaintext.len()),
            ));
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, MasterKey};
    use proptest::prelude::*;

    pub(crate) fn codec() -> BlobCodec {
        let keys = MasterKey::from_bytes([5; 32]).derive();
        let sealer = keys.sealer(Cipher::XChaCha20Poly1305);
        BlobCodec::new(keys, sealer, 3).unwrap()
    }

    #[test]
    fn checking_a_blob_agrees_with_opening_it() {
        let mut codec = codec();
        let sealer = codec.sealer().clone();
        let text: Vec<u8> = (0..3 << 20)
            .map(|i: u32| b"row,"[(i % 4) as usize] ^ (i / 4096) as u8)
            .collect();
        let mut noise = vec![0u8; 1 << 20];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        for plaintext in [&b""[..], &text[..1000], &text[..300 << 10], &text[..], &noise[..]] {
            let blob = codec.seal(BlobKind::Data, plaintext).unwrap();
            let (id, len) = (blob.id, blob.raw_len);
            codec
                .check_with(&sealer, BlobKind::Data, &id, len, &blob.sealed)
                .unwrap();
            let unhashed = codec.open_unhashed_with(&sealer, BlobKind::Data, &id, len, &blob.sealed);
            assert_eq!(unhashed.unwrap(), plaintext);
            // A wrong length is damage either way.
            assert!(
                codec
                    .open_with(&sealer, BlobKind::Data, &id, len + 1, &blob.sealed)
                    .is_err()
            );
            let wrong = codec.open_unhashed_with(&sealer, BlobKind::Data, &id, len + 1, &blob.sealed);
            assert!(
                matches!(wrong, Err(Error::Malformed { .. } | Error::Compression { .. })),
                "{wrong:?}"
            );
            let wrong = codec.check_with(&sealer, BlobKind::Data, &id, len + 1, &blob.sealed);
            assert!(
                matches!(wrong, Err(Error::Malformed { .. } | Error::Compression { .. })),
                "{wrong:?}"
            );
            // Content that does not hash to its id is a hash mismatch either way.
            let other = BlobId([9; 32]);
            let misnamed = codec.seal_with_id(BlobKind::Data, other, plaintext).unwrap();
            let opened = codec.open_with(&sealer, BlobKind::Data, &other, len, &misnamed.sealed);
            let checked = codec.check_with(&sealer, BlobKind::Data, &other, len, &misnamed.sealed);
            assert!(matches!(opened, Err(Error::HashMismatch { .. })), "{opened:?}");
            assert!(matches!(checked, Err(Error::HashMismatch { .. })), "{checked:?}");
            // Only the re-hash tells: opened without it, the plaintext comes back.
            let unhashed = codec.open_unhashed_with(&sealer, BlobKind::Data, &other, len, &misnamed.sealed);
            assert_eq!(unhashed.unwrap(), plaintext);
            // A seal under another id or kind fails without the re-hash too.
            let moved = codec.open_unhashed_with(&sealer, BlobKind::Data, &id, len, &misnamed.sealed);
            assert!(matches!(moved, Err(Error::Authentication { .. })), "{moved:?}");
            let kind = codec.open_unhashed_with(&sealer, BlobKind::Tree, &id, len, &blob.sealed);
            assert!(matches!(kind, Err(Error::Authentication { .. })), "{kind:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..100_000), text in "[a-z ]{0,5000}") {
            let mut codec = codec();
            for plain in [data, text.into_bytes()] {
                let blob = codec.seal(BlobKind::Data, &plain).unwrap();
                prop_assert_eq!(codec.open(BlobKind::Data, &blob.id, blob.raw_len, &blob.sealed).unwrap(), plain);
            }
        }
    }

    #[test]
    fn text_is_compressed_and_random_is_not() {
        let mut codec = codec();
        let text = "INSERT INTO t VALUES (1,'abc');\n".repeat(4000).into_bytes();
        let blob = codec.seal(BlobKind::Data, &text).unwrap();
        assert!(blob.sealed.len() < text.len() / 4);
        let random: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let blob = codec.seal(BlobKind::Data, &random).unwrap();
        assert!(blob.sealed.len() <= random.len() + 41);
    }

    #[test]
    fn wrong_kind_or_id_is_rejected() {
        let mut codec = codec();
        let blob = codec.seal(BlobKind::Data, b"abc").unwrap();
        assert!(matches!(
            codec.open(BlobKind::Tree, &blob.id, 3, &blob.sealed),
            Err(Error::Authentication { .. })
        ));
        let other = codec.id_of(b"abd");
        assert!(matches!(
            codec.open(BlobKind::Data, &other, 3, &blob.sealed),
            Err(Error::Authentication { .. })
        ));
    }
}
