//! `nfrepo replicate [--to URL|NAME]` and `nfrepo replicate status`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nfrepo_engine::{Operation, ReplicaStatus, ReplicateOptions, ReplicateReport, VerifySubset, Work};
use nfrepo_format::PassResult;

use crate::cli::{GlobalArgs, ReplicateArgs, ReplicateCommand, ReplicateStatusArgs};
use crate::context::{self, RetryingStore};
use crate::failure::Failure;
use crate::output::{escape, outln};
use crate::render;

/// One replica to work on.
struct Target {
    /// The configured name, or the URL given with `--to`.
    label: String,
    url: String,
    credentials_file: Option<PathBuf>,
}

pub async fn run(global: &GlobalArgs, args: ReplicateArgs) -> Result<i32, Failure> {
    if let Some(ReplicateCommand::Status(status_args)) = args.command {
        return status(global, status_args).await;
    }
    let targets = targets(global, args.to.as_deref())?;
    let mut options = ReplicateOptions::default();
    options.jobs = usize::from(args.jobs);
    options.delete_after = parse_duration(&args.delete_after)?;
    options.verify = match (&args.verify_subset, args.verify) {
        (Some(text), _) => Some(VerifySubset::parse(text).map_err(|e| Failure::usage(e.to_string()))?),
        (None, true) => Some(VerifySubset::All),
        (None, false) => None,
    };
    let source = context::open_store(global, Operation::Backup)?;
    if !args.watch {
        return pass(global, &source, &targets, &options).await;
    }
    let interval = parse_duration(&args.interval)?;
    loop {
        let code = pass(global, &source, &targets, &options).await?;
        if code != 0 {
            tracing::warn!(
                exit_code = code,
                "replication pass incomplete; retrying at the next interval"
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// One pass to every target; the exit code of the worst outcome.
async fn pass(
    global: &GlobalArgs,
    source: &RetryingStore,
    targets: &[Target],
    options: &ReplicateOptions,
) -> Result<i32, Failure> {
    let mut results = Vec::new();
    for target in targets {
        let outcome = match context::open_location(
            global,
            &target.url,
            target.credentials_file.as_deref(),
            Operation::Backup,
        ) {
            Ok(store) => {
                let work = Arc::new(Work::default());
                let mut options = options.clone();
                options.work = Some(work.clone());
                let progress = crate::progress::Progress::work(global, "replicate", work, "objects");
                let result = nfrepo_engine::replicate(&**source, &*store, &options).await;
                progress.finish().await;
                result.map_err(|e| Failure::engine(&e, Operation::Backup))
            }
            Err(failure) => Err(failure),
        };
        results.push((target, outcome));
    }
    let first_failed = results.iter().position(|(_, outcome)| outcome.is_err());
    let failure = results.iter().find_map(|(_, outcome)| match outcome {
        Err(failure) => Some(Failure::new(failure.code, failure.detail, failure.message.clone())),
        Ok(report) => report.failure_code().map(|code| {
            Failure::new(
                code,
                Some("REPLICATION_INCOMPLETE"),
                format!(
                    "{} object(s) of {} were not replicated to {}",
                    report.problems.len(),
                    report.source,
                    report.target
                ),
            )
        }),
    });
    if global.json {
        let list: Vec<_> = results
            .iter()
            .map(|(target, outcome)| match outcome {
                Ok(report) => report_json(&target.label, report),
                Err(failure) => serde_json::json!({ "target": target.label, "ok": false, "error": failure.json() }),
            })
            .collect();
        outln!("{}", serde_json::Value::Array(list));
    } else {
        for (i, (target, outcome)) in results.iter().enumerate() {
            match outcome {
                Ok(report) => print_report(global, &target.label, report),
                // The first failure is the command's, printed once below.
                Err(failure) if Some(i) != first_failed => {
                    failure.print_line();
                }
                Err(_) => {}
            }
        }
    }
    Ok(failure.as_ref().map_or(0, crate::commands::check::fail_quietly))
}

fn report_json(label: &str, report: &ReplicateReport) -> serde_json::Value {
    let (objects, bytes) = report.copied_total();
    serde_json::json!({
        "target": label,
        "ok": report.problems.is_empty(),
        "result": report.state.as_ref().map(|s| result_name(s.result)),
        "copied_objects": objects,
        "copied_bytes": bytes,
        "copied": report.copied.iter().map(|(kind, (n, b))| (kind.to_string(), serde_json::json!({"objects": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        "present": report.present,
        "repaired": report.repaired,
        "vanished": report.vanished,
        "held_back": report.held_back,
        "deleted": report.deleted,
        "pending_deletions": report.pending_deletions,
        "next_deletion": report.next_deletion.map(|t| render::time_ns(nanos(t))),
        "verified": report.verified,
        "extra": report.extra,
        "problems": report.problems.iter().map(|p| serde_json::json!({
            "object": p.object,
            "code": p.error.code(Operation::Backup).as_str(),
            "message": p.error.to_string(),
        })).collect::<Vec<_>>(),
        "behind": report.state.as_ref().map(|s| serde_json::json!({
            "snapshots": s.behind.snapshots,
            "objects": s.behind.objects,
            "bytes": s.behind.bytes,
        })),
    })
}

fn print_report(global: &GlobalArgs, label: &str, report: &ReplicateReport) {
    for problem in &report.problems {
        outln!(
            "{} {}: {}",
            problem.error.code(Operation::Backup),
            escape::text(&problem.object),
            escape::text(&problem.error.to_string())
        );
    }
    for object in &report.held_back {
        outln!("held back {object}: a pack or index delta of this pass was not copied");
    }
    if global.quiet {
        return;
    }
    for object in &report.extra {
        outln!("extra {object}: on the replica, not on the source (deleted after the grace period)");
    }
    let (objects, bytes) = report.copied_total();
    let label = escape::text(label);
    if report.verified > 0 || report.result() == PassResult::Verified {
        outln!(
            "{label}: verified {} objects; {} problem(s), {} extra",
            report.verified,
            report.problems.len(),
            report.extra.len()
        );
        return;
    }
    outln!(
        "{label}: copied {objects} objects ({}), {} already there, {} repaired, {} deleted, {} waiting to be deleted{}",
        render::bytes(bytes),
        report.present,
        report.repaired.len(),
        report.deleted.len(),
        report.pending_deletions,
        report
            .next_deletion
            .map(|t| format!(" (next due {})", render::time_ns(nanos(t))))
            .unwrap_or_default()
    );
}

async fn status(global: &GlobalArgs, args: ReplicateStatusArgs) -> Result<i32, Failure> {
    let targets = targets(global, args.to.as_deref())?;
    let source = context::open_store(global, Operation::Inspect);
    let mut rows = Vec::new();
    for target in &targets {
        let store = context::open_location(
            global,
            &target.url,
            target.credentials_file.as_deref(),
            Operation::Inspect,
        )?;
        let source = source.as_ref().ok().map(|s| &**s as &dyn nfrepo_store::Store);
        let status = nfrepo_engine::replica_status(source, &*store, SystemTime::now())
            .await
            .map_err(|e| Failure::engine(&e, Operation::Inspect))?;
        rows.push((target, status));
    }
    if global.json {
        let list: Vec<_> = rows.iter().map(|(t, s)| status_json(&t.label, s)).collect();
        outln!("{}", serde_json::Value::Array(list));
        return Ok(0);
    }
    for (target, s) in &rows {
        outln!(
            "{}: lag {}{} s, behind {} snapshots, {} objects ({}), last pass {} {}{}",
            escape::text(&target.label),
            if s.lag_is_bound { "≤ " } else { "" },
            s.lag_seconds,
            s.snapshots_behind,
            s.objects_behind,
            render::bytes(s.bytes_behind),
            s.last_pass
                .map_or_else(|| "never".into(), |t| render::time_ns(nanos(t))),
            s.last_result.map_or("", result_name),
            if s.live {
                String::new()
            } else {
                format!(
                    " (from the replica's state: source unreachable{})",
                    s.source_error
                        .as_deref()
                        .map(|e| format!(": {}", escape::text(e)))
                        .unwrap_or_default()
                )
            }
        );
    }
    Ok(0)
}

fn status_json(label: &str, s: &ReplicaStatus) -> serde_json::Value {
    serde_json::json!({
        "target": label,
        "url": s.target,
        "source": s.source,
        "live": s.live,
        "source_error": s.source_error,
        "lag_seconds": s.lag_seconds,
        "lag_is_bound": s.lag_is_bound,
        "snapshots_behind": s.snapshots_behind,
        "objects_behind": s.objects_behind,
        "bytes_behind": s.bytes_behind,
        "newest_snapshot": s.newest_snapshot.map(|id| id.to_hex()),
        "last_pass": s.last_pass.map(|t| render::time_ns(nanos(t))),
        "last_result": s.last_result.map(result_name),
        "pending_deletions": s.pending_deletions,
        "damaged": s.damaged,
    })
}

fn result_name(result: PassResult) -> &'static str {
    match result {
        PassResult::Complete => "complete",
        PassResult::Partial => "partial",
        PassResult::Verified => "verified",
    }
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `--to` as a configured name, else as a URL; without it every configured target.
fn targets(global: &GlobalArgs, to: Option<&str>) -> Result<Vec<Target>, Failure> {
    let configured = crate::config::load(global.config.as_deref())?
        .map(|c| c.replication)
        .unwrap_or_default();
    if let Some(to) = to {
        return Ok(vec![match configured.into_iter().find(|(name, _)| name == to) {
            Some((name, target)) => Target {
                label: name,
                url: target.url,
                credentials_file: target.credentials_file,
            },
            None => Target {
                label: to.to_owned(),
                url: to.to_owned(),
                credentials_file: None,
            },
        }]);
    }
    if configured.is_empty() {
        return Err(Failure::usage(
            "no replica given: use --to URL, or declare [replication.NAME] url = \"…\" in nfrepo.toml",
        ));
    }
    Ok(configured
        .into_iter()
        .map(|(name, target)| Target {
            label: name,
            url: target.url,
            credentials_file: target.credentials_file,
        })
        .collect())
}

/// `7d`, `12h`, `30m`, `45s`, `2w`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let bad = || Failure::usage(format!("invalid duration {text:?}: expected e.g. 7d, 12h, 30m, 10s"));
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    number.checked_mul(seconds).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(1_209_600));
        for bad in ["", "d", "7x", "-1d", "1.5h"] {
            assert!(parse_duration(bad).unwrap_err().is_usage(), "{bad}");
        }
    }
}
