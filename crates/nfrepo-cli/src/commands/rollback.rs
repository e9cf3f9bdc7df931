//! `nfrepo rollback SOURCE [--to SNAPSHOT] [--force]`: put a file source's
//! live files back as an earlier snapshot had them (see
//! `nfrepo_sources::rollback` for the checks and the undo journal).

use nfrepo_engine::{ErrorCode, Operation};

use crate::cli::{GlobalArgs, RollbackArgs};
use crate::context;
use crate::failure::Failure;

const FILE_KINDS: &[&str] = &["files", "config", "logs"];

pub async fn run(global: &GlobalArgs, args: RollbackArgs) -> Result<i32, Failure> {
    let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Restore);
    let repo = context::open_repository(global, Operation::Restore).await?.repo;
    let all = repo.readable_snapshots().await.map_err(fail)?;
    let of_source: Vec<_> = all
        .iter()
        .filter(|s| s.snapshot.source == args.source)
        .cloned()
        .collect();
    let latest = of_source.last().cloned().ok_or_else(|| {
        Failure::new(
            ErrorCode::BackupNotFound,
            Some("SNAPSHOT_NOT_FOUND"),
            format!("no snapshot of source {}", args.source),
        )
    })?;
    if !FILE_KINDS.contains(&latest.snapshot.source_kind.as_str()) {
        return Err(Failure::new(
            ErrorCode::RollbackFailed,
            Some("WRONG_SOURCE_KIND"),
            format!(
                "source {} is of kind {}: rollback is for file sources (use restore --into for databases)",
                args.source, latest.snapshot.source_kind
            ),
        ));
    }
    let target = match &args.to {
        Some(spec) => {
            let chosen = nfrepo_engine::select_snapshot(all.clone(), spec).map_err(fail)?;
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
        None => of_source
            .len()
            .checked_sub(2)
            .and_then(|i| of_source.get(i))
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::BackupNotFound,
                    Some("SNAPSHOT_NOT_FOUND"),
                    format!(
                        "source {} has no snapshot before the latest to roll back to",
                        args.source
                    ),
                )
            })?,
    };
    let reader = repo.reader().await.map_err(fail)?;
    let report = nfrepo_sources::rollback(&reader, &latest, &target, args.force)
        .await
        .map_err(|e| Failure::sources(&e, Operation::Restore))?;
    if global.json {
        let changes: Vec<_> = report
            .changes
            .iter()
            .map(|c| serde_json::json!({"change": c.kind.marker().to_string(), "path": c.path, "dir": c.is_dir}))
            .collect();
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "source": args.source,
                "from": latest.id.to_hex(),
                "to": target.id.to_hex(),
                "changes": changes,
                "overridden_drift": report.drift,
            })
        );
        return Ok(0);
    }
    for path in &report.drift {
        eprintln!("warning: {path} had changed since the latest snapshot; overwritten (--force)");
    }
    if !global.quiet {
        for change in &report.changes {
            let slash = if change.is_dir { "/" } else { "" };
            crate::output::outln!("{} {}{slash}", change.kind.marker(), change.path);
        }
        crate::output::outln!(
            "rolled back {} from snapshot {} to {}: {} changes",
            args.source,
            latest.id.short(),
            target.id.short(),
            report.changes.len()
        );
    }
    Ok(0)
}
