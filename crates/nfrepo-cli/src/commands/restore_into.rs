//! `nfrepo restore SNAPSHOT --into mysql://…|postgres://…`: a database dump
//! piped straight back into a server.
//!
//! The snapshot must come from a source of the same kind. Its dumps are the
//! `<database>.sql` files of its root (PostgreSQL's `globals.sql` is not a
//! database and is left out; `cat` it to replay roles). `--database` picks
//! one; a URL naming a database restores into that one (under another name,
//! if need be); otherwise every dump goes into the database of its own name
//! (that choice, shared with the panel, is `nfrepo_sources::database_restore_items`;
//! this command only parses and prints). The server's own databases (`postgres`, `template0/1`, `mysql`…) are
//! refused. The restore is staged (`nfrepo_sources::restore_databases`):
//! loaded into a new database, verified, then switched in; what it will
//! touch is printed on stderr before it starts. The password is that of the
//! configured source naming the same server, else `MYSQL_PWD`/`PGPASSWORD`
//! (`config::server_credentials`).
//!
//! `--into s3://bucket/prefix?endpoint=…` writes a bucket snapshot's objects
//! (all, those whose key starts with `SNAPSHOT:PREFIX`, those matching
//! `--include`) at their keys under that prefix, with the credentials the
//! repository would use (`NFREPO_S3_ACCESS_KEY_ID`…). Objects already there
//! with the same content are skipped; differing ones are a RESTORE_CONFLICT
//! before anything is written, unless `--overwrite`; `--dry-run` lists what
//! would be written and replaced (see `nfrepo_sources::restore_bucket`).

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_sources::{BinlogCatalog, BinlogReplay, Connection, DatabaseRestoreOptions, DatabaseTarget, RecoveryTarget};

use crate::cli::{GlobalArgs, RestoreArgs};
use crate::commands::browse::open_snapshot;
use crate::context;
use crate::failure::Failure;
use crate::output::escape;
use crate::render;

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(ErrorCode::RestoreFailed, Some("INVALID_ARGUMENT"), message)
}

pub async fn run(global: &GlobalArgs, args: RestoreArgs, into: &str) -> Result<i32, Failure> {
    if into.starts_with("s3://") {
        return run_bucket(global, args, into).await;
    }
    if args.dry_run {
        return Err(invalid("--dry-run is for restores into s3://"));
    }
    let connection = Connection::parse(into).map_err(|e| invalid(e.to_string()))?;
    let (snapshot_spec, path) = context::split_spec(&args.spec);
    let (reader, snapshot, replay) = match args.at.as_deref() {
        Some(at) => point_in_time(global, snapshot_spec, at).await?,
        None => {
            let (reader, snapshot) = open_snapshot(global, snapshot_spec, Operation::Restore).await?;
            (reader, snapshot, None)
        }
    };
    let sources = |e: &nfrepo_sources::Error| Failure::sources(e, Operation::Restore);
    let root = reader
        .tree(&snapshot.snapshot.root)
        .await
        .map_err(|e| Failure::engine(&e, Operation::Restore))?;
    let wanted = args
        .database
        .clone()
        .or_else(|| (!path.is_empty()).then(|| path.trim_end_matches(".sql").to_owned()));
    let items = nfrepo_sources::database_restore_items(&root.nodes, &snapshot, &connection, wanted.as_deref())
        .map_err(|e| sources(&e))?;
    let config = crate::config::load(global.config.as_deref())?;
    let credentials = crate::config::server_credentials(config.as_ref(), connection, &snapshot.snapshot.source)?;
    let target = DatabaseTarget::for_connection(credentials.connection).map_err(|e| sources(&e))?;
    let connection = target.connection().clone();
    let mut options = DatabaseRestoreOptions::default();
    options.force = args.force;
    options.drop_old = args.drop_old;
    options.terminate_sessions = args.terminate_sessions;
    options.jobs = args.load_jobs.map_or(0, usize::from);
    options.replay = replay;
    if args.terminate_sessions && connection.scheme != "postgres" {
        return Err(invalid("--terminate-sessions is for postgres:// targets"));
    }
    let started = std::time::Instant::now();
    let plan = {
        let target = target.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || nfrepo_sources::plan_database_restore(&target, items, &options))
            .await
            .map_err(|e| Failure::new(ErrorCode::RestoreFailed, None, format!("planning failed: {e}")))?
            .map_err(|e| sources(&e))?
    };
    if !global.quiet {
        eprintln!("restore into {connection}, connecting with {}:", credentials.from);
        for line in plan.describe() {
            eprintln!("  {line}");
        }
    }
    let reports = nfrepo_sources::restore_databases(&reader, &plan)
        .await
        .map_err(|e| Failure::sources(&e, Operation::Restore))?;
    let secs = started.elapsed().as_secs_f64();
    if global.json {
        let value: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "database": r.database,
                    "bytes": r.bytes,
                    "replaced": r.replaced,
                    "kept_old": r.kept_old,
                    "tables_verified": r.tables_verified,
                    "binlogs_replayed": r.replayed,
                    "warnings": r.warnings,
                })
            })
            .collect();
        let leftovers: Vec<_> = plan
            .leftovers
            .iter()
            .map(|l| serde_json::json!({ "database": l.database, "removed": l.remove, "note": l.note }))
            .collect();
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "snapshot_id": snapshot.id.to_hex(),
                "into": connection.to_string(),
                "databases": value,
                "leftovers": leftovers,
                "duration_ms": (secs * 1000.0) as u64,
            })
        );
    } else if !global.quiet {
        for r in &reports {
            crate::output::outln!(
                "restored database {} from snapshot {} ({}, {} tables' row counts verified{}) into {}{}",
                r.database,
                snapshot.id.short(),
                render::bytes(r.bytes),
                r.tables_verified,
                if r.replayed.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; binlogs {} replayed{}",
                        r.replayed.join(", "),
                        args.at.as_deref().map_or_else(String::new, |at| format!(" up to {at}"))
                    )
                },
                connection,
                match &r.kept_old {
                    Some(old) => format!("; the old database is kept as {old} (drop it when no longer needed)"),
                    None if r.replaced => "; the old database was dropped (--drop-old)".to_owned(),
                    None => String::new(),
                },
            );
        }
    }
    for r in &reports {
        for warning in &r.warnings {
            eprintln!("warning: {}: {warning}", r.database);
        }
    }
    Ok(0)
}

