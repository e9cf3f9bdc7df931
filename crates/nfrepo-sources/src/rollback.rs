//! Rolling a file source (configs, deployment artifacts) back to an earlier
//! snapshot, in place.
//!
//! A rollback works inside a [`RollbackScope`]: the source's paths and
//! include/exclude rules as configured now. A path outside it (excluded,
//! or not named by the source) is never read, moved or deleted, whatever
//! the snapshots hold.
//!
//! 1. **Check**: the live entries in scope are compared with the source's
//!    latest snapshot. If someone edited, added or removed a file since,
//!    rolling back would discard that edit, so it is refused
//!    ([`Error::LiveFilesChanged`], `RESTORE_CONFLICT`) unless forced.
//! 2. **Plan**: the live entries are compared with the target snapshot:
//!    every entry that differs is replaced, every entry the target lacks is
//!    removed, every missing one created. Drifted files are included, not
//!    only the differences between the two snapshots.
//! 3. **Stage**: the target's entries are restored (each file's size and
//!    BLAKE3 verified while it is read, then re-read from disk and
//!    verified again) into a staging directory beside each top-level path,
//!    on the same file system. A failure here has touched nothing live.
//! 4. **Swap**: live entries are renamed aside and staged ones into place,
//!    every step journaled.
//! 5. **Prove**: the live entries are compared with the target once more
//!    (size and BLAKE3 of every file). If a swap step failed or the result
//!    differs, the journal is undone in reverse and the files are left as
//!    they were ([`Error::RollbackFailed`], `ROLLBACK_FAILED`).
//!
//! Directory metadata changes alone are not rolled back.

mod state;
mod swap;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nfrepo_engine::{ChangeKind, Reader, SnapshotEntry};

pub use self::state::RollbackScope;
use self::state::{Comparer, Wanted, differences, live_state, snapshot_state};
use self::swap::{Plan, Step, apply, plan, undo};
use crate::{Error, RestoreOptions, Result};

/// One live entry a rollback changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolledBack {
    /// `Added` (created), `Removed` or `Modified` (replaced).
    pub kind: ChangeKind,
    /// The path as in the snapshots: `<top-level name>/<rest>`.
    pub path: String,
    /// The live path.
    pub live: PathBuf,
    /// Whether the entry is (or was) a directory.
    pub is_dir: bool,
}

/// What a rollback did (or, refused, would have done).
#[derive(Clone, Debug, Default)]
pub struct RollbackReport {
    /// Every live entry changed, in path order: after a successful rollback
    /// the live entries in scope equal the target snapshot's.
    pub changes: Vec<RolledBack>,
    /// Live entries that differed from the latest snapshot (overridden with `force`).
    pub drift: Vec<PathBuf>,
    /// Directories the target does not hold, left in place because they
    /// hold entries outside the source.
    pub kept: Vec<PathBuf>,
}

