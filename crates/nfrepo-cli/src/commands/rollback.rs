//! `nfrepo rollback SOURCE [--to SNAPSHOT|last-good] [--force]`: put a file
//! source's live files back as an earlier snapshot had them (see
//! `nfrepo_sources::rollback` for the checks, the scope and the undo
//! journal), then run the source's `health_check`; if it fails, fall back
//! to the previous good snapshot (see `deploy_check`).
//!
//! The scope is the source as configured in `nfrepo.toml` now (its paths
//! and include/exclude rules); for a source not in the configuration it is
//! the latest snapshot's paths, and only entries the snapshots hold.

use std::path::PathBuf;

use nfrepo_engine::{ErrorCode, GoodMarkers, Operation, Repository, SnapshotEntry};
use nfrepo_sources::{FilesOptions, RollbackReport, RollbackScope};

use crate::cli::{GlobalArgs, RollbackArgs};
use crate::commands::deploy_check::Fallback;
use crate::config::{self, SourceConfig};
use crate::context;
use crate::failure::Failure;

/// Snapshot kinds `rollback` accepts for a source not in the configuration.
const FILE_KINDS: &[&str] = &["files", "config", "logs", "artifact"];

/// The `--to` value naming the newest snapshot marked good.
const LAST_GOOD: &str = "last-good";

fn not_found(detail: &'static str, message: String) -> Failure {
    Failure::new(ErrorCode::BackupNotFound, Some(detail), message)
}

pub(crate) fn fail(e: &nfrepo_engine::Error) -> Failure {
    Failure::engine(e, Operation::Restore)
}

/// A source's snapshots, oldest first, and what `rollback` needs to know of it.
pub(crate) struct SourceState {
    pub name: String,
    pub configured: Option<SourceConfig>,
    pub snapshots: Vec<SnapshotEntry>,
    pub scope: RollbackScope,
}

impl SourceState {
    pub(crate) fn latest(&self) -> Option<&SnapshotEntry> {
        self.snapshots.last()
    }

    /// Loads the source's snapshots and scope; refuses non-file sources.
    pub(crate) async fn load(global: &GlobalArgs, repo: &Repository, name: &str) -> Result<Self, Failure> {
        let configured = config::load(global.config.as_deref())?.and_then(|mut c| c.sources.remove(name));
        let all = repo.readable_snapshots().await.map_err(|e| fail(&e))?;
        let snapshots: Vec<SnapshotEntry> = all.into_iter().filter(|s| s.snapshot.source == name).collect();
        let latest = snapshots
            .last()
            .ok_or_else(|| not_found("SNAPSHOT_NOT_FOUND", format!("no snapshot of source {name}")))?;
        let kind_ok = match &configured {
            Some(source) => source.kind.is_file_tree(),
            None => FILE_KINDS.contains(&latest.snapshot.source_kind.as_str()),
        };
        if !kind_ok {
            let kind = configured
                .as_ref()
                .map_or(latest.snapshot.source_kind.as_str(), |c| c.kind.name());
            return Err(Failure::new(
                ErrorCode::RollbackFailed,
                Some("WRONG_SOURCE_KIND"),
                format!(
                    "source {name} is of kind {kind}: rollback is for file sources (use restore --into for databases)"
                ),
            ));
        }
        let invalid = |e: nfrepo_sources::Error| Failure::sources(&e, Operation::Restore);
        let scope = match &configured {
            Some(source) => {
                let mut options = FilesOptions::default();
                options.include.clone_from(&source.include);
                options.exclude.clone_from(&source.exclude);
                RollbackScope::new(&source.paths, &options).map_err(invalid)?
            }
            None => {
                let paths: Vec<PathBuf> = latest.snapshot.paths.iter().map(PathBuf::from).collect();
                RollbackScope::unconfigured(&paths).map_err(invalid)?
            }
        };
        Ok(Self {
            name: name.to_owned(),
            configured,
            snapshots,
            scope,
        })
    }

    /// The newest snapshot of the source with a good marker, other than `except`.
    pub(crate) fn newest_good(&self, good: &GoodMarkers, except: Option<&SnapshotEntry>) -> Option<SnapshotEntry> {
        let candidates: Vec<SnapshotEntry> = self
            .snapshots
            .iter()
            .filter(|s| except.is_none_or(|e| e.id != s.id))
            .cloned()
            .collect();
        good.newest(&candidates).cloned()
    }