/// `--at TIME`: the newest dump of the named snapshot's source finished
/// by TIME, and the binlog replay from its position to TIME.
async fn point_in_time(
    global: &GlobalArgs,
    spec: &str,
    at: &str,
) -> Result<
    (
        nfrepo_engine::Reader,
        nfrepo_engine::SnapshotEntry,
        Option<BinlogReplay>,
    ),
    Failure,
> {
    let target = crate::commands::restore_pitr::parse_target(at)?;
    let repo = context::open_repository(global, Operation::Restore).await?.repo;
    let engine = |e: &nfrepo_engine::Error| Failure::engine(e, Operation::Restore);
    let sources = |e: &nfrepo_sources::Error| Failure::sources(e, Operation::Restore);
    let named = repo.find_snapshot(spec).await.map_err(|e| engine(&e))?;
    let source = named
        .snapshot
        .source
        .strip_suffix(nfrepo_engine::BINLOG_STREAM_SUFFIX)
        .unwrap_or(&named.snapshot.source)
        .to_owned();
    let all = repo.readable_snapshots().await.map_err(|e| engine(&e))?;
    let dump = nfrepo_sources::choose_dump(&all, &source, target).map_err(|e| sources(&e))?;
    crate::trail::acting_on(&dump.snapshot.source);
    let catalog = BinlogCatalog::load(&repo, &source).await.map_err(|e| sources(&e))?;
    let stop = match target {
        RecoveryTarget::Time(ns) => Some(ns),
        _ => None,
    };
    let replay = nfrepo_sources::plan_replay(&catalog, &dump, stop).map_err(|e| sources(&e))?;
    if !global.quiet {
        let newest = replay
            .newest_event
            .and_then(|ns| chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0))
            .map_or_else(|| "unknown".to_owned(), |t| t.to_rfc3339());
        eprintln!(
            "point-in-time restore: dump {} then binlogs {} (newest event archived: {newest})",
            dump.id.short(),
            replay.file_names().join(", ")
        );
        if let (RecoveryTarget::Time(ns), Some(newest)) = (target, replay.newest_event)
            && ns > newest.saturating_add(1_000_000_000)
        {
            eprintln!(
                "warning: the target is after the newest archived event: the restore ends at {newest_text}",
                newest_text = chrono::DateTime::from_timestamp_nanos(newest).to_rfc3339()
            );
        }
    }
    let reader = repo.reader().await.map_err(|e| engine(&e))?;
    Ok((reader, dump, Some(replay)))
}

