//! The swap phase of a rollback: moving live entries aside and staged ones
//! into place, every step in the journal (written before the first one) so
//! that a failure, or a crash, puts everything back.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::journal::{Area, Op, Step};
use super::state::{Comparer, Live, Shape, Wanted};
use crate::{Error, Result};

/// What has to change on disk so that the live entries equal the snapshot's.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Live entries to move aside, deepest first.
    pub remove: Vec<PathBuf>,
    /// Snapshot entries to put in place (from staging), parents first.
    pub place: Vec<PathBuf>,
    /// Directories the snapshot does not hold, kept because they hold
    /// entries outside the source.
    pub kept: Vec<PathBuf>,
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.place.is_empty()
    }
}

/// Plans the changes that make `live` equal `want`.
///
/// # Errors
/// [`Error::RollbackFailed`] if a live directory that holds entries outside
/// the source would have to be replaced by a file, or a live symlink stands
/// where the snapshot has a directory (a directory swapped for a link since
/// the snapshot: neither written through nor replaced); nothing is changed.
pub(crate) fn plan(
    live: &BTreeMap<PathBuf, Live>,
    want: &BTreeMap<PathBuf, Wanted>,
    comparer: &mut Comparer,
) -> Result<Plan> {
    let mut plan = Plan::default();
    for (path, entry) in live {
        if let (Shape::Symlink(link), Some(wanted)) = (&entry.shape, want.get(path))
            && wanted.shape.is_dir()
        {
            return Err(Error::RollbackFailed(format!(
                "{} is a symlink (to {}) where the snapshot has a directory: refusing to write through it \
                 or replace it; nothing changed (put the directory back, or remove the link, and run the \
                 rollback again)",
                path.display(),
                String::from_utf8_lossy(link)
            )));
        }
        match want.get(path) {
            Some(wanted) if comparer.same(path, &entry.shape, &wanted.shape)? => {}
            Some(_) if entry.holds_outside => {
                return Err(Error::RollbackFailed(format!(
                    "{} is a directory holding files outside the source, and the snapshot has no directory \
                     there; nothing changed",
                    path.display()
                )));
            }
            Some(_) => {
                plan.remove.push(path.clone());
                plan.place.push(path.clone());
            }
            None if entry.holds_outside => plan.kept.push(path.clone()),
            None => plan.remove.push(path.clone()),
        }
    }
    plan.place
        .extend(want.keys().filter(|p| !live.contains_key(*p)).cloned());
    plan.place.sort();
    plan.remove.sort();
    plan.remove.reverse();
    Ok(plan)
}

/// The base directories of a rollback's areas, opened once. Every step is
/// done relative to them: each directory below a base is opened one
/// component at a time without following links
/// ([`crate::restore::open_dir_beneath`]), and the entry itself is renamed,
/// created or removed through its parent's descriptor, never by path. A
/// directory on the way that is (or became) a symlink stops the step.
pub(crate) struct Bases {
    dirs: Vec<(PathBuf, OwnedFd)>,
}

fn split(rel: &[u8]) -> (&[u8], &OsStr) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (
            rel.get(..i).unwrap_or_default(),
            OsStr::from_bytes(rel.get(i + 1..).unwrap_or_default()),
        ),
        None => (&[], OsStr::from_bytes(rel)),
    }
}

impl Bases {
    /// Opens each area's base directory (a path the operator configured:
    /// links on the way to it are followed, as everywhere else).
    pub(crate) fn open(areas: &[Area]) -> Result<Self> {
        let mut dirs = Vec::with_capacity(areas.len());
        for area in areas {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let fd = nix::fcntl::openat(nix::fcntl::AT_FDCWD, &area.base, flags, Mode::empty())
                .map_err(|e| Error::RollbackFailed(format!("cannot open {}: {e}", area.base.display())))?;
            dirs.push((area.base.clone(), fd));
        }
        Ok(Self { dirs })
    }

    /// The descriptor of `area`'s base directory.
    pub(crate) fn fd(&self, area: usize) -> Result<&OwnedFd> {
        self.base(area).map(|(_, fd)| fd)
    }

    fn base(&self, area: usize) -> Result<&(PathBuf, OwnedFd)> {
        self.dirs
            .get(area)
            .ok_or_else(|| Error::RollbackFailed(format!("journal names area {area}, which does not exist")))
    }

    /// The absolute path of `rel` in `area`, for messages.
    pub(crate) fn path(&self, area: usize, rel: &[u8]) -> PathBuf {
        self.dirs
            .get(area)
            .map_or_else(PathBuf::new, |(base, _)| base.join(OsStr::from_bytes(rel)))
    }