/// Rolls the live files of a source back to `target`.
///
/// `latest` is the source's newest snapshot, the state the live files are
/// expected to be in; `scope` is the source as configured now.
///
/// # Errors
/// [`Error::LiveFilesChanged`] if live files differ from `latest` and
/// `force` is off (nothing changed); [`Error::RollbackFailed`] if the target
/// does not hold one of the scope's paths, or staging, swapping or the
/// final comparison failed (live files as they were); engine errors reading
/// the snapshots.
pub async fn rollback(
    reader: &Reader,
    latest: &SnapshotEntry,
    target: &SnapshotEntry,
    scope: &RollbackScope,
    force: bool,
) -> Result<RollbackReport> {
    let expected = snapshot_state(reader, latest, scope).await?;
    let wanted = snapshot_state(reader, target, scope).await?;
    if let Some(missing) = scope.roots().iter().find(|r| !wanted.roots.contains(*r)) {
        return Err(Error::RollbackFailed(format!(
            "snapshot {} does not hold {}, which the source names; nothing changed",
            target.id.short(),
            missing.display()
        )));
    }
    let want = wanted.entries;
    let mut comparer = Comparer::default();
    let live = live_state(scope, &[&expected.entries, &want])?;
    let drift = differences(&live, &expected.entries, &mut comparer)?;
    if !drift.is_empty() && !force {
        return Err(Error::LiveFilesChanged(
            drift.iter().map(|p| p.display().to_string()).collect(),
        ));
    }
    let plan = plan(&live, &want, &mut comparer)?;
    let report = RollbackReport {
        changes: changes(&plan, &live, &want, scope),
        drift,
        kept: plan.kept.clone(),
    };
    if plan.is_empty() {
        return Ok(report);
    }
    let staging = Staging::create(scope, &plan)?;
    let result = match staging.fill(reader, target, &plan).await {
        Ok(()) => swap_and_prove(&plan, &expected.entries, &want, scope, &staging, &mut comparer),
        Err(e) => Err(Undone::Completely(e)),
    };
    match result {
        Ok(()) => staging.remove(),
        Err(Undone::Completely(e)) => {
            staging.remove();
            return Err(e);
        }
        // The staging directories hold the entries that could not be moved back.
        Err(Undone::Partly(e)) => return Err(e),
    }
    Ok(report)
}

/// The live entries in `scope` that differ from `snapshot` (changed,
/// missing, or not in it): empty when the live files are that snapshot.
///
/// # Errors
/// Engine errors reading the snapshot; [`Error::Io`] examining live files.
pub async fn live_drift(reader: &Reader, snapshot: &SnapshotEntry, scope: &RollbackScope) -> Result<Vec<PathBuf>> {
    let expected = snapshot_state(reader, snapshot, scope).await?;
    let live = live_state(scope, &[&expected.entries])?;
    differences(&live, &expected.entries, &mut Comparer::default())
}

fn changes(
    plan: &Plan,
    live: &BTreeMap<PathBuf, state::Live>,
    want: &BTreeMap<PathBuf, Wanted>,
    scope: &RollbackScope,
) -> Vec<RolledBack> {
    let placed: std::collections::BTreeSet<&PathBuf> = plan.place.iter().collect();
    let removed = plan.remove.iter().filter(|p| !placed.contains(p)).map(|p| {
        let is_dir = live.get(p).is_some_and(|l| l.shape.is_dir());
        (ChangeKind::Removed, p, is_dir)
    });
    let placed = plan.place.iter().map(|p| {
        let kind = if live.contains_key(p) {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        (kind, p, want.get(p).is_some_and(|w| w.shape.is_dir()))
    });
    let mut changes: Vec<RolledBack> = removed
        .chain(placed)
        .map(|(kind, live, is_dir)| RolledBack {
            kind,
            path: want
                .get(live)
                .map_or_else(|| scope.snapshot_path(live), |w| w.rel.clone()),
            live: live.clone(),
            is_dir,
        })
        .collect();
    changes.sort_by(|a, b| a.live.cmp(&b.live));
    changes
}

/// A failed rollback, and whether its undo left the files as they were.
enum Undone {
    Completely(Error),
    Partly(Error),
}

/// Swaps, then proves the result equals the target; undoes everything if not.
fn swap_and_prove(
    plan: &Plan,
    known: &BTreeMap<PathBuf, Wanted>,
    want: &BTreeMap<PathBuf, Wanted>,
    scope: &RollbackScope,
    staging: &Staging,
    comparer: &mut Comparer,
) -> Result<(), Undone> {
    let mut journal: Vec<Step> = Vec::new();
    let aside = |live: &Path, i: usize| staging.aside(live, i);
    let staged = |live: &Path| staging.staged(live, scope);
    let mut outcome = apply(plan, want, &aside, &staged, &mut journal);
    if outcome.is_ok() {
        comparer.clear();
        outcome = prove(scope, known, want, comparer);
    }
    let Err(e) = outcome else {
        return Ok(());
    };
    let failures = undo(journal);
    if failures.is_empty() {
        return Err(Undone::Completely(Error::RollbackFailed(format!(
            "{e}; every change was undone, the files are as they were"
        ))));
    }
    let kept: Vec<String> = staging.dirs.values().map(|d| d.display().to_string()).collect();
    Err(Undone::Partly(Error::RollbackFailed(format!(
        "{e}; undo failed too ({}); the original entries are kept in {}",
        failures.join("; "),
        kept.join(", ")
    ))))
}

/// Checks that every live entry in scope equals the target's.
fn prove(
    scope: &RollbackScope,
    known: &BTreeMap<PathBuf, Wanted>,
    want: &BTreeMap<PathBuf, Wanted>,
    comparer: &mut Comparer,
) -> Result<()> {
    let live = live_state(scope, &[known, want])?;
    let differing: Vec<String> = differences(&live, want, comparer)?
        .into_iter()
        // A directory the target lacks but that holds outside entries stays.
        .filter(|p| want.contains_key(p) || !live.get(p).is_some_and(|l| l.holds_outside))
        .map(|p| p.display().to_string())
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::RollbackFailed(format!(
        "after the swap, live entries differ from the snapshot: {}",
        differing.join(", ")
    )))
}

