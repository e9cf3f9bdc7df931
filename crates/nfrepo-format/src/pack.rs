//! Packs: many sealed blobs in one stored object, with a sealed trailer that
//! lists them, so the index can always be rebuilt from the packs alone.
//!
//! ```text
//! offset 0   "NFRP" | version (1) | pack kind (1) | sealing scheme (1) | reserved (1) = 0
//! offset 8   sealed blob 0 | sealed blob 1 | ...
//!            sealed trailer: postcard(Vec<PackEntry>), AAD (PackTrailer, repository id)
//! last 4     trailer length, u32 little-endian
//! ```
//!
//! The pack id is the plain BLAKE3 of all of these bytes, so a replica or a
//! server can verify a pack without any key. Data and metadata blobs never
//! share a pack ([`PackKind`]).

use serde::{Deserialize, Serialize};

use crate::blob::{BlobKind, SealedBlob};
use crate::envelope::{PACK_MAGIC, from_postcard, read_header, to_postcard, write_header};
use crate::seal::{Aad, SealedKind, Sealer};
use crate::{BlobCodec, BlobId, Error, PackId, RepoId, Result};

/// Bytes before the first blob.
pub const PACK_HEADER_LEN: usize = 8;
/// The sealing scheme of packs sealed with the repository's symmetric key.
/// A later write-only credential (sealing to a public key) gets its own code.
pub const SEALING_SCHEME_REPOSITORY_KEY: u8 = 0;
/// The largest pack the format accepts (offsets are `u32`).
pub const MAX_PACK_LEN: u64 = 1 << 31;
const MAX_TRAILER_LEN: usize = 64 * 1024 * 1024;

/// Which family a pack belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PackKind {
    /// Data blobs; may live on a cold tier.
    Data,
    /// Tree and content-list blobs; always hot.
    Tree,
}

impl PackKind {
    /// The family a blob kind is packed into.
    #[must_use]
    pub const fn for_blob(kind: BlobKind) -> Self {
        if kind.is_metadata() { Self::Tree } else { Self::Data }
    }

    const fn code(self) -> u8 {
        match self {
            Self::Data => 1,
            Self::Tree => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(Self::Data),
            2 => Ok(Self::Tree),
            other => Err(Error::malformed("pack", format!("unknown pack kind {other}"))),
        }
    }
}

/// Where one blob sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// The blob's id.
    pub id: BlobId,
    /// The blob's kind.
    pub kind: BlobKind,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub sealed_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
}

/// Accumulates sealed blobs into one pack in memory.
#[derive(Debug)]
pub struct PackBuilder {
    kind: PackKind,
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to verify and upload.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// BLAKE3 of `bytes`.
    pub id: PackId,
    /// The family.
    pub kind: PackKind,
    /// The stored bytes.
    pub bytes: Vec<u8>,
    /// The blobs it holds, in order.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack of `kind`.
    #[must_use]
    pub fn new(kind: PackKind, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity);
        write_header(&mut bytes, PACK_MAGIC);
        bytes.extend_from_slice(&[kind.code(), SEALING_SCHEME_REPOSITORY_KEY, 0]);
        Self {
            kind,
            bytes,
            entries: Vec::new(),
        }
    }

    /// The family.
    #[must_use]
    pub const fn kind(&self) -> PackKind {
        self.kind
    }

    /// Bytes so far, without the trailer.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no blob was added yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a sealed blob.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the pack would pass [`MAX_PACK_LEN`].
    pub fn add(&mut self, blob: &SealedBlob) -> Result<()> {
        let too_large = || Error::TooLarge {
            what: "pack",
            detail: format!("over {MAX_PACK_LEN} bytes"),
        };
        let offset = u32::try_from(self.bytes.len()).map_err(|_| too_large())?;
        let sealed_len = u32::try_from(blob.sealed.len()).map_err(|_| too_large())?;
        if u64::from(offset) + u64::from(sealed_len) > MAX_PACK_LEN {
            return Err(too_large());
        }
        self.bytes.extend_from_slice(&blob.sealed);
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            offset,
            sealed_len,
            raw_len: blob.raw_len,
        });
        Ok(())
    }

    /// Seals the trailer and names the pack.
    ///
    /// # Errors
    /// [`Error::Random`] if no nonce could be drawn.
    pub fn finish(mut self, sealer: &Sealer, repo: &RepoId) -> Result<FinishedPack> {
        let trailer = to_postcard("pack trailer", &self.entries)?;
        let sealed = sealer.seal(Aad::object(SealedKind::PackTrailer, repo.0), &trailer)?;
        let len = u32::try_from(sealed.len()).map_err(|_| Error::TooLarge {
            what: "pack trailer",
            detail: "over 4 GiB".into(),
        })?;
        self.bytes.extend_from_slice(&sealed);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        Ok(FinishedPack {
            id: PackId(crate::content_hash(&self.bytes)),
            kind: self.kind,
            bytes: self.bytes,
            entries: self.entries,
        })
    }
}

