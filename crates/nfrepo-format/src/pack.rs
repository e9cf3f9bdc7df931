//! Packs: many sealed blobs in one stored object, with a sealed trailer that
//! lists them, so the index can always be rebuilt from the packs alone.
//!
//! ```text
//! offset 0   "NFRP" | version (1) | pack kind (1) | sealing scheme (1) | reserved (1) = 0
//! offset 8   scheme 01 only: key epoch (u32 LE) | session's ephemeral public key (32)
//! offset 8 (scheme 00) or 44 (scheme 01)
//!            sealed blob 0 | sealed blob 1 | ...
//!            sealed trailer: postcard(Vec<PackEntry>), AAD (PackTrailer, repository id)
//! last 4     trailer length, u32 little-endian
//! ```
//!
//! Scheme 00: blobs and trailer are sealed under the repository's sealing
//! key (any live epoch, by trial). Scheme 01: under the key of the put-only
//! session the header names (put-only.md), found without trial.
//!
//! The pack id is the plain BLAKE3 of all of these bytes, so a replica or a
//! server can verify a pack without any key. Data and metadata blobs never
//! share a pack ([`PackKind`]).

use serde::{Deserialize, Serialize};

use crate::blob::{BlobKind, SealedBlob};
use crate::envelope::{PACK_MAGIC, from_postcard, read_header, to_postcard, write_header};
use crate::put_only::{KEY_SCHEME_SESSION, KeyRef, SessionRef};
use crate::seal::{Aad, SealedKind, Sealer};
use crate::{BlobCodec, BlobId, Error, PackId, RepoId, Result};

/// Bytes before the first blob of a pack sealed under the repository's keys
/// (and the fixed part of every pack header).
pub const PACK_HEADER_LEN: usize = 8;
/// Bytes before the first blob of a pack of a put-only session.
pub const SESSION_PACK_HEADER_LEN: usize = PACK_HEADER_LEN + 4 + 32;
/// The sealing scheme of packs sealed with the repository's symmetric key.
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
    sealing: Option<SessionRef>,
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
    /// The put-only session whose key sealed it, as its header names.
    pub sealing: Option<SessionRef>,
}

/// Bytes before the first blob of a pack sealed as `sealing` says.
#[must_use]
pub const fn pack_header_len(sealing: Option<&SessionRef>) -> usize {
    match sealing {
        None => PACK_HEADER_LEN,
        Some(_) => SESSION_PACK_HEADER_LEN,
    }
}

impl PackBuilder {
    /// An empty pack of `kind`, sealed under the repository's keys.
    #[must_use]
    pub fn new(kind: PackKind, capacity: usize) -> Self {
        Self::sealed_as(kind, capacity, None)
    }

    /// An empty pack of `kind` whose blobs and trailer `sealer` seals: a
    /// put-only session's sealer makes a scheme-01 pack naming the session.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a sealer of an index key (packs are never
    /// sealed under it).
    pub fn for_sealer(kind: PackKind, capacity: usize, sealer: &Sealer) -> Result<Self> {
        match sealer.reference() {
            KeyRef::Repository => Ok(Self::sealed_as(kind, capacity, None)),
            KeyRef::Session(session) => Ok(Self::sealed_as(kind, capacity, Some(session))),
            KeyRef::Index { .. } => Err(Error::malformed("pack", "packs are never sealed under an index key")),
        }
    }

    fn sealed_as(kind: PackKind, capacity: usize, sealing: Option<SessionRef>) -> Self {
        let mut bytes = Vec::with_capacity(capacity.max(SESSION_PACK_HEADER_LEN));
        write_header(&mut bytes, PACK_MAGIC);
        match &sealing {
            None => bytes.extend_from_slice(&[kind.code(), SEALING_SCHEME_REPOSITORY_KEY, 0]),
            Some(session) => {
                bytes.extend_from_slice(&[kind.code(), KEY_SCHEME_SESSION, 0]);
                bytes.extend_from_slice(&session.epoch.to_le_bytes());
                bytes.extend_from_slice(&session.ephemeral);
            }
        }
        Self {
            kind,
            bytes,
            entries: Vec::new(),
            sealing,
        }
    }

    /// The put-only session this pack is sealed for, if any.
    #[must_use]
    pub const fn sealing(&self) -> Option<SessionRef> {
        self.sealing
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
    /// [`Error::Random`] if no nonce could be drawn; [`Error::Malformed`] if
    /// `sealer` is not of the key the header names.
    pub fn finish(mut self, sealer: &Sealer, repo: &RepoId) -> Result<FinishedPack> {
        let expected = self.sealing.map_or(KeyRef::Repository, KeyRef::Session);
        if sealer.reference() != expected {
            return Err(Error::malformed(
                "pack",
                "trailer sealed under another key than the header names",
            ));
        }
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
            sealing: self.sealing,
        })
    }
}

