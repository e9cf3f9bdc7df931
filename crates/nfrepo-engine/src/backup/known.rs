//! Change detection of a put-only session (format-spec/put-only.md,
//! "Change detection on the host").
//!
//! A put-only host cannot read its parent snapshot's trees, so a session
//! opened with a local cache directory ([`Repository::with_known_files`])
//! remembers each file it stores in [`nfrepo_store::KnownFiles`], scoped by
//! credential and source, keyed by absolute path, stamped with the file's
//! size, times, inode, device and mode. The value is what the host itself
//! produced:
//!
//! ```text
//! 01 | blake3 [32] | 00 | n u32 LE | n × (chunk id [32], len u64 LE)     inline content
//! 01 | blake3 [32] | 01 | root [32] | depth u8 | m u32 LE | m × blob id  list content
//! ```
//!
//! (for list content, every list blob and chunk id it references). An entry
//! is trusted only if every blob it names is in the session's index or
//! already stored by the session; those packs are then checked before the
//! commit point like every deduplicated pack. A stale, damaged or unknown
//! entry costs a re-read of the file, never a wrong snapshot, and a cache
//! that fails costs only the work it would have saved.

use std::path::Path;
use std::sync::Arc;

use nfrepo_format::{BlobId, Content, ListEntry, Metadata, NodeKind};
use nfrepo_store::{FileStamp, KnownFiles};

use super::StoredContent;
use super::writer::BackupWriter;
use crate::Repository;

/// Blob ids one remembered file may name: 64 Ki ids (2 MiB, a 64 GiB file
/// at the `files` profile's 1 MiB chunks). A larger stream is not remembered.
pub(super) const MAX_REMEMBERED_BLOBS: usize = 1 << 16;

const VERSION: u8 = 1;

/// Opens the known-files record of a put-only session for `source`, or
/// nothing (no cache directory, not put-only, or the cache fails: a warning).
pub(super) async fn open(repo: &Repository, source: &str) -> Option<Arc<KnownFiles>> {
    let dir = repo.known_files_dir()?.to_owned();
    let credential = repo.put_only_credential()?;
    let mut scope = credential.slot.to_hex().into_bytes();
    scope.push(0);
    scope.extend_from_slice(source.as_bytes());
    let repo_id = repo.id().to_hex();
    let opened =
        tokio::task::spawn_blocking(move || KnownFiles::open(&dir, &repo_id, &scope).map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
    match opened {
        Ok(known) => Some(Arc::new(known)),
        Err(e) => {
            tracing::warn!(error = %e, "no known-files cache: every file is read");
            None
        }
    }
}

fn stamp(meta: &Metadata, size: u64) -> FileStamp {
    FileStamp {
        size,
        mtime_ns: meta.mtime_ns,
        ctime_ns: meta.ctime_ns,
        inode: meta.inode,
        device: meta.device,
        mode: meta.mode,
    }
}

fn key(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .as_os_str()
        .as_bytes()
        .to_vec()
}

fn encode(stored: &StoredContent, blobs: &[BlobId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + blobs.len() * 40);
    out.push(VERSION);
    out.extend_from_slice(&stored.blake3);
    match &stored.content {
        Content::Inline(entries) => {
            out.push(0);
            out.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(u32::MAX).to_le_bytes());
            for entry in entries {
                out.extend_from_slice(&entry.id.0);
                out.extend_from_slice(&entry.len.to_le_bytes());
            }
        }
        Content::List { root, depth } => {
            out.push(1);
            out.extend_from_slice(&root.0);
            out.push(*depth);
            out.extend_from_slice(&u32::try_from(blobs.len()).unwrap_or(u32::MAX).to_le_bytes());
            for id in blobs {
                out.extend_from_slice(&id.0);
            }
        }
    }
    out
}

/// Reads `n` bytes off the front of `bytes`.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(n)?;
    *bytes = rest;
    Some(head)
}

fn id(bytes: &mut &[u8]) -> Option<BlobId> {
    Some(BlobId(take(bytes, 32)?.try_into().ok()?))
}

fn count(bytes: &mut &[u8]) -> Option<usize> {
    let n = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?) as usize;
    (n <= MAX_REMEMBERED_BLOBS).then_some(n)
}

