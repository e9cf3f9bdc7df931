//! The rollback journal: every rename a swap will do, written to disk and
//! fsynced before the first one, so that a rollback killed halfway is
//! finished or undone by the next run (see [`super::recover`]).
//!
//! # Where it lives
//!
//! A copy sits in each staging directory of the rollback (the file
//! `journal`, mode `0600`). Staging directories are beside the source's
//! paths and never inside one (see [`super::staging`]), so a journal is
//! never backed up, and whoever finds one staging directory of an
//! interrupted rollback finds the whole plan, for every path of the source.
//!
//! # Format (version 1)
//!
//! Text, one record a line; paths and names are lowercase hex of their raw
//! bytes, so any byte is safe:
//!
//! ```text
//! nfrepo rollback journal 1
//! target <snapshot id>
//! area <hex base directory> <hex staging directory name>      (one per staging directory)
//! step <A|P|D> <area index> <hex from> <hex to>               (in the order they run)
//! end <step count> <BLAKE3 hex of every byte before this line>
//! ```
//!
//! `A` moves a live entry aside (`from` live, `to` in staging), `P` puts a
//! staged entry in place (`from` staged, `to` live), `D` creates a live
//! directory (`from` the staged directory, whose mode it takes; `to` live). Paths are relative to the area's
//! base directory. A journal without a valid `end` line was torn while
//! written: since it is complete and fsynced before the first rename, a
//! torn journal means nothing live was touched.

use std::fmt::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::{Error, Result};

const HEADER: &str = "nfrepo rollback journal 1";

/// What one step does (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Aside,
    Place,
    Mkdir,
}

impl Op {
    fn letter(self) -> char {
        match self {
            Self::Aside => 'A',
            Self::Place => 'P',
            Self::Mkdir => 'D',
        }
    }
}

/// One rename or directory creation, relative to an area's base directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub op: Op,
    pub area: usize,
    pub from: Vec<u8>,
    pub to: Vec<u8>,
}

/// A staging directory: `name` inside `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Area {
    pub base: PathBuf,
    pub name: String,
}

/// The whole plan of one rollback's swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Journal {
    /// The snapshot rolled back to (hex id), for the report of a recovery.
    pub target: String,
    pub areas: Vec<Area>,
    pub steps: Vec<Step>,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Journal {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = format!("{HEADER}\ntarget {}\n", self.target);
        for area in &self.areas {
            let _ = writeln!(
                out,
                "area {} {}",
                hex(area.base.as_os_str().as_bytes()),
                hex(area.name.as_bytes())
            );
        }
        for step in &self.steps {
            let _ = writeln!(
                out,
                "step {} {} {} {}",
                step.op.letter(),
                step.area,
                hex(&step.from),
                hex(&step.to)
            );
        }
        let sum = blake3::hash(out.as_bytes()).to_hex();
        let _ = writeln!(out, "end {} {sum}", self.steps.len());
        out.into_bytes()
    }

    /// Decodes a journal; `None` for a torn or damaged one (see the module docs).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        if !text.ends_with('\n') {
            return None;
        }
        let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
        let (body, end) = text.split_at(body_end);
        let mut end = end.trim_end_matches('\n').split(' ');
        let (Some("end"), Some(count), Some(sum), None) = (end.next(), end.next(), end.next(), end.next()) else {
            return None;
        };
        if blake3::hash(body.as_bytes()).to_hex().as_str() != sum {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let target = lines.next()?.strip_prefix("target ")?.to_owned();
        let mut journal = Self {
            target,
            areas: Vec::new(),
            steps: Vec::new(),
        };
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["area", base, name] => journal.areas.push(Area {
                    base: PathBuf::from(std::ffi::OsString::from_vec(unhex(base)?)),
                    name: String::from_utf8(unhex(name)?).ok()?,
                }),
                ["step", op, area, from, to] => {
                    let op = match *op {
                        "A" => Op::Aside,
                        "P" => Op::Place,
                        "D" => Op::Mkdir,
                        _ => return None,
                    };
                    let area: usize = area.parse().ok()?;
                    if area >= journal.areas.len() {
                        return None;
                    }
                    journal.steps.push(Step {
                        op,
                        area,
                        from: unhex(from)?,
                        to: unhex(to)?,
                    });
                }
                _ => return None,
            }
        }
        (count.parse::<usize>().ok()? == journal.steps.len()).then_some(journal)
    }
}

