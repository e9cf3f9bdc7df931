//! `nfrepo snapshot`: paths, `--stdin`, or `--command -- CMD…`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nfrepo_engine::{BackupOptions, BackupSession, CommitDetails, ErrorCode, Operation};
use nfrepo_format::{BlobId, Snapshot, SnapshotId};

use crate::cli::{GlobalArgs, ProfileArg, SnapshotArgs};
use crate::failure::{EXIT_PARTIAL, Failure};
use crate::{context, render};

enum Mode {
    Files(Vec<PathBuf>),
    Stdin(String),
    Command(String, Vec<String>),
}

struct Outcome {
    root: BlobId,
    details: CommitDetails,
    warnings: Vec<String>,
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

fn mode_of(args: &SnapshotArgs) -> Result<Mode, Failure> {
    let invalid = |m: &str| Failure::new(ErrorCode::BackupFailed, Some("INVALID_ARGUMENT"), m.to_owned());
    if args.stdin {
        let name = args.name.clone().ok_or_else(|| invalid("--stdin needs --name"))?;
        return Ok(Mode::Stdin(name));
    }
    if args.command {
        let program = args
            .argv
            .first()
            .ok_or_else(|| invalid("--command needs a command after --"))?;
        let base = program.rsplit('/').next().unwrap_or(program);
        let name = args.name.clone().unwrap_or_else(|| format!("{base}.out"));
        return Ok(Mode::Command(name, args.argv.clone()));
    }
    if !args.argv.is_empty() {
        return Err(invalid("arguments after -- are only for --command"));
    }
    Ok(Mode::Files(args.paths.clone()))
}

fn default_source(mode: &Mode) -> String {
    match mode {
        Mode::Files(paths) => paths
            .iter()
            .map(|p| {
                std::path::absolute(p)
                    .ok()
                    .and_then(|a| a.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| "root".into())
            })
            .collect::<Vec<_>>()
            .join("+"),
        Mode::Stdin(name) => name.clone(),
        Mode::Command(name, argv) => argv
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
            .unwrap_or_else(|| name.clone()),
    }
}

pub async fn run(global: &GlobalArgs, args: SnapshotArgs) -> Result<i32, Failure> {
    if args.all || (args.paths.is_empty() && !args.stdin && !args.command) {
        return crate::commands::source::run(global, &args).await;
    }
    let mode = mode_of(&args)?;
    if let (Mode::Files(paths), Some(name)) = (&mode, &args.source) {
        crate::config::check_command_line_paths(global.config.as_deref(), name, paths)?;
    }
    let tags = parse_tags(&args.tags)?;
    let context::Opened { repo, store, .. } = context::open_repository(global, Operation::Backup).await?;
    let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Backup);
    let (kind, default_profile, paths) = match &mode {
        Mode::Files(paths) => (
            "files",
            ProfileArg::Files,
            paths
                .iter()
                .map(|p| {
                    std::path::absolute(p)
                        .unwrap_or_else(|_| p.clone())
                        .display()
                        .to_string()
                })
                .collect(),
        ),
        Mode::Stdin(name) => ("stdin", ProfileArg::Dump, vec![name.clone()]),
        Mode::Command(name, _) => ("command", ProfileArg::Dump, vec![name.clone()]),
    };
    let source = args.source.clone().unwrap_or_else(|| default_source(&mode));
    let mut options = BackupOptions::new(source, kind, args.profile.unwrap_or(default_profile).name())
        .paths(paths)
        .tags(tags);
    options.use_parent = !args.no_parent;
    let session = Arc::new(repo.begin_backup(options).await.map_err(fail)?);
    let progress = Progress::start(global, session.clone());

    let worker = session.clone();
    let walked = tokio::task::spawn_blocking(move || -> Result<Outcome, nfrepo_sources::Error> {
        match mode {
            Mode::Files(paths) => {
                let out = nfrepo_sources::backup_files(&worker, &paths)?;
                Ok(Outcome {
                    root: out.root,
                    details: out.details,
                    warnings: out.warnings,
                })
            }
            Mode::Stdin(name) => {
                let out = nfrepo_sources::backup_reader(&worker, &name, std::io::stdin().lock())?;
                Ok(Outcome {
                    root: out.root,
                    details: out.details,
                    warnings: Vec::new(),
                })
            }
            Mode::Command(name, argv) => {
                let out = nfrepo_sources::backup_command(&worker, &name, &argv)?;
                Ok(Outcome {
                    root: out.root,
                    details: out.details,
                    warnings: Vec::new(),
                })
            }
        }
    })
    .await
    .map_err(|e| Failure::new(ErrorCode::BackupFailed, None, format!("backup worker failed: {e}")));
    progress.finish().await;
    let session = Arc::try_unwrap(session)
        .map_err(|_| Failure::new(ErrorCode::BackupFailed, None, "backup session still in use"))?;
    let outcome = match walked {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            session.abort().await;
            return Err(Failure::sources(&e, Operation::Backup));
        }
        Err(failure) => {
            session.abort().await;
            return Err(failure);
        }
    };
    let mut details = outcome.details;
    details.retries = store.retries();
    let (id, snapshot) = session.commit(outcome.root, details).await.map_err(fail)?;
    report(global, &id, &snapshot, &outcome.warnings);
    Ok(if snapshot.skipped.is_empty() { 0 } else { EXIT_PARTIAL })
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
        println!("{value}");
        return;
    }
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    if global.quiet {
        return;
    }
    let secs = s.duration_ms as f64 / 1000.0;
    println!(
        "snapshot {} of {} saved: {} files ({} unchanged), {} read, {} added ({} stored) in {secs:.1}s",
        id.short(),
        snapshot.source,
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

/// A progress line on stderr while the backup runs (TTY only, not with --quiet/--json).
struct Progress {
    task: Option<(tokio::task::JoinHandle<()>, indicatif::ProgressBar)>,
}

impl Progress {
    fn start(global: &GlobalArgs, session: Arc<BackupSession>) -> Self {
        if global.quiet || global.json || !std::io::stderr().is_terminal() {
            return Self { task: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let p = session.progress();
                shown.set_message(format!(
                    "{} read, {} new",
                    render::bytes(p.bytes_read),
                    render::bytes(p.bytes_added_raw)
                ));
                shown.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            task: Some((task, bar)),
        }
    }

    /// Stops the display and waits for the task, so it no longer holds the session.
    async fn finish(self) {
        if let Some((task, bar)) = self.task {
            task.abort();
            let _ = task.await;
            bar.finish_and_clear();
        }
    }
}