/// Staging directories, one beside each top-level path that changes, so
/// that every rename stays on one file system.
struct Staging {
    /// Top-level path → its staging directory.
    dirs: BTreeMap<PathBuf, PathBuf>,
}

impl Staging {
    fn create(scope: &RollbackScope, plan: &Plan) -> Result<Self> {
        let mut staging = Self { dirs: BTreeMap::new() };
        for root in scope.roots() {
            let touched = plan.remove.iter().chain(&plan.place).any(|p| p.starts_with(root));
            if !touched {
                continue;
            }
            let parent = root.parent().unwrap_or(Path::new("/"));
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = parent.join(format!(".nfrepo-rollback-{}-{name}", std::process::id()));
            if let Err(e) = std::fs::create_dir(&dir) {
                staging.remove();
                return Err(Error::RollbackFailed(format!(
                    "cannot create {}: {e}; nothing changed",
                    dir.display()
                )));
            }
            staging.dirs.insert(root.clone(), dir);
        }
        Ok(staging)
    }

    fn root_of(&self, live: &Path) -> Result<(&Path, &Path)> {
        self.dirs
            .iter()
            .filter(|(root, _)| live.starts_with(root))
            .max_by_key(|(root, _)| root.components().count())
            .map(|(root, dir)| (root.as_path(), dir.as_path()))
            .ok_or_else(|| Error::RollbackFailed(format!("{}: no staging directory", live.display())))
    }

    /// Restores the target's top-level entries that have something to put in place.
    async fn fill(&self, reader: &Reader, target: &SnapshotEntry, plan: &Plan) -> Result<()> {
        let options = RestoreOptions {
            verify: true,
            ..RestoreOptions::default()
        };
        for (root, dir) in &self.dirs {
            if !plan.place.iter().any(|p| p.starts_with(root)) {
                continue;
            }
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or("root".into());
            crate::restore(reader, target, &name, &dir.join("new"), &options)
                .await
                .map_err(|e| Error::RollbackFailed(format!("staging {name} failed, nothing changed: {e}")))?;
        }
        Ok(())
    }

    fn staged(&self, live: &Path, scope: &RollbackScope) -> Result<PathBuf> {
        let (_, dir) = self.root_of(live)?;
        Ok(dir.join("new").join(scope.snapshot_path(live)))
    }

    fn aside(&self, live: &Path, i: usize) -> Result<PathBuf> {
        let (_, dir) = self.root_of(live)?;
        Ok(dir.join(format!("old-{i}")))
    }

    /// Removes the staging directories (with the entries moved aside: the
    /// rollback succeeded, or they were moved back).
    fn remove(&self) {
        for dir in self.dirs.values() {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a rollback staging directory");
            }
        }
    }
}
