//! The five-byte header every stored object starts with: a four-byte magic
//! naming the object kind, then a one-byte format version.
//!
//! Checking the magic first turns "this is some other file" into a clear
//! error instead of a confusing decode failure deep inside postcard.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::put_only::KeyRef;
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
/// Magic of a cached unlock (a file in a host's cache directory, never in
/// a repository; unlock.md).
pub const UNLOCK_CACHE_MAGIC: [u8; 4] = *b"NFRU";

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// The header version of a sealed object whose key is named by a key
/// reference after the version byte (put-only.md): objects of put-only
/// sessions and index deltas sealed under an index key.
pub const REFERENCED_VERSION: u8 = 2;

/// Length of the header.
pub const HEADER_LEN: usize = 5;

/// Writes `magic` and the current version.
pub(crate) fn write_header(out: &mut Vec<u8>, magic: [u8; 4]) {
    out.extend_from_slice(&magic);
    out.push(FORMAT_VERSION);
}

/// Checks the header and returns the bytes after it.
pub(crate) fn read_header<'a>(what: &'static str, magic: [u8; 4], bytes: &'a [u8]) -> Result<&'a [u8]> {
    match split_header(what, magic, bytes)? {
        (FORMAT_VERSION, rest) => Ok(rest),
        (version, _) => Err(Error::UnsupportedVersion { what, version }),
    }
}

/// Checks the magic; returns the version byte and the bytes after it.
fn split_header<'a>(what: &'static str, magic: [u8; 4], bytes: &'a [u8]) -> Result<(u8, &'a [u8])> {
    let (head, rest) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or_else(|| Error::malformed(what, "shorter than its header"))?;
    let [m0, m1, m2, m3, version] = *head;
    if [m0, m1, m2, m3] != magic {
        return Err(Error::BadMagic { what });
    }
    Ok((version, rest))
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

/// Writes the header of a sealed object sealed by `sealer`: version 1 for
/// the repository's keys, else version 2 followed by the sealer's key
/// reference.
pub(crate) fn write_sealed_header(out: &mut Vec<u8>, magic: [u8; 4], sealer: &crate::Sealer) {
    let reference = sealer.reference();
    if reference == KeyRef::Repository {
        write_header(out, magic);
    } else {
        out.extend_from_slice(&magic);
        out.push(REFERENCED_VERSION);
        reference.write(out);
    }
}

/// Reads the header of a sealed object: its key reference
/// ([`KeyRef::Repository`] for version 1) and the sealed rest. A version-2
/// header naming the repository's keys is refused (version 1 says that).
pub(crate) fn read_sealed_header<'a>(
    what: &'static str,
    magic: [u8; 4],
    bytes: &'a [u8],
) -> Result<(KeyRef, &'a [u8])> {
    match split_header(what, magic, bytes)? {
        (FORMAT_VERSION, rest) => Ok((KeyRef::Repository, rest)),
        (REFERENCED_VERSION, rest) => match KeyRef::read(what, rest)? {
            (KeyRef::Repository, _) => Err(Error::malformed(what, "version 2 header naming the repository's keys")),
            found => Ok(found),
        },
        (version, _) => Err(Error::UnsupportedVersion { what, version }),
    }
}

/// Encodes `magic | version [| key reference] | sealed(postcard(value))`,
/// the shape of index deltas and snapshots.
pub(crate) fn seal_object<T: Serialize>(
    what: &'static str,
    magic: [u8; 4],
    kind: crate::seal::SealedKind,
    value: &T,
    sealer: &crate::Sealer,
    repo: &crate::RepoId,
) -> Result<Vec<u8>> {
    let body = to_postcard(what, value)?;
    seal_bytes(magic, kind, &body, sealer, repo)
}

/// [`seal_object`] of an already encoded body.
pub(crate) fn seal_bytes(
    magic: [u8; 4],
    kind: crate::seal::SealedKind,
    body: &[u8],
    sealer: &crate::Sealer,
    repo: &crate::RepoId,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + HEADER_LEN + 37 + crate::seal::SEAL_OVERHEAD);
    write_sealed_header(&mut out, magic, sealer);
    sealer.seal_into(crate::seal::Aad::object(kind, repo.0), body, &mut out)?;
    Ok(out)
}

/// Opens a sealed object's body with the key its header names, resolved by
/// `sealer` ([`crate::Sealer::resolve`]); returns the reference and the body.
pub(crate) fn open_bytes(
    what: &'static str,
    magic: [u8; 4],
    kind: crate::seal::SealedKind,
    bytes: &[u8],
    sealer: &crate::Sealer,
    repo: &crate::RepoId,
) -> Result<(KeyRef, Vec<u8>)> {
    let (reference, sealed) = read_sealed_header(what, magic, bytes)?;
    let aad = crate::seal::Aad::object(kind, repo.0);
    // A sealer of another key than the header names resolves it: a key
    // holder derives a session's or index key; a put-only session asked
    // for the repository's keys gets `MissingKey`, not a failed tag.
    let body = if reference == sealer.reference() {
        sealer.open(what, aad, sealed)?
    } else {
        sealer.resolve(&reference)?.open(what, aad, sealed)?
    };
    Ok((reference, body))
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
    let (_, body) = open_bytes(what, magic, kind, bytes, sealer, repo)?;
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
