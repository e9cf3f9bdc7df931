//! Piping a verified dump into the client that loads the staging database.

use std::process::Stdio;

use futures::StreamExt;
use nfrepo_engine::Reader;
use nfrepo_format::{Node, NodeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{LoadCommand, RestoreStage, client_error};
use crate::Error;

/// Streams `node` into `command`; returns the dump bytes written.
///
/// The command's epilogue (PostgreSQL's `COMMIT`) is written only after the
/// reader has verified the whole dump; a stream that fails kills the client
/// while its input is still open, so it never reads an end of input.
pub(super) async fn pipe(
    reader: &Reader,
    node: &Node,
    command: &LoadCommand,
    staging: &str,
    work: Option<&nfrepo_engine::Work>,
) -> Result<u64, (RestoreStage, Error)> {
    let load_failed = |e: Error| (RestoreStage::Load, e);
    if !matches!(node.kind, NodeKind::File { .. }) {
        return Err(load_failed(Error::NotAFile(node.name_lossy().into_owned())));
    }
    let (program, args) = command
        .argv
        .split_first()
        .ok_or_else(|| load_failed(Error::Invalid("no client command".into())))?;
    let mut child = crate::child::async_command(program, &command.auth)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| load_failed(Error::RestoreCommandFailed(format!("cannot start {program:?}: {e}"))))?;
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
        .ok_or_else(|| load_failed(Error::RestoreCommandFailed("no stdin pipe".into())))?;
    let mut chunks = std::pin::pin!(reader.file_content(node, node.name_lossy().into_owned()));
    let mut bytes = 0u64;
    let mut pipe_error = stdin.write_all(command.prologue).await.err();
    while pipe_error.is_none() {
        let Some(chunk) = chunks.next().await else {
            // The whole dump matched its recorded size and hashes.
            pipe_error = stdin.write_all(command.epilogue).await.err();
            break;
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(load_failed(e.into()));
            }
        };
        bytes += chunk.len() as u64;
        if let Some(work) = work {
            work.advance(0, chunk.len() as u64);
        }
        pipe_error = stdin.write_all(&chunk).await.err();
    }
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| load_failed(Error::RestoreCommandFailed(format!("waiting for {program:?}: {e}"))))?;
    let stderr = stderr_task.await.unwrap_or_default();
    if !status.success() || pipe_error.is_some() {
        let why = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed".to_owned(),
        };
        return Err(load_failed(Error::RestoreCommandFailed(format!(
            "{program:?} {why} after {bytes} dump bytes into {staging}: {}",
            client_error(&stderr)
        ))));
    }
    Ok(bytes)
}
