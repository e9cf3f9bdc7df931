//! `nfrepo forget`: turns the flags (and `--class`), or else the sources'
//! retention classes in `nfrepo.toml`, into retention policies and renders
//! the engine's decisions.

use std::collections::BTreeMap;

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

/// The policy the flags describe, merged with `--class`; `None` when neither is given.
pub fn policy(args: &ForgetArgs) -> Result<Option<RetentionPolicy>, Failure> {
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
        return Ok(None);
    }
    Ok(Some(policy))
}

/// Each configured source's policy: its `retention` class from
/// `[retention.NAME]` in `nfrepo.toml`, or the built-in class of that name.
fn configured_policies(global: &GlobalArgs) -> Result<BTreeMap<String, RetentionPolicy>, Failure> {
    let Some(config) = crate::config::load(global.config.as_deref())? else {
        return Ok(BTreeMap::new());
    };
    let mut policies = BTreeMap::new();
    for (source, settings) in &config.sources {
        let Some(class) = settings.retention_class() else {
            continue;
        };
        let policy = match config.retention.get(class) {
            Some(policy) => policy.clone(),
            None => RetentionPolicy::class(class).map_err(|e| {
                invalid(format!(
                    "source {source:?}: retention class {class:?} is neither in {} nor built in ({e})",
                    config.path.display()
                ))
            })?,
        };
        if policy.is_empty() {
            return Err(invalid(format!("retention class {class:?} has no rule")));
        }
        policies.insert(source.clone(), policy);
    }
    Ok(policies)
}

pub async fn run(global: &GlobalArgs, args: ForgetArgs) -> Result<i32, Failure> {
    // Flags (or --class) apply to every source; without them each configured
    // source follows its own class, and other sources are left alone.
    let mut options = match policy(&args)? {
        Some(policy) => ForgetOptions::with_policy(policy),
        None => {
            let mut options = ForgetOptions::default();
            options.per_source = configured_policies(global)?;
            if options.per_source.is_empty() {
                return Err(invalid(
                    "no retention policy: use --class NAME or --keep-* options, or give sources a \
                     `retention` class in nfrepo.toml"
                        .into(),
                ));
            }
            options
        }
    };
    // A forget that deletes holds the maintenance lease: busy (exit 75)
    // while a gc or repair runs, as they are while it runs.
    let operation = if args.dry_run {
        Operation::Backup
    } else {
        Operation::Maintenance
    };
    let repo = context::open_repository(global, operation).await?.repo;
    options.source.clone_from(&args.source);
    options.group_by_source_only = args.group_by_source;
    options.dry_run = args.dry_run;
    options.break_lease = args.break_lease;
    let report = repo
        .forget(&options)
        .await
        .map_err(|e| Failure::engine(&e, operation))?;
    crate::trail::replaced_lease(report.replaced_lease.as_ref(), args.break_lease, global);
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
            "settled_forgets": crate::trail::settled_forgets_json(&report.settled),
            "replaced_lease": report.replaced_lease.as_ref().map(crate::trail::replaced_lease_json),
        });
        crate::output::outln!("{value}");
        return Ok(0);
    }
    if !global.quiet {
        crate::trail::settled_forgets(&report.settled);
        for ((source, host), decisions) in &report.groups {
            let label = if host.is_empty() {
                source.clone()
            } else {
                format!("{source} on {host}")
            };
            crate::output::outln!("{label}:");
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
        crate::output::outln!("{} snapshots kept, {verb} {removed}", total - removed);
    }
    Ok(0)
}
