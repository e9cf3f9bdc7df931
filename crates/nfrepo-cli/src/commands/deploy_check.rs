//! Health checks of deployed file sources, and the automatic fallback.
//!
//! A source's `health_check` runs through the same child-process path as
//! hooks (`sh -c`, nfrepo's secrets removed from its environment, output on
//! stderr), in its own process group so that a timed-out check is killed
//! with everything it started. It runs after `nfrepo rollback` and on
//! `nfrepo deploy-check SOURCE`. When it fails or outlives `health_timeout`,
//! the live files are rolled back (forced: they are what this command just
//! checked) to the newest snapshot marked good other than the one that
//! failed, and the check runs once more:
//!
//! | outcome | exit |
//! |---|---|
//! | the check passes | 0 |
//! | it fails, the fallback passes | `ROLLBACK_FAILED` / `HEALTH_CHECK_FAILED`: the files are at the good snapshot, not where asked |
//! | it fails, no good snapshot to fall back to | `ROLLBACK_FAILED` / `NO_GOOD_SNAPSHOT`: the files are left as checked |
//! | the fallback rollback or its check fails too | `ROLLBACK_FAILED` / `FALLBACK_FAILED` |

use std::time::Duration;

use nfrepo_engine::{ErrorCode, GoodMarkers, Operation, Reader, SnapshotEntry};

use crate::cli::{DeployCheckArgs, GlobalArgs};
use crate::commands::rollback::{self, SourceState, fail};
use crate::commands::source::hook_command;
use crate::context;
use crate::failure::Failure;

/// Runs `command` as `source`'s health check; `Err` says how it failed.
pub async fn run_health_check(source: &str, command: &str, timeout: Duration) -> Result<(), String> {
    let mut child = hook_command(source, command)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("the health check could not start: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(status.code().map_or_else(
            || "the health check was killed by a signal".to_owned(),
            |c| format!("the health check exited with status {c}"),
        )),
        Ok(Err(e)) => Err(format!("waiting for the health check failed: {e}")),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let group = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(format!(
                "the health check did not finish within {} s (health_timeout)",
                timeout.as_secs()
            ))
        }
    }
}

fn rollback_failed(detail: &'static str, message: String) -> Failure {
    Failure::new(ErrorCode::RollbackFailed, Some(detail), message)
}

/// What the fallback needs: the source, its good markers and a reader.
pub struct Fallback<'a> {
    pub global: &'a GlobalArgs,
    pub reader: &'a Reader,
    pub state: &'a SourceState,
    pub good: &'a GoodMarkers,
}

impl Fallback<'_> {
    /// Runs the health check on the live files, which equal `current` (or,
    /// for `None`, no known snapshot); on failure, falls back.
    pub async fn check_or_fall_back(
        &self,
        current: &SnapshotEntry,
        command: &str,
        timeout: Duration,
    ) -> Result<i32, Failure> {
        self.check_or_fall_back_from(Some(current), current, command, timeout)
            .await
    }

    async fn check_or_fall_back_from(
        &self,
        current: Option<&SnapshotEntry>,
        live_as: &SnapshotEntry,
        command: &str,
        timeout: Duration,
    ) -> Result<i32, Failure> {
        let name = &self.state.name;
        let why = match run_health_check(name, command, timeout).await {
            Ok(()) => {
                if !self.global.quiet && !self.global.json {
                    crate::output::outln!("health check of {name} passed");
                }
                return Ok(0);
            }
            Err(why) => why,
        };
        let at = current.map_or_else(
            || "the deployed files".to_owned(),
            |c| format!("snapshot {}", c.id.short()),
        );
        eprintln!("warning: {why} at {at}; falling back to the last good snapshot");
        let Some(good) = self.state.newest_good(self.good, current) else {
            return Err(rollback_failed(
                "NO_GOOD_SNAPSHOT",
                format!(
                    "{why} at {at}, and source {name} has no other snapshot marked good to fall back to; \
                     the files were left as checked"
                ),
            ));
        };
        let report = nfrepo_sources::rollback(self.reader, live_as, &good, &self.state.scope, true)
            .await
            .map_err(|e| {
                rollback_failed(
                    "FALLBACK_FAILED",
                    format!(
                        "{why} at {at}; rolling back to good snapshot {} failed too: {e}",
                        good.id.short()
                    ),
                )
            })?;
        rollback::render(self.global, name, live_as, &good, &report);
        match run_health_check(name, command, timeout).await {
            Ok(()) => Err(rollback_failed(
                "HEALTH_CHECK_FAILED",
                format!(
                    "{why} at {at}; rolled back to good snapshot {}, which passed the health check",
                    good.id.short()
                ),
            )),
            Err(again) => Err(rollback_failed(
                "FALLBACK_FAILED",
                format!(
                    "{why} at {at}; rolled back to good snapshot {}, and {again} there too",
                    good.id.short()
                ),
            )),
        }
    }
}

/// `nfrepo deploy-check SOURCE [--mark-good]`: checks the deployed files.
pub async fn run(global: &GlobalArgs, args: DeployCheckArgs) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Restore).await?.repo;
    let state = SourceState::load(global, &repo, &args.source).await?;
    let Some((command, timeout)) = state.health_check() else {
        return Err(Failure::usage(format!(
            "source {} has no health_check in the configuration",
            args.source
        )));
    };
    let latest = state.latest().cloned().ok_or_else(|| {
        Failure::new(
            ErrorCode::BackupNotFound,
            Some("SNAPSHOT_NOT_FOUND"),
            format!("no snapshot of source {}", args.source),
        )
    })?;
    let reader = repo.reader().await.map_err(|e| fail(&e))?;
    let drift = nfrepo_sources::live_drift(&reader, &latest, &state.scope)
        .await
        .map_err(|e| Failure::sources(&e, Operation::Restore))?;
    // The live files are the latest snapshot only if nothing drifted.
    let current = drift.is_empty().then_some(&latest);
    let good = repo.good_markers().await.map_err(|e| fail(&e))?;
    let fallback = Fallback {
        global,
        reader: &reader,
        state: &state,
        good: &good,
    };
    fallback
        .check_or_fall_back_from(current, &latest, command, timeout)
        .await?;
    if args.mark_good {
        let Some(current) = current else {
            return Err(rollback_failed(
                "LIVE_FILES_CHANGED",
                format!(
                    "the health check passed, but the live files differ from the latest snapshot of {} ({}); \
                     take a snapshot first, then mark it good",
                    args.source,
                    drift
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let note = format!("deploy-check: {command}");
        repo.mark_good(&current.id.to_hex(), &note)
            .await
            .map_err(|e| Failure::engine(&e, Operation::Backup))?;
        if global.json {
            crate::output::outln!(
                "{}",
                serde_json::json!({"source": args.source, "snapshot": current.id.to_hex(), "healthy": true, "good": true})
            );
        } else if !global.quiet {
            crate::output::outln!("snapshot {} of {} is marked good", current.id.short(), args.source);
        }
    } else if global.json {
        crate::output::outln!("{}", serde_json::json!({"source": args.source, "healthy": true}));
    }
    Ok(0)
}
