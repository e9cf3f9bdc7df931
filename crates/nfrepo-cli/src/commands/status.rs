//! `nfrepo status`: per source, the oldest and newest moment a restore can
//! reach and whether its change log (PostgreSQL WAL, MySQL/MariaDB binlog)
//! is whole, from one snapshot listing (`nfrepo_sources::recovery_windows`).
//!
//! A gap after a source's newest base backup or dump is an error: every
//! source is still shown, then the command fails with
//! `BACKUP_FAILED/WAL_GAP` or `BACKUP_FAILED/BINLOG_GAP`, so a cron job or
//! a monitoring check sees a non-zero exit. Configured sources without a
//! snapshot are shown as such (the `missed_backup` alert covers their age).

use std::collections::BTreeMap;

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_sources::{RecoveryWindow, recovery_windows};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::commands::check::fail_quietly;
use crate::context;
use crate::failure::Failure;
use crate::output::{escape, outln};
use crate::render;

pub async fn run(global: &GlobalArgs, args: StatusArgs) -> Result<i32, Failure> {
    let config = crate::config::load(global.config.as_deref())?;
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let entries = repo
        .readable_snapshots()
        .await
        .map_err(|e| Failure::engine(&e, Operation::Inspect))?;
    let mut windows: BTreeMap<String, Option<RecoveryWindow>> = recovery_windows(&entries)
        .into_iter()
        .map(|w| (w.source.clone(), Some(w)))
        .collect();
    for name in config.iter().flat_map(|c| c.sources.keys()) {
        windows.entry(name.clone()).or_insert(None);
    }
    if !args.sources.is_empty() {
        if let Some(unknown) = args.sources.iter().find(|s| !windows.contains_key(*s)) {
            return Err(Failure::new(
                ErrorCode::BackupNotFound,
                Some("NO_SUCH_SOURCE"),
                format!("source {unknown:?} has no snapshot and is not configured"),
            ));
        }
        windows.retain(|name, _| args.sources.contains(name));
    }
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let gaps: Vec<Failure> = windows
        .values()
        .flatten()
        .filter_map(RecoveryWindow::gap_error)
        .map(|e| Failure::sources(&e, Operation::Inspect))
        .collect();
    if global.json {
        let list: Vec<serde_json::Value> = windows
            .iter()
            .map(|(name, w)| window_json(name, w.as_ref(), now_ns))
            .collect();
        outln!("{}", serde_json::Value::Array(list));
    } else {
        let rows: Vec<Vec<String>> = windows
            .iter()
            .map(|(name, w)| window_row(name, w.as_ref(), now_ns))
            .collect();
        render::table(
            &[
                "SOURCE",
                "KIND",
                "SNAPSHOTS",
                "RECOVERABLE FROM",
                "RECOVERABLE TO",
                "AGE",
                "LOG",
            ],
            &rows,
        );
        if gaps.len() > 1 {
            for gap in &gaps {
                outln!("{}", escape::text(&gap.message));
            }
        }
    }
    match gaps.as_slice() {
        [] => Ok(0),
        [one] => Ok(fail_quietly(one)),
        [first, ..] => Ok(fail_quietly(&Failure::new(
            first.code,
            first.detail,
            format!(
                "{} sources cannot be recovered to now: their change log has a gap",
                gaps.len()
            ),
        ))),
    }
}

fn age_s(now_ns: i64, ns: i64) -> u64 {
    u64::try_from(now_ns.saturating_sub(ns) / 1_000_000_000).unwrap_or(0)
}

fn log_text(w: &RecoveryWindow) -> String {
    let Some(log) = &w.log else {
        return "-".into();
    };
    let unit = match log.kind {
        nfrepo_sources::LogKind::Wal => "segments",
        _ => "files",
    };
    let newest = log
        .newest_file
        .as_deref()
        .map(|f| format!(" to {f}"))
        .unwrap_or_default();
    let state = log
        .gap
        .as_ref()
        .map_or_else(|| "whole".to_owned(), |gap| format!("GAP at {}", gap.missing));
    format!("{} {} {unit}{newest}, {state}", log.kind.as_str(), log.files)
}

fn window_row(name: &str, w: Option<&RecoveryWindow>, now_ns: i64) -> Vec<String> {
    let Some(w) = w else {
        return vec![
            name.to_owned(),
            "(configured)".into(),
            "0".into(),
            "-".into(),
            "never backed up".into(),
            "-".into(),
            "-".into(),
        ];
    };
    let time = |ns: Option<i64>| ns.map_or_else(|| "-".to_owned(), render::time_ns);
    vec![
        name.to_owned(),
        w.kind.clone(),
        w.snapshots.to_string(),
        time(w.oldest_ns),
        time(w.newest_ns),
        w.newest_ns
            .map_or_else(|| "-".to_owned(), |ns| nfrepo_ops::age(age_s(now_ns, ns))),
        log_text(w),
    ]
}

fn window_json(name: &str, w: Option<&RecoveryWindow>, now_ns: i64) -> serde_json::Value {
    let Some(w) = w else {
        return serde_json::json!({"source": name, "configured_only": true, "snapshots": 0});
    };
    let time = |ns: Option<i64>| ns.map(render::time_ns);
    let error = w.gap_error().map(|e| Failure::sources(&e, Operation::Inspect));
    serde_json::json!({
        "source": name,
        "kind": w.kind,
        "snapshots": w.snapshots,
        "oldest_recoverable": time(w.oldest_ns),
        "newest_recoverable": time(w.newest_ns),
        "newest_recoverable_age_seconds": w.newest_ns.map(|ns| age_s(now_ns, ns)),
        "log": w.log.as_ref().map(|log| serde_json::json!({
            "kind": log.kind.as_str(),
            "files": log.files,
            "newest_file": log.newest_file,
            "whole": log.gap.is_none(),
            "missing": log.gap.as_ref().map(|g| &g.missing),
        })),
        "error": error.map(|f| serde_json::json!({
            "code": f.code_str(),
            "detail": f.detail,
            "message": f.message,
        })),
    })
}
