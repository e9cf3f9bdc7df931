//! `nfrepo gc`: one two-phase garbage-collection round and its report.

use nfrepo_engine::{GcOptions, GcReport, Operation, PackCount, Span};

use crate::cli::{GcArgs, GlobalArgs};
use crate::failure::Failure;
use crate::output::outln;
use crate::progress::Progress;
use crate::{context, render};

fn invalid(message: String) -> Failure {
    Failure::usage(message)
}

/// `10%` or `10` → 0.10.
pub fn percent(text: &str) -> Result<f64, Failure> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(invalid(format!(
            "--max-unused {text:?} is not a percentage from 0% to 100%"
        ))),
    }
}

pub async fn run(global: &GlobalArgs, args: GcArgs) -> Result<i32, Failure> {
    let grace = Span::parse(&args.grace).map_err(|e| invalid(e.to_string()))?;
    let max_unused = percent(&args.max_unused)?;
    let repo = context::open_repository(global, Operation::Maintenance).await?.repo;
    let mut options = GcOptions::default();
    options.grace = std::time::Duration::from_secs(grace.as_secs());
    options.dry_run = args.dry_run;
    options.break_lease = args.break_lease;
    options.max_unused = max_unused;
    let work = std::sync::Arc::new(nfrepo_engine::Work::default());
    options.work = Some(work.clone());
    if args.reseal {
        let progress = Progress::work(global, "reseal", work, "packs");
        let report = repo.reseal(&super::reseal::options(options)).await;
        progress.finish().await;
        let report = report.map_err(|e| Failure::engine(&e, Operation::Maintenance))?;
        if global.json {
            outln!("{}", super::reseal::json(&report));
        } else if !global.quiet {
            super::reseal::print(&report);
        }
        return Ok(0);
    }
    let progress = Progress::work(global, "gc", work, "objects");
    let report = repo.gc(&options).await;
    progress.finish().await;
    let report = report.map_err(|e| Failure::engine(&e, Operation::Maintenance))?;
    crate::trail::replaced_lease(report.replaced_lease.as_ref(), args.break_lease, global);
    if global.json {
        outln!("{}", json(&report, grace));
    } else if !global.quiet {
        crate::trail::settled_forgets(&report.settled);
        print_report(&report, grace);
    }
    Ok(0)
}

fn count(c: PackCount) -> serde_json::Value {
    serde_json::json!({"packs": c.packs, "bytes": c.bytes})
}

fn json(r: &GcReport, grace: Span) -> serde_json::Value {
    serde_json::json!({
        "dry_run": r.dry_run,
        "grace": grace.to_string(),
        "snapshots": r.snapshots,
        "live_sessions": r.live_sessions,
        "trees_read": r.trees_read,
        "referenced_blobs": r.referenced_blobs,
        "packs": count(r.total),
        "reclaimable_now_bytes": r.reclaimable_now(),
        "reclaimable_later_bytes": r.reclaimable_later(),
        "deleted": count(r.deleted),
        "planned": count(r.planned),
        "waiting": r.waiting.iter().map(|(why, c)| serde_json::json!({"why": why, "packs": c.packs, "bytes": c.bytes})).collect::<Vec<_>>(),
        "unmarked": count(r.unmarked),
        "repacked": {"packs": r.repacked.packs, "bytes": r.repacked.bytes, "copied_blobs": r.repack_copied_blobs, "written_bytes": r.repack_written_bytes},
        "partly_used": {"packs": r.partly_used.packs, "bytes": r.partly_used.bytes, "unused_bytes": r.partly_used_unused_bytes},
        "index_deltas": {"before": r.deltas_before, "after": r.deltas_after},
        "new_plan": r.new_plan,
        "plans_removed": r.plans_removed,
        "expired_sessions_removed": r.expired_sessions_removed,
        "replaced_lease": r.replaced_lease.as_ref().map(crate::trail::replaced_lease_json),
        "settled_forgets": crate::trail::settled_forgets_json(&r.settled),
        "object_lock": r.object_lock.as_ref().map(|l| serde_json::json!({
            "retention_renewed": l.renewed,
            "retention_renew_refused": l.renew_refused,
            "purged": {"objects": l.purged, "bytes": l.purged_bytes},
            "retained": {
                "objects": l.retained,
                "bytes": l.retained_bytes,
                "first_lapse": l.retained_first_lapse.map(render::rfc3339),
                "until": l.retained_until.map(render::rfc3339),
            },
        })),
    })
}

fn line(label: &str, c: PackCount) -> String {
    format!("{label}: {} packs, {}", c.packs, render::bytes(c.bytes))
}

fn print_report(r: &GcReport, grace: Span) {
    let now = if r.dry_run {
        "reclaimable now (dry run, nothing deleted)"
    } else {
        "reclaimed now"
    };
    outln!(
        "{} snapshots, {} referenced blobs, {} trees read, {} live backup sessions",
        r.snapshots,
        r.referenced_blobs,
        r.trees_read,
        r.live_sessions
    );
    outln!("{}", line("repository", r.total));
    outln!("{}", line(now, r.deleted));
    let planned = if r.dry_run { "would be planned" } else { "newly planned" };
    outln!(
        "{} (reclaimable after the {grace} grace period)",
        line(planned, r.planned)
    );
    for (why, c) in &r.waiting {
        outln!("{} (waiting: {why})", line("planned earlier", *c));
    }
    if r.unmarked.packs > 0 {
        outln!("{}", line("unmarked (referenced again)", r.unmarked));
    }
    if r.repacked.packs > 0 {
        let verb = if r.dry_run { "would repack" } else { "repacked" };
        outln!(
            "{} ({} live blobs copied into {}; the old packs are planned)",
            line(verb, r.repacked),
            r.repack_copied_blobs,
            render::bytes(r.repack_written_bytes)
        );
    }
    if r.partly_used.packs > 0 {
        outln!(
            "{} (about {} unused inside them, kept)",
            line("partly used", r.partly_used),
            render::bytes(r.partly_used_unused_bytes)
        );
    }
    outln!(
        "reclaimable later: {}; index deltas: {} -> {}",
        render::bytes(r.reclaimable_later()),
        r.deltas_before,
        r.deltas_after
    );
    if let Some(l) = &r.object_lock {
        outln!(
            "object lock: {} retentions renewed{}; {} deleted objects freed ({})",
            l.renewed,
            if l.renew_refused > 0 {
                format!(" ({} already retained longer)", l.renew_refused)
            } else {
                String::new()
            },
            l.purged,
            render::bytes(l.purged_bytes)
        );
        if let (Some(first), Some(until)) = (l.retained_first_lapse, l.retained_until) {
            outln!(
                "object lock: {} deleted objects ({}) retained until {} (the first lapses {}); a gc after that frees them",
                l.retained,
                render::bytes(l.retained_bytes),
                render::rfc3339(until),
                render::rfc3339(first)
            );
        }
    }
}
