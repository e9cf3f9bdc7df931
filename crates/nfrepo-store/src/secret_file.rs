//! One small secret file in the local cache directory: a host's cached
//! unlock of one repository (`<dir>/unlock/<repository id>`, unlock.md).
//!
//! The contract, kept by every method:
//! - the directory is `0700` and the file `0600`, whatever the umask;
//! - a write is whole or absent: the bytes go to a fresh random name opened
//!   with `O_CREAT | O_EXCL | O_NOFOLLOW`, are fsynced, then renamed over
//!   the file, and the directory is fsynced; a crash leaves the old file or
//!   the new one (and at worst a stray temporary, which nothing reads);
//! - nothing is read, written or removed through a symbolic link, and a
//!   file that another user owns or that others can read is refused, never
//!   used: a secret that leaked (or was planted) is not trusted.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// The largest secret file read: a cached unlock is about 150 bytes.
const MAX_LEN: u64 = 64 * 1024;

/// A secret file under the cache directory. Cheap to make; touches the disk
/// only in [`Self::read`], [`Self::write`] and [`Self::remove`].
#[derive(Clone, Debug)]
pub struct SecretFile {
    dir: PathBuf,
    path: PathBuf,
}

impl SecretFile {
    /// The cached unlock of repository `repo_id` (hex) under cache directory `dir`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`] for a malformed id.
    pub fn unlock(dir: &Path, repo_id: &str) -> Result<Self> {
        if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                format!("cache: {repo_id:?} is not a repository id"),
            ));
        }
        let dir = dir.join("unlock");
        Ok(Self {
            path: dir.join(repo_id),
            dir,
        })
    }

    /// Where the file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes; `None` when there is none.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] for a symbolic link, a file that is
    /// not a regular file, owned by another user or open to group or others;
    /// [`ErrorKind::Corrupted`] for one larger than any this crate writes;
    /// [`ErrorKind::Other`] when it cannot be read.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Err(self.refused("is a symbolic link")),
            Err(e) => return Err(self.io(e, "cannot read")),
        };
        let meta = file.metadata().map_err(|e| self.io(e, "cannot read"))?;
        if !meta.is_file() {
            return Err(self.refused("is not a regular file"));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(self.refused("belongs to another user"));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(self.refused(&format!(
                "can be read by others (mode {:04o})",
                meta.permissions().mode() & 0o7777
            )));
        }
        if meta.len() > MAX_LEN {
            return Err(Error::new(
                ErrorKind::Corrupted,
                format!(
                    "{}: {} bytes, larger than any cache file",
                    self.path.display(),
                    meta.len()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(MAX_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(e, "cannot read"))?;
        Ok(Some(bytes))
    }

    /// Replaces the file with `bytes`, atomically.
    ///
    /// # Errors
    /// [`ErrorKind::Other`] when the directory or file cannot be made.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        self.make_dir()?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|_| Error::new(ErrorKind::Other, "no randomness for a temporary name"))?;
        let temp = self.dir.join(format!(
            ".{}.tmp-{}",
            self.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            hex::encode(suffix)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(self.io(e, "cannot write"));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e, "cannot sync the directory of"))
    }

    /// Removes the file; whether there was one.
    ///
    /// # Errors
    /// [`ErrorKind::Other`] when it exists and cannot be removed.
    pub fn remove(&self) -> Result<bool> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io(e, "cannot remove")),
        }
    }

    /// Creates the directory `0700` (its parents too), and takes group and
    /// other access away from one that exists.
    fn make_dir(&self) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| self.io(e, "cannot create the directory of"))?;
        let meta = fs::symlink_metadata(&self.dir).map_err(|e| self.io(e, "cannot create the directory of"))?;
        if !meta.is_dir() {
            return Err(self.refused("has a directory that is not one"));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| self.io(e, "cannot restrict the directory of"))?;
        }
        Ok(())
    }

    fn refused(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::PermissionDenied,
            format!("refusing the cache file {}: it {why}", self.path.display()),
        )
    }

    fn io(&self, e: std::io::Error, what: &str) -> Error {
        Error::new(
            ErrorKind::Other,
            format!("{what} the cache file {}", self.path.display()),
        )
        .with_source(e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a panic is a test failure"
    )]

    use super::*;

    fn file(dir: &Path) -> SecretFile {
        SecretFile::unlock(dir, "abcd").unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_owner_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path());
        assert_eq!(f.read().unwrap(), None);
        f.write(b"one").unwrap();
        f.write(b"two").unwrap();
        assert_eq!(f.read().unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(mode(f.path()), 0o600);
        assert_eq!(mode(&dir.path().join("unlock")), 0o700);
        // Only the file: no temporary left behind.
        assert_eq!(fs::read_dir(dir.path().join("unlock")).unwrap().count(), 1);
        assert!(f.remove().unwrap());
        assert!(!f.remove().unwrap());
        assert_eq!(f.read().unwrap(), None);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path());
        f.write(b"secret").unwrap();
        fs::set_permissions(f.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = f.read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("mode 0644"), "{err}");
    }

    #[test]
    fn a_symbolic_link_is_neither_read_nor_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path());
        f.write(b"x").unwrap();
        fs::remove_file(f.path()).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, b"not a cache").unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, f.path()).unwrap();
        assert_eq!(f.read().unwrap_err().kind(), ErrorKind::PermissionDenied);
        // A write replaces the link itself, never the file it points to.
        f.write(b"new").unwrap();
        assert_eq!(fs::read(&elsewhere).unwrap(), b"not a cache");
        assert_eq!(f.read().unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn a_directory_open_to_others_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let unlock = dir.path().join("unlock");
        fs::create_dir(&unlock).unwrap();
        fs::set_permissions(&unlock, fs::Permissions::from_mode(0o755)).unwrap();
        file(dir.path()).write(b"x").unwrap();
        assert_eq!(mode(&unlock), 0o700);
    }

    #[test]
    fn a_malformed_repository_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = SecretFile::unlock(dir.path(), "../etc").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
    }
}
