//! `nfrepo restore SNAPSHOT[:PATH] --target DIR`.

use nfrepo_engine::Operation;
use nfrepo_sources::RestoreOptions;

use crate::cli::{GlobalArgs, RestoreArgs};
use crate::commands::browse::open_snapshot;
use crate::failure::Failure;
use crate::{context, render};

pub async fn run(global: &GlobalArgs, mut args: RestoreArgs) -> Result<i32, Failure> {
    // A path as the mount shows it names its snapshot through the
    // repository; through --via, the server (holding it) resolves the spec.
    if args.spec.starts_with('/') && args.via.is_none() {
        args.spec = from_mount_path(global, &args.spec).await?;
    }
    if let Some(dir) = args.into.as_deref().and_then(|i| i.strip_prefix("postgres-data:")) {
        let dir = std::path::PathBuf::from(dir);
        return crate::commands::restore_pitr::run(global, args, dir).await;
    }
    let into_mysql = args
        .into
        .as_deref()
        .is_some_and(|i| i.starts_with("mysql://") || i.starts_with("mariadb://"));
    if args.at.is_some() && !into_mysql {
        return Err(Failure::usage(
            "--at is for --into postgres-data:DIR or --into mysql://",
        ));
    }
    if let Some(into) = args.into.clone() {
        return crate::commands::restore_into::run(global, args, &into).await;
    }
    if let Some(server) = args.via.clone() {
        return via(global, &args, &server).await;
    }
    let Some(target) = args.target.clone() else {
        return Err(Failure::new(
            nfrepo_engine::ErrorCode::RestoreFailed,
            Some("INVALID_ARGUMENT"),
            "give --target DIR or --into URL",
        ));
    };
    let (snapshot_spec, path) = context::split_spec(&args.spec);
    let (reader, snapshot) = open_snapshot(global, snapshot_spec, Operation::Restore).await?;
    let mut options = RestoreOptions::default();
    options.include = args.include;
    options.exclude = args.exclude;
    options.verify = args.verify;
    options.overwrite = args.overwrite;
    options.skip_damaged = args.skip_damaged;
    options.keep_setid = args.keep_setid;
    let work = std::sync::Arc::new(nfrepo_engine::Work::default());
    options.work = Some(work.clone());
    let started = std::time::Instant::now();
    let progress = crate::progress::Progress::work(global, "restore", work, "files");
    let report = nfrepo_sources::restore(&reader, &snapshot, path, &target, &options).await;
    progress.finish().await;
    let report = report.map_err(|e| Failure::sources(&e, Operation::Restore))?;
    let secs = started.elapsed().as_secs_f64();
    let unmatched = unmatched_failure(&report);
    if global.json {
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "snapshot_id": snapshot.id.to_hex(),
                "target": target.display().to_string(),
                "files": report.files, "files_unchanged": report.files_unchanged, "dirs": report.dirs,
                "others": report.others, "others_unchanged": report.others_unchanged,
                "bytes": report.bytes, "verified": report.verified,
                "unmatched_filters": report.unmatched_filters,
                "warnings": report.warnings, "duration_ms": (secs * 1000.0) as u64,
                "skipped_damaged": report.skipped.iter().map(|(p, why)| serde_json::json!({
                    "path": p.display().to_string(), "reason": why,
                })).collect::<Vec<_>>(),
            })
        );
        if let Some(failure) = unmatched {
            // The report above is the one JSON document; the error goes to stderr.
            return Ok(failure.report(false));
        }
        return Ok(exit_code(&report));
    }
    for (path, why) in &report.skipped {
        eprintln!("skipped damaged: {}: {why}", path.display());
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if !global.quiet {
        crate::output::outln!(
            "restored {} files ({} already there), {} dirs, {} in {secs:.1}s to {}{}",
            report.files,
            report.files_unchanged,
            report.dirs,
            render::bytes(report.bytes),
            target.display(),
            if options_verified(&report) { ", verified" } else { "" },
        );
        if snapshot.snapshot.source_kind == "redis" {
            crate::output::outln!(
                "to bring Redis back: stop redis-server, copy {rdb} (and appendonlydir/, if the server runs with \
                 appendonly yes) from {dir} into its data directory (or point its `dir` at {dir}), then start it again",
                rdb = nfrepo_sources::RDB_STREAM,
                dir = target.display(),
            );
        }
        if !report.skipped.is_empty() {
            crate::output::outln!("{} damaged file(s) skipped (listed on stderr)", report.skipped.len());
        }
    }
    match unmatched {
        Some(failure) => Err(failure),
        None => Ok(exit_code(&report)),
    }
}