/// The journal's file name inside a staging directory.
pub(crate) const FILE: &str = "journal";

/// Writes `journal` into the staging directory `dir` durably: a temporary
/// file (`0600`, `O_EXCL`), fsynced, renamed to [`FILE`], and the directory
/// fsynced.
///
/// # Errors
/// [`Error::RollbackFailed`] naming the directory (nothing live changed yet).
pub(crate) fn write(dir: &std::os::fd::OwnedFd, dir_path: &std::path::Path, journal: &[u8]) -> Result<()> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let fail = |e: &dyn std::fmt::Display| {
        Error::RollbackFailed(format!(
            "cannot write the journal in {}: {e}; nothing changed",
            dir_path.display()
        ))
    };
    let temp = "journal.tmp";
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir, temp, flags, Mode::from_bits_truncate(0o600)).map_err(|e| fail(&e))?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, journal).map_err(|e| fail(&e))?;
    file.sync_all().map_err(|e| fail(&e))?;
    nix::fcntl::renameat(dir, temp, dir, FILE).map_err(|e| fail(&e))?;
    nix::unistd::fsync(dir).map_err(|e| fail(&e))?;
    Ok(())
}

/// Reads the journal in the staging directory `dir`: `Ok(None)` if there
/// is none or it is torn.
///
/// # Errors
/// [`Error::Io`] if it exists but cannot be read; [`Error::RollbackFailed`]
/// if someone else than the effective user owns or may write it.
pub(crate) fn read(dir: &std::os::fd::OwnedFd, dir_path: &std::path::Path) -> Result<Option<Journal>> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let path = dir_path.join(FILE);
    let fd = match nix::fcntl::openat(dir, FILE, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::Io { path, source: e.into() }),
    };
    super::recover::trusted(&fd, &path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)
        .map_err(|source| Error::Io { path, source })?;
    Ok(Journal::decode(&bytes))
}

/// Removes the journal from `dir` durably (missing is fine).
pub(crate) fn remove(dir: &std::os::fd::OwnedFd, dir_path: &std::path::Path) -> Result<()> {
    let path = dir_path.join(FILE);
    match nix::unistd::unlinkat(dir, FILE, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::Io { path, source: e.into() }),
    }
    nix::unistd::fsync(dir).map_err(|e| Error::Io {
        path: dir_path.to_path_buf(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    fn sample() -> Journal {
        Journal {
            target: "ab".repeat(32),
            areas: vec![Area {
                base: PathBuf::from("/etc/with space"),
                name: ".app.nfrepo-rollback-0123".into(),
            }],
            steps: vec![
                Step {
                    op: Op::Aside,
                    area: 0,
                    from: b"app/a\nb".to_vec(),
                    to: b".app.nfrepo-rollback-0123/old-0".to_vec(),
                },
                Step {
                    op: Op::Mkdir,
                    area: 0,
                    from: Vec::new(),
                    to: vec![b'a', 0xff],
                },
            ],
        }
    }

    #[test]
    fn journal_round_trips_any_bytes() {
        let journal = sample();
        assert_eq!(Journal::decode(&journal.encode()), Some(journal));
    }

    #[test]
    fn a_torn_or_altered_journal_does_not_decode() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert_eq!(Journal::decode(bytes.get(..len).unwrap()), None, "torn at {len}");
        }
        let mut flipped = bytes.clone();
        *flipped.get_mut(40).unwrap() ^= 1;
        assert_eq!(Journal::decode(&flipped), None);
    }

    #[test]
    fn written_journal_is_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fd: std::os::fd::OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        write(&fd, dir.path(), &sample().encode()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&fd, dir.path()).unwrap(), Some(sample()));
        remove(&fd, dir.path()).unwrap();
        assert_eq!(read(&fd, dir.path()).unwrap(), None);
    }
}
