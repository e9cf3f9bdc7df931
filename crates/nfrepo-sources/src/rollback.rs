//! Rolling a file source (configs, deployment artifacts) back to an earlier snapshot, in place.
//!
//! A rollback first checks that the live files still match the source's
//! latest snapshot: if someone edited them since, rolling back would
//! silently discard that edit, so it is refused ([`Error::LiveFilesChanged`],
//! `RESTORE_CONFLICT`) unless forced. It then applies only the differences
//! between the latest and the chosen snapshot, in two phases:
//!
//! 1. **Stage**: every entry to bring back is restored (verified) into a
//!    staging directory beside the live tree, on the same file system. A
//!    failure here has touched nothing live.
//! 2. **Swap**: each live entry is renamed into the staging directory and the
//!    staged one renamed into its place, with every step journaled. If any
//!    rename fails, the journal is undone in reverse and the files are left
//!    as they were ([`Error::RollbackFailed`], `ROLLBACK_FAILED`).
//!
//! Files the snapshots never held (excluded ones, for instance) are not
//! touched. Directory metadata changes alone are not rolled back.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nfrepo_engine::{Change, ChangeKind, Reader, SnapshotEntry};
use nfrepo_format::NodeKind;

use crate::{Error, RestoreOptions, Result};

/// What a rollback did (or, refused, would have done).
#[derive(Clone, Debug, Default)]
pub struct RollbackReport {
    /// The differences applied, from the latest snapshot to the chosen one.
    pub changes: Vec<Change>,
    /// Live entries that no longer matched the latest snapshot (overridden with `force`).
    pub drift: Vec<String>,
}

/// Maps the root entries of a snapshot to the absolute paths they were backed up from.
fn roots(snapshot: &SnapshotEntry) -> BTreeMap<String, PathBuf> {
    snapshot
        .snapshot
        .paths
        .iter()
        .filter_map(|p| {
            let path = PathBuf::from(p);
            let name = path.file_name()?.to_string_lossy().into_owned();
            Some((name, path))
        })
        .collect()
}

fn live_path(roots: &BTreeMap<String, PathBuf>, snapshot_path: &str) -> Option<PathBuf> {
    let (top, rest) = snapshot_path.split_once('/').unwrap_or((snapshot_path, ""));
    let base = roots.get(top)?;
    Some(if rest.is_empty() { base.clone() } else { base.join(rest) })
}

/// Entries of `latest` whose live copy differs (content, type, or gone).
async fn drift(reader: &Reader, latest: &SnapshotEntry, roots: &BTreeMap<String, PathBuf>) -> Result<Vec<String>> {
    let mut entries = Vec::new();
    reader
        .walk(&latest.snapshot.root, b"", true, |entry| {
            entries.push(entry);
            Ok(())
        })
        .await?;
    let mut drift = Vec::new();
    for entry in entries {
        let rel = entry.path_lossy();
        let Some(live) = live_path(roots, &rel) else { continue };
        let stat = std::fs::symlink_metadata(&live);
        let matches = match (&entry.node.kind, &stat) {
            (_, Err(_)) => false,
            (NodeKind::Dir { .. }, Ok(s)) => s.is_dir(),
            (NodeKind::Symlink { target }, Ok(s)) => {
                s.file_type().is_symlink()
                    && std::fs::read_link(&live).is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice())
            }
            (NodeKind::File { size, blake3, .. }, Ok(s)) => {
                s.is_file() && s.len() == *size && file_blake3(&live).is_ok_and(|h| h == *blake3)
            }
            (_, Ok(_)) => true,
        };
        if !matches {
            drift.push(live.display().to_string());
        }
    }
    Ok(drift)
}

fn file_blake3(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

/// One step of the swap phase, for undoing it.
enum Step {
    /// The live entry was moved aside to `.1`.
    MovedAside(PathBuf, PathBuf),
    /// A staged entry was put in place at `.0`.
    Placed(PathBuf),
}

/// Rolls the live files of `latest`'s source back to `target`.
///
/// # Errors
/// [`Error::LiveFilesChanged`] if live files differ from `latest` and
/// `force` is off (nothing changed); [`Error::RollbackFailed`] if staging or
/// swapping failed (live files as they were); engine errors reading the
/// snapshots.
pub async fn rollback(
    reader: &Reader,
    latest: &SnapshotEntry,
    target: &SnapshotEntry,
    force: bool,
) -> Result<RollbackReport> {
    let mut roots_map = roots(target);
    roots_map.extend(roots(latest));
    let changes = reader.diff(latest, target).await?;
    let mut drifted = drift(reader, latest, &roots_map).await?;
    // An entry the rollback adds must not already exist live.
    for change in changes.iter().filter(|c| c.kind == ChangeKind::Added) {
        if let Some(live) = live_path(&roots_map, &change.path)
            && std::fs::symlink_metadata(&live).is_ok()
            && !drifted.contains(&live.display().to_string())
        {
            drifted.push(live.display().to_string());
        }
    }
    if !drifted.is_empty() && !force {
        return Err(Error::LiveFilesChanged(drifted));
    }
    let report = RollbackReport {
        changes: changes.clone(),
        drift: drifted,
    };

    // Entries to swap: skip directory metadata, and anything under an
    // added or removed directory (it moves with its directory).
    let mut work: Vec<(&Change, PathBuf)> = Vec::new();
    let mut covered: Vec<String> = Vec::new();
    for change in &changes {
        if covered.iter().any(|dir| change.path.starts_with(&format!("{dir}/"))) {
            continue;
        }
        if change.is_dir && change.kind == ChangeKind::Metadata {
            continue;
        }
        if change.is_dir {
            covered.push(change.path.clone());
        }
        let live = live_path(&roots_map, &change.path)
            .ok_or_else(|| Error::RollbackFailed(format!("{}: no live location recorded", change.path)))?;
        work.push((change, live));
    }
    if work.is_empty() {
        return Ok(report);
    }
    let staging = staging_dir(&work)?;
    let result = stage_and_swap(reader, target, &work, &staging).await;
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| report)
}