/// Reads the pack kind from the first [`PACK_HEADER_LEN`] bytes (the
/// fixed part of the header, of either sealing scheme).
///
/// # Errors
/// [`Error::BadMagic`], [`Error::UnsupportedVersion`] or [`Error::Malformed`].
pub fn decode_pack_header(bytes: &[u8]) -> Result<PackKind> {
    fixed_header(bytes).map(|(kind, _)| kind)
}

fn fixed_header(bytes: &[u8]) -> Result<(PackKind, u8)> {
    let rest = read_header("pack", PACK_MAGIC, bytes)?;
    match rest.get(..3) {
        Some(&[kind, scheme @ (SEALING_SCHEME_REPOSITORY_KEY | KEY_SCHEME_SESSION), 0]) => {
            Ok((PackKind::from_code(kind)?, scheme))
        }
        Some(&[_, SEALING_SCHEME_REPOSITORY_KEY | KEY_SCHEME_SESSION, reserved]) => Err(Error::malformed(
            "pack",
            format!("reserved header byte is {reserved}, not 0"),
        )),
        Some(&[_, scheme, _]) => Err(Error::malformed("pack", format!("unknown sealing scheme {scheme}"))),
        _ => Err(Error::malformed("pack", "shorter than its header")),
    }
}

/// Reads the whole pack header: the kind, the put-only session whose key
/// sealed the pack (`None` for the repository's keys), and the header's
/// length (where the first blob starts). Needs the first
/// [`SESSION_PACK_HEADER_LEN`] bytes of a session's pack.
///
/// # Errors
/// As [`decode_pack_header`]; [`Error::Malformed`] if the session part is cut.
pub fn decode_pack_sealing(bytes: &[u8]) -> Result<(PackKind, Option<SessionRef>, usize)> {
    let (kind, scheme) = fixed_header(bytes)?;
    if scheme == SEALING_SCHEME_REPOSITORY_KEY {
        return Ok((kind, None, PACK_HEADER_LEN));
    }
    let session = bytes
        .get(PACK_HEADER_LEN..SESSION_PACK_HEADER_LEN)
        .ok_or_else(|| Error::malformed("pack", "session header truncated"))?;
    let (epoch, ephemeral) = session.split_at(4);
    let mut epoch_bytes = [0u8; 4];
    epoch_bytes.copy_from_slice(epoch);
    let mut key = [0u8; 32];
    key.copy_from_slice(ephemeral);
    Ok((
        kind,
        Some(SessionRef {
            epoch: u32::from_le_bytes(epoch_bytes),
            ephemeral: key,
        }),
        SESSION_PACK_HEADER_LEN,
    ))
}

