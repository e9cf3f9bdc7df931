//! Putting a node's metadata back, through file descriptors.
//!
//! Files and directories get their metadata through a descriptor the
//! restore opened itself (`fchown`, `fsetxattr`, `fchmod`, `futimens`), so a
//! name swapped for a symlink in the meantime changes nothing outside the
//! target. Links, FIFOs and devices cannot be opened for that; their owner,
//! times and xattrs are set relative to the parent directory's descriptor
//! without following the last component, and their mode through an
//! `O_PATH` descriptor whose type was checked first.
//!
//! Order matters: the owner is set before the mode, because `chown` clears
//! the setuid and setgid bits.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nfrepo_format::Metadata;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

/// Whose ids and which mode bits a restore puts back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Running as root: owners are restored by numeric id.
    pub root: bool,
    /// Keep setuid/setgid bits even when not running as root.
    pub keep_setid: bool,
}

impl Policy {
    pub(crate) fn current(keep_setid: bool) -> Self {
        Self {
            root: nix::unistd::geteuid().is_root(),
            keep_setid,
        }
    }

    /// The mode to apply for a stored `mode`, and whether setuid/setgid
    /// bits were dropped from it. Root keeps every bit (it also restores
    /// the owner the bits refer to); anyone else drops setuid and setgid
    /// unless asked, because the restored file belongs to them, not to the
    /// owner recorded in the snapshot. The sticky bit is always kept.
    pub(crate) fn mode(self, mode: u32) -> (u32, bool) {
        let mode = mode & 0o7777;
        if self.root || self.keep_setid || mode & 0o6000 == 0 {
            (mode, false)
        } else {
            (mode & !0o6000, true)
        }
    }
}

fn timespec(mtime_ns: i64) -> TimeSpec {
    TimeSpec::new(mtime_ns.div_euclid(1_000_000_000), mtime_ns.rem_euclid(1_000_000_000))
}

/// Applies `meta` to an open file or directory.
pub(crate) fn apply_fd(file: &std::fs::File, path: &Path, meta: &Metadata, policy: Policy, warnings: &mut Vec<String>) {
    use xattr::FileExt;
    if policy.root
        && let Err(e) = nix::unistd::fchown(file, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
    {
        warnings.push(format!("{}: cannot restore ownership: {e}", path.display()));
    }
    for attr in &meta.xattrs {
        let name = OsStr::from_bytes(&attr.name);
        if let Err(e) = file.set_xattr(name, &attr.value) {
            warnings.push(format!("{}: cannot restore xattr {name:?}: {e}", path.display()));
        }
    }
    let (mode, dropped) = policy.mode(meta.mode);
    if dropped {
        warnings.push(format!(
            "{}: setuid/setgid bits not restored (not running as root; --keep-setid keeps them)",
            path.display()
        ));
    }
    if let Err(e) = nix::sys::stat::fchmod(file, Mode::from_bits_truncate(mode)) {
        warnings.push(format!("{}: cannot restore permissions: {e}", path.display()));
    }
    let time = timespec(meta.mtime_ns);
    if let Err(e) = nix::sys::stat::futimens(file, &time, &time) {
        warnings.push(format!("{}: cannot restore modification time: {e}", path.display()));
    }
}

/// Applies `meta` to the link, FIFO or device `name` in `parent`, whose
/// type is `kind` (`S_IFLNK` for a link: its mode is not applied).
pub(crate) fn apply_at(
    parent: &OwnedFd,
    name: &[u8],
    kind: SFlag,
    path: &Path,
    meta: &Metadata,
    policy: Policy,
    warnings: &mut Vec<String>,
) {
    let name = OsStr::from_bytes(name);
    if policy.root
        && let Err(e) = nix::unistd::fchownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    {
        warnings.push(format!("{}: cannot restore ownership: {e}", path.display()));
    }
    // lsetxattr does not follow the last component; the parent is reached
    // through its descriptor, not by path.
    let via_parent = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
    for attr in &meta.xattrs {
        let attr_name = OsStr::from_bytes(&attr.name);
        if let Err(e) = xattr::set(&via_parent, attr_name, &attr.value) {
            warnings.push(format!("{}: cannot restore xattr {attr_name:?}: {e}", path.display()));
        }
    }
    if kind != SFlag::S_IFLNK
        && let Err(e) = chmod_special(parent, name, kind, policy.mode(meta.mode).0)
    {
        warnings.push(format!("{}: cannot restore permissions: {e}", path.display()));
    }
    let time = timespec(meta.mtime_ns);
    if let Err(e) = nix::sys::stat::utimensat(parent, name, &time, &time, UtimensatFlags::NoFollowSymlink) {
        warnings.push(format!("{}: cannot restore modification time: {e}", path.display()));
    }
}

/// `chmod` of a FIFO or device without opening it for I/O (which could
/// block or have side effects) and without following a link put there.
fn chmod_special(parent: &OwnedFd, name: &OsStr, kind: SFlag, mode: u32) -> std::io::Result<()> {
    let fd = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let stat = nix::sys::stat::fstat(fd.as_fd())?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != kind {
        return Err(std::io::Error::other(
            "replaced by another kind of file while restoring",
        ));
    }
    let magic = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        magic.as_str(),
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Policy;

    #[test]
    fn issue9_bug2_non_root_drops_setid_unless_asked() {
        let user = Policy {
            root: false,
            keep_setid: false,
        };
        assert_eq!(user.mode(0o4755), (0o755, true));
        assert_eq!(user.mode(0o2750), (0o750, true));
        assert_eq!(user.mode(0o1777), (0o1777, false), "sticky bit kept");
        assert_eq!(user.mode(0o644), (0o644, false));
        let keep = Policy {
            root: false,
            keep_setid: true,
        };
        assert_eq!(keep.mode(0o6755), (0o6755, false));
        let root = Policy {
            root: true,
            keep_setid: false,
        };
        assert_eq!(root.mode(0o4755), (0o4755, false));
    }
}