    /// The parent directory of `rel`, reached without following links.
    fn parent<'a>(&self, area: usize, rel: &'a [u8]) -> Result<(OwnedFd, &'a OsStr)> {
        let (base_path, base) = self.base(area)?;
        let (parent, name) = split(rel);
        let fd = crate::restore::open_dir_beneath(base, base_path, parent).map_err(|e| match e {
            Error::Conflict(path) => Error::RollbackFailed(format!(
                "{} is a symlink or not a directory: refusing to write through it",
                path.display()
            )),
            e => e,
        })?;
        Ok((fd, name))
    }

    /// The type of the entry at `rel` (not following a link), if any.
    fn kind(&self, area: usize, rel: &[u8]) -> Result<Option<SFlag>> {
        let (parent, name) = self.parent(area, rel)?;
        match nix::sys::stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.error(area, rel, "examining", e)),
        }
    }

    fn error(&self, area: usize, rel: &[u8], doing: &str, e: Errno) -> Error {
        Error::RollbackFailed(format!("{doing} {}: {e}", self.path(area, rel).display()))
    }

    /// Renames `from` to `to` (never replacing); `live` is the live one of
    /// the two, named in an error.
    fn rename(&self, area: usize, (from, to): (&[u8], &[u8]), live: &[u8], doing: &str) -> Result<()> {
        let (from_dir, from_name) = self.parent(area, from)?;
        let (to_dir, to_name) = self.parent(area, to)?;
        crate::restore::rename_no_replace_at(&from_dir, from_name, &to_dir, to_name)
            .map_err(|e| self.error(area, live, doing, e))
    }

    /// Whether `step` has been done (the journal's steps run in order, so
    /// the done ones are a prefix, until an undo makes them a shorter one).
    pub(crate) fn is_done(&self, step: &Step) -> Result<bool> {
        Ok(match step.op {
            // The aside name is fresh: only this step creates it.
            Op::Aside => self.kind(step.area, &step.to)?.is_some(),
            // Staged entries exist until they are placed.
            Op::Place => self.kind(step.area, &step.from)?.is_none(),
            // A directory is only created where there was none.
            Op::Mkdir => self.kind(step.area, &step.to)? == Some(SFlag::S_IFDIR),
        })
    }

    /// Does one step. Renames never replace: a name taken meanwhile stops the swap.
    pub(crate) fn run(&self, step: &Step) -> Result<()> {
        match step.op {
            Op::Aside => self.rename(step.area, (&step.from, &step.to), &step.from, "moving aside"),
            Op::Place => self.rename(step.area, (&step.from, &step.to), &step.to, "putting in place"),
            Op::Mkdir => {
                let (parent, name) = self.parent(step.area, &step.to)?;
                nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| self.error(step.area, &step.to, "creating", e))?;
                let (staged_dir, staged_name) = self.parent(step.area, &step.from)?;
                let stat = nix::sys::stat::fstatat(&staged_dir, staged_name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| self.error(step.area, &step.from, "examining", e))?;
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let dir = nix::fcntl::openat(&parent, name, flags, Mode::empty())
                    .map_err(|e| self.error(step.area, &step.to, "opening", e))?;
                nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(stat.st_mode & 0o7777))
                    .map_err(|e| self.error(step.area, &step.to, "setting the mode of", e))
            }
        }
    }

    /// Reverses one done step.
    pub(crate) fn undo(&self, step: &Step) -> Result<()> {
        match step.op {
            Op::Aside => self.rename(step.area, (&step.to, &step.from), &step.from, "moving back"),
            Op::Place => self.rename(step.area, (&step.to, &step.from), &step.to, "taking back"),
            Op::Mkdir => {
                let (parent, name) = self.parent(step.area, &step.to)?;
                nix::unistd::unlinkat(&parent, name, UnlinkatFlags::RemoveDir)
                    .map_err(|e| self.error(step.area, &step.to, "removing", e))
            }
        }
    }
}

