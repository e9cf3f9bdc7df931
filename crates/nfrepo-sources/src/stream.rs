//! Stream sources: standard input, and the standard output of a command.
//!
//! A stream becomes a snapshot whose root tree holds one file named after
//! the stream. Its SHA-256 is recorded next to the BLAKE3 (the platform spec
//! asks for it on dumps). A command's exit status is checked *before* the
//! caller commits: a dump that failed half-way is never a good snapshot.

use std::io::Read;
use std::process::{Command, Stdio};

use nfrepo_engine::{BackupSession, CommitDetails, StoredContent};
use nfrepo_format::{BlobId, CommandRecord, Metadata, Node, NodeKind, Tree};

use crate::{Error, Result};

/// The result of storing a stream.
#[derive(Debug)]
pub struct StreamOutcome {
    /// The root tree to commit.
    pub root: BlobId,
    /// Counters and, for commands, the command record.
    pub details: CommitDetails,
    /// What was stored.
    pub stored: StoredContent,
}

fn stream_node(name: &str, stored: &StoredContent) -> Result<Node> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Invalid(format!(
            "stream name {name:?} must be a plain file name"
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Ok(Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File {
            size: stored.size,
            content: stored.content.clone(),
            blake3: stored.blake3,
            sha256: stored.sha256,
        },
        meta: Metadata {
            mode: 0o600,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mtime_ns: now,
            ..Metadata::default()
        },
    })
}

/// Stores everything `reader` yields as the file `name`. Blocks.
///
/// # Errors
/// [`Error::Invalid`] for a bad name; read and engine errors.
pub fn backup_reader(session: &BackupSession, name: &str, reader: impl Read) -> Result<StreamOutcome> {
    // Validate the name before reading anything.
    stream_node(name, &placeholder())?;
    let stored = session.store_stream(reader, true)?;
    let root = session.store_tree(&Tree {
        nodes: vec![stream_node(name, &stored)?],
    })?;
    let details = CommitDetails {
        files: 1,
        bytes: stored.size,
        extra: digests(&stored),
        ..CommitDetails::default()
    };
    Ok(StreamOutcome { root, details, stored })
}

fn placeholder() -> StoredContent {
    StoredContent {
        size: 0,
        content: nfrepo_format::Content::Inline(Vec::new()),
        blake3: [0; 32],
        sha256: None,
    }
}

fn digests(stored: &StoredContent) -> Vec<(String, String)> {
    let mut extra = vec![("stream.blake3".to_owned(), hex(&stored.blake3))];
    if let Some(sha) = stored.sha256 {
        extra.push(("stream.sha256".to_owned(), hex(&sha)));
    }
    extra
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Runs `argv` and stores its standard output as the file `name`. Blocks.
///
/// The command's standard error passes through to ours; its last line is
/// kept for the error message.
///
/// # Errors
/// [`Error::CommandFailed`] if it cannot start, exits non-zero or dies from a
/// signal — the caller must then not commit.
pub fn backup_command(session: &BackupSession, name: &str, argv: &[String]) -> Result<StreamOutcome> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no command given".into()))?;
    stream_node(name, &placeholder())?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::CommandFailed(format!("cannot start {program:?}: {e}")))?;
    let stderr = child.stderr.take();
    let stderr_tail = std::thread::spawn(move || forward_stderr(stderr));
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::CommandFailed("no stdout pipe".into()))?;
    let stored = session.store_stream(stdout, true);
    if stored.is_err() {
        // Don't leave the command blocked on a full pipe.
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Error::CommandFailed(format!("waiting for {program:?}: {e}")))?;
    let last_line = stderr_tail.join().unwrap_or_default();
    let stored = stored?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        };
        let tail = if last_line.is_empty() {
            String::new()
        } else {
            format!(": {last_line}")
        };
        return Err(Error::CommandFailed(format!("command {program:?} {how}{tail}")));
    }
    let root = session.store_tree(&Tree {
        nodes: vec![stream_node(name, &stored)?],
    })?;
    let details = CommitDetails {
        files: 1,
        bytes: stored.size,
        command: Some(CommandRecord {
            argv: argv.to_vec(),
            exit_code: status.code().unwrap_or(0),
        }),
        extra: digests(&stored),
        ..CommitDetails::default()
    };
    Ok(StreamOutcome { root, details, stored })
}

/// Copies the child's stderr to ours and returns its last non-empty line.
fn forward_stderr(stderr: Option<std::process::ChildStderr>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let Some(stderr) = stderr else {
        return String::new();
    };
    let mut last = String::new();
    let mut ours = std::io::stderr();
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(line) = line else { break };
        let _ = ours.write_all(&line);
        let _ = ours.write_all(b"\n");
        let text = String::from_utf8_lossy(&line).trim().to_owned();
        if !text.is_empty() {
            last = text;
        }
    }
    last.chars().take(300).collect()
}