/// The content, whole-file BLAKE3 and every referenced blob of a value;
/// `None` if it does not decode (a damaged entry is no entry).
fn decode(mut bytes: &[u8]) -> Option<(Content, [u8; 32], Vec<BlobId>)> {
    let b = &mut bytes;
    if take(b, 1)? != [VERSION] {
        return None;
    }
    let blake3: [u8; 32] = take(b, 32)?.try_into().ok()?;
    let decoded = match take(b, 1)? {
        [0] => {
            let n = count(b)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let id = id(b)?;
                let len = u64::from_le_bytes(take(b, 8)?.try_into().ok()?);
                entries.push(ListEntry { id, len });
            }
            let blobs = entries.iter().map(|e| e.id).collect();
            (Content::Inline(entries), blake3, blobs)
        }
        [1] => {
            let root = id(b)?;
            let depth = *take(b, 1)?.first()?;
            let m = count(b)?;
            let mut blobs = Vec::with_capacity(m);
            for _ in 0..m {
                blobs.push(id(b)?);
            }
            if !blobs.contains(&root) {
                return None;
            }
            (Content::List { root, depth }, blake3, blobs)
        }
        _ => return None,
    };
    b.is_empty().then_some(decoded)
}

impl BackupWriter {
    /// The node kind of the file at `path` as this put-only host stored it
    /// before, if its size, times, inode, device and mode are still `meta`
    /// and `size`, and every blob it references is still stored (those packs
    /// are checked again before the commit point). `None` otherwise, and
    /// always for a session without a known-files cache (a key holder's:
    /// it compares with the parent snapshot instead). Blocks.
    #[must_use]
    pub fn known_file(&self, path: &Path, meta: &Metadata, size: u64) -> Option<NodeKind> {
        let known = self.shared.known.as_ref()?;
        let value = match known.get(&key(path), &stamp(meta, size)) {
            Ok(value) => value?,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "known-files cache lookup failed; reading the file");
                return None;
            }
        };
        let Some((content, blake3, blobs)) = decode(&value) else {
            tracing::debug!(path = %path.display(), "known-files entry does not decode; reading the file");
            return None;
        };
        match self.shared.claims().reuse(&blobs) {
            Ok(true) => Some(NodeKind::File {
                size,
                content,
                blake3,
                sha256: None,
            }),
            Ok(false) => {
                tracing::debug!(path = %path.display(), "a blob the known-files entry names is gone; reading the file");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the file");
                None
            }
        }
    }

    /// Records, in a put-only session's known-files cache, that the file at
    /// `path` with `meta` was stored as `stored` (nothing without one, or for
    /// a stream too large to remember). A failure is a warning.
    pub fn remember_file(&self, path: &Path, meta: &Metadata, stored: &StoredContent) {
        let (Some(known), Some(blobs)) = (self.shared.known.as_ref(), stored.blobs.as_deref()) else {
            return;
        };
        let value = encode(stored, blobs);
        if let Err(e) = known.put(&key(path), stamp(meta, stored.size), value) {
            tracing::warn!(error = %e, "known-files cache not updated");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    fn stored(content: Content, blobs: Vec<BlobId>) -> StoredContent {
        StoredContent {
            size: 9,
            content,
            blake3: [7; 32],
            sha256: None,
            blobs: Some(Arc::new(blobs)),
        }
    }

    #[test]
    fn values_round_trip_and_damage_is_no_entry() {
        let inline = Content::Inline(vec![ListEntry {
            id: BlobId([1; 32]),
            len: 9,
        }]);
        let value = encode(&stored(inline.clone(), vec![BlobId([1; 32])]), &[BlobId([1; 32])]);
        assert_eq!(decode(&value), Some((inline, [7; 32], vec![BlobId([1; 32])])));
        let list = Content::List {
            root: BlobId([2; 32]),
            depth: 1,
        };
        let blobs = vec![BlobId([3; 32]), BlobId([2; 32])];
        let value = encode(&stored(list.clone(), blobs.clone()), &blobs);
        assert_eq!(decode(&value), Some((list, [7; 32], blobs)));
        // Truncated, extended, another version, a list without its root.
        assert_eq!(decode(&value[..value.len() - 1]), None);
        let mut longer = value.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        let mut other = value.clone();
        other[0] = 2;
        assert_eq!(decode(&other), None);
        let rootless = encode(
            &stored(
                Content::List {
                    root: BlobId([9; 32]),
                    depth: 1,
                },
                vec![],
            ),
            &[BlobId([3; 32])],
        );
        assert_eq!(decode(&rootless), None);
    }
}
