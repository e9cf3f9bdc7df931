//! `nfrepo agent`, `nfrepo wal-push` and `nfrepo wal-fetch`: PostgreSQL
//! WAL archiving for point-in-time recovery (see `nfrepo_sources`' `wal`).
//!
//! `wal-push` only ever talks to the agent (without one it fails, and
//! PostgreSQL keeps the segment and retries); `wal-fetch` asks the agent
//! and, when none answers, reads the repository itself (a read is safe
//! beside any writer), so a restore on a host without an agent works.

use std::path::PathBuf;

use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_sources::{AgentOptions, BinlogOptions, Error as SourceError, PushOutcome, WalCatalog};

use crate::cli::{AgentArgs, GlobalArgs, WalFetchArgs, WalPushArgs};
use crate::config::Config;
use crate::context;
use crate::failure::Failure;
use crate::output::outln;

fn socket_path(explicit: Option<&PathBuf>, config: Option<&Config>) -> PathBuf {
    explicit
        .cloned()
        .or_else(|| config.and_then(|c| c.agent.as_ref()).and_then(|a| a.socket.clone()))
        .unwrap_or_else(nfrepo_sources::default_socket)
}

fn basebackup_sources(config: Option<&Config>) -> Vec<String> {
    config
        .map(|c| {
            c.sources
                .iter()
                .filter(|(_, s)| s.is_basebackup())
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The source a client pushes for: `--source`, else the only basebackup source.
fn pick_source(explicit: Option<&String>, config: Option<&Config>) -> Result<String, Failure> {
    if let Some(source) = explicit {
        return Ok(source.clone());
    }
    match basebackup_sources(config).as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::usage(
            "no source: give --source NAME or configure one source with kind = \"postgres\", method = \"basebackup\"",
        )),
        several => Err(Failure::usage(format!(
            "several basebackup sources ({}): give --source NAME",
            several.join(", ")
        ))),
    }
}

fn worker(e: &tokio::task::JoinError) -> Failure {
    Failure::new(ErrorCode::BackupFailed, None, format!("a worker failed: {e}"))
}

/// The copy options of each `binlog = true` source named (or of all of them).
fn binlog_options(
    config: Option<&Config>,
    named: &[String],
    socket: &std::path::Path,
) -> Result<Vec<BinlogOptions>, Failure> {
    let Some(config) = config else {
        return Ok(Vec::new());
    };
    let spool_root = socket.parent().unwrap_or_else(|| std::path::Path::new("."));
    let mut out = Vec::new();
    for (name, source) in &config.sources {
        if !source.is_binlog() || !(named.is_empty() || named.contains(name)) {
            continue;
        }
        let connection = crate::commands::source::connection(source)?;
        let mut options = BinlogOptions::new(name.clone(), connection, spool_root.join(format!("binlog-{name}")));
        options.interval = source.binlog_interval();
        options.bin_dir.clone_from(&source.bin_dir);
        out.push(options);
    }
    Ok(out)
}

pub async fn agent(global: &GlobalArgs, args: AgentArgs) -> Result<i32, Failure> {
    let config = crate::config::load(global.config.as_deref())?;
    let socket = socket_path(args.socket.as_ref(), config.as_ref());
    let binlogs = binlog_options(config.as_ref(), &args.sources, &socket)?;
    let sources: Vec<String> = if args.sources.is_empty() {
        basebackup_sources(config.as_ref())
    } else {
        args.sources
            .iter()
            .filter(|s| !binlogs.iter().any(|b| &b.source == *s))
            .cloned()
            .collect()
    };
    if sources.is_empty() && binlogs.is_empty() {
        return Err(Failure::usage(
            "the agent archives for basebackup sources and streams binlogs of mysql sources: give --source NAME or configure method = \"basebackup\" or binlog = true",
        ));
    }
    let opened = context::open_repository(global, Operation::Backup).await?;
    let handle = tokio::runtime::Handle::current();
    let mut options = AgentOptions::new(socket, sources.clone());
    options.binlogs = binlogs;
    let sources: Vec<String> = sources
        .into_iter()
        .chain(options.binlogs.iter().map(|b| b.source.clone()))
        .collect();
    let json = global.json;
    let quiet = global.quiet;
    let served = tokio::task::spawn_blocking(move || {
        nfrepo_sources::serve_agent(opened.repo, &handle, &options, |path| {
            if json {
                crate::output::json(serde_json::json!({
                    "socket": path.display().to_string(),
                    "sources": sources,
                }));
            } else if !quiet {
                outln!("agent listening on {} for {}", path.display(), sources.join(", "));
            }
        })
    })
    .await
    .map_err(|e| worker(&e))?;
    served.map_err(|e| Failure::sources(&e, Operation::Backup))?;
    Ok(0)
}

pub async fn push(global: &GlobalArgs, args: &WalPushArgs) -> Result<i32, Failure> {
    let config = crate::config::load(global.config.as_deref())?;
    let source = pick_source(args.source.as_ref(), config.as_ref())?;
    let socket = socket_path(args.socket.as_ref(), config.as_ref());
    let path = args.path.clone();
    let pushed = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || nfrepo_sources::push_wal(&socket, &source, &path))
            .await
            .map_err(|e| worker(&e))?
            .map_err(|e| Failure::sources(&e, Operation::Backup))?
    };
    let name = args
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if global.json {
        crate::output::json(serde_json::json!({
            "source": source,
            "name": name,
            "snapshot": match &pushed { PushOutcome::Stored(id) => Some(id.clone()), _ => None },
            "already_archived": pushed == PushOutcome::AlreadyArchived,
        }));
    } else if !global.quiet {
        match pushed {
            PushOutcome::Stored(id) => outln!("{name}: archived in snapshot {id}"),
            _ => outln!("{name}: already archived with the same bytes"),
        }
    }
    Ok(0)
}

