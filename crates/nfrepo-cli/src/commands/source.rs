//! `nfrepo snapshot --source NAME` and `--all`: running the sources of `nfrepo.toml`.
//!
//! One run of a source: the pre-hook (its failure aborts with
//! `BACKUP_FAILED` and no snapshot), the backup (a failed dump command
//! aborts the session, so nothing is committed), then the post-hook, which
//! runs whatever happened and whose failure is reported. `--all` runs every
//! source once in name order; a failing source is reported on its own line
//! and the others still run, and the exit code says that some failed.

use std::path::PathBuf;
use std::sync::Arc;

use nfrepo_engine::{BackupOptions, ErrorCode, Operation};
use nfrepo_sources::{Connection, DumpPlan, FilesOptions};

use crate::cli::{GlobalArgs, SnapshotArgs};
use crate::commands::snapshot::{parse_tags, report};
use crate::config::{self, Config, SourceConfig, SourceKind};
use crate::context::{self, Opened};
use crate::failure::{EXIT_PARTIAL, Failure};

/// What a configured source backs up.
enum Work {
    Dump(DumpPlan),
    Bucket(opendal::Operator),
    Files(Vec<PathBuf>, FilesOptions),
    /// An analytics export command: the output's name and the argv.
    Command(String, Vec<String>),
}

pub async fn run(global: &GlobalArgs, args: &SnapshotArgs) -> Result<i32, Failure> {
    let config = config::load(global.config.as_deref())?.ok_or_else(|| {
        Failure::new(
            ErrorCode::BackupNotFound,
            Some("CONFIG_NOT_FOUND"),
            "no configuration file: use --config, set NFREPO_CONFIG, or create /etc/nfrepo/nfrepo.toml",
        )
    })?;
    let tags = parse_tags(&args.tags)?;
    let opened = context::open_repository(global, Operation::Backup).await?;
    if !args.all {
        let name = args.source.as_deref().unwrap_or_default();
        return run_one(global, &config, &opened, name, &tags, args.no_parent).await;
    }
    if config.sources.is_empty() {
        return Err(Failure::new(
            ErrorCode::BackupNotFound,
            Some("UNKNOWN_SOURCE"),
            format!("{} declares no sources", config.path.display()),
        ));
    }
    let mut failed = Vec::new();
    let mut partial = false;
    for name in config.sources.keys() {
        match run_one(global, &config, &opened, name, &tags, args.no_parent).await {
            Ok(code) => partial |= code == EXIT_PARTIAL,
            Err(failure) => {
                report_source_failure(global, name, &failure);
                failed.push(name.clone());
            }
        }
    }
    if !failed.is_empty() {
        return Err(Failure::new(
            ErrorCode::BackupFailed,
            Some("SOURCES_FAILED"),
            format!(
                "{} of {} sources failed: {}",
                failed.len(),
                config.sources.len(),
                failed.join(", ")
            ),
        ));
    }
    Ok(if partial { EXIT_PARTIAL } else { 0 })
}

/// One failed source of `--all`, on a line of its own (the run's single
/// `error[...]` line comes at the end).
fn report_source_failure(global: &GlobalArgs, name: &str, failure: &Failure) {
    let detail = failure.detail.map(|d| format!("/{d}")).unwrap_or_default();
    if global.json {
        println!(
            "{}",
            serde_json::json!({
                "source": name,
                "error": { "code": failure.code.as_str(), "detail": failure.detail, "message": failure.message },
            })
        );
    }
    eprintln!("source {name} failed [{}{detail}]: {}", failure.code, failure.message);
}

async fn run_one(
    global: &GlobalArgs,
    config: &Config,
    opened: &Opened,
    name: &str,
    extra_tags: &[(String, String)],
    no_parent: bool,
) -> Result<i32, Failure> {
    let source = config.source(name)?;
    let pre = match &source.pre_hook {
        Some(hook) => run_hook(name, "pre_hook", hook).await,
        None => Ok(()),
    };
    let backed_up = match pre {
        Ok(()) => backup(global, opened, name, source, extra_tags, no_parent).await,
        Err(failure) => Err(failure),
    };
    let post = match &source.post_hook {
        Some(hook) => run_hook(name, "post_hook", hook).await,
        None => Ok(()),
    };
    match (backed_up, post) {
        (Ok(code), Ok(())) => Ok(code),
        (Ok(_), Err(post)) => Err(Failure::new(
            ErrorCode::BackupFailed,
            post.detail,
            format!("source {name}: the snapshot was saved, but {}", post.message),
        )),
        (Err(failure), Ok(())) => Err(failure),
        (Err(failure), Err(post)) => Err(Failure::new(
            failure.code,
            failure.detail,
            format!("{}; then {}", failure.message, post.message),
        )),
    }
}

