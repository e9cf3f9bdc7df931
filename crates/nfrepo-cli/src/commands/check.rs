//! `nfrepo check`: run the engine's check and report every finding.
//!
//! Findings go to stdout (or into the `--json` report); the one error line
//! that sums them up goes to stderr, with the exit code of the worst one.

use std::path::PathBuf;
use std::sync::Arc;

use nfrepo_engine::{CheckOptions, CheckReport, ErrorCode, Finding, Operation, ReadDataSubset};
use nfrepo_format::Cipher;
use nfrepo_store::Cache;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::commands::snapshots::parse_time;
use crate::failure::Failure;
use crate::output::{escape, outln};
use crate::progress::Progress;
use crate::{context, render};

/// Paths printed per finding in human output (`--json` has them all).
const PATHS_SHOWN: usize = 20;

/// Opens the local cache of `repo_id` as the global options say, or
/// explains on stderr why there is none.
pub async fn open_cache(global: &GlobalArgs, repo_id: String) -> Option<Arc<Cache>> {
    if global.no_cache {
        return None;
    }
    let Some(dir): Option<PathBuf> = context::cache_dir(global) else {
        eprintln!("warning: no cache directory (set NFREPO_CACHE_DIR or HOME); progress is not recorded");
        return None;
    };
    match tokio::task::spawn_blocking(move || Cache::open(&dir, &repo_id)).await {
        Ok(Ok(cache)) => Some(Arc::new(cache)),
        Ok(Err(e)) => {
            eprintln!("warning: local cache unavailable ({e}); progress is not recorded");
            None
        }
        Err(e) => {
            eprintln!("warning: local cache unavailable ({e}); progress is not recorded");
            None
        }
    }
}

pub fn finding_json(f: &Finding) -> serde_json::Value {
    serde_json::json!({
        "code": f.code.as_str(),
        "object": f.object,
        "pack": f.pack.map(|p| p.to_hex()),
        "blobs": f.blobs.iter().map(|b| b.to_hex()).collect::<Vec<_>>(),
        "message": f.message,
        "affected": f.affected.iter().map(|a| serde_json::json!({
            "snapshot": a.snapshot.to_hex(), "path": a.path,
        })).collect::<Vec<_>>(),
    })
}

pub fn print_finding(f: &Finding) {
    outln!("{} {}: {}", f.code, escape::text(&f.object), escape::text(&f.message));
    for blob in f.blobs.iter().take(PATHS_SHOWN) {
        outln!("  blob {blob}");
    }
    if f.blobs.len() > PATHS_SHOWN {
        outln!("  … and {} more blobs", f.blobs.len() - PATHS_SHOWN);
    }
    for a in f.affected.iter().take(PATHS_SHOWN) {
        outln!("  snapshot {} path {}", a.snapshot.short(), escape::text(&a.path));
    }
    if f.affected.len() > PATHS_SHOWN {
        outln!("  … and {} more paths", f.affected.len() - PATHS_SHOWN);
    }
}

/// The one-line summary failure for a failed check.
pub fn summary_failure(code: ErrorCode, findings: usize, snapshots: usize) -> Failure {
    Failure::new(
        code,
        Some("CHECK_FAILED"),
        format!("check found {findings} problem(s) reaching {snapshots} snapshot(s)"),
    )
}

/// Prints the error line (and, with `--json`, nothing more: the report carries it) and returns the exit code.
pub fn fail_quietly(failure: &Failure) -> i32 {
    failure.print_line()
}

fn options(args: &CheckArgs) -> Result<CheckOptions, Failure> {
    let invalid = |e: nfrepo_engine::Error| Failure::usage(e.to_string());
    let mut options = CheckOptions::default();
    options.merkle = args.merkle;
    options.snapshots = args.snapshots.clone();
    options.read_data = match (&args.read_data_subset, args.read_data) {
        (Some(text), _) => Some(ReadDataSubset::parse(text).map_err(invalid)?),
        (None, true) => Some(ReadDataSubset::All),
        (None, false) => None,
    };
    if let Some(age) = &args.max_age {
        let now = chrono::Utc::now();
        let since_ns = parse_time(age, now)?;
        let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        options.max_age_secs = Some(u64::try_from(now_ns.saturating_sub(since_ns) / 1_000_000_000).unwrap_or(0));
    }
    Ok(options)
}