/// `ID:PATH` for a path as `nfrepo mount` shows it.
async fn from_mount_path(global: &GlobalArgs, spec: &str) -> Result<String, Failure> {
    let fail = |e: &nfrepo_engine::Error| Failure::engine(e, Operation::Restore);
    let repo = context::open_repository(global, Operation::Restore).await?.repo;
    let layout = nfrepo_engine::Layout::build(repo.readable_snapshots().await.map_err(|e| fail(&e))?);
    let (snapshot, path) = layout
        .resolve(spec)
        .ok_or_else(|| fail(&nfrepo_engine::Error::SnapshotNotFound(spec.to_owned())))?;
    Ok(format!("{}:{path}", snapshot.id.to_hex()))
}

/// A filter that matched nothing is a mistake the operator must see: the
/// rest is restored, and the command fails with RESTORE_FAILED/FILTER_MATCHED_NOTHING.
fn unmatched_failure(report: &nfrepo_sources::RestoreReport) -> Option<Failure> {
    if report.unmatched_filters.is_empty() {
        return None;
    }
    Some(Failure::new(
        nfrepo_engine::ErrorCode::RestoreFailed,
        Some("FILTER_MATCHED_NOTHING"),
        format!(
            "filter matched nothing in the restored tree: {}",
            report.unmatched_filters.join(", ")
        ),
    ))
}

/// 3 (partial) when damaged files were skipped.
fn exit_code(report: &nfrepo_sources::RestoreReport) -> i32 {
    if report.skipped.is_empty() {
        0
    } else {
        crate::failure::EXIT_PARTIAL
    }
}

fn options_verified(report: &nfrepo_sources::RestoreReport) -> bool {
    report.verified > 0
}

/// `restore --via URL`: the restore runs at the server, approved with the
/// panel user's password and a fresh TOTP code.
async fn via(global: &GlobalArgs, args: &RestoreArgs, server: &str) -> Result<i32, Failure> {
    let (snapshot, path) = context::split_spec(&args.spec);
    let name = match &args.user {
        Some(name) => name.clone(),
        None => std::env::var("USER").map_err(|_| Failure::usage("--via needs --user NAME ($USER is not set)"))?,
    };
    let password = context::panel_password()?;
    let code = context::totp_code()?;
    let request = nfrepo_panel::ViaRequest {
        server,
        ca_file: args.via_ca_file.as_deref(),
        name: &name,
        password,
        code,
        snapshot,
        path,
        target: args.server_target.as_deref().unwrap_or_default(),
    };
    let work = std::sync::Arc::new(nfrepo_engine::Work::default());
    let progress = crate::progress::Progress::work(global, "restore", work.clone(), "files");
    let done = nfrepo_panel::restore_via(request, Some(&work)).await;
    progress.finish().await;
    let job = done.map_err(|e| Failure::new(e.code, e.detail, e.message))?;
    let outcome = job.outcome.as_ref();
    let (files, bytes) = outcome.map_or((0, 0), |o| (o.files, o.bytes));
    if global.json {
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "server": server, "job": job.id, "snapshot_id": job.snapshot, "source": job.source,
                "path": job.path, "target": job.target, "directory": job.directory,
                "approved_by": job.approved_by, "files": files, "bytes": bytes, "verified": true,
            })
        );
    } else {
        crate::output::outln!(
            "restored {files} files ({}) of {}:/{} into {} at {server}, verified; approved by {}",
            render::bytes(bytes),
            job.snapshot.get(..8).unwrap_or(&job.snapshot),
            crate::output::escape::text(&job.path),
            crate::output::escape::text(&job.directory),
            crate::output::escape::text(&job.approved_by),
        );
    }
    Ok(0)
}
