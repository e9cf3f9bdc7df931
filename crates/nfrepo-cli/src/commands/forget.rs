//! `nfrepo forget`: turns the flags (and `--class`) into a retention policy
//! and renders the engine's decisions.

use nfrepo_engine::{ErrorCode, ForgetOptions, Operation, RetentionPolicy, Span};

use crate::cli::{ForgetArgs, GlobalArgs};
use crate::failure::Failure;
use crate::{context, render};

fn invalid(message: String) -> Failure {
    Failure::new(ErrorCode::SnapshotInvalid, Some("INVALID_ARGUMENT"), message)
}

fn span(text: Option<&String>) -> Result<Option<Span>, Failure> {
    text.map(|t| Span::parse(t).map_err(|e| invalid(e.to_string())))
        .transpose()
}

/// The policy the flags describe, merged with `--class`.
pub fn policy(args: &ForgetArgs) -> Result<RetentionPolicy, Failure> {
    let mut flags = RetentionPolicy::default();
    flags.keep_last = args.keep_last;
    flags.keep_hourly = args.keep_hourly;
    flags.keep_daily = args.keep_daily;
    flags.keep_weekly = args.keep_weekly;
    flags.keep_monthly = args.keep_monthly;
    flags.keep_yearly = args.keep_yearly;
    flags.keep_within = span(args.keep_within.as_ref())?;
    flags.keep_within_hourly = span(args.keep_within_hourly.as_ref())?;
    flags.keep_within_daily = span(args.keep_within_daily.as_ref())?;
    flags.keep_within_weekly = span(args.keep_within_weekly.as_ref())?;
    flags.keep_within_monthly = span(args.keep_within_monthly.as_ref())?;
    flags.keep_within_yearly = span(args.keep_within_yearly.as_ref())?;
    flags.keep_tag.clone_from(&args.keep_tags);
    let policy = match &args.class {
        Some(name) => RetentionPolicy::class(name)
            .map_err(|e| invalid(e.to_string()))?
            .merged(&flags),
        None => flags,
    };
    if policy.is_empty() {
        return Err(invalid(
            "no retention policy given: use --class NAME or at least one --keep-* option".into(),
        ));
    }
    Ok(policy)
}

pub async fn run(global: &GlobalArgs, args: ForgetArgs) -> Result<i32, Failure> {
    let policy = policy(&args)?;
    let repo = context::open_repository(global, Operation::Backup).await?.repo;
    let mut options = ForgetOptions::with_policy(policy);
    options.source.clone_from(&args.source);
    options.group_by_source_only = args.group_by_source;
    options.dry_run = args.dry_run;
    let report = repo
        .forget(&options)
        .await
        .map_err(|e| Failure::engine(&e, Operation::Backup))?;
    let removed = report.removed().count();
    let total: usize = report.groups.iter().map(|(_, d)| d.len()).sum();
    if global.json {
        let groups: Vec<_> = report
            .groups
            .iter()
            .map(|((source, host), decisions)| {
                let snapshots: Vec<_> = decisions
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "id": d.entry.id.to_hex(),
                            "time": render::time_ns(d.entry.snapshot.time_ns),
                            "keep": d.keep(),
                            "reasons": d.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                serde_json::json!({"source": source, "host": host, "snapshots": snapshots})
            })
            .collect();
        let value = serde_json::json!({
            "dry_run": args.dry_run,
            "kept": total - removed,
            "removed": removed,
            "groups": groups,
        });
        println!("{value}");
        return Ok(0);
    }
    if !global.quiet {
        for ((source, host), decisions) in &report.groups {
            let label = if host.is_empty() {
                source.clone()
            } else {
                format!("{source} on {host}")
            };
            println!("{label}:");
            let rows: Vec<Vec<String>> = decisions
                .iter()
                .map(|d| {
                    let reasons = if d.keep() {
                        d.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    } else {
                        "no rule keeps it".into()
                    };
                    vec![
                        d.entry.id.short(),
                        render::time_ns(d.entry.snapshot.time_ns),
                        if d.keep() { "keep" } else { "remove" }.into(),
                        reasons,
                    ]
                })
                .collect();
            render::table(&["ID", "TIME", "DECISION", "WHY"], &rows);
        }
        let verb = if args.dry_run { "would remove" } else { "removed" };
        println!("{} snapshots kept, {verb} {removed}", total - removed);
    }
    Ok(0)
}
