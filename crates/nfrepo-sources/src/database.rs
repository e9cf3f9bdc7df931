//! Restoring a database dump straight into a server.
//!
//! The dump's chunks are read, verified and written to the standard input of
//! `mysql` or `psql` as they arrive: nothing is staged on disk. A target
//! database that already holds tables is refused ([`Error::TargetNotEmpty`],
//! `RESTORE_CONFLICT`) unless the caller forces it, in which case the
//! database is dropped and created again, so the result is exactly the dump.
//! The client's exit status is checked, and the whole stream must hash to
//! the BLAKE3 recorded at backup.

use std::process::Stdio;

use futures::StreamExt;
use nfrepo_engine::Reader;
use nfrepo_format::{Node, NodeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dump::last_line;
use crate::{Error, MysqlTarget, PostgresTarget, Result, Secret};

/// A server to restore into.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum DatabaseTarget {
    /// MySQL or MariaDB, through `mysql`.
    Mysql(MysqlTarget),
    /// PostgreSQL, through `psql`.
    Postgres(PostgresTarget),
}

/// What a database restore did.
#[derive(Clone, Debug)]
pub struct DatabaseRestoreReport {
    /// The database written.
    pub database: String,
    /// Dump bytes piped into the client.
    pub bytes: u64,
    /// Whether a non-empty database was replaced (`force`).
    pub replaced: bool,
}

impl DatabaseTarget {
    fn table_count(&self, database: &str) -> Result<u64> {
        match self {
            Self::Mysql(t) => t.table_count(database),
            Self::Postgres(t) => t.table_count(database),
        }
    }

    fn create(&self, database: &str, replace: bool) -> Result<()> {
        match self {
            Self::Mysql(t) => t.create(database, replace),
            Self::Postgres(t) => t.create(database, replace),
        }
    }

    fn load_command(&self, database: &str) -> (Vec<String>, Vec<(String, Secret)>) {
        match self {
            Self::Mysql(t) => (t.load_command(database), t.env()),
            Self::Postgres(t) => (t.load_command(database), t.env()),
        }
    }
}

/// Pipes each dump node into its database on `target`, one after the other.
///
/// Every target database is checked before anything is written: if one
/// holds tables and `force` is off, nothing is changed.
///
/// # Errors
/// [`Error::TargetNotEmpty`] (nothing changed); [`Error::RestoreCommandFailed`]
/// if a client fails; engine errors for missing or corrupted chunks, and
/// [`nfrepo_engine::Error::Corrupted`] naming the dump if its content does not
/// match its recorded size and hashes (the client is killed before it sees
/// the end of its input).
pub async fn restore_databases(
    reader: &Reader,
    dumps: &[(Node, String)],
    target: &DatabaseTarget,
    force: bool,
) -> Result<Vec<DatabaseRestoreReport>> {
    let names: Vec<String> = dumps.iter().map(|(_, db)| db.clone()).collect();
    let occupied = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<bool>> {
            let mut occupied = Vec::with_capacity(names.len());
            let mut refused = Vec::new();
            for db in &names {
                let tables = target.table_count(db)?;
                if tables > 0 {
                    refused.push(format!("database {db} holds {tables} tables"));
                }
                occupied.push(tables > 0);
            }
            if !refused.is_empty() && !force {
                return Err(Error::TargetNotEmpty(refused.join(", ")));
            }
            Ok(occupied)
        })
        .await
        .map_err(|e| Error::RestoreCommandFailed(format!("checking the target failed: {e}")))??
    };
    let mut reports = Vec::with_capacity(dumps.len());
    for ((node, database), replace) in dumps.iter().zip(occupied) {
        let prepare = {
            let target = target.clone();
            let database = database.clone();
            tokio::task::spawn_blocking(move || target.create(&database, replace))
        };
        prepare
            .await
            .map_err(|e| Error::RestoreCommandFailed(format!("preparing the target failed: {e}")))??;
        let bytes = pipe_dump(reader, node, target, database).await?;
        reports.push(DatabaseRestoreReport {
            database: database.clone(),
            bytes,
            replaced: replace,
        });
    }
    Ok(reports)
}

async fn pipe_dump(reader: &Reader, node: &Node, target: &DatabaseTarget, database: &str) -> Result<u64> {
    if !matches!(node.kind, NodeKind::File { .. }) {
        return Err(Error::NotAFile(node.name_lossy().into_owned()));
    }
    let (argv, env) = target.load_command(database);
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no client command".into()))?;
    let mut child = crate::child::async_command(program, &env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::RestoreCommandFailed(format!("cannot start {program:?}: {e}")))?;
    let mut stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(err) = stderr.as_mut() {
            let _ = err.read_to_end(&mut buf).await;
        }
        buf
    });
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::RestoreCommandFailed("no stdin pipe".into()))?;
    // Verified as a whole before its last chunk reaches the client: a dump
    // that does not match its node never reaches the client's end of input.
    let mut chunks = std::pin::pin!(reader.file_content(node, node.name_lossy().into_owned()));
    let mut bytes = 0u64;
    let mut pipe_error = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                // Never let the client commit a partial stream as if whole.
                // Kill and reap it while its input is still open, so it
                // never reads an end of input.
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(e.into());
            }
        };
        bytes += chunk.len() as u64;
        if let Err(e) = stdin.write_all(&chunk).await {
            pipe_error = Some(e);
            break;
        }
    }
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| Error::RestoreCommandFailed(format!("waiting for {program:?}: {e}")))?;
    let stderr = stderr_task.await.unwrap_or_default();
    if !status.success() || pipe_error.is_some() {
        return Err(Error::RestoreCommandFailed(format!(
            "{program:?} failed loading into {database}: {}",
            last_line(&stderr)
        )));
    }
    Ok(bytes)
}
