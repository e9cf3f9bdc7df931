//! Finishing or undoing a rollback that was killed, before anything else
//! reads or changes the same files.
//!
//! `rollback` and every backup of a files source call [`recover_rollbacks`]
//! first. It looks beside each of the source's paths for staging
//! directories ([`super::staging`]) no live process holds, and for each:
//!
//! - **no journal, or a torn one**: the rollback died while staging, before
//!   its first rename (the journal is complete and fsynced before that), so
//!   nothing live was touched: the directory is removed
//!   ([`RecoveryOutcome::Discarded`]);
//! - **a journal whose every step is done**: the swap was complete (the
//!   process died while proving or cleaning up), so the rollback is
//!   finished: the entries moved aside are removed
//!   ([`RecoveryOutcome::Finished`]);
//! - **a journal with only some steps done**: the files are half old, half
//!   new; every done step is undone, last first, which puts the live files
//!   back exactly as they were before that rollback
//!   ([`RecoveryOutcome::Undone`]). Undoing is the conservative choice: it
//!   returns to a state that was verified (the latest snapshot's, or the
//!   operator's own edits), where finishing would need the target's staged
//!   entries to be complete and unchanged, which nothing proves after a crash.
//!
//! Recovery is idempotent: killed while undoing, the next run sees fewer
//! done steps and goes on. Journals are removed before the staging
//! directories, so a journal never outlives the entries it names. A step
//! that cannot be undone (someone changed the files meanwhile) stops the
//! recovery with [`Error::RollbackFailed`] naming it; the journal and the
//! staging directories are then kept for the next run or the operator.

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, OFlag};
use nix::sys::stat::Mode;

use super::journal::{self, Journal};
use super::staging::{self, base_of, prefix};
use super::swap::{Bases, undo};
use crate::{Error, Result};

/// What the recovery of one interrupted rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryOutcome {
    /// The rollback had died before touching live files; its staging
    /// directory was removed.
    Discarded,
    /// Its swap was complete; it was finished (the old entries removed).
    Finished,
    /// It had done `done` of `total` steps; they were undone, and the live
    /// files are as they were before it.
    Undone {
        /// Steps that had been done (and are now undone).
        done: usize,
        /// Steps in its journal.
        total: usize,
    },
}

/// An interrupted rollback found and dealt with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredRollback {
    /// Its staging directories, now removed.
    pub staging: Vec<PathBuf>,
    /// The snapshot it was rolling back to (hex id; empty without a journal).
    pub target: String,
    /// What was done about it.
    pub outcome: RecoveryOutcome,
}

impl std::fmt::Display for RecoveredRollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let staging: Vec<String> = self.staging.iter().map(|p| p.display().to_string()).collect();
        let staging = staging.join(", ");
        let target = short(&self.target);
        match &self.outcome {
            RecoveryOutcome::Discarded => write!(
                f,
                "removed {staging}, left by a rollback that died before changing any live file"
            ),
            RecoveryOutcome::Finished => write!(
                f,
                "finished an interrupted rollback to snapshot {target}: its swap was complete; removed {staging}"
            ),
            RecoveryOutcome::Undone { done, total } => write!(
                f,
                "undid an interrupted rollback to snapshot {target} ({done} of {total} steps had run): the files \
                 are as they were before it; removed {staging}"
            ),
        }
    }
}

/// Finishes or undoes every interrupted rollback of the top-level paths
/// `roots` (see the module docs). Blocks. The caller reports what was done
/// (each [`RecoveredRollback`] displays as one line for the operator).
///
/// # Errors
/// [`Error::RollbackFailed`] if a rollback of these paths is running now,
/// or an interrupted one cannot be undone (its journal is kept);
/// [`Error::Io`] if a directory beside the paths cannot be listed.
pub fn recover_rollbacks(roots: &[PathBuf]) -> Result<Vec<RecoveredRollback>> {
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| std::path::absolute(r).map(|a| a.components().collect()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::Invalid(format!("a source path cannot be made absolute: {e}")))?;
    let mut recovered = Vec::new();
    for root in &roots {
        let mut bases = vec![base_of(root, &roots)?];
        if let Some(parent) = root.parent()
            && !bases.iter().any(|b| b == parent)
        {
            bases.push(parent.to_path_buf());
        }
        let wanted = prefix(root);
        for base in bases {
            for name in staging_dirs(&base, &wanted)? {
                if let Some(done) = recover_one(&base, &name, &roots)? {
                    tracing::info!("{done}");
                    recovered.push(done);
                }
            }
        }
    }
    Ok(recovered)
}

