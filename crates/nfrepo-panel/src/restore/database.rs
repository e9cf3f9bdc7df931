//! A database dump restored through the panel into a configured server
//! (`[serve.database_targets]`).
//!
//! What is refused is refused before the job starts, with its code in the
//! `nfrepo-error` headers: a snapshot of another kind of source
//! (`WRONG_SOURCE_KIND`), a dump it does not hold (`NO_SUCH_DATABASE`), a
//! choice left open (`INVALID_ARGUMENT`). The rest (planning, the staged
//! load, verification, the switch) runs as the job, through
//! `nfrepo_sources::restore_databases`: the live database is only ever
//! replaced by a verified copy, and is kept aside, never dropped.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use nfrepo_engine::{ErrorCode, Operation};
use nfrepo_sources::{DatabaseRestoreOptions, DatabaseTarget};

use super::{Approved, Job, JobResult, finish, register};
use crate::reply::{ERROR_DETAIL_HEADER, ERROR_HEADER, Refused, engine_failure, refuse, refused};
use crate::state::Shared;

/// What a database restore asks for, beside the snapshot and target.
#[derive(Clone, Debug, Default)]
pub(crate) struct DatabaseChoice {
    /// The dumped database to restore; empty: the snapshot's only one.
    pub(crate) database: String,
    /// The database to restore into; empty: the dumped one's name.
    pub(crate) into: String,
    /// Replace a database that holds data (after the staged copy is
    /// verified; the old one is kept aside).
    pub(crate) force: bool,
}

/// The refusal of a sources error before the job starts.
fn sources_refusal(e: &nfrepo_sources::Error) -> Refused {
    let code = e.code(Operation::Restore);
    let detail = e.detail_code();
    let status = match detail {
        Some("WRONG_SOURCE_KIND" | "INVALID_ARGUMENT") => StatusCode::BAD_REQUEST,
        _ => super::status_of(code),
    };
    let mut response = refuse(status, e.to_string());
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code.as_str()));
    if let Some(detail) = detail {
        headers.insert(ERROR_DETAIL_HEADER, HeaderValue::from_static(detail));
    }
    Box::new(response)
}

fn trimmed(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

/// Starts restoring a dump of `approved.snapshot` into the server `target`.
pub(super) async fn start(
    shared: &Arc<Shared>,
    approved: &Approved<'_>,
    target: &str,
    choice: &DatabaseChoice,
) -> Result<Arc<Job>, Refused> {
    let Some(server) = shared.database_targets.get(target) else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            format!("no database target {target:?} is configured"),
        ));
    };
    let engine = |e: nfrepo_engine::Error| engine_failure(&e, Operation::Restore);
    let snapshot = shared.repo.find_snapshot(approved.snapshot).await.map_err(engine)?;
    let reader = shared.repo.reader().await.map_err(engine)?;
    let root = reader.tree(&snapshot.snapshot.root).await.map_err(engine)?;
    // A path names a dump (`app.sql`) as the CLI's `SNAPSHOT:app.sql` does.
    let path_dump = approved.path.trim_end_matches(".sql");
    let wanted = trimmed(&choice.database).or_else(|| trimmed(path_dump));
    let mut connection = server.connection().clone();
    connection.database = trimmed(&choice.into).map(str::to_owned);
    let items = nfrepo_sources::database_restore_items(&root.nodes, &snapshot, &connection, wanted)
        .map_err(|e| sources_refusal(&e))?;
    let [item] = items.as_slice() else {
        return Err(sources_refusal(&nfrepo_sources::Error::InvalidArgument(format!(
            "snapshot {} holds {} databases: pick the one to restore",
            snapshot.id.short(),
            items.len()
        ))));
    };
    connection.database = Some(item.database.clone());
    let into = connection.to_string();
    let target_server = DatabaseTarget::for_connection(connection).map_err(|e| sources_refusal(&e))?;
    let dumped = item.stream.trim_end_matches(".sql").to_owned();
    let (job, work) = register(
        shared,
        approved,
        &snapshot,
        (item.stream.clone(), target),
        |_, _| std::path::PathBuf::new(),
        Some((dumped, into.clone())),
    )?;
    let note = approved.note();
    tracing::info!(
        target: crate::ACCESS_LOG,
        user = approved.user, peer = %approved.peer, snapshot = %snapshot.id, dump = %item.stream,
        into = %into, "database restore started, approved with a fresh TOTP code"
    );
    let mut options = DatabaseRestoreOptions::default();
    options.force = choice.force;
    options.work = Some(work);
    let items = items.clone();
    let (shared, job_done) = (shared.clone(), job.clone());
    tokio::spawn(async move {
        // As for a directory restore: the restore's future is not provably
        // `Send`, so it runs on a blocking thread of the same runtime.
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || -> JobResult {
            let failed = |e: &nfrepo_sources::Error| (e.code(Operation::Restore), e.detail_code(), e.to_string());
            let plan =
                nfrepo_sources::plan_database_restore(&target_server, items, &options).map_err(|e| failed(&e))?;
            let reports = handle
                .block_on(nfrepo_sources::restore_databases(&reader, &plan))
                .map_err(|e| failed(&e))?;
            let bytes = reports.iter().map(|r| r.bytes).sum();
            let said: Vec<String> = reports
                .iter()
                .map(|r| {
                    let kept = r
                        .kept_old
                        .as_ref()
                        .map_or_else(String::new, |old| format!("; the old database is kept as {old}"));
                    format!(
                        "restored database {} ({bytes} bytes, {} tables' row counts verified){kept}",
                        r.database, r.tables_verified
                    )
                })
                .collect();
            Ok((reports.len() as u64, bytes, said.join("; ")))
        })
        .await
        .unwrap_or_else(|e| {
            Err((
                ErrorCode::RestoreFailed,
                None,
                format!("the restore worker failed: {e}"),
            ))
        });
        finish(&shared, &job_done, result, &note, vec!["--into".into(), into]).await;
    });
    Ok(job)
}
