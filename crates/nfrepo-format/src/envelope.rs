//! The five-byte header every stored object starts with: a four-byte magic
//! naming the object kind, then a one-byte format version.
//!
//! Checking the magic first turns "this is some other file" into a clear
//! error instead of a confusing decode failure deep inside postcard.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Magic of the repository config object.
pub const CONFIG_MAGIC: [u8; 4] = *b"NFRC";
/// Magic of a key slot.
pub const KEY_SLOT_MAGIC: [u8; 4] = *b"NFRK";
/// Magic of a pack.
pub const PACK_MAGIC: [u8; 4] = *b"NFRP";
/// Magic of an index delta.
pub const INDEX_MAGIC: [u8; 4] = *b"NFRI";
/// Magic of a snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"NFRS";
/// Magic of a tree node blob's plaintext.
pub const TREE_MAGIC: [u8; 4] = *b"NFRT";
/// Magic of a content-list blob's plaintext.
pub const CONTENT_LIST_MAGIC: [u8; 4] = *b"NFRL";

/// Magic of a GC plan.
pub const GC_PLAN_MAGIC: [u8; 4] = *b"NFRG";
/// Magic of a backup session marker.
pub const SESSION_MAGIC: [u8; 4] = *b"NFRB";
/// Magic of a lease.
pub const LEASE_MAGIC: [u8; 4] = *b"NFRQ";
/// Magic of a snapshot protection marker.
pub const PROTECT_MAGIC: [u8; 4] = *b"NFRX";
/// Magic of a good marker (a deployment snapshot that passed its checks).
pub const GOOD_MAGIC: [u8; 4] = *b"NFRM";
/// Magic of a disaster-recovery drill record.
pub const DRILL_MAGIC: [u8; 4] = *b"NFRD";
/// Magic of a key history (the older key epochs).
pub const KEY_HISTORY_MAGIC: [u8; 4] = *b"NFRH";

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Length of the header.
pub const HEADER_LEN: usize = 5;

/// Writes `magic` and the current version.
pub(crate) fn write_header(out: &mut Vec<u8>, magic: [u8; 4]) {
    out.extend_from_slice(&magic);
    out.push(FORMAT_VERSION);
}

/// Checks the header and returns the bytes after it.
pub(crate) fn read_header<'a>(what: &'static str, magic: [u8; 4], bytes: &'a [u8]) -> Result<&'a [u8]> {
    let (head, rest) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or_else(|| Error::malformed(what, "shorter than its header"))?;
    if head.get(..4) != Some(&magic[..]) {
        return Err(Error::BadMagic { what });
    }
    match head.get(4) {
        Some(&FORMAT_VERSION) => Ok(rest),
        Some(&version) => Err(Error::UnsupportedVersion { what, version }),
        None => Err(Error::malformed(what, "shorter than its header")),
    }
}

/// postcard encoding; infallible for the types of this crate.
pub(crate) fn to_postcard<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::malformed(what, e.to_string()))
}

/// postcard decoding that also rejects trailing bytes.
pub(crate) fn from_postcard<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| Error::malformed(what, e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::malformed(what, format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// Encodes `magic | version | sealed(postcard(value))`, the shape of index
/// deltas and snapshots.
pub(crate) fn seal_object<T: Serialize>(
    what: &'static str,
    magic: [u8; 4],
    kind: crate::seal::SealedKind,
    value: &T,
    sealer: &crate::Sealer,
    repo: &crate::RepoId,
) -> Result<Vec<u8>> {
    let body = to_postcard(what, value)?;
    let mut out = Vec::with_capacity(body.len() + HEADER_LEN + crate::seal::SEAL_OVERHEAD);
    write_header(&mut out, magic);
    sealer.seal_into(crate::seal::Aad::object(kind, repo.0), &body, &mut out)?;
    Ok(out)
}

/// The inverse of [`seal_object`].
pub(crate) fn open_object<T: DeserializeOwned>(
    what: &'static str,
    magic: [u8; 4],
    kind: crate::seal::SealedKind,
    bytes: &[u8],
    sealer: &crate::Sealer,
    repo: &crate::RepoId,
) -> Result<T> {
    let sealed = read_header(what, magic, bytes)?;
    let body = sealer.open(what, crate::seal::Aad::object(kind, repo.0), sealed)?;
    from_postcard(what, &body)
}

/// What a named object is checked against: the id in its name, the id its
/// body records, and the verb for the error ("marks", "protects"…).
pub(crate) type Named<'a, T> = (&'a [u8; 32], fn(&T) -> &[u8; 32], &'a str);

/// [`open_object`] for an object stored under the name of an id its body
/// also records (a protect or good marker names its snapshot, a drill record
/// its drill): a body recording another id than `stored_as` is
/// [`Error::Malformed`] ("stored as A but `verb` B"), so an object copied
/// under another name never passes for that one.
pub(crate) fn open_named_object<T: DeserializeOwned>(
    what: &'static str,
    magic: [u8; 4],
    kind: crate::seal::SealedKind,
    named: Named<'_, T>,
    bytes: &[u8],
    sealer: &crate::Sealer,
    repo: &crate::RepoId,
) -> Result<T> {
    let (stored_as, recorded, verb) = named;
    let object: T = open_object(what, magic, kind, bytes, sealer, repo)?;
    let body_id = recorded(&object);
    if body_id != stored_as {
        let short = |id: &[u8; 32]| hex::encode(id.get(..4).unwrap_or_default());
        return Err(Error::malformed(
            what,
            format!("stored as {} but {verb} {}", short(stored_as), short(body_id)),
        ));
    }
    Ok(object)
}