fn report_json(report: &CheckReport, cipher: Cipher, failure: Option<&Failure>) -> serde_json::Value {
    serde_json::json!({
        "ok": failure.is_none(),
        "cipher": cipher.name(),
        "snapshots": report.snapshots.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
        "roots": report.roots.iter().map(|(s, r)| serde_json::json!({"snapshot": s.to_hex(), "root": r.to_hex()})).collect::<Vec<_>>(),
        "trees": report.trees,
        "lists": report.lists,
        "data_refs": report.data_refs,
        "packs_indexed": report.packs_indexed,
        "packs_read": report.packs_read,
        "bytes_read": report.bytes_read,
        "packs_fresh": report.packs_fresh,
        "stray_packs": report.stray_packs.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "planned_packs": report.planned_packs.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "orphaned_protect_markers": report.orphaned_protect_markers.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
        "unsettled_forgets": report.unsettled_forgets.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
        "duplicate_blobs": report.duplicate_blobs,
        "audit_entries": report.audit_entries,
        "audit_writers": report.audit_writers,
        "findings": report.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "error": failure.map(Failure::json),
    })
}

pub async fn run(global: &GlobalArgs, args: CheckArgs) -> Result<i32, Failure> {
    let mut options = options(&args)?;
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    options.audit_writer = Some(nfrepo_engine::AuditWriter::new(
        repo.store().clone(),
        context::cache_dir(global),
    ));
    if options.read_data.is_some() {
        options.cache = open_cache(global, repo.id().to_hex()).await;
    }
    let started = std::time::Instant::now();
    let work = std::sync::Arc::new(nfrepo_engine::Work::default());
    options.work = Some(work.clone());
    let progress = Progress::work(global, "check", work, "objects");
    let report = repo.check(&options).await;
    progress.finish().await;
    let report = report.map_err(|e| Failure::engine(&e, Operation::Inspect))?;
    let secs = started.elapsed().as_secs_f64();
    let failure = report
        .failure_code()
        .map(|code| summary_failure(code, report.findings.len(), report.damaged_snapshots().len()));
    if global.json {
        outln!("{}", report_json(&report, repo.cipher(), failure.as_ref()));
    } else {
        if !global.quiet {
            outln!("repository {} sealed with {}", repo.id().short(), repo.cipher().name());
            outln!(
                "checked {} snapshot(s): {} trees, {} content lists, {} chunk references, {} packs indexed in {secs:.2}s",
                report.snapshots.len(),
                report.trees,
                report.lists,
                report.data_refs,
                report.packs_indexed,
            );
            if options.read_data.is_some() {
                outln!(
                    "read and verified {} pack(s), {}{}",
                    report.packs_read,
                    render::bytes(report.bytes_read),
                    if report.packs_fresh > 0 {
                        format!(" ({} verified recently, skipped)", report.packs_fresh)
                    } else {
                        String::new()
                    }
                );
            }
            outln!(
                "audit log: {} entries from {} writer(s) verified",
                report.audit_entries,
                report.audit_writers
            );
            if report.duplicate_blobs > 0 {
                outln!("note: {} blob(s) are stored twice (harmless)", report.duplicate_blobs);
            }
            if !report.stray_packs.is_empty() {
                outln!(
                    "note: {} pack(s) in no index, left by an interrupted backup (the next backup adopts them; `nfrepo repair index` indexes them)",
                    report.stray_packs.len()
                );
            }
            if !report.planned_packs.is_empty() {
                outln!(
                    "note: {} pack(s) in no index are planned for deletion by a gc plan (a gc stopped after rewriting the index, or is running): run `nfrepo gc` again to delete them; do not `repair index` them",
                    report.planned_packs.len()
                );
            }
            if options.merkle {
                for (snapshot, root) in &report.roots {
                    outln!("snapshot {} merkle root {root}", snapshot.short());
                }
            }
        }
        for snapshot in &report.orphaned_protect_markers {
            outln!(
                "warning: protect marker protect/{snapshot} names a snapshot that does not exist (it was forgotten while being protected); remove it with `nfrepo unprotect {snapshot}`"
            );
        }
        for snapshot in &report.unsettled_forgets {
            outln!(
                "warning: snapshot {snapshot} has a tombstone: a forget runs now or was interrupted; the next `nfrepo forget` or `nfrepo gc` finishes it (or puts the snapshot back if it is protected)"
            );
        }
        for finding in &report.findings {
            print_finding(finding);
        }
        if failure.is_none() && !global.quiet {
            outln!("no problems found");
        }
    }
    Ok(failure.as_ref().map_or(0, fail_quietly))
}