    /// The configured health check and its time limit, if any.
    pub(crate) fn health_check(&self) -> Option<(&str, std::time::Duration)> {
        let source = self.configured.as_ref()?;
        Some((source.health_check.as_deref()?, source.health_timeout()))
    }
}

pub async fn run(global: &GlobalArgs, args: RollbackArgs) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Restore).await?.repo;
    let state = SourceState::load(global, &repo, &args.source).await?;
    let latest = state
        .latest()
        .cloned()
        .ok_or_else(|| not_found("SNAPSHOT_NOT_FOUND", format!("no snapshot of source {}", args.source)))?;
    let health = if args.no_health_check {
        None
    } else {
        state.health_check()
    };
    let good = if args.to.as_deref() == Some(LAST_GOOD) || health.is_some() {
        repo.good_markers().await.map_err(|e| fail(&e))?
    } else {
        GoodMarkers::default()
    };
    let target = match args.to.as_deref() {
        Some(LAST_GOOD) => state.newest_good(&good, None).ok_or_else(|| {
            not_found(
                "NO_GOOD_SNAPSHOT",
                format!(
                    "source {} has no snapshot marked good (nfrepo mark-good SNAPSHOT)",
                    args.source
                ),
            )
        })?,
        Some(spec) => {
            let all = repo.readable_snapshots().await.map_err(|e| fail(&e))?;
            let chosen = nfrepo_engine::select_snapshot(all, spec).map_err(|e| fail(&e))?;
            if chosen.snapshot.source != args.source {
                return Err(Failure::new(
                    ErrorCode::RollbackFailed,
                    Some("WRONG_SOURCE"),
                    format!(
                        "snapshot {} is of source {}, not {}",
                        chosen.id.short(),
                        chosen.snapshot.source,
                        args.source
                    ),
                ));
            }
            chosen
        }
        None => state
            .snapshots
            .len()
            .checked_sub(2)
            .and_then(|i| state.snapshots.get(i))
            .cloned()
            .ok_or_else(|| {
                not_found(
                    "SNAPSHOT_NOT_FOUND",
                    format!(
                        "source {} has no snapshot before the latest to roll back to",
                        args.source
                    ),
                )
            })?,
    };
    let reader = repo.reader().await.map_err(|e| fail(&e))?;
    let report = nfrepo_sources::rollback(&reader, &latest, &target, &state.scope, args.force)
        .await
        .map_err(|e| Failure::sources(&e, Operation::Restore))?;
    render(global, &state.name, &latest, &target, &report);
    let Some((command, timeout)) = health else {
        return Ok(0);
    };
    let fallback = Fallback {
        global,
        reader: &reader,
        state: &state,
        good: &good,
    };
    fallback.check_or_fall_back(&target, command, timeout).await
}

/// Prints what a rollback changed (stdout) and what it overrode (stderr).
pub(crate) fn render(
    global: &GlobalArgs,
    source: &str,
    from: &SnapshotEntry,
    to: &SnapshotEntry,
    report: &RollbackReport,
) {
    if global.json {
        let changes: Vec<_> = report
            .changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "change": c.kind.marker().to_string(),
                    "path": c.path,
                    "live": c.live.display().to_string(),
                    "dir": c.is_dir,
                })
            })
            .collect();
        let paths = |list: &[PathBuf]| list.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "source": source,
                "from": from.id.to_hex(),
                "to": to.id.to_hex(),
                "changes": changes,
                "overridden_drift": paths(&report.drift),
                "kept": paths(&report.kept),
                "recovered": report.recovered.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        );
        return;
    }
    for recovered in &report.recovered {
        eprintln!("note: {recovered}");
    }
    for path in &report.drift {
        eprintln!(
            "warning: {} had changed since the latest snapshot; overwritten (--force)",
            path.display()
        );
    }
    for path in &report.kept {
        eprintln!(
            "note: {} is not in the snapshot but holds files outside the source; kept",
            path.display()
        );
    }
    if !global.quiet {
        for change in &report.changes {
            let slash = if change.is_dir { "/" } else { "" };
            crate::output::outln!("{} {}{slash}", change.kind.marker(), change.path);
        }
        crate::output::outln!(
            "rolled back {source} from snapshot {} to {}: {} changes",
            from.id.short(),
            to.id.short(),
            report.changes.len()
        );
    }
}
