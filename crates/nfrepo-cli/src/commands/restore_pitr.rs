//! `nfrepo restore SNAPSHOT --into postgres-data:DIR [--at TIME|latest]`:
//! a PostgreSQL base backup into an empty data directory, set up to
//! replay archived WAL to the target (`nfrepo_sources::restore_postgres_data`).

use std::path::{Path, PathBuf};

use nfrepo_engine::Operation;
use nfrepo_sources::{PitrRestoreOptions, RecoveryTarget};

use crate::cli::{GlobalArgs, RestoreArgs};
use crate::failure::Failure;
use crate::{context, render};

/// `latest`, RFC 3339, or PostgreSQL's `YYYY-MM-DD HH:MM:SS[.f]+HH[:MM]`.
pub(crate) fn parse_target(text: &str) -> Result<RecoveryTarget, Failure> {
    if text == "latest" {
        return Ok(RecoveryTarget::Latest);
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map_err(|_| {
            Failure::usage(format!(
                "--at {text:?}: give `latest` or a time with its offset, e.g. \"2026-12-01 12:34:56+00\""
            ))
        })?;
    parsed
        .timestamp_nanos_opt()
        .map(RecoveryTarget::Time)
        .ok_or_else(|| Failure::usage(format!("--at {text:?} is out of range")))
}

/// A word for `sh -c` (PostgreSQL runs `restore_command` through the shell).
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `nfrepo [--config F] [--repo URL] [--password-file F] wal-fetch --source S %f %p`,
/// with this binary's absolute path and absolute files: PostgreSQL runs it
/// from the data directory.
fn restore_command(global: &GlobalArgs, config: Option<&Path>, source: &str) -> Result<String, Failure> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let exe = std::env::current_exe()
        .map_err(|e| Failure::usage(format!("cannot find the nfrepo binary's path for restore_command: {e}")))?;
    let mut words = vec![shell_word(&exe.display().to_string())];
    if let Some(config) = config {
        words.extend([
            "--config".to_owned(),
            shell_word(&absolute(config).display().to_string()),
        ]);
    }
    if let Some(repo) = &global.repo {
        words.extend(["--repo".to_owned(), shell_word(repo)]);
    }
    if let Some(file) = &global.password_file {
        words.extend([
            "--password-file".to_owned(),
            shell_word(&absolute(file).display().to_string()),
        ]);
    }
    words.extend([
        "--quiet".to_owned(),
        "wal-fetch".to_owned(),
        "--source".to_owned(),
        shell_word(source),
        "%f".to_owned(),
        "%p".to_owned(),
    ]);
    Ok(words.join(" "))
}

pub async fn run(global: &GlobalArgs, args: RestoreArgs, data_dir: PathBuf) -> Result<i32, Failure> {
    if data_dir.as_os_str().is_empty() {
        return Err(Failure::usage("--into postgres-data:DIR needs a directory"));
    }
    let target = match args.at.as_deref() {
        Some(text) => parse_target(text)?,
        None => RecoveryTarget::Latest,
    };
    let config = crate::config::load(global.config.as_deref())?;
    let (snapshot_spec, _) = context::split_spec(&args.spec);
    let repo = context::open_repository(global, Operation::Restore).await?.repo;
    let fail = |e: &nfrepo_engine::Error| Failure::engine(e, Operation::Restore);
    let named = repo.find_snapshot(snapshot_spec).await.map_err(|e| fail(&e))?;
    let source = named
        .snapshot
        .source
        .strip_suffix(".wal")
        .unwrap_or(&named.snapshot.source)
        .to_owned();
    let all = repo.readable_snapshots().await.map_err(|e| fail(&e))?;
    let base = if args.at.is_some() {
        nfrepo_sources::choose_base(&all, &source, target).map_err(|e| Failure::sources(&e, Operation::Restore))?
    } else {
        named
    };
    crate::trail::acting_on(&base.snapshot.source);
    if base.snapshot.source_kind != nfrepo_sources::BASEBACKUP_KIND {
        return Err(Failure::usage(format!(
            "snapshot {} is not a PostgreSQL base backup (kind {}): --into postgres-data: restores sources with method = \"basebackup\"",
            base.id.to_hex(),
            base.snapshot.source_kind
        )));
    }
    nfrepo_sources::check_wal_reaches(&all, &base, target).map_err(|e| Failure::sources(&e, Operation::Restore))?;
    let reader = repo.reader().await.map_err(|e| fail(&e))?;
    let mut options = PitrRestoreOptions::new(
        data_dir.clone(),
        target,
        restore_command(global, config.as_ref().map(|c| c.path.as_path()), &source)?,
    );
    options.restore.verify = args.verify;
    let report = nfrepo_sources::restore_postgres_data(&reader, base, &options)
        .await
        .map_err(|e| Failure::sources(&e, Operation::Restore))?;
    if global.json {
        crate::output::json(serde_json::json!({
            "base_snapshot_id": report.base.id.to_hex(),
            "data_dir": data_dir.display().to_string(),
            "files": report.restore.files,
            "bytes": report.restore.bytes,
            "settings": report.settings,
            "warnings": report.restore.warnings,
        }));
    } else {
        for warning in &report.restore.warnings {
            eprintln!("warning: {warning}");
        }
        if !global.quiet {
            crate::output::outln!(
                "restored base backup {} ({} files, {}) into {}; recovery.signal and these settings in postgresql.auto.conf:",
                report.base.id.to_hex(),
                report.restore.files,
                render::bytes(report.restore.bytes),
                data_dir.display()
            );
            for line in report.settings.iter().skip(1) {
                crate::output::outln!("  {line}");
            }
            crate::output::outln!(
                "start PostgreSQL on {} (as the data directory's owner): it replays the archived WAL and opens",
                data_dir.display()
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn targets_parse_with_their_offset() {
        assert_eq!(parse_target("latest").unwrap(), RecoveryTarget::Latest);
        let a = parse_target("2026-12-01 12:34:56+00").unwrap();
        let b = parse_target("2026-12-01T13:34:56+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, RecoveryTarget::Time(1_796_128_496_000_000_000));
        assert!(
            parse_target("2026-12-01 12:34:56").is_err(),
            "a time without its offset is ambiguous"
        );
        assert_eq!(shell_word("a'b"), "'a'\\''b'");
    }
}