/// Reads the pack kind from the first [`PACK_HEADER_LEN`] bytes.
///
/// # Errors
/// [`Error::BadMagic`], [`Error::UnsupportedVersion`] or [`Error::Malformed`].
pub fn decode_pack_header(bytes: &[u8]) -> Result<PackKind> {
    let rest = read_header("pack", PACK_MAGIC, bytes)?;
    match rest.get(..3) {
        Some(&[kind, SEALING_SCHEME_REPOSITORY_KEY, 0]) => PackKind::from_code(kind),
        Some(&[_, SEALING_SCHEME_REPOSITORY_KEY, reserved]) => Err(Error::malformed(
            "pack",
            format!("reserved header byte is {reserved}, not 0"),
        )),
        Some(&[_, scheme, _]) => Err(Error::malformed("pack", format!("unknown sealing scheme {scheme}"))),
        _ => Err(Error::malformed("pack", "shorter than its header")),
    }
}

/// The length of the sealed trailer, from the pack's last four bytes.
///
/// # Errors
/// [`Error::Malformed`] if fewer than four bytes are given or the length is absurd.
pub fn trailer_len(last_four: &[u8]) -> Result<usize> {
    let bytes: [u8; 4] = last_four
        .try_into()
        .map_err(|_| Error::malformed("pack", "trailer length needs four bytes"))?;
    let len = u32::from_le_bytes(bytes) as usize;
    if len > MAX_TRAILER_LEN {
        return Err(Error::malformed("pack", format!("trailer length {len} is absurd")));
    }
    Ok(len)
}

/// Opens a sealed trailer and checks that its entries fit inside a pack of `pack_len` bytes.
///
/// # Errors
/// [`Error::Authentication`] if the trailer was altered; [`Error::Malformed`]
/// if an entry points outside the blob area.
pub fn decode_trailer(sealed: &[u8], pack_len: u64, sealer: &Sealer, repo: &RepoId) -> Result<Vec<PackEntry>> {
    let plain = sealer.open("pack trailer", Aad::object(SealedKind::PackTrailer, repo.0), sealed)?;
    let entries: Vec<PackEntry> = from_postcard("pack trailer", &plain)?;
    let blob_area_end = pack_len.saturating_sub(sealed.len() as u64 + 4);
    for entry in &entries {
        let end = u64::from(entry.offset) + u64::from(entry.sealed_len);
        if u64::from(entry.offset) < PACK_HEADER_LEN as u64 || end > blob_area_end {
            return Err(Error::malformed(
                "pack trailer",
                format!(
                    "blob {} at {}+{} lies outside the pack",
                    entry.id.short(),
                    entry.offset,
                    entry.sealed_len
                ),
            ));
        }
    }
    Ok(entries)
}

/// Parses a whole pack's trailer from its bytes (without verifying the blobs).
///
/// # Errors
/// As [`decode_pack_header`], [`trailer_len`] and [`decode_trailer`].
pub fn read_pack_entries(bytes: &[u8], sealer: &Sealer, repo: &RepoId) -> Result<(PackKind, Vec<PackEntry>)> {
    let kind = decode_pack_header(bytes)?;
    let len_at = bytes
        .len()
        .checked_sub(4)
        .ok_or_else(|| Error::malformed("pack", "too short"))?;
    let tlen = trailer_len(bytes.get(len_at..).unwrap_or_default())?;
    let start = len_at
        .checked_sub(tlen)
        .filter(|s| *s >= PACK_HEADER_LEN)
        .ok_or_else(|| Error::malformed("pack", "trailer longer than the pack"))?;
    let sealed = bytes
        .get(start..len_at)
        .ok_or_else(|| Error::malformed("pack", "trailer out of range"))?;
    let entries = decode_trailer(sealed, bytes.len() as u64, sealer, repo)?;
    check_entry_kinds(kind, &entries)?;
    Ok((kind, entries))
}

/// Checks that every blob belongs in a pack of `kind` (data blobs in data
/// packs, tree and content-list blobs in tree packs). The header's kind byte
/// is outside the sealed trailer, so this is what binds it to the contents.
///
/// # Errors
/// [`Error::Malformed`] naming the first blob of the wrong kind.
pub fn check_entry_kinds(kind: PackKind, entries: &[PackEntry]) -> Result<()> {
    match entries.iter().find(|e| PackKind::for_blob(e.kind) != kind) {
        Some(e) => Err(Error::malformed(
            "pack",
            format!("{:?} blob {} in a {kind:?} pack", e.kind, e.id.short()),
        )),
        None => Ok(()),
    }
}

