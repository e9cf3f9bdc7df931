//! Rolling a file source (configs, deployment artifacts) back to an earlier
//! snapshot, in place.
//!
//! A rollback works inside a [`RollbackScope`]: the source's paths and
//! include/exclude rules as configured now. A path outside it (excluded,
//! or not named by the source) is never read, moved or deleted, whatever
//! the snapshots hold.
//!
//! 0. **Recover**: an earlier rollback of the same paths that was killed is
//!    finished or undone first ([`recover_rollbacks`]; undone unless its
//!    swap was complete), and reported in [`RollbackReport::recovered`].
//! 1. **Check**: the live entries in scope are compared with the source's
//!    latest snapshot. If someone edited, added or removed a file since,
//!    rolling back would discard that edit, so it is refused
//!    ([`Error::LiveFilesChanged`], `RESTORE_CONFLICT`) unless forced. (The
//!    re-run of a rollback whose swap was complete when it was killed finds
//!    the files at its target: it succeeds with nothing left to do.)
//! 2. **Plan**: the live entries are compared with the target snapshot:
//!    every entry that differs is replaced, every entry the target lacks is
//!    removed, every missing one created. Drifted files are included, not
//!    only the differences between the two snapshots. A live symlink where
//!    the target has a directory is refused, even with `force`.
//! 3. **Stage**: the target's entries are restored (each file's size and
//!    BLAKE3 verified while it is read, then re-read from disk and
//!    verified again) into a staging directory beside each top-level path,
//!    on the same file system and never inside a path the source backs up
//!    (see `staging`). A failure here has touched nothing live.
//! 4. **Journal**: every step of the swap is written to a journal in the
//!    staging directories, fsynced, before the first rename (see `journal`).
//! 5. **Swap**: live entries are renamed aside and staged ones into place,
//!    each relative to directory descriptors opened without following
//!    links, renames never replacing: a directory on the way that became a
//!    symlink stops the swap instead of being written through.
//! 6. **Prove**: the live entries are compared with the target once more
//!    (size and BLAKE3 of every file). If a swap step failed or the result
//!    differs, the journal is undone in reverse and the files are left as
//!    they were ([`Error::RollbackFailed`], `ROLLBACK_FAILED`).
//!
//! Directory metadata changes alone are not rolled back.

mod journal;
mod recover;
mod staging;
mod state;
mod swap;

use std::collections::BTreeMap;
use std::path::PathBuf;

use nfrepo_engine::{ChangeKind, Reader, SnapshotEntry};

pub use self::recover::{RecoveredRollback, RecoveryOutcome, recover_rollbacks};
use self::staging::Staging;
pub(crate) use self::staging::is_staging_name;
pub use self::state::RollbackScope;
use self::state::{Comparer, Wanted, differences, live_state, snapshot_state};
use self::swap::{Plan, apply, plan, undo};
use crate::{Error, Result};

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
    /// Interrupted earlier rollbacks of these paths, finished or undone
    /// before this one started.
    pub recovered: Vec<RecoveredRollback>,
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
    let recovered = recover_rollbacks(scope.roots())?;
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
    // This very rollback was interrupted after its swap and finished above:
    // the live files are its target, nothing is left to do.
    let finished = recovered
        .iter()
        .any(|r| r.outcome == RecoveryOutcome::Finished && r.target == target.id.to_hex());
    if !drift.is_empty() && finished && differences(&live, &want, &mut comparer)?.is_empty() {
        return Ok(RollbackReport {
            recovered,
            ..RollbackReport::default()
        });
    }
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
        recovered,
    };
    if plan.is_empty() {
        return Ok(report);
    }
    let staging = Staging::create(scope, &plan)?;
    let prepared = match staging.fill(reader, target, &plan).await {
        Ok(()) => staging.steps(&plan, &want, scope).and_then(|steps| {
            let journal = journal::Journal {
                target: target.id.to_hex(),
                areas: staging.areas.clone(),
                steps,
            };
            staging.write_journal(&journal.encode()).map(|()| journal)
        }),
        Err(e) => Err(e),
    };
    let journal = match prepared {
        Ok(journal) => journal,
        Err(e) => {
            staging.discard();
            return Err(e);
        }
    };
    swap_and_prove(&journal, &expected.entries, &want, scope, &staging, &mut comparer)?;
    if let Err(e) = staging.remove() {
        // The rollback is complete; the next run finishes the cleanup.
        tracing::warn!(error = %e, "could not remove a rollback staging directory");
    }
    Ok(report)
}

/// The live entries in `scope` that differ from `snapshot` (changed,
/// missing, or not in it): empty when the live files are that snapshot.
/// An interrupted rollback of the scope is finished or undone first (and
/// logged as a warning).
///
/// # Errors
/// Engine errors reading the snapshot; [`Error::Io`] examining live files;
/// [`Error::RollbackFailed`] as [`recover_rollbacks`].
pub async fn live_drift(reader: &Reader, snapshot: &SnapshotEntry, scope: &RollbackScope) -> Result<Vec<PathBuf>> {
    // An interrupted rollback is dealt with first: its half-swapped files
    // are nobody's drift.
    for recovered in recover_rollbacks(scope.roots())? {
        tracing::warn!("{recovered}");
    }
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

/// Swaps, then proves the result equals the target; undoes everything if
/// not. The staging directories are removed when everything was undone,
/// and kept (with the journal) when the undo failed too.
fn swap_and_prove(
    journal: &journal::Journal,
    known: &BTreeMap<PathBuf, Wanted>,
    want: &BTreeMap<PathBuf, Wanted>,
    scope: &RollbackScope,
    staging: &Staging,
    comparer: &mut Comparer,
) -> Result<()> {
    let mut done = 0;
    let mut outcome = apply(
        &staging.bases,
        &journal.steps,
        &mut done,
        &mut crate::fault::after_step(crate::fault::ROLLBACK_SWAP),
    )
    .and_then(|complete| {
        if complete {
            Ok(())
        } else {
            Err(Error::RollbackFailed("the swap was interrupted".into()))
        }
    });
    if outcome.is_ok() {
        comparer.clear();
        outcome = prove(scope, known, want, comparer);
    }
    let Err(e) = outcome else {
        return Ok(());
    };
    let failures = undo(&staging.bases, journal.steps.get(..done).unwrap_or_default());
    if failures.is_empty() {
        staging.discard();
        return Err(Error::RollbackFailed(format!(
            "{e}; every change was undone, the files are as they were"
        )));
    }
    Err(Error::RollbackFailed(format!(
        "{e}; undo failed too ({}); the journal and the original entries are kept in {}, and the next rollback \
         or snapshot of this source undoes the rest",
        failures.join("; "),
        staging.paths().join(", ")
    )))
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
