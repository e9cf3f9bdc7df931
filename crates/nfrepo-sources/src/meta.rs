//! File metadata: capturing it into a [`Metadata`] (the restore side puts
//! it back through descriptors, in `restore/attrs.rs`).
//!
//! Extended attributes are kept where they can be read, with a warning
//! otherwise.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nfrepo_format::{Metadata, Xattr};

/// Caches uid/gid → name lookups for one walk.
#[derive(Debug, Default)]
pub(crate) struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Captures `meta` (from `symlink_metadata`) and the xattrs of `path`.
pub(crate) fn capture(
    path: &Path,
    meta: &std::fs::Metadata,
    names: &mut Names,
    warnings: &mut Vec<String>,
) -> Metadata {
    let mut xattrs = Vec::new();
    match xattr::list(path) {
        Ok(list) => {
            for name in list {
                match xattr::get(path, &name) {
                    Ok(Some(value)) => xattrs.push(Xattr {
                        name: name.as_encoded_bytes().to_vec(),
                        value,
                    }),
                    Ok(None) => {}
                    Err(e) => warnings.push(format!("{}: xattr {:?} not readable: {e}", path.display(), name)),
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => {}
        Err(e) => warnings.push(format!("{}: xattrs not readable: {e}", path.display())),
    }
    xattrs.sort_by(|a, b| a.name.cmp(&b.name));
    Metadata {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        device: meta.dev(),
        xattrs,
    }
}

/// Whether a file is unchanged since the parent snapshot recorded `old`.
pub(crate) fn unchanged(old: &Metadata, old_size: u64, new: &Metadata, new_size: u64) -> bool {
    old_size == new_size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.inode == new.inode
        && old.device == new.device
        && old.mode == new.mode
}