async fn run_bucket(global: &GlobalArgs, args: RestoreArgs, into: &str) -> Result<i32, Failure> {
    if args.database.is_some() || args.force || args.drop_old || args.terminate_sessions {
        return Err(invalid(
            "--database, --force, --drop-old and --terminate-sessions are for database restores (use --overwrite)",
        ));
    }
    if args.keep_setid || args.skip_damaged {
        return Err(invalid(
            "--keep-setid and --skip-damaged are for restores into a directory",
        ));
    }
    let url = nfrepo_store::StoreUrl::parse(into).map_err(|e| Failure::store(&e, Operation::Restore))?;
    let options = context::store_options(global, &url)?;
    let credentials = nfrepo_store::Credentials::from_env().map_err(|e| Failure::store(&e, Operation::Restore))?;
    let operator = nfrepo_store::s3_bucket_operator(&url, &credentials, &options)
        .map_err(|e| Failure::store(&e, Operation::Restore))?;
    let (snapshot_spec, path) = context::split_spec(&args.spec);
    let (reader, snapshot) = open_snapshot(global, snapshot_spec, Operation::Restore).await?;
    if snapshot.snapshot.source_kind != "bucket" {
        return Err(Failure::new(
            ErrorCode::RestoreFailed,
            Some("WRONG_SOURCE_KIND"),
            format!(
                "snapshot {} is of a {} source; only bucket snapshots go into s3://",
                snapshot.id.short(),
                snapshot.snapshot.source_kind
            ),
        ));
    }
    let mut options = nfrepo_sources::BucketRestoreOptions::default();
    options.include = args.include;
    options.exclude = args.exclude;
    options.overwrite = args.overwrite;
    options.dry_run = args.dry_run;
    options.verify = args.verify;
    let work = std::sync::Arc::new(nfrepo_engine::Work::default());
    options.work = Some(work.clone());
    let started = std::time::Instant::now();
    let progress = crate::progress::Progress::work(global, "restore", work, "objects");
    let report = nfrepo_sources::restore_bucket(&reader, &snapshot, path, &operator, &options).await;
    progress.finish().await;
    let report = report.map_err(|e| Failure::sources(&e, Operation::Restore))?;
    let secs = started.elapsed().as_secs_f64();
    let refusal = report.refusal().map(|e| Failure::sources(&e, Operation::Restore));
    if global.json {
        crate::output::outln!(
            "{}",
            serde_json::json!({
                "snapshot_id": snapshot.id.to_hex(),
                "into": url.to_string(),
                "dry_run": report.dry_run,
                "objects": report.objects,
                "objects_replaced": report.objects_replaced,
                "objects_unchanged": report.objects_unchanged,
                "bytes": report.bytes,
                "bytes_compared": report.bytes_compared,
                "verified": report.verified,
                "new_keys": report.new_keys,
                "differing_keys": report.differing_keys,
                "duration_ms": (secs * 1000.0) as u64,
            })
        );
        // The report above is the one JSON document; a refusal goes to stderr.
        return Ok(refusal.map_or(0, |failure| failure.report(false)));
    }
    if report.dry_run {
        for key in &report.new_keys {
            crate::output::outln!("would write {}", escape::text(key));
        }
        let verb = if report.overwrite { "would overwrite" } else { "differs" };
        for key in &report.differing_keys {
            crate::output::outln!("{verb} {}", escape::text(key));
        }
    }
    if !global.quiet {
        crate::output::outln!(
            "{} {} objects ({} replacing different ones, {} already there), {} in {secs:.1}s into {url}{}",
            if report.dry_run {
                "dry run: would restore"
            } else {
                "restored"
            },
            report.objects,
            report.objects_replaced,
            report.objects_unchanged,
            render::bytes(report.bytes),
            if report.verified > 0 { ", verified" } else { "" },
        );
    }
    match refusal {
        Some(failure) => Err(failure),
        None => Ok(0),
    }
}
