//! The drill of a mysql or postgres source: a throwaway server of the
//! same kind, the snapshot's dumps restored into it by the staged restore
//! (with PostgreSQL's `globals.sql` replayed first, for the roles), then
//! the configured sanity queries.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nfrepo_engine::{ErrorCode, Reader, SnapshotEntry};
use nfrepo_format::NodeKind;

use super::server::{self, Throwaway};
use super::{DrillOptions, Failed, Log, blocking, mysql, postgres, tuning, with_guard};
use crate::{
    Connection, DatabaseRestoreItem, DatabaseRestoreOptions, DatabaseTarget, Error, GLOBALS_STREAM, MysqlTarget,
    PostgresTarget,
};

pub(super) async fn drill(
    reader: &Reader,
    snapshot: &SnapshotEntry,
    options: &DrillOptions,
    log: &mut Log,
) -> std::result::Result<(), Failed> {
    let kind = snapshot.snapshot.source_kind.clone();
    let root = reader
        .tree(&snapshot.snapshot.root)
        .await
        .map_err(|e| log.failed(Failed::of("restore", &Error::Engine(e))))?;
    let globals = root
        .nodes
        .iter()
        .find(|n| kind == "postgres" && matches!(n.kind, NodeKind::File { .. }) && n.name_lossy() == GLOBALS_STREAM)
        .cloned();
    let mut items = Vec::new();
    for node in root.nodes.iter().filter(|n| matches!(n.kind, NodeKind::File { .. })) {
        let stream = node.name_lossy().into_owned();
        let Some(database) = stream.strip_suffix(".sql").filter(|_| stream != GLOBALS_STREAM) else {
            continue;
        };
        let expected_rows = crate::expected_rows(&snapshot.snapshot.extra, &stream)
            .map_err(|e| log.failed(Failed::of("restore", &e)))?;
        items.push(DatabaseRestoreItem {
            node: node.clone(),
            database: database.to_owned(),
            stream,
            expected_rows,
        });
    }
    if items.is_empty() {
        return Err(log.failed(Failed::new(
            "restore",
            ErrorCode::BackupNotFound,
            format!("snapshot {} holds no database dump", snapshot.id.short()),
        )));
    }

    // The server first: the dumps are restored into it.
    let since = Instant::now();
    let guard = Throwaway::new(
        options.temp_root.as_deref(),
        if kind == "mysql" { "mariadbd" } else { "postgres" },
    )
    .map_err(|e| log.failed(Failed::of("server start", &e)))?;
    let bin_dir = options.bin_dir.clone();
    let server_kind = kind.clone();
    let memory = tuning::server_memory(items.iter().map(|i| node_size(&i.node)).sum());
    let connection = with_guard("server start", &guard, move |g| {
        if server_kind == "mysql" {
            mysql::start(g, bin_dir.as_deref(), memory)
        } else {
            postgres::start(g, bin_dir.as_deref(), memory)
        }
    })
    .await
    .map_err(|f| log.failed(f))?;
    log.phase("server start", since);
    log.passed("server start", format!("{kind} on {connection}"));

    let since = Instant::now();
    if let Some(node) = globals {
        let file = guard.dir().join(GLOBALS_STREAM);
        let mut content = Vec::new();
        crate::write_content(reader, &node, &mut content)
            .await
            .map_err(|e| log.failed(Failed::of("restore globals.sql", &e)))?;
        std::fs::write(&file, &content).map_err(|source| {
            log.failed(Failed::of(
                "restore globals.sql",
                &Error::Io {
                    path: file.clone(),
                    source,
                },
            ))
        })?;
        let (connection, bin_dir) = (connection.clone(), options.bin_dir.clone());
        let failed = blocking("restore globals.sql", move || {
            postgres::replay_globals(&connection, bin_dir.as_deref(), &file)
        })
        .await
        .map_err(|f| log.failed(f))?;
        log.passed(
            "restore globals.sql",
            format!("{GLOBALS_STREAM} replayed ({failed} statements failed, such as roles that exist)"),
        );
    }
    let target = database_target(&kind, &connection, options.bin_dir.as_deref());
    let plan_target = target.clone();
    let restore_options = DatabaseRestoreOptions {
        jobs: options.load_jobs,
        ..DatabaseRestoreOptions::default()
    };
    let plan = blocking("restore", move || {
        crate::plan_database_restore(&plan_target, items, &restore_options)
    })
    .await
    .map_err(|f| log.failed(f))?;
    let databases: Vec<String> = plan.databases.iter().map(|d| d.item.database.clone()).collect();
    let reports = crate::restore_databases(reader, &plan).await.map_err(|e| {
        let check = if matches!(&e, Error::DatabaseRestore { source, .. } if matches!(**source, Error::RowCountMismatch(_)))
        {
            "rows"
        } else {
            "restore"
        };
        log.failed(Failed::of(check, &e))
    })?;
    log.phase("restore", since);
    for report in &reports {
        log.passed(
            format!("restore {}", report.database),
            format!(
                "{} bytes loaded, {} tables' row counts match the dump's",
                report.bytes, report.tables_verified
            ),
        );
    }

    // Restored and verified: the service is ready once the queries pass.
    let since = Instant::now();
    let home = databases.first().cloned().unwrap_or_default();
    for sql in &options.queries {
        let name = format!("query {sql}");
        let (connection, home, sql_owned, kind, bin_dir) = (
            connection.clone(),
            home.clone(),
            sql.clone(),
            kind.clone(),
            options.bin_dir.clone(),
        );
        let answer = blocking(&name, move || {
            if kind == "mysql" {
                mysql::query(&connection, &home, &sql_owned)
            } else {
                postgres::query(&connection, bin_dir.as_deref(), &home, &sql_owned)
            }
        })
        .await
        .map_err(|f| log.failed(f))?;
        let shown = answer.lines().next().unwrap_or("").trim().to_owned();
        if !server::is_true(&answer) {
            return Err(log.failed(Failed::new(
                name,
                ErrorCode::RestoreFailed,
                format!("returned {shown:?}, not a true value"),
            )));
        }
        log.passed(name, format!("returned {shown:?}"));
    }
    log.phase("checks", since);
    log.ready = Some(Instant::now());
    drop(guard);
    Ok(())
}

/// The size of a dump's file node (0 for anything else).
fn node_size(node: &nfrepo_format::Node) -> u64 {
    match &node.kind {
        NodeKind::File { size, .. } => *size,
        _ => 0,
    }
}

fn database_target(kind: &str, connection: &Connection, bin_dir: Option<&Path>) -> DatabaseTarget {
    if kind == "mysql" {
        DatabaseTarget::Mysql(MysqlTarget {
            connection: connection.clone(),
            bin_dir: None,
        })
    } else {
        DatabaseTarget::Postgres(PostgresTarget {
            connection: connection.clone(),
            bin_dir: Some(bin_dir.map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), Path::to_path_buf)),
        })
    }
}