/// The problem found with one blob of a pack.
#[derive(Debug)]
pub struct BlobFault {
    /// The blob.
    pub id: BlobId,
    /// What was wrong.
    pub error: Error,
}

/// Verifies a whole pack: its id, header, trailer, and every blob (open,
/// decompress, re-hash). Returns the entries and the faulty blobs, if any.
///
/// # Errors
/// Fails outright when the pack as a whole is unusable (wrong id, bad header or trailer).
pub fn verify_pack(
    expected: &PackId,
    bytes: &[u8],
    codec: &mut BlobCodec,
    repo: &RepoId,
) -> Result<(PackKind, Vec<PackEntry>, Vec<BlobFault>)> {
    let actual = PackId(crate::content_hash(bytes));
    if actual != *expected {
        return Err(Error::HashMismatch {
            what: "pack",
            expected: expected.to_hex(),
            actual: actual.to_hex(),
        });
    }
    let (kind, entries) = read_pack_entries(bytes, &codec.sealer().clone(), repo)?;
    let mut faults = Vec::new();
    for entry in &entries {
        let start = entry.offset as usize;
        let sealed = bytes.get(start..start + entry.sealed_len as usize).unwrap_or_default();
        if let Err(error) = codec.open(entry.kind, &entry.id, entry.raw_len, sealed) {
            faults.push(BlobFault { id: entry.id, error });
        }
    }
    Ok((kind, entries, faults))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cipher, MasterKey};

    fn codec() -> BlobCodec {
        let keys = MasterKey::from_bytes([5; 32]).derive();
        let sealer = keys.sealer(Cipher::XChaCha20Poly1305);
        BlobCodec::new(keys, sealer, 3).unwrap()
    }

    fn pack_of(codec: &mut BlobCodec, blobs: &[&[u8]]) -> FinishedPack {
        let mut builder = PackBuilder::new(PackKind::Data, 1024);
        for b in blobs {
            builder.add(&codec.seal(BlobKind::Data, b).unwrap()).unwrap();
        }
        builder.finish(codec.sealer(), &RepoId([1; 32])).unwrap()
    }

    #[test]
    fn round_trip_and_verify() {
        let mut codec = codec();
        let pack = pack_of(&mut codec, &[b"one", b"two two", b""]);
        let (kind, entries, faults) = verify_pack(&pack.id, &pack.bytes, &mut codec, &RepoId([1; 32])).unwrap();
        assert_eq!(kind, PackKind::Data);
        assert_eq!(entries, pack.entries);
        assert!(faults.is_empty());
    }

    #[test]
    fn flipped_blob_byte_names_the_blob() {
        let mut codec = codec();
        let mut pack = pack_of(&mut codec, &[b"one", b"two two"]);
        let target = pack.entries[1];
        pack.bytes[target.offset as usize + 30] ^= 0x40;
        let id = PackId(crate::content_hash(&pack.bytes));
        let (_, _, faults) = verify_pack(&id, &pack.bytes, &mut codec, &RepoId([1; 32])).unwrap();
        assert_eq!(faults.len(), 1);
        assert_eq!(faults[0].id, target.id);
        // Under its old name the pack's hash no longer matches.
        assert!(matches!(
            verify_pack(&pack.id, &pack.bytes, &mut codec, &RepoId([1; 32])),
            Err(Error::HashMismatch { what: "pack", .. })
        ));
    }

    #[test]
    fn pack_kind_must_match_its_blobs() {
        let mut codec = codec();
        let mut pack = pack_of(&mut codec, &[b"one"]);
        pack.bytes[5] = 2; // claim to be a tree pack
        let err = read_pack_entries(&pack.bytes, codec.sealer(), &RepoId([1; 32])).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }

    #[test]
    fn truncated_pack_is_rejected() {
        let mut codec = codec();
        let pack = pack_of(&mut codec, &[b"one"]);
        for cut in [0, 3, 8] {
            let err = read_pack_entries(&pack.bytes[..cut], codec.sealer(), &RepoId([1; 32])).unwrap_err();
            assert!(matches!(err, Error::Malformed { what: "pack", .. }), "cut {cut}: {err}");
        }
        // Cut inside the length: the last four bytes are no longer the trailer's length.
        let err = read_pack_entries(&pack.bytes[..pack.bytes.len() - 1], codec.sealer(), &RepoId([1; 32])).unwrap_err();
        assert!(
            matches!(err, Error::Malformed { .. } | Error::Authentication { .. }),
            "{err}"
        );
    }
}