/// A fresh directory beside the first entry's top-level path.
fn staging_dir(work: &[(&Change, PathBuf)]) -> Result<PathBuf> {
    let first = work.first().map(|(_, live)| live.as_path()).unwrap_or(Path::new("/"));
    let mut base = first;
    while let Some(parent) = base.parent() {
        if parent.is_dir() {
            base = parent;
            break;
        }
        base = parent;
    }
    let dir = base.join(format!(".nfrepo-rollback-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| Error::RollbackFailed(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

async fn stage_and_swap(
    reader: &Reader,
    target: &SnapshotEntry,
    work: &[(&Change, PathBuf)],
    staging: &Path,
) -> Result<()> {
    // Phase 1: stage everything the target snapshot holds.
    let mut staged: Vec<Option<PathBuf>> = Vec::with_capacity(work.len());
    for (i, (change, _)) in work.iter().enumerate() {
        if change.kind == ChangeKind::Removed {
            staged.push(None);
            continue;
        }
        let slot = staging.join(format!("new-{i}"));
        let options = RestoreOptions {
            verify: true,
            ..RestoreOptions::default()
        };
        crate::restore(reader, target, &change.path, &slot, &options)
            .await
            .map_err(|e| Error::RollbackFailed(format!("staging {} failed, nothing changed: {e}", change.path)))?;
        let name = change.path.rsplit('/').next().unwrap_or(&change.path);
        staged.push(Some(slot.join(name)));
    }
    // Phase 2: swap, journaled.
    let mut journal: Vec<Step> = Vec::new();
    for (i, ((_, live), new)) in work.iter().zip(&staged).enumerate() {
        let step = swap_one(live, new.as_deref(), &staging.join(format!("old-{i}")), &mut journal);
        if let Err(e) = step {
            let undo = undo(journal);
            let state = if undo.is_empty() {
                "files left as they were".to_owned()
            } else {
                format!("undo failed too: {}", undo.join("; "))
            };
            return Err(Error::RollbackFailed(format!("{}: {e}; {state}", live.display())));
        }
    }
    Ok(())
}

fn swap_one(live: &Path, new: Option<&Path>, aside: &Path, journal: &mut Vec<Step>) -> std::io::Result<()> {
    if std::fs::symlink_metadata(live).is_ok() {
        std::fs::rename(live, aside)?;
        journal.push(Step::MovedAside(live.to_path_buf(), aside.to_path_buf()));
    }
    if let Some(new) = new {
        if let Some(parent) = live.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(new, live)?;
        journal.push(Step::Placed(live.to_path_buf()));
    }
    Ok(())
}

/// Reverses the journal; returns what could not be undone.
fn undo(journal: Vec<Step>) -> Vec<String> {
    let mut failures = Vec::new();
    for step in journal.into_iter().rev() {
        let result = match &step {
            Step::Placed(live) => match std::fs::symlink_metadata(live) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(live),
                Ok(_) => std::fs::remove_file(live),
                Err(e) => Err(e),
            },
            Step::MovedAside(live, aside) => std::fs::rename(aside, live),
        };
        if let Err(e) = result {
            let path = match &step {
                Step::Placed(p) | Step::MovedAside(p, _) => p.display().to_string(),
            };
            failures.push(format!("{path}: {e}"));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::{swap_one, undo};

    #[test]
    fn undo_puts_every_swapped_entry_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("a"), "live a").unwrap();
        std::fs::write(path("new-a"), "staged a").unwrap();
        std::fs::write(path("b"), "live b").unwrap();
        std::fs::write(path("new-c"), "staged c").unwrap();
        let mut journal = Vec::new();
        swap_one(&path("a"), Some(&path("new-a")), &path("old-a"), &mut journal).unwrap();
        swap_one(&path("b"), None, &path("old-b"), &mut journal).unwrap();
        swap_one(&path("c"), Some(&path("new-c")), &path("old-c"), &mut journal).unwrap();
        assert_eq!(std::fs::read_to_string(path("a")).unwrap(), "staged a");
        assert!(!path("b").exists());
        // A later swap fails (its staged entry is missing)...
        assert!(swap_one(&path("d"), Some(&path("new-missing")), &path("old-d"), &mut journal).is_err());
        // ...and undoing the journal restores the live state exactly.
        assert!(undo(journal).is_empty());
        assert_eq!(std::fs::read_to_string(path("a")).unwrap(), "live a");
        assert_eq!(std::fs::read_to_string(path("b")).unwrap(), "live b");
        assert!(!path("c").exists());
    }
}
