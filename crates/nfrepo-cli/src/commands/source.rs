//! `nfrepo snapshot --source NAME` and `--all`: running the sources of `nfrepo.toml`.
//!
//! One run of a source: the pre-hook (its failure aborts with
//! `BACKUP_FAILED` and no snapshot), the backup (a failed dump command
//! aborts the session, so nothing is committed), then the post-hook, which
//! runs whatever happened and whose failure is reported. `--all` runs every
//! source once in name order; a failing source is reported on its own line
//! and the others still run, and the exit code says that some failed.

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_sources::{
    BucketSource, Connection, DumpSource, FilesOptions, FilesSource, RunOptions, Source, StreamSource,
};

use crate::cli::{GlobalArgs, SnapshotArgs};
use crate::commands::snapshot::{parse_tags, report, retry_counter};
use crate::config::{self, Config, SourceConfig, SourceKind};
use crate::context::{self, RetryingStore};
use crate::failure::{EXIT_PARTIAL, Failure};

/// Where the sources are backed up to: the repository opened with the
/// password or, on a backup host, with its put-only credential.
struct Target {
    repo: nfrepo_engine::Repository,
    store: RetryingStore,
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
    let (repo, store) = context::open_for_backup(global).await?;
    let opened = Target { repo, store };
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
    if global.json {
        // One JSON document for the whole run: {"sources": [...], "error": ...}.
        crate::output::begin_json_batch();
        let result = run_all(global, &config, &opened, &tags, args.no_parent).await;
        let sources = crate::output::end_json_batch();
        let error = result.as_ref().err().map(Failure::json);
        crate::output::json(serde_json::json!({ "sources": sources, "error": error }));
        return Ok(match result {
            Ok(code) => code,
            Err(failure) => failure.print_line(),
        });
    }
    run_all(global, &config, &opened, &tags, args.no_parent).await
}