/// The sealer that opens the blobs and trailer of a pack sealed as
/// `sealing` says: `sealer` itself, or the session's key resolved by it.
///
/// # Errors
/// As [`Sealer::resolve`].
pub fn pack_sealer(sealer: &Sealer, sealing: Option<&SessionRef>) -> Result<Sealer> {
    match sealing {
        None if sealer.reference() == KeyRef::Repository => Ok(sealer.clone()),
        None => sealer.resolve(&KeyRef::Repository),
        Some(session) => sealer.resolve(&KeyRef::Session(*session)),
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
    decode_session_trailer(sealed, pack_len, sealer, None, repo)
}

/// [`decode_trailer`] of a pack sealed as `sealing` says (its header,
/// [`decode_pack_sealing`]): the trailer opens under the session's key,
/// resolved by `sealer`, and no blob may overlap the longer header.
///
/// # Errors
/// As [`decode_trailer`]; [`Error::MissingKey`] if `sealer` cannot resolve
/// the session's key.
pub fn decode_session_trailer(
    sealed: &[u8],
    pack_len: u64,
    sealer: &Sealer,
    sealing: Option<&SessionRef>,
    repo: &RepoId,
) -> Result<Vec<PackEntry>> {
    let sealer = pack_sealer(sealer, sealing)?;
    let plain = sealer.open("pack trailer", Aad::object(SealedKind::PackTrailer, repo.0), sealed)?;
    let entries: Vec<PackEntry> = from_postcard("pack trailer", &plain)?;
    let blob_area_end = pack_len.saturating_sub(sealed.len() as u64 + 4);
    let header_len = pack_header_len(sealing) as u64;
    for entry in &entries {
        let end = u64::from(entry.offset) + u64::from(entry.sealed_len);
        if u64::from(entry.offset) < header_len || end > blob_area_end {
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
    read_pack_sealing(bytes, sealer, repo).map(|(kind, _, entries)| (kind, entries))
}

/// [`read_pack_entries`], also returning the put-only session whose key
/// sealed the pack (`None` for the repository's keys).
///
/// # Errors
/// As [`read_pack_entries`]; [`Error::MissingKey`] if `sealer` cannot
/// resolve the session's key.
pub fn read_pack_sealing(
    bytes: &[u8],
    sealer: &Sealer,
    repo: &RepoId,
) -> Result<(PackKind, Option<SessionRef>, Vec<PackEntry>)> {
    let (kind, sealing, header_len) = decode_pack_sealing(bytes)?;
    let len_at = bytes
        .len()
        .checked_sub(4)
        .ok_or_else(|| Error::malformed("pack", "too short"))?;
    let tlen = trailer_len(bytes.get(len_at..).unwrap_or_default())?;
    let start = len_at
        .checked_sub(tlen)
        .filter(|s| *s >= header_len)
        .ok_or_else(|| Error::malformed("pack", "trailer longer than the pack"))?;
    let sealed = bytes
        .get(start..len_at)
        .ok_or_else(|| Error::malformed("pack", "trailer out of range"))?;
    let entries = decode_session_trailer(sealed, bytes.len() as u64, sealer, sealing.as_ref(), repo)?;
    check_entry_kinds(kind, &entries)?;
    Ok((kind, sealing, entries))
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
    let (kind, sealing, entries) = read_pack_sealing(bytes, &codec.sealer().clone(), repo)?;
    let blob_sealer = pack_sealer(codec.sealer(), sealing.as_ref())?;
    let mut faults = Vec::new();
    for entry in &entries {
        let start = entry.offset as usize;
        let sealed = bytes.get(start..start + entry.sealed_len as usize).unwrap_or_default();
        if let Err(error) = codec.check_with(&blob_sealer, entry.kind, &entry.id, entry.raw_len, sealed) {
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

    #[test]
    fn a_session_pack_opens_with_the_epoch_secret_alone() {
        let keys = MasterKey::from_bytes([5; 32]).derive();
        let repo = RepoId([1; 32]);
        let public = keys.reference_keys.key_pair(0).unwrap().public();
        let host_keys = std::sync::Arc::new(crate::ReferenceKeys::index_only(0, crate::index_key(&[5; 32])));
        let session = crate::begin_session(&public, 0, Cipher::XChaCha20Poly1305, host_keys).unwrap();
        let mut host_codec = BlobCodec::new(keys.clone(), session.clone(), 3).unwrap();
        let mut builder = PackBuilder::for_sealer(PackKind::Data, 64, &session).unwrap();
        builder
            .add(&host_codec.seal(BlobKind::Data, b"secret bytes").unwrap())
            .unwrap();
        // A trailer under another key than the header names is refused.
        assert!(matches!(
            PackBuilder::for_sealer(PackKind::Data, 64, &session)
                .unwrap()
                .finish(&keys.sealer(Cipher::XChaCha20Poly1305), &repo),
            Err(Error::Malformed { .. })
        ));
        let pack = builder.finish(&session, &repo).unwrap();
        assert_eq!(pack.entries[0].offset as usize, SESSION_PACK_HEADER_LEN);
        let (kind, sealing, len) = decode_pack_sealing(&pack.bytes).unwrap();
        assert_eq!(
            (kind, sealing, len),
            (PackKind::Data, pack.sealing, SESSION_PACK_HEADER_LEN)
        );
        assert_eq!(
            decode_pack_header(&pack.bytes[..PACK_HEADER_LEN]).unwrap(),
            PackKind::Data
        );
        // The password holder opens it without trial.
        let mut reader = codec();
        let (_, entries, faults) = verify_pack(&pack.id, &pack.bytes, &mut reader, &repo).unwrap();
        assert_eq!(entries, pack.entries);
        assert!(faults.is_empty());
        // The host, once its session is gone, holds only the index key: nothing opens.
        let host_after = session.reference_keys();
        let index = host_after
            .sealer(Cipher::XChaCha20Poly1305, &KeyRef::Index { epoch: 0 })
            .unwrap();
        assert!(matches!(
            read_pack_entries(&pack.bytes, &index, &repo),
            Err(Error::MissingKey { .. })
        ));
        let sealed = &pack.bytes[SESSION_PACK_HEADER_LEN..][..pack.entries[0].sealed_len as usize];
        assert!(matches!(
            index.open("blob", Aad::blob(SealedKind::DataBlob, &pack.entries[0].id), sealed),
            Err(Error::Authentication { .. })
        ));
        // An index sealer cannot make packs; a cut session header is malformed.
        assert!(PackBuilder::for_sealer(PackKind::Data, 64, &index).is_err());
        assert!(matches!(
            decode_pack_sealing(&pack.bytes[..20]),
            Err(Error::Malformed { .. })
        ));
    }
}