/// The names in `base` of staging directories starting with `prefix` and
/// ending in 16 hex digits.
fn staging_dirs(base: &Path, prefix: &str) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(base) {
        Ok(entries) => entries,
        // No directory there: no staging directory either.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(Error::Io {
                path: base.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: base.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(id) = name.as_bytes().strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        if id.len() == 16
            && id.iter().all(u8::is_ascii_hexdigit)
            && let Some(name) = name.to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn open_base(base: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::openat(nix::fcntl::AT_FDCWD, base, flags, Mode::empty()).map_err(|e| Error::Io {
        path: base.to_path_buf(),
        source: e.into(),
    })
}

/// Recovers the staging directory `name` in `base`; `None` if it vanished
/// (an earlier area of the same rollback took it).
fn recover_one(base: &Path, name: &str, roots: &[PathBuf]) -> Result<Option<RecoveredRollback>> {
    let base_fd = open_base(base)?;
    let Some(dir) = staging::lock(&base_fd, base, name)? else {
        return Ok(None);
    };
    let path = base.join(name);
    trusted(&*dir, &path)?;
    let Some(journal) = journal::read(&dir, &path)? else {
        let area = journal::Area {
            base: base.to_path_buf(),
            name: name.to_owned(),
        };
        staging::remove(std::slice::from_ref(&area), std::slice::from_ref(&dir))?;
        return Ok(Some(RecoveredRollback {
            staging: vec![path],
            target: String::new(),
            outcome: RecoveryOutcome::Discarded,
        }));
    };
    validate(&journal, roots).map_err(|why| {
        Error::RollbackFailed(format!(
            "the journal in {} does not describe a rollback of these paths ({why}); refusing to act on it: \
             inspect and remove it",
            path.display()
        ))
    })?;
    apply_journal(&journal, &path, dir).map(Some)
}

/// Fails unless `fd` (a staging directory or a journal) belongs to the
/// effective user and nobody else may write it: a planted look-alike must
/// never steer renames, least of all when nfrepo runs as root.
pub(crate) fn trusted(fd: &impl std::os::fd::AsFd, path: &Path) -> Result<()> {
    let stat = nix::sys::stat::fstat(fd).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    if stat.st_uid == nix::unistd::geteuid().as_raw() && stat.st_mode & 0o022 == 0 {
        return Ok(());
    }
    Err(Error::RollbackFailed(format!(
        "{} looks like rollback staging but nfrepo did not make it as this user (owner {}, mode {:o}); refusing \
         to act on it: inspect and remove it",
        path.display(),
        stat.st_uid,
        stat.st_mode & 0o7777
    )))
}

/// Checks that every rename of `journal` stays between a staging
/// directory beside `roots` and the entries under `roots`: no `..`, no
/// other base directory, no live path outside the source.
fn validate(journal: &Journal, roots: &[PathBuf]) -> std::result::Result<(), String> {
    for area in &journal.areas {
        let known = roots
            .iter()
            .any(|r| r.parent() == Some(area.base.as_path()) || base_of(r, roots).is_ok_and(|b| b == area.base));
        if !known || area.name.contains('/') || !staging::is_staging_name(area.name.as_bytes()) {
            return Err(format!(
                "staging {} is not beside them",
                area.base.join(&area.name).display()
            ));
        }
    }
    for step in &journal.steps {
        let area = journal
            .areas
            .get(step.area)
            .ok_or("a step names no staging directory")?;
        let (staged, live) = match step.op {
            journal::Op::Aside => (&step.to, &step.from),
            journal::Op::Place | journal::Op::Mkdir => (&step.from, &step.to),
        };
        for rel in [staged, live] {
            if rel
                .split(|b| *b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..")
            {
                return Err(format!(
                    "{:?} is not a plain relative path",
                    String::from_utf8_lossy(rel)
                ));
            }
        }
        let mut inside = area.name.as_bytes().to_vec();
        inside.push(b'/');
        let live_path = area.base.join(std::ffi::OsStr::from_bytes(live));
        if !staged.starts_with(&inside) || !roots.iter().any(|r| live_path.starts_with(r)) {
            return Err(format!("{} is outside them", live_path.display()));
        }
    }
    Ok(())
}

/// Locks every area of `journal` (the one at `held` is locked already),
/// then finishes or undoes its swap.
fn apply_journal(journal: &Journal, held: &Path, held_dir: Flock<OwnedFd>) -> Result<RecoveredRollback> {
    let mut areas = Vec::new();
    let mut dirs: Vec<Flock<OwnedFd>> = Vec::new();
    let mut held_dir = Some(held_dir);
    for area in &journal.areas {
        let dir = if area.base.join(&area.name) == held {
            held_dir.take()
        } else {
            staging::lock(&open_base(&area.base)?, &area.base, &area.name)?
        };
        if let Some(dir) = dir {
            areas.push(area.clone());
            dirs.push(dir);
        }
    }
    let staging: Vec<PathBuf> = journal.areas.iter().map(|a| a.base.join(&a.name)).collect();
    let bases = Bases::open(&journal.areas)?;
    let mut done = Vec::new();
    for step in &journal.steps {
        if bases.is_done(step)? {
            done.push(step.clone());
        }
    }
    let total = journal.steps.len();
    let outcome = if done.len() == total {
        RecoveryOutcome::Finished
    } else {
        let failures = undo(&bases, &done);
        if !failures.is_empty() {
            return Err(Error::RollbackFailed(format!(
                "an interrupted rollback to snapshot {} could not be undone: {}; its journal and the original \
                 entries are kept in {} (fix the entries named, then run the rollback or snapshot again)",
                short(&journal.target),
                failures.join("; "),
                staging
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        RecoveryOutcome::Undone {
            done: done.len(),
            total,
        }
    };
    staging::remove(&areas, &dirs)?;
    Ok(RecoveredRollback {
        staging,
        target: journal.target.clone(),
        outcome,
    })
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::collections::BTreeMap;

    use super::*;
    use crate::FilesOptions;
    use crate::rollback::journal::Journal;
    use crate::rollback::staging::{Staging, is_staging_name};
    use crate::rollback::state::{Comparer, RollbackScope, Shape, Wanted, live_state};
    use crate::rollback::swap::{apply, plan};

    const FILES: usize = 2000;

    fn content(version: u32, i: usize) -> String {
        format!("setting_{i} = v{version}\n")
    }

    /// A config of `FILES` files at v1 (plus one only v1 has), and a staged
    /// v2 (plus one only v2 has) in a real staging directory with its
    /// journal written: the state right before the first rename.
    struct Setup {
        _dir: tempfile::TempDir,
        root: PathBuf,
        staging: Staging,
        journal: Journal,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("conf.d");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for i in 0..FILES {
            std::fs::write(root.join(format!("f{i:04}.conf")), content(1, i)).unwrap();
        }
        std::fs::write(root.join("sub/only-v1"), "1").unwrap();
        let scope = RollbackScope::new(std::slice::from_ref(&root), &FilesOptions::default()).unwrap();
        let wanted = |rel: String, data: &[u8]| Wanted {
            rel,
            shape: Shape::File {
                size: data.len() as u64,
                blake3: Some(*blake3::hash(data).as_bytes()),
            },
        };
        let mut want = BTreeMap::new();
        let dir_entry = |rel: &str| Wanted {
            rel: rel.into(),
            shape: Shape::Dir,
        };
        want.insert(root.clone(), dir_entry("conf.d"));
        want.insert(root.join("new-dir"), dir_entry("conf.d/new-dir"));
        for i in 0..FILES {
            let name = format!("f{i:04}.conf");
            want.insert(
                root.join(&name),
                wanted(format!("conf.d/{name}"), content(2, i).as_bytes()),
            );
        }
        want.insert(
            root.join("new-dir/only-v2"),
            wanted("conf.d/new-dir/only-v2".into(), b"2"),
        );
        let live = live_state(&scope, &[&want]).unwrap();
        let plan = plan(&live, &want, &mut Comparer::default()).unwrap();
        let staging = Staging::create(&scope, &plan).unwrap();
        let area = staging.areas.first().unwrap().clone();
        assert_eq!(area.base, dir.path(), "staged beside the source's path");
        assert!(is_staging_name(area.name.as_bytes()));
        let new = area.base.join(&area.name).join("new/conf.d");
        std::fs::create_dir_all(new.join("new-dir")).unwrap();
        for i in 0..FILES {
            std::fs::write(new.join(format!("f{i:04}.conf")), content(2, i)).unwrap();
        }
        std::fs::write(new.join("new-dir/only-v2"), "2").unwrap();
        let journal = Journal {
            target: "cd".repeat(32),
            areas: staging.areas.clone(),
            steps: staging.steps(&plan, &want, &scope).unwrap(),
        };
        staging.write_journal(&journal.encode()).unwrap();
        Setup {
            _dir: dir,
            root,
            staging,
            journal,
        }
    }

    /// Runs the swap and "dies" after `steps` steps: nothing undone, the
    /// staging directories' locks released as by the kernel.
    fn crash_after(setup: Setup, steps: usize) -> (tempfile::TempDir, PathBuf) {
        if steps > 0 {
            let mut done = 0;
            apply(&setup.staging.bases, &setup.journal.steps, &mut done, &mut |n| {
                n == steps
            })
            .unwrap();
            assert_eq!(done, steps);
        }
        (setup._dir, setup.root)
    }

    /// Which version every file is at: `Some(1)`, `Some(2)`, or `None` if mixed.
    fn version(root: &Path) -> Option<u32> {
        let mut versions = std::collections::BTreeSet::new();
        for i in 0..FILES {
            let text = std::fs::read_to_string(root.join(format!("f{i:04}.conf"))).ok()?;
            versions.insert(if text == content(1, i) { 1 } else { 2 });
        }
        let v1_extra = root.join("sub/only-v1").exists();
        let v2_extra = root.join("new-dir/only-v2").exists();
        versions.insert(if v1_extra && !v2_extra { 1 } else { 2 });
        if v1_extra == v2_extra {
            return None;
        }
        (versions.len() == 1).then(|| versions.into_iter().next().unwrap())
    }

    fn leftovers(root: &Path) -> Vec<String> {
        std::fs::read_dir(root.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| is_staging_name(n.as_bytes()))
            .collect()
    }

    /// Issue 10, item 7: a rollback killed halfway through the swap of a
    /// 2000-file config is undone by the next run, to exactly the files before.
    #[test]
    fn a_swap_killed_halfway_is_undone_by_the_next_run() {
        let setup = setup();
        let total = setup.journal.steps.len();
        assert_eq!(total, 2 * (FILES + 2));
        // Every entry moved aside, and 1000 of the new files in place.
        let (_dir, root) = crash_after(setup, FILES + 2 + 1000);
        assert_eq!(version(&root), None, "the crash left a mixed state");
        let recovered = recover_rollbacks(std::slice::from_ref(&root)).unwrap();
        assert_eq!(recovered.len(), 1, "{recovered:?}");
        assert_eq!(
            recovered[0].outcome,
            RecoveryOutcome::Undone {
                done: FILES + 2 + 1000,
                total
            }
        );
        assert!(
            recovered[0].to_string().contains("3002 of 4004 steps"),
            "{}",
            recovered[0]
        );
        assert_eq!(version(&root), Some(1));
        assert_eq!(std::fs::read_to_string(root.join("sub/only-v1")).unwrap(), "1");
        assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
        assert!(recover_rollbacks(std::slice::from_ref(&root)).unwrap().is_empty());
    }

    #[test]
    fn an_undo_killed_halfway_is_finished_by_the_next_run() {
        let setup = setup();
        let staging = setup.staging.bases.path(0, b"");
        let done_steps: Vec<_> = setup.journal.steps.get(..3000).unwrap().to_vec();
        let bases = Bases::open(&setup.journal.areas).unwrap();
        let (_dir, root) = crash_after(setup, 3000);
        // The recovery itself dies after undoing 1000 of the 3000 steps.
        for step in done_steps.iter().rev().take(1000) {
            bases.undo(step).unwrap();
        }
        assert_eq!(version(&root), None);
        let recovered = recover_rollbacks(std::slice::from_ref(&root)).unwrap();
        assert!(
            matches!(recovered[0].outcome, RecoveryOutcome::Undone { done: 2000, .. }),
            "{recovered:?} in {}",
            staging.display()
        );
        assert_eq!(version(&root), Some(1));
    }

    #[test]
    fn a_complete_swap_is_finished_and_a_journal_less_staging_discarded() {
        let first = setup();
        let total = first.journal.steps.len();
        let (_dir, root) = crash_after(first, total);
        let recovered = recover_rollbacks(std::slice::from_ref(&root)).unwrap();
        assert_eq!(recovered[0].outcome, RecoveryOutcome::Finished);
        assert_eq!(version(&root), Some(2));
        assert!(leftovers(&root).is_empty());

        // Died while staging: no journal yet, nothing live touched.
        let again = setup();
        let path = again.staging.bases.path(0, again.journal.areas[0].name.as_bytes());
        std::fs::remove_file(path.join(journal::FILE)).unwrap();
        let (_dir, root) = crash_after(again, 0);
        let recovered = recover_rollbacks(std::slice::from_ref(&root)).unwrap();
        assert_eq!(recovered[0].outcome, RecoveryOutcome::Discarded);
        assert_eq!(version(&root), Some(1));
        assert!(!path.exists());
    }

    #[test]
    fn a_running_rollback_is_left_alone() {
        let setup = setup();
        let err = recover_rollbacks(std::slice::from_ref(&setup.root)).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("another nfrepo is rolling back")),
            "{err}"
        );
        assert_eq!(version(&setup.root), Some(1));
        assert_eq!(leftovers(&setup.root).len(), 1);
    }

    /// A planted or altered journal never steers a rename outside the source.
    #[test]
    fn a_journal_reaching_outside_the_source_or_not_ours_is_refused() {
        let setup = setup();
        let outside = setup.root.parent().unwrap().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        let staging_path = setup.staging.bases.path(0, setup.journal.areas[0].name.as_bytes());
        let mut forged = setup.journal.clone();
        forged.steps.insert(
            0,
            journal::Step {
                op: journal::Op::Aside,
                area: 0,
                from: b"conf.d/../outside".to_vec(),
                to: format!("{}/old-x", forged.areas[0].name).into_bytes(),
            },
        );
        let dir: OwnedFd = std::fs::File::open(&staging_path).unwrap().into();
        journal::write(&dir, &staging_path, &forged.encode()).unwrap();
        let (_dir, root) = crash_after(setup, 0);
        let err = recover_rollbacks(std::slice::from_ref(&root)).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("does not describe a rollback of these paths")
                && m.contains("not a plain relative path")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(version(&root), Some(1));

        // Writable by others: not trusted, whatever it holds.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staging_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = recover_rollbacks(std::slice::from_ref(&root)).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("nfrepo did not make it as this user")),
            "{err}"
        );
        assert!(staging_path.exists());
    }

    #[test]
    fn staging_is_never_inside_a_path_the_source_backs_up() {
        let roots = [PathBuf::from("/etc/app"), PathBuf::from("/etc/app/conf.d")];
        assert_eq!(base_of(&roots[1], &roots).unwrap(), Path::new("/etc"));
        assert_eq!(base_of(&roots[0], &roots).unwrap(), Path::new("/etc"));
        assert!(base_of(Path::new("/"), &[PathBuf::from("/")]).is_err());
        assert!(is_staging_name(b".conf.d.nfrepo-rollback-0123456789abcdef"));
        assert!(is_staging_name(b".nfrepo-rollback-4242-conf.d"));
        assert!(!is_staging_name(b"nfrepo-rollback-notes.txt"));
    }
}
