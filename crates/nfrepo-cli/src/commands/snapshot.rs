//! `nfrepo snapshot`: paths, `--stdin`, or `--command -- CMD…`.
//!
//! This module only turns arguments into a [`Source`] and [`RunOptions`],
//! calls [`nfrepo_sources::run_backup`] and prints the result.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_format::{Snapshot, SnapshotId};
use nfrepo_sources::{FilesSource, RetryCounter, RunOptions, Source, StreamSource};

use crate::cli::{GlobalArgs, SnapshotArgs};
use crate::config::{self, SourceKind};
use crate::context::{self, RetryingStore};
use crate::failure::{EXIT_PARTIAL, Failure};
use crate::render;

/// The default source name of `snapshot PATH…`: each path made absolute
/// and cleaned lexically (`.` and `..` resolved, no trailing `/`), several
/// joined with `+`. Two different directories never share a name, however
/// their last components look (`x1/conf` and `x2/conf`), so retention by
/// source never mixes them.
pub fn default_files_source(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| clean_absolute(p).display().to_string())
        .collect::<Vec<_>>()
        .join("+")
}

fn clean_absolute(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut clean = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

pub fn parse_tags(tags: &[String]) -> Result<Vec<(String, String)>, Failure> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Failure::new(
                ErrorCode::BackupFailed,
                Some("INVALID_ARGUMENT"),
                format!("tag {t:?} is not key=value"),
            )),
        })
        .collect()
}

/// The source the arguments name, and its default source name. A stream
/// records `kind` when given (see [`configured_stream_kind`]).
fn source_of(
    args: &SnapshotArgs,
    kind: Option<&str>,
    files_options: nfrepo_sources::FilesOptions,
) -> Result<(Box<dyn Source>, String), Failure> {
    let invalid = |m: &str| Failure::new(ErrorCode::BackupFailed, Some("INVALID_ARGUMENT"), m.to_owned());
    if args.stdin {
        let name = args.name.clone().ok_or_else(|| invalid("--stdin needs --name"))?;
        let mut source = StreamSource::stdin(name.clone());
        if let Some(kind) = kind {
            source = source.with_kind(kind);
        }
        return Ok((Box::new(source), name));
    }
    if args.command {
        let program = args
            .argv
            .first()
            .ok_or_else(|| invalid("--command needs a command after --"))?;
        let base = program.rsplit('/').next().unwrap_or(program).to_owned();
        let name = args.name.clone().unwrap_or_else(|| format!("{base}.out"));
        let mut source = StreamSource::command(name, args.argv.clone());
        if let Some(kind) = kind {
            source = source.with_kind(kind);
        }
        return Ok((Box::new(source), base));
    }
    if !args.argv.is_empty() {
        return Err(invalid("arguments after -- are only for --command"));
    }
    let source = FilesSource::new(args.paths.clone()).with_options(files_options);
    Ok((Box::new(source), default_files_source(&args.paths)))
}

/// The kind a stream snapshot records when `--source` names a configured
/// database source: a dump piped in or run with `--command` under that name
/// is that database's snapshot, and `restore --into` accepts it.
fn configured_stream_kind(global: &GlobalArgs, args: &SnapshotArgs) -> Result<Option<&'static str>, Failure> {
    let Some(name) = args.source.as_deref().filter(|_| args.stdin || args.command) else {
        return Ok(None);
    };
    let Some(config) = config::load(global.config.as_deref())? else {
        return Ok(None);
    };
    Ok(config
        .sources
        .get(name)
        .map(|s| s.kind)
        .filter(|k| matches!(k, SourceKind::Mysql | SourceKind::Postgres))
        .map(SourceKind::name))
}

