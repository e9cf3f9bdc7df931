//! `nfrepo drill SOURCE | --all [--snapshot S]`: a disaster-recovery drill
//! (`nfrepo_sources::drill`): the source's latest (or the given) snapshot is
//! restored into a throwaway server or directory, checked and timed, and
//! the outcome recorded in the repository. `--repo` drills from any
//! repository, a replica included.
//!
//! `nfrepo drill --history [SOURCE]` lists the recorded drills, oldest first.
//!
//! A failed drill exits with its code (RESTORE_FAILED, BACKUP_CORRUPTED or
//! BACKUP_NOT_FOUND) and names the check that failed; with `--all` every
//! source is drilled and the first failure decides the exit code.

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_format::DrillRecord;

use crate::cli::{DrillArgs, GlobalArgs};
use crate::context;
use crate::failure::Failure;
use crate::output::escape;
use crate::render;

pub async fn run(global: &GlobalArgs, args: DrillArgs) -> Result<i32, Failure> {
    if args.history {
        return history(global, args.source.as_deref()).await;
    }
    let config = crate::config::load(global.config.as_deref())?.ok_or_else(|| {
        Failure::usage("drill needs the configured sources: no nfrepo.toml found (give --config)".to_owned())
    })?;
    let names: Vec<String> = match &args.source {
        Some(name) => {
            config.source(name)?;
            vec![name.clone()]
        }
        None => config.sources.keys().cloned().collect(),
    };
    if names.is_empty() {
        return Err(Failure::usage(format!(
            "{} configures no source to drill",
            config.path.display()
        )));
    }
    let repo = context::open_repository(global, Operation::Restore).await?.repo;
    let mut records = Vec::with_capacity(names.len());
    for name in names {
        let source = config.source(&name)?;
        let mut options = nfrepo_sources::DrillOptions::new(name.clone());
        options.snapshot.clone_from(&args.snapshot);
        options.load_jobs = args.load_jobs.map_or(0, usize::from);
        if let Some(drill) = &source.drill {
            options.queries.clone_from(&drill.queries);
            options.bin_dir.clone_from(&drill.server_bin_dir);
        }
        if !global.quiet && !global.json {
            eprintln!("drilling {name}…");
        }
        let record = nfrepo_sources::drill(&repo, &options)
            .await
            .map_err(|e| Failure::sources(&e, Operation::Restore))?;
        if !global.json && !global.quiet {
            print_record(&record);
        }
        records.push(record);
    }
    if global.json {
        let value: Vec<_> = records.iter().map(record_json).collect();
        match (&args.source, value.as_slice()) {
            (Some(_), [one]) => crate::output::outln!("{one}"),
            _ => crate::output::outln!("{}", serde_json::Value::Array(value)),
        }
    }
    let failures: Vec<Failure> = records.iter().filter_map(failure_of).collect();
    let mut exit = 0;
    for failure in &failures {
        let code = failure.print_line();
        if exit == 0 {
            exit = code;
        }
    }
    Ok(exit)
}

/// The failure a failed drill exits with.
fn failure_of(record: &DrillRecord) -> Option<Failure> {
    if record.passed {
        return None;
    }
    let code = match record.code.as_str() {
        "BACKUP_CORRUPTED" => ErrorCode::BackupCorrupted,
        "BACKUP_NOT_FOUND" => ErrorCode::BackupNotFound,
        _ => ErrorCode::RestoreFailed,
    };
    Some(Failure::new(
        code,
        Some("DRILL_FAILED"),
        format!(
            "drill of {} failed at check {:?}: {}",
            record.source, record.failed_check, record.message
        ),
    ))
}

fn seconds(ms: Option<u64>) -> Option<f64> {
    #[expect(clippy::cast_precision_loss, reason = "milliseconds of a drill fit an f64 exactly")]
    ms.map(|ms| ms as f64 / 1000.0)
}

fn record_json(record: &DrillRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id.to_hex(),
        "source": record.source,
        "source_kind": record.source_kind,
        "snapshot_id": record.snapshot.map(|s| s.to_hex()),
        "snapshot_time": record.snapshot.map(|_| render::time_ns(record.snapshot_time_ns)),
        "started": render::time_ns(record.started_ns),
        "by": record.by,
        "result": if record.passed { "passed" } else { "failed" },
        "code": (!record.passed).then_some(record.code.as_str()),
        "failed_check": (!record.passed).then_some(record.failed_check.as_str()),
        "message": (!record.passed).then_some(record.message.as_str()),
        "rto_seconds": seconds(record.rto_ms),
        "rpo_seconds": seconds(record.rpo_ms),
        "phases": record.phases.iter().map(|p| serde_json::json!({"name": p.name, "seconds": seconds(Some(p.ms))})).collect::<Vec<_>>(),
        "checks": record.checks.iter().map(|c| serde_json::json!({"name": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
    })
}

fn print_record(record: &DrillRecord) {
    let snapshot = record
        .snapshot
        .map_or_else(|| "no snapshot".to_owned(), |s| format!("snapshot {}", s.short()));
    for check in &record.checks {
        crate::output::outln!(
            "  {} {}: {}",
            if check.passed { "ok  " } else { "FAIL" },
            escape::text(&check.name),
            escape::text(&check.detail)
        );
    }
    let phases: Vec<String> = record
        .phases
        .iter()
        .map(|p| format!("{} {:.1}s", p.name, seconds(Some(p.ms)).unwrap_or_default()))
        .collect();
    let rpo = seconds(record.rpo_ms).map_or_else(String::new, |s| format!(", RPO {s:.0}s"));
    if record.passed {
        crate::output::outln!(
            "drill of {} passed ({snapshot}): RTO {:.1}s{rpo} ({})",
            escape::text(&record.source),
            seconds(record.rto_ms).unwrap_or_default(),
            phases.join(", ")
        );
    } else {
        crate::output::outln!(
            "drill of {} FAILED ({snapshot}) at {}{rpo}",
            escape::text(&record.source),
            escape::text(&record.failed_check)
        );
    }
}

async fn history(global: &GlobalArgs, source: Option<&str>) -> Result<i32, Failure> {
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let history = repo
        .drill_history()
        .await
        .map_err(|e| Failure::engine(&e, Operation::Inspect))?;
    let records: Vec<&DrillRecord> = history
        .records
        .iter()
        .filter(|r| source.is_none_or(|s| r.source == s))
        .collect();
    if global.json {
        let value: Vec<_> = records.iter().map(|r| record_json(r)).collect();
        crate::output::outln!("{}", serde_json::Value::Array(value));
    } else {
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                vec![
                    render::time_ns(r.started_ns),
                    r.source.clone(),
                    r.snapshot.map(|s| s.short()).unwrap_or_default(),
                    if r.passed {
                        "passed".into()
                    } else {
                        format!("FAILED {}", r.code)
                    },
                    seconds(r.rto_ms).map_or_else(|| "-".into(), |s| format!("{s:.1}s")),
                    seconds(r.rpo_ms).map_or_else(|| "-".into(), |s| format!("{s:.0}s")),
                    r.failed_check.clone(),
                ]
            })
            .collect();
        render::table(
            &["started", "source", "snapshot", "result", "rto", "rpo", "failed check"],
            &rows,
        );
    }
    // A record that does not open is damage, never silently left out.
    let mut exit = 0;
    for (object, why) in &history.damaged {
        exit = Failure::new(
            ErrorCode::BackupCorrupted,
            Some("DRILL_RECORD_DAMAGED"),
            format!("drill record {object} does not open: {why}"),
        )
        .print_line();
    }
    Ok(exit)
}