/// Runs `steps` in order, counting the done ones in `done`. After each,
/// `interrupted(done)` may stop the swap as a crash would (tests, fault
/// injection): `Ok(false)`, with nothing undone.
///
/// # Errors
/// The first step that fails ([`Error::RollbackFailed`]); `done` tells
/// [`undo`] what to reverse.
pub(crate) fn apply(
    bases: &Bases,
    steps: &[Step],
    done: &mut usize,
    interrupted: &mut dyn FnMut(usize) -> bool,
) -> Result<bool> {
    for step in steps {
        bases.run(step)?;
        *done += 1;
        if interrupted(*done) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reverses `done` steps, last first; returns what could not be undone.
pub(crate) fn undo(bases: &Bases, done: &[Step]) -> Vec<String> {
    done.iter()
        .rev()
        .filter_map(|step| bases.undo(step).err().map(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::path::Path;

    use super::*;

    fn file(rel: &str) -> Wanted {
        Wanted {
            rel: rel.into(),
            shape: Shape::File {
                size: 1,
                blake3: Some(*blake3::hash(b"n").as_bytes()),
            },
        }
    }

    fn bases(dir: &Path) -> Bases {
        Bases::open(&[Area {
            base: dir.to_path_buf(),
            name: "staging".into(),
        }])
        .unwrap()
    }

    fn step(op: Op, from: &str, to: &str) -> Step {
        Step {
            op,
            area: 0,
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        }
    }

    #[test]
    fn undo_puts_every_swapped_entry_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::create_dir_all(path("staging/new")).unwrap();
        std::fs::write(path("a"), "live a").unwrap();
        std::fs::write(path("b"), "live b").unwrap();
        std::fs::write(path("staging/new/a"), "n").unwrap();
        std::fs::write(path("staging/new/c"), "n").unwrap();
        std::fs::create_dir(path("staging/new/e")).unwrap();
        let steps = [
            step(Op::Aside, "b", "staging/old-0"),
            step(Op::Aside, "a", "staging/old-1"),
            step(Op::Place, "staging/new/a", "a"),
            step(Op::Place, "staging/new/c", "c"),
            step(Op::Mkdir, "staging/new/e", "e"),
            // No staged copy: putting it in place fails.
            step(Op::Place, "staging/new/d", "d"),
        ];
        let bases = bases(dir.path());
        let mut done = 0;
        let err = apply(&bases, &steps, &mut done, &mut |_| false).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("putting in place")),
            "{err}"
        );
        assert_eq!(done, 5);
        assert_eq!(std::fs::read_to_string(path("a")).unwrap(), "n");
        assert!(path("e").is_dir());
        for s in &steps[..5] {
            assert!(bases.is_done(s).unwrap(), "{s:?}");
        }
        assert!(undo(&bases, &steps[..done]).is_empty());
        assert_eq!(std::fs::read_to_string(path("a")).unwrap(), "live a");
        assert_eq!(std::fs::read_to_string(path("b")).unwrap(), "live b");
        assert!(!path("c").exists());
        assert!(!path("e").exists());
        assert_eq!(std::fs::read_to_string(path("staging/new/c")).unwrap(), "n");
        for s in &steps[..5] {
            assert!(!bases.is_done(s).unwrap(), "{s:?}");
        }
    }

    /// Issue 10, item 9: a live directory replaced by a symlink after the
    /// plan was made is never written through.
    #[test]
    fn a_directory_that_became_a_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::create_dir_all(path("staging/new/conf/d")).unwrap();
        std::fs::create_dir_all(path("conf/d")).unwrap();
        std::fs::write(path("conf/d/a"), "live").unwrap();
        std::fs::write(path("staging/new/conf/d/a"), "new").unwrap();
        std::fs::create_dir(path("outside")).unwrap();
        std::fs::write(path("outside/a"), "outside").unwrap();
        // Between the plan and the swap: conf/d becomes a link to outside.
        std::fs::rename(path("conf/d"), path("conf-d-old")).unwrap();
        std::os::unix::fs::symlink(path("outside"), path("conf/d")).unwrap();
        let steps = [
            step(Op::Aside, "conf/d/a", "staging/old-0"),
            step(Op::Place, "staging/new/conf/d/a", "conf/d/a"),
        ];
        let bases = bases(dir.path());
        let mut done = 0;
        let err = apply(&bases, &steps, &mut done, &mut |_| false).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("symlink") && m.contains("conf/d")),
            "{err}"
        );
        assert_eq!(done, 0);
        assert_eq!(std::fs::read_to_string(path("outside/a")).unwrap(), "outside");
        assert!(!path("staging/old-0").exists());
        assert_eq!(std::fs::read_to_string(path("staging/new/conf/d/a")).unwrap(), "new");
    }

    #[test]
    fn a_symlink_where_the_snapshot_has_a_directory_is_refused() {
        let live: BTreeMap<_, _> = [(
            PathBuf::from("/r/d"),
            Live {
                shape: Shape::Symlink(b"/elsewhere".to_vec()),
                holds_outside: false,
            },
        )]
        .into();
        let want: BTreeMap<_, _> = [
            (
                PathBuf::from("/r/d"),
                Wanted {
                    rel: "r/d".into(),
                    shape: Shape::Dir,
                },
            ),
            (PathBuf::from("/r/d/a"), file("r/d/a")),
        ]
        .into();
        let err = plan(&live, &want, &mut Comparer::default()).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("/r/d is a symlink (to /elsewhere)")
                && m.contains("nothing changed")),
            "{err}"
        );
    }

    #[test]
    fn a_directory_holding_outside_files_is_kept_or_refused() {
        let live: BTreeMap<_, _> = [
            (
                PathBuf::from("/r/d"),
                Live {
                    shape: Shape::Dir,
                    holds_outside: true,
                },
            ),
            (
                PathBuf::from("/r/x"),
                Live {
                    shape: Shape::Symlink(b"t".to_vec()),
                    holds_outside: false,
                },
            ),
        ]
        .into();
        let mut comparer = Comparer::default();
        let plan = plan(&live, &BTreeMap::new(), &mut comparer).unwrap();
        assert_eq!(plan.kept, [PathBuf::from("/r/d")]);
        assert_eq!(plan.remove, [PathBuf::from("/r/x")]);
        let want: BTreeMap<_, _> = [(PathBuf::from("/r/d"), file("r/d"))].into();
        let err = super::plan(&live, &want, &mut comparer).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("nothing changed")),
            "{err}"
        );
    }
}
