//! The swap phase of a rollback: moving live entries aside and staged ones
//! into place, every step journaled so that a failure puts everything back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::state::{Comparer, Live, Wanted};
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
/// the source would have to be replaced by a file (nothing is changed).
pub(crate) fn plan(
    live: &BTreeMap<PathBuf, Live>,
    want: &BTreeMap<PathBuf, Wanted>,
    comparer: &mut Comparer,
) -> Result<Plan> {
    let mut plan = Plan::default();
    for (path, entry) in live {
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

/// One step of the swap, for undoing it.
#[derive(Debug)]
pub(crate) enum Step {
    /// The live entry `.0` was moved aside to `.1`.
    MovedAside(PathBuf, PathBuf),
    /// A staged file, link or other entry was renamed into place at `.0`.
    Placed(PathBuf),
    /// An empty directory was created at `.0`.
    CreatedDir(PathBuf),
}

/// Applies `plan`: live entries go to `aside(path)`, staged ones come from
/// `staged(path)`. Stops at the first failure, leaving the journal of what
/// was done in `journal` for [`undo`].
pub(crate) fn apply(
    plan: &Plan,
    want: &BTreeMap<PathBuf, Wanted>,
    aside: &dyn Fn(&Path, usize) -> Result<PathBuf>,
    staged: &dyn Fn(&Path) -> Result<PathBuf>,
    journal: &mut Vec<Step>,
) -> Result<()> {
    for (i, live) in plan.remove.iter().enumerate() {
        let to = aside(live, i)?;
        std::fs::rename(live, &to).map_err(|e| swap_error(live, "moving aside", &e))?;
        journal.push(Step::MovedAside(live.clone(), to));
    }
    for live in &plan.place {
        let is_dir = want.get(live).is_some_and(|w| w.shape.is_dir());
        let from = staged(live)?;
        if is_dir {
            std::fs::create_dir(live).map_err(|e| swap_error(live, "creating", &e))?;
            journal.push(Step::CreatedDir(live.clone()));
            if let Ok(meta) = std::fs::metadata(&from) {
                std::fs::set_permissions(live, meta.permissions())
                    .map_err(|e| swap_error(live, "setting the mode of", &e))?;
            }
        } else {
            std::fs::rename(&from, live).map_err(|e| swap_error(live, "putting in place", &e))?;
            journal.push(Step::Placed(live.clone()));
        }
    }
    Ok(())
}

fn swap_error(path: &Path, doing: &str, e: &std::io::Error) -> Error {
    Error::RollbackFailed(format!("{doing} {}: {e}", path.display()))
}

/// Reverses the journal; returns what could not be undone.
pub(crate) fn undo(journal: Vec<Step>) -> Vec<String> {
    let mut failures = Vec::new();
    for step in journal.into_iter().rev() {
        let (path, result) = match &step {
            Step::Placed(live) => (live, std::fs::remove_file(live)),
            Step::CreatedDir(live) => (live, std::fs::remove_dir(live)),
            Step::MovedAside(live, aside) => (live, std::fs::rename(aside, live)),
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;
    use crate::rollback::state::Shape;

    fn file(rel: &str) -> Wanted {
        Wanted {
            rel: rel.into(),
            shape: Shape::File {
                size: 1,
                blake3: Some(*blake3::hash(b"n").as_bytes()),
            },
        }
    }

    #[test]
    fn undo_puts_every_swapped_entry_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("a"), "live a").unwrap();
        std::fs::write(path("b"), "live b").unwrap();
        std::fs::create_dir(path("staged")).unwrap();
        std::fs::write(path("staged/a"), "n").unwrap();
        std::fs::write(path("staged/c"), "n").unwrap();
        let plan = Plan {
            remove: vec![path("b"), path("a")],
            // `d` has no staged copy: putting it in place fails.
            place: vec![path("a"), path("c"), path("d")],
            kept: Vec::new(),
        };
        let want: BTreeMap<_, _> = ["a", "c", "d"].iter().map(|n| (path(n), file(n))).collect();
        let aside = |p: &Path, i: usize| Ok(dir.path().join(format!("old-{i}-{}", p.display().to_string().len())));
        let staged = |p: &Path| Ok(path("staged").join(p.file_name().unwrap()));
        let mut journal = Vec::new();
        let err = apply(&plan, &want, &aside, &staged, &mut journal).unwrap_err();
        assert!(
            matches!(&err, Error::RollbackFailed(m) if m.contains("putting in place")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(path("a")).unwrap(), "n");
        assert!(undo(journal).is_empty());
        assert_eq!(std::fs::read_to_string(path("a")).unwrap(), "live a");
        assert_eq!(std::fs::read_to_string(path("b")).unwrap(), "live b");
        assert!(!path("c").exists());
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
