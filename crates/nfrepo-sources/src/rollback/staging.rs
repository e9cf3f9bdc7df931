//! Where a rollback stages the target's entries, and the entries it moves
//! aside: one staging directory per top-level path that changes.
//!
//! A staging directory is `.<name>.nfrepo-rollback-<64 random bits in hex>`
//! (`name` being the top-level path's last component), created `0700` in
//! the top-level path's parent, so every rename stays on one file system.
//! It is never inside a path the source backs up: when the parent is
//! itself one of the source's paths (or inside one), the staging directory
//! goes beside that path instead. Belt and braces, the files source never
//! backs up an entry with a staging directory's name.
//!
//! While a rollback runs it holds an exclusive `flock` on each of its
//! staging directories: the lock is how the next run tells a staging
//! directory of a live rollback (leave it alone) from the remains of a dead
//! one (finish or undo it, then remove it; see [`super::recover`]).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nfrepo_engine::{Reader, SnapshotEntry};
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use super::journal::{self, Area, Op, Step};
use super::state::{RollbackScope, Wanted, root_name};
use super::swap::{Bases, Plan};
use crate::{Error, RestoreOptions, Result};

/// What every staging directory's name holds (after `.<name>`).
const MARK: &str = ".nfrepo-rollback-";

/// Whether a directory entry named `name` is a rollback staging directory:
/// `.<name>.nfrepo-rollback-<hex>`, or `.nfrepo-rollback-<pid>-<name>` as
/// nfrepo before 0.2 named them.
pub(crate) fn is_staging_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.') && name.windows(MARK.len()).any(|w| w == MARK.as_bytes())
}

/// The prefix of the staging directories of the top-level path `root`.
pub(crate) fn prefix(root: &Path) -> String {
    format!(".{}{MARK}", root_name(root))
}

/// The directory the staging directory of `root` goes in: its parent, or,
/// while that is one of `roots` or inside one, the parent of that root.
///
/// # Errors
/// [`Error::RollbackFailed`] for `/` (there is nothing beside it).
pub(crate) fn base_of(root: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    let no_parent = || {
        Error::RollbackFailed(format!(
            "{}: no directory beside it to stage a rollback in; nothing changed",
            root.display()
        ))
    };
    let mut base = root.parent().ok_or_else(no_parent)?;
    while let Some(inside) = roots.iter().find(|r| base.starts_with(r)) {
        base = inside.parent().ok_or_else(no_parent)?;
    }
    Ok(base.to_path_buf())
}

/// Opens the staging directory `name` in `base` without following a link
/// and takes its lock; `Ok(None)` if it is gone.
///
/// # Errors
/// [`Error::RollbackFailed`] if another live process holds it (a rollback
/// is running there); [`Error::Io`] otherwise.
pub(crate) fn lock(base: &OwnedFd, base_path: &Path, name: &str) -> Result<Option<Flock<OwnedFd>>> {
    let path = base_path.join(name);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(base, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::Io { path, source: e.into() }),
    };
    match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::RollbackFailed(format!(
            "another nfrepo is rolling back these files now (its staging directory {} is locked); try again \
             when it has finished",
            path.display()
        ))),
        Err((_, e)) => Err(Error::Io { path, source: e.into() }),
    }
}

/// Removes the staging directories of `areas`: first every journal (so
/// that a crash in between leaves no journal pointing at half-removed
/// entries), then the directories with everything in them.
pub(crate) fn remove(areas: &[Area], dirs: &[Flock<OwnedFd>]) -> Result<()> {
    for (area, dir) in areas.iter().zip(dirs) {
        journal::remove(dir, &area.base.join(&area.name))?;
    }
    for area in areas {
        let path = area.base.join(&area.name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path, source }),
        }
    }
    Ok(())
}

/// The staging directories of a running rollback, created and locked.
pub(crate) struct Staging {
    pub areas: Vec<Area>,
    /// The top-level path of each area.
    roots: Vec<PathBuf>,
    dirs: Vec<Flock<OwnedFd>>,
    pub bases: Bases,
}

impl Staging {
    /// Creates (`0700`) and locks a staging directory for each top-level
    /// path `plan` touches.
    ///
    /// # Errors
    /// [`Error::RollbackFailed`] (nothing live changed; what was created is removed).
    pub(crate) fn create(scope: &RollbackScope, plan: &Plan) -> Result<Self> {
        let id = crate::random::hex::<8>();
        let mut areas = Vec::new();
        let mut roots = Vec::new();
        for root in scope.roots() {
            if plan.remove.iter().chain(&plan.place).any(|p| p.starts_with(root)) {
                areas.push(Area {
                    base: base_of(root, scope.roots())?,
                    name: format!("{}{id}", prefix(root)),
                });
                roots.push(root.clone());
            }
        }
        let bases = Bases::open(&areas)?;
        let mut staging = Self {
            areas: Vec::new(),
            roots,
            dirs: Vec::new(),
            bases,
        };
        for (i, area) in areas.into_iter().enumerate() {
            let path = area.base.join(&area.name);
            let made = staging
                .bases
                .fd(i)
                .and_then(|base| {
                    let io = |e: nix::errno::Errno| Error::Io {
                        path: path.clone(),
                        source: e.into(),
                    };
                    nix::sys::stat::mkdirat(base, area.name.as_str(), Mode::from_bits_truncate(0o700)).map_err(io)?;
                    // The journal will be made durable inside it: so must its name be.
                    nix::unistd::fsync(base).map_err(io)?;
                    lock(base, &area.base, &area.name)
                })
                .and_then(|dir| dir.ok_or_else(|| Error::RollbackFailed(format!("{} vanished", path.display()))));
            match made {
                Ok(dir) => {
                    staging.areas.push(area);
                    staging.dirs.push(dir);
                }
                Err(e) => {
                    staging.discard();
                    return Err(Error::RollbackFailed(format!(
                        "cannot create {}: {e}; nothing changed",
                        path.display()
                    )));
                }
            }
        }
        Ok(staging)
    }