/// Runs a hook with `sh -c`. Its output goes to stderr (stdout is for
/// results); the command itself is never echoed, in case it holds a secret.
async fn run_hook(source: &str, which: &'static str, command: &str) -> Result<(), Failure> {
    let detail = if which == "pre_hook" {
        "PRE_HOOK_FAILED"
    } else {
        "POST_HOOK_FAILED"
    };
    let status = hook_command(source, command).status().await.map_err(|e| {
        Failure::new(
            ErrorCode::BackupFailed,
            Some(detail),
            format!("{which} could not start: {e}"),
        )
    })?;
    if status.success() {
        return Ok(());
    }
    let how = status.code().map_or_else(
        || "was killed by a signal".to_owned(),
        |c| format!("exited with status {c}"),
    );
    Err(Failure::new(
        ErrorCode::BackupFailed,
        Some(detail),
        format!("{which} of source {source} {how}"),
    ))
}

/// Variables holding nfrepo's own secrets, never passed to a hook.
const SECRET_VARS: &[&str] = &[
    "NFREPO_PASSWORD",
    "NFREPO_S3_ACCESS_KEY_ID",
    "NFREPO_S3_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// `sh -c COMMAND` as hooks and health checks run it: `NFREPO_SOURCE` set,
/// nfrepo's secrets removed from its environment, no stdin, its output on
/// stderr (stdout is for results).
pub fn hook_command(source: &str, command: &str) -> tokio::process::Command {
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .env("NFREPO_SOURCE", source)
        .stdin(std::process::Stdio::null())
        .stdout(std::io::stderr());
    for var in SECRET_VARS {
        child.env_remove(var);
    }
    child
}

fn connection(source: &SourceConfig) -> Result<Connection, Failure> {
    let text = source.connection.as_deref().unwrap_or_default();
    let parsed = Connection::parse(text).map_err(|e| Failure::sources(&e, Operation::Backup))?;
    let password = config::read_secret(source.password_env.as_deref(), source.password_file.as_deref())?;
    Ok(parsed.with_password(password))
}

/// The bucket's operator, with the source's own credentials or the repository's.
fn bucket_operator(source: &SourceConfig) -> Result<opendal::Operator, Failure> {
    let text = source.connection.as_deref().unwrap_or_default();
    let url = nfrepo_store::StoreUrl::parse(text).map_err(|e| Failure::store(&e, Operation::Backup))?;
    let credentials = match (&source.access_key_env, &source.secret_key_env) {
        (Some(key), Some(secret)) => {
            let read = |var: &str| {
                config::read_secret(Some(var), None)?
                    .map(|s| s.expose().to_owned())
                    .ok_or_else(|| {
                        Failure::new(
                            ErrorCode::PermissionDenied,
                            Some("NO_PASSWORD"),
                            format!("{var} is not set"),
                        )
                    })
            };
            nfrepo_store::Credentials::new(read(key)?, read(secret)?)
        }
        _ => nfrepo_store::Credentials::from_env().map_err(|e| Failure::store(&e, Operation::Backup))?,
    };
    nfrepo_store::s3_bucket_operator(&url, &credentials).map_err(|e| Failure::store(&e, Operation::Backup))
}

/// Asks the server what to dump (blocking calls, off the runtime).
async fn plan(source: &SourceConfig) -> Result<Work, Failure> {
    let bin_dir = source.bin_dir.clone();
    let databases = source.databases.clone();
    let planned = match source.kind {
        SourceKind::Analytics => return analytics_work(source),
        SourceKind::Files | SourceKind::Config | SourceKind::Logs | SourceKind::Artifact => {
            let mut options = FilesOptions::default();
            options.include.clone_from(&source.include);
            options.exclude.clone_from(&source.exclude);
            return Ok(Work::Files(source.paths.clone(), options));
        }
        SourceKind::Mysql => {
            let source = nfrepo_sources::MysqlSource {
                connection: connection(source)?,
                databases,
                bin_dir,
            };
            tokio::task::spawn_blocking(move || source.plan()).await
        }
        SourceKind::Postgres => {
            let source = nfrepo_sources::PostgresSource {
                connection: connection(source)?,
                databases,
                bin_dir,
            };
            tokio::task::spawn_blocking(move || source.plan()).await
        }
        SourceKind::Bucket => return bucket_operator(source).map(Work::Bucket),
        SourceKind::Redis => {
            let source = nfrepo_sources::RedisSource {
                connection: connection(source)?,
                aof_dir: source.aof_dir.clone(),
                bin_dir,
            };
            tokio::task::spawn_blocking(move || source.plan()).await
        }
    };
    planned
        .map_err(|e| Failure::new(ErrorCode::BackupFailed, None, format!("planning the dump failed: {e}")))?
        .map(Work::Dump)
        .map_err(|e| Failure::sources(&e, Operation::Backup))
}

/// An analytics source: its command, its bucket prefix, or its files.
fn analytics_work(source: &SourceConfig) -> Result<Work, Failure> {
    if let Some(argv) = &source.command {
        let name = source.output.clone().unwrap_or_else(|| {
            let program = argv.first().map(String::as_str).unwrap_or("export");
            format!("{}.out", program.rsplit('/').next().unwrap_or(program))
        });
        return Ok(Work::Command(name, argv.clone()));
    }
    if source.connection.is_some() {
        return bucket_operator(source).map(Work::Bucket);
    }
    let mut options = FilesOptions::default();
    options.include.clone_from(&source.include);
    options.exclude.clone_from(&source.exclude);
    Ok(Work::Files(source.paths.clone(), options))
}

async fn backup(
    global: &GlobalArgs,
    opened: &Opened,
    name: &str,
    source: &SourceConfig,
    extra_tags: &[(String, String)],
    no_parent: bool,
) -> Result<i32, Failure> {
    let retries_before = opened.store.retries();
    let work = plan(source).await?;
    let mut tags = extra_tags.to_vec();
    for (key, value) in [("env", &source.env), ("type", &source.source_type)] {
        if let Some(value) = value {
            tags.push((key.to_owned(), value.clone()));
        }
    }
    if let Some(class) = source.retention_class() {
        tags.push(("retention".to_owned(), class.to_owned()));
    }
    let paths = match &work {
        Work::Dump(plan) => plan
            .commands
            .iter()
            .map(|c| c.name.clone())
            .chain(plan.paths.iter().map(|p| p.display().to_string()))
            .collect(),
        Work::Bucket(_) => vec![source.connection.clone().unwrap_or_default()],
        Work::Command(name, _) => vec![name.clone()],
        Work::Files(paths, _) => paths
            .iter()
            .map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            })
            .collect(),
    };
    let default_profile = if matches!(work, Work::Command(..)) {
        "dump"
    } else {
        source.kind.default_profile()
    };
    let profile = source.profile.as_deref().unwrap_or(default_profile);
    let mut options = BackupOptions::new(name, source.kind.name(), profile)
        .paths(paths)
        .tags(tags);
    options.use_parent = !no_parent;
    let fail = |e: nfrepo_engine::Error| Failure::engine(&e, Operation::Backup);
    let session = Arc::new(opened.repo.begin_backup(options).await.map_err(fail)?);
    let worker = session.clone();
    let handle = tokio::runtime::Handle::current();
    let ran = tokio::task::spawn_blocking(move || match work {
        Work::Bucket(operator) => {
            nfrepo_sources::backup_bucket(&worker, &operator, &handle).map(|out| (out.root, out.details, out.warnings))
        }
        Work::Dump(plan) => {
            nfrepo_sources::backup_dumps(&worker, &plan).map(|out| (out.root, out.details, out.warnings))
        }
        Work::Files(paths, options) => nfrepo_sources::backup_files_with(&worker, &paths, &options)
            .map(|out| (out.root, out.details, out.warnings)),
        Work::Command(name, argv) => {
            nfrepo_sources::backup_command(&worker, &name, &argv).map(|out| (out.root, out.details, Vec::new()))
        }
    })
    .await;
    let session = Arc::try_unwrap(session)
        .map_err(|_| Failure::new(ErrorCode::BackupFailed, None, "backup session still in use"))?;
    let (root, mut details, warnings) = match ran {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            session.abort().await;
            return Err(Failure::sources(&e, Operation::Backup));
        }
        Err(e) => {
            session.abort().await;
            return Err(Failure::new(
                ErrorCode::BackupFailed,
                None,
                format!("backup worker failed: {e}"),
            ));
        }
    };
    details.retries = opened.store.retries().saturating_sub(retries_before);
    let (id, snapshot) = session.commit(root, details).await.map_err(fail)?;
    report(global, &id, &snapshot, &warnings);
    Ok(if snapshot.skipped.is_empty() { 0 } else { EXIT_PARTIAL })
}