/// `--exclude`, `--exclude-file` and `--exclude-caches` of `snapshot PATH…`.
async fn files_options(args: &SnapshotArgs) -> Result<nfrepo_sources::FilesOptions, Failure> {
    let mut options = nfrepo_sources::FilesOptions::default();
    options.exclude.clone_from(&args.exclude);
    for file in &args.exclude_file {
        let text = tokio::fs::read_to_string(file).await.map_err(|e| {
            Failure::new(
                ErrorCode::BackupFailed,
                Some("INVALID_ARGUMENT"),
                format!("--exclude-file {}: {e}", file.display()),
            )
        })?;
        options.exclude.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    options.exclude_caches = args.exclude_caches;
    Ok(options)
}

pub async fn run(global: &GlobalArgs, args: SnapshotArgs) -> Result<i32, Failure> {
    if args.all || (args.paths.is_empty() && !args.stdin && !args.command) {
        return crate::commands::source::run(global, &args).await;
    }
    if let (false, false, Some(name)) = (args.stdin, args.command, &args.source) {
        crate::config::check_command_line_paths(global.config.as_deref(), name, &args.paths)?;
    }
    let tags = parse_tags(&args.tags)?;
    let kind = configured_stream_kind(global, &args)?;
    let files_options = files_options(&args).await?;
    let (source, default_name) = source_of(&args, kind, files_options)?;
    let (repo, store) = context::open_for_backup(global).await?;
    let mut options = RunOptions::new(args.source.clone().unwrap_or(default_name))
        .tags(tags)
        .use_parent(!args.no_parent)
        .sha256(args.sha256)
        .retries(retry_counter(&store));
    if let Some(profile) = args.profile {
        options = options.profile(profile.name());
    }
    let progress = crate::progress::Progress::backup(global, "snapshot");
    let ran = nfrepo_sources::run_backup(&repo, source, &options, &mut |p| progress.show(p)).await;
    progress.finish().await;
    let backup = ran.map_err(|e| Failure::sources(&e, Operation::Backup))?;
    report(global, &backup.id, &backup.snapshot, &backup.warnings);
    Ok(if backup.partial() { EXIT_PARTIAL } else { 0 })
}

/// The repository store's retry counter, for the snapshot's summary.
pub fn retry_counter(store: &RetryingStore) -> RetryCounter {
    let store = store.clone();
    Arc::new(move || store.retries())
}

pub fn report(global: &GlobalArgs, id: &SnapshotId, snapshot: &Snapshot, warnings: &[String]) {
    let s = &snapshot.summary;
    if global.json {
        let value = serde_json::json!({
            "snapshot_id": id.to_hex(),
            "source": snapshot.source,
            "time": render::time_ns(snapshot.time_ns),
            "root": snapshot.root.to_hex(),
            "parent": snapshot.parent.map(|p| p.to_hex()),
            "partial": !snapshot.skipped.is_empty(),
            "skipped": snapshot.skipped,
            "summary": {
                "files": s.files, "dirs": s.dirs, "others": s.others, "files_unchanged": s.files_unchanged,
                "bytes": s.bytes, "bytes_read": s.bytes_read, "blobs_added": s.blobs_added,
                "bytes_added_raw": s.bytes_added_raw, "bytes_added_stored": s.bytes_added_stored,
                "packs_added": s.packs_added, "retries": s.retries, "duration_ms": s.duration_ms,
            },
            "extra": snapshot.extra.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        });
        crate::output::json(value);
        return;
    }
    for warning in warnings {
        eprintln!("warning: {}", crate::output::escape::text(warning));
    }
    if global.quiet {
        return;
    }
    let secs = s.duration_ms as f64 / 1000.0;
    crate::output::outln!(
        "snapshot {} of {} saved: {} files ({} unchanged), {} read, {} added ({} stored) in {secs:.1}s",
        id.short(),
        crate::output::escape::text(&snapshot.source),
        s.files,
        s.files_unchanged,
        render::bytes(s.bytes_read),
        render::bytes(s.bytes_added_raw),
        render::bytes(s.bytes_added_stored),
    );
    if !snapshot.skipped.is_empty() {
        eprintln!(
            "partial: {} entries could not be read and were left out",
            snapshot.skipped.len()
        );
    }
}