    /// The staging directories, for messages.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.areas
            .iter()
            .map(|a| a.base.join(&a.name).display().to_string())
            .collect()
    }

    fn area_of(&self, live: &Path) -> Result<usize> {
        self.roots
            .iter()
            .enumerate()
            .filter(|(_, root)| live.starts_with(root))
            .max_by_key(|(_, root)| root.components().count())
            .map(|(i, _)| i)
            .ok_or_else(|| Error::RollbackFailed(format!("{}: no staging directory", live.display())))
    }

    /// `live` relative to the base of `area`.
    fn rel(&self, area: usize, live: &Path) -> Result<Vec<u8>> {
        self.areas
            .get(area)
            .and_then(|a| live.strip_prefix(&a.base).ok())
            .map(|rel| rel.as_os_str().as_bytes().to_vec())
            .ok_or_else(|| Error::RollbackFailed(format!("{}: outside its staging area", live.display())))
    }

    /// Restores the target's top-level entries that have something to put
    /// in place into `<staging>/new` (each file's BLAKE3 verified, then
    /// re-read and verified again).
    ///
    /// # Errors
    /// [`Error::RollbackFailed`]: nothing live changed.
    pub(crate) async fn fill(&self, reader: &Reader, target: &SnapshotEntry, plan: &Plan) -> Result<()> {
        let options = RestoreOptions {
            verify: true,
            ..RestoreOptions::default()
        };
        for (root, area) in self.roots.iter().zip(&self.areas) {
            if !plan.place.iter().any(|p| p.starts_with(root)) {
                continue;
            }
            let name = root_name(root);
            let into = area.base.join(&area.name).join("new");
            crate::restore(reader, target, &name, &into, &options)
                .await
                .map_err(|e| Error::RollbackFailed(format!("staging {name} failed, nothing changed: {e}")))?;
        }
        Ok(())
    }

    /// The swap's steps: live entries aside (deepest first), then staged
    /// entries in place and directories created (parents first).
    pub(crate) fn steps(
        &self,
        plan: &Plan,
        want: &BTreeMap<PathBuf, Wanted>,
        scope: &RollbackScope,
    ) -> Result<Vec<Step>> {
        let mut steps = Vec::with_capacity(plan.remove.len() + plan.place.len());
        for (i, live) in plan.remove.iter().enumerate() {
            let area = self.area_of(live)?;
            let name = self.areas.get(area).map(|a| a.name.clone()).unwrap_or_default();
            steps.push(Step {
                op: Op::Aside,
                area,
                from: self.rel(area, live)?,
                to: format!("{name}/old-{i}").into_bytes(),
            });
        }
        for live in &plan.place {
            let area = self.area_of(live)?;
            let name = self.areas.get(area).map(|a| a.name.clone()).unwrap_or_default();
            let mut staged = format!("{name}/new/").into_bytes();
            staged.extend_from_slice(scope.snapshot_path_bytes(live).as_slice());
            let is_dir = want.get(live).is_some_and(|w| w.shape.is_dir());
            steps.push(Step {
                op: if is_dir { Op::Mkdir } else { Op::Place },
                area,
                from: staged,
                to: self.rel(area, live)?,
            });
        }
        Ok(steps)
    }

    /// Writes the journal into every staging directory, durably.
    ///
    /// # Errors
    /// [`Error::RollbackFailed`]: nothing live changed.
    pub(crate) fn write_journal(&self, journal: &[u8]) -> Result<()> {
        for (area, dir) in self.areas.iter().zip(&self.dirs) {
            journal::write(dir, &area.base.join(&area.name), journal)?;
        }
        Ok(())
    }

    /// Removes the staging directories (journals first).
    pub(crate) fn remove(&self) -> Result<()> {
        remove(&self.areas, &self.dirs)
    }

    /// Removes the staging directories after a failure that changed
    /// nothing live; a failure to remove is logged.
    pub(crate) fn discard(&self) {
        if let Err(e) = self.remove() {
            tracing::warn!(error = %e, "could not remove a rollback staging directory");
        }
    }
}
