//! What is already at a name of the target, and placing a file there.
//!
//! Everything here works on a parent directory descriptor and a single
//! name, and never follows a link at that name.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// What is at a file's name, compared with the snapshot's file.
pub(super) enum Existing {
    /// Nothing.
    Absent,
    /// A regular file with the same size and BLAKE3.
    Same,
    /// Anything else.
    Differs,
}

fn name_of(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// `renameat2(RENAME_NOREPLACE)`, or `linkat` + `unlinkat` (equally
/// atomic against an existing name) where the file system lacks it.
pub(super) fn rename_no_replace(parent: &OwnedFd, temp: &str, name: &OsStr) -> nix::Result<()> {
    rename_no_replace_at(parent, OsStr::new(temp), parent, name)
}

/// [`rename_no_replace`] between two directories. The `linkat` fallback
/// only works for non-directories (a directory gets `linkat`'s error).
pub(crate) fn rename_no_replace_at(from_dir: &OwnedFd, from: &OsStr, to_dir: &OwnedFd, to: &OsStr) -> nix::Result<()> {
    match nix::fcntl::renameat2(from_dir, from, to_dir, to, RenameFlags::RENAME_NOREPLACE) {
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            nix::unistd::linkat(from_dir, from, to_dir, to, AtFlags::empty())?;
            nix::unistd::unlinkat(from_dir, from, UnlinkatFlags::NoRemoveDir)
        }
        other => other,
    }
}

/// Whether `name` in `parent` is a regular file with this size and BLAKE3.
pub(super) fn existing_file(parent: &OwnedFd, name: &[u8], size: u64, blake3: &[u8; 32]) -> std::io::Result<Existing> {
    let stat = match nix::sys::stat::fstatat(parent, name_of(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(Existing::Absent),
        Err(e) => return Err(e.into()),
    };
    let regular = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    if !regular || u64::try_from(stat.st_size).ok() != Some(size) {
        return Ok(Existing::Differs);
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match nix::fcntl::openat(parent, name_of(name), flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        // Replaced by a link or removed since the stat: not the same file.
        Err(Errno::ELOOP | Errno::ENOENT) => return Ok(Existing::Differs),
        Err(e) => return Err(e.into()),
    };
    let opened = nix::sys::stat::fstat(file.as_fd())?;
    if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
        return Ok(Existing::Differs);
    }
    Ok(if &hash_fd(&file, size)? == blake3 {
        Existing::Same
    } else {
        Existing::Differs
    })
}

/// BLAKE3 of a file's whole content, read by offset (the file position is
/// left alone) in blocks of up to [`HASH_BLOCK`], each hashed on every core.
/// `size` is what the caller expects the file to hold: it sizes the reads;
/// the file is read to its end whatever its size.
pub(super) fn hash_fd(file: &File, size: u64) -> std::io::Result<[u8; 32]> {
    hash_until(file, blake3::Hasher::new(), 0, size, u64::MAX)
}

/// Finishes `hasher` with the file's content from `offset` to `end`, or
/// to the file's end if that comes first, as [`hash_fd`] reads it (`size`
/// as there). The restore's check reads a file it knows to be `end` bytes
/// long: no last read to find its end (half the reads of a tree of small
/// files).
pub(super) fn hash_until(
    file: &File,
    mut hasher: blake3::Hasher,
    mut offset: u64,
    size: u64,
    end: u64,
) -> std::io::Result<[u8; 32]> {
    // A buffer of what is left to read (a page at least): most restored
    // files are small, and a zeroed 64 KiB buffer for each was a memset
    // and fresh pages per file.
    let left = size.saturating_sub(offset);
    let block = usize::try_from(left).unwrap_or(HASH_BLOCK).clamp(4096, HASH_BLOCK);
    let mut buf = vec![0u8; block];
    while offset < end {
        let want = usize::try_from(end - offset).unwrap_or(usize::MAX).min(block);
        let n = file.read_at(buf.get_mut(..want).unwrap_or_default(), offset)?;
        if n == 0 {
            break;
        }
        hasher.update_rayon(buf.get(..n).unwrap_or_default());
        offset += n as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Bytes [`hash_fd`] reads and hashes at once: enough for every core to
/// hash a share (BLAKE3 splits its input into a tree of 1 KiB chunks).
const HASH_BLOCK: usize = 4 << 20;

/// Renames `temp` over `name`, where `name` may be a directory (which
/// `renameat` refuses to replace with a non-directory): a directory there is
/// first renamed aside to `aside`, then removed with everything in it once
/// the new entry is in place. Never follows a link.
pub(super) fn replace_at(parent: &OwnedFd, temp: &str, name: &OsStr, aside: &str) -> nix::Result<()> {
    match nix::fcntl::renameat(parent, temp, parent, name) {
        Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => {
            match nix::fcntl::renameat2(parent, name, parent, aside, RenameFlags::RENAME_NOREPLACE) {
                Err(Errno::EINVAL | Errno::ENOSYS) => nix::fcntl::renameat(parent, name, parent, aside)?,
                other => other?,
            }
            if let Err(e) = nix::fcntl::renameat(parent, temp, parent, name) {
                // Put the directory back: the target is as it was.
                let _ = nix::fcntl::renameat(parent, aside, parent, name);
                return Err(e);
            }
            remove_tree(parent, OsStr::new(aside))
        }
        other => other,
    }
}

/// Removes the directory `name` of `parent` and everything below it,
/// through descriptors: a link inside is removed, never followed.
fn remove_tree(parent: &impl AsFd, name: &OsStr) -> nix::Result<()> {
    const FLAGS: OFlag = OFlag::O_RDONLY
        .union(OFlag::O_DIRECTORY)
        .union(OFlag::O_NOFOLLOW)
        .union(OFlag::O_CLOEXEC);
    let mut dir = nix::dir::Dir::from_fd(nix::fcntl::openat(parent, name, FLAGS, Mode::empty())?)?;
    let children: Vec<(Vec<u8>, Option<nix::dir::Type>)> = dir
        .iter()
        .filter_map(std::result::Result::ok)
        .map(|e| (e.file_name().to_bytes().to_vec(), e.file_type()))
        .filter(|(n, _)| n.as_slice() != b"." && n.as_slice() != b"..")
        .collect();
    for (child, hint) in children {
        let child = name_of(&child);
        let is_dir = match hint {
            Some(kind) => kind == nix::dir::Type::Directory,
            None => nix::sys::stat::fstatat(&dir, child, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR),
        };
        if is_dir {
            remove_tree(&dir, child)?;
        } else {
            nix::unistd::unlinkat(&dir, child, UnlinkatFlags::NoRemoveDir)?;
        }
    }
    nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

/// Whether the entry at `name` is the link, FIFO or device the snapshot has.
pub(super) fn same_special(
    parent: &OwnedFd,
    name: &[u8],
    kind: SFlag,
    rdev: u64,
    link: &[u8],
) -> std::io::Result<bool> {
    let stat = match nix::sys::stat::fstatat(parent, name_of(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != kind {
        return Ok(false);
    }
    Ok(match kind {
        SFlag::S_IFLNK => nix::fcntl::readlinkat(parent, name_of(name))?.as_bytes() == link,
        SFlag::S_IFCHR | SFlag::S_IFBLK => stat.st_rdev == rdev,
        _ => true,
    })
}