/// Runs every configured source once, in name order.
async fn run_all(
    global: &GlobalArgs,
    config: &Config,
    opened: &Target,
    tags: &[(String, String)],
    no_parent: bool,
) -> Result<i32, Failure> {
    let mut failed = Vec::new();
    let mut partial = false;
    for name in config.sources.keys() {
        match run_one(global, config, opened, name, tags, no_parent).await {
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
        crate::output::json(serde_json::json!({ "source": name, "error": failure.json() }));
    }
    eprintln!("source {name} failed [{}{detail}]: {}", failure.code, failure.message);
}

async fn run_one(
    global: &GlobalArgs,
    config: &Config,
    opened: &Target,
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

/// `sh -c COMMAND` as hooks and health checks run it: `NFREPO_SOURCE` set,
/// nfrepo's secrets removed from its environment, no stdin, its output on
/// stderr (stdout is for results).
pub fn hook_command(source: &str, command: &str) -> tokio::process::Command {
    let mut child = nfrepo_sources::async_command("sh", &nfrepo_sources::ChildAuth::none());
    child
        .arg("-c")
        .arg(command)
        .env("NFREPO_SOURCE", source)
        .stdin(std::process::Stdio::null())
        .stdout(std::io::stderr());
    child
}

pub(crate) fn connection(source: &SourceConfig) -> Result<Connection, Failure> {
    let text = source.connection.as_deref().unwrap_or_default();
    let parsed = Connection::parse(text).map_err(|e| Failure::sources(&e, Operation::Backup))?;
    let password = config::read_secret(source.password_env.as_deref(), source.password_file.as_deref())?;
    Ok(parsed.with_password(password))
}

/// The bucket's operator, with the source's own credentials or the repository's.
fn bucket_operator(global: &GlobalArgs, source: &SourceConfig) -> Result<opendal::Operator, Failure> {
    let text = source.connection.as_deref().unwrap_or_default();
    let url = nfrepo_store::StoreUrl::parse(text).map_err(|e| Failure::store(&e, Operation::Backup))?;
    let options = context::store_options(global, &url)?;
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
    nfrepo_store::s3_bucket_operator(&url, &credentials, &options).map_err(|e| Failure::store(&e, Operation::Backup))
}

/// The configured source as a [`Source`]; servers are asked what to dump
/// when the driver prepares it, off the runtime.
fn source_of(global: &GlobalArgs, source: &SourceConfig) -> Result<Box<dyn Source>, Failure> {
    let bin_dir = source.bin_dir.clone();
    let databases = source.databases.clone();
    Ok(match source.kind {
        SourceKind::Analytics => return analytics_source(global, source),
        SourceKind::Files | SourceKind::Config | SourceKind::Logs | SourceKind::Artifact => {
            let mut options = FilesOptions::default();
            options.include.clone_from(&source.include);
            options.exclude.clone_from(&source.exclude);
            Box::new(
                FilesSource::new(source.paths.clone())
                    .with_options(options)
                    .with_kind(source.kind.name()),
            )
        }
        SourceKind::Mysql => Box::new(DumpSource::from(nfrepo_sources::MysqlSource {
            connection: connection(source)?,
            databases,
            bin_dir,
        })),
        SourceKind::Postgres if source.is_basebackup() => {
            Box::new(nfrepo_sources::BaseBackupSource::new(connection(source)?, bin_dir))
        }
        SourceKind::Postgres => Box::new(DumpSource::from(nfrepo_sources::PostgresSource {
            connection: connection(source)?,
            databases,
            bin_dir,
        })),
        SourceKind::Redis => Box::new(DumpSource::from(nfrepo_sources::RedisSource {
            connection: connection(source)?,
            aof_dir: source.aof_dir.clone(),
            bin_dir,
        })),
        SourceKind::Bucket => Box::new(BucketSource::new(
            bucket_operator(global, source)?,
            source.connection.clone().unwrap_or_default(),
        )),
    })
}

/// An analytics source: its command, its bucket prefix, or its files.
fn analytics_source(global: &GlobalArgs, source: &SourceConfig) -> Result<Box<dyn Source>, Failure> {
    if let Some(argv) = &source.command {
        let name = source.output.clone().unwrap_or_else(|| {
            let program = argv.first().map(String::as_str).unwrap_or("export");
            format!("{}.out", program.rsplit('/').next().unwrap_or(program))
        });
        return Ok(Box::new(
            StreamSource::command(name, argv.clone()).with_kind(source.kind.name()),
        ));
    }
    if source.connection.is_some() {
        return Ok(Box::new(BucketSource::new(
            bucket_operator(global, source)?,
            source.connection.clone().unwrap_or_default(),
        )));
    }
    let mut options = FilesOptions::default();
    options.include.clone_from(&source.include);
    options.exclude.clone_from(&source.exclude);
    Ok(Box::new(
        FilesSource::new(source.paths.clone())
            .with_options(options)
            .with_kind(source.kind.name()),
    ))
}

async fn backup(
    global: &GlobalArgs,
    opened: &Target,
    name: &str,
    source: &SourceConfig,
    extra_tags: &[(String, String)],
    no_parent: bool,
) -> Result<i32, Failure> {
    let mut tags = extra_tags.to_vec();
    for (key, value) in [("env", &source.env), ("type", &source.source_type)] {
        if let Some(value) = value {
            tags.push((key.to_owned(), value.clone()));
        }
    }
    if let Some(class) = source.retention_class() {
        tags.push(("retention".to_owned(), class.to_owned()));
    }
    // Without `profile`, each source chooses its own (Source::default_profile).
    let mut options = RunOptions::new(name)
        .tags(tags)
        .use_parent(!no_parent)
        .sha256(source.sha256)
        .retries(retry_counter(&opened.store));
    if let Some(profile) = &source.profile {
        options = options.profile(profile.clone());
    }
    let source = source_of(global, source)?;
    let progress = crate::progress::Progress::backup(global, name);
    let ran = nfrepo_sources::run_backup(&opened.repo, source, &options, &mut |p| progress.show(p)).await;
    progress.finish().await;
    let backup = ran.map_err(|e| Failure::sources(&e, Operation::Backup))?;
    report(global, &backup.id, &backup.snapshot, &backup.warnings);
    Ok(if backup.partial() { EXIT_PARTIAL } else { 0 })
}