pub async fn fetch(global: &GlobalArgs, args: WalFetchArgs) -> Result<i32, Failure> {
    let config = crate::config::load(global.config.as_deref())?;
    let source = pick_source(args.source.as_ref(), config.as_ref())?;
    let socket = socket_path(args.socket.as_ref(), config.as_ref());
    if nfrepo_sources::WalName::parse(&args.name).is_none() {
        return Err(Failure::usage(format!("{:?} is not a WAL file name", args.name)));
    }
    let fail = |e: &SourceError| Failure::sources(e, Operation::Restore);
    if !args.no_agent {
        let (name, path, source) = (args.name.clone(), args.path.clone(), source.clone());
        let asked =
            tokio::task::spawn_blocking(move || nfrepo_sources::fetch_wal_via_agent(&socket, &source, &name, &path))
                .await
                .map_err(|e| worker(&e))?;
        match asked {
            Ok(size) => return done(global, &args, size, "agent"),
            Err(SourceError::AgentUnavailable { .. }) => {
                tracing::info!("no agent answers; reading the repository directly");
            }
            Err(e) => return Err(fail(&e)),
        }
    }
    let repo = context::open_repository_to_read(global, Operation::Restore).await?.repo;
    let catalog = WalCatalog::load(&repo, &source).await.map_err(|e| fail(&e))?;
    let archived = catalog
        .get(&args.name)
        .cloned()
        .ok_or_else(|| fail(&SourceError::WalNotFound(args.name.clone())))?;
    let reader = repo
        .reader()
        .await
        .map_err(|e| Failure::engine(&e, Operation::Restore))?;
    let handle = tokio::runtime::Handle::current();
    let (name, path) = (args.name.clone(), args.path.clone());
    let size = tokio::task::spawn_blocking(move || {
        nfrepo_sources::write_whole(&path, |file| {
            handle.block_on(nfrepo_sources::write_wal(&reader, &archived, &name, file))
        })
    })
    .await
    .map_err(|e| worker(&e))?
    .map_err(|e| fail(&e))?;
    done(global, &args, size, "repository")
}

fn done(global: &GlobalArgs, args: &WalFetchArgs, size: u64, from: &str) -> Result<i32, Failure> {
    if global.json {
        crate::output::json(serde_json::json!({
            "name": args.name,
            "path": args.path.display().to_string(),
            "bytes": size,
            "from": from,
        }));
    } else if !global.quiet {
        outln!("{}: {size} bytes from the {from}", args.name);
    }
    Ok(0)
}
