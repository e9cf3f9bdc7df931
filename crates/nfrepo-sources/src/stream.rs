//! Stream sources: standard input, and the standard output of a command.
//!
//! A stream becomes a snapshot whose root tree holds one file named after
//! the stream. Its SHA-256 is recorded next to the BLAKE3 (the platform spec
//! asks for it on dumps). A command's exit status is checked *before* the
//! caller commits: a dump that failed half-way is never a good snapshot.

use std::io::Read;
use std::process::Stdio;

use nfrepo_engine::{BackupWriter, CommitDetails, StoredContent};
use nfrepo_format::{BlobId, CommandRecord, Metadata, Node, Tree};

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

/// A stream becomes one entry of the root tree, so its name must be a plain file name.
pub(crate) fn check_stream_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(Error::Invalid(format!(
            "stream name {name:?} must be a plain file name"
        )));
    }
    Ok(())
}

pub(crate) fn stream_node(name: &str, stored: &StoredContent) -> Result<Node> {
    check_stream_name(name)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Ok(Node {
        name: name.as_bytes().to_vec(),
        kind: stored.file_kind(),
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
pub fn backup_reader(session: &BackupWriter, name: &str, reader: impl Read) -> Result<StreamOutcome> {
    // Validate the name before reading anything.
    check_stream_name(name)?;
    let stored = session.store_root_stream(reader, name)?;
    one_stream(session, name, stored)
}

/// The root tree holding `stored` as the file `name`, and its details.
fn one_stream(session: &BackupWriter, name: &str, stored: StoredContent) -> Result<StreamOutcome> {
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

pub(crate) fn digests(stored: &StoredContent) -> Vec<(String, String)> {
    let mut extra = vec![("stream.blake3".to_owned(), hex(&stored.blake3))];
    if let Some(sha) = stored.sha256 {
        extra.push(("stream.sha256".to_owned(), hex(&sha)));
    }
    extra
}

pub(crate) fn hex(bytes: &[u8]) -> String {
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
pub fn backup_command(session: &BackupWriter, name: &str, argv: &[String]) -> Result<StreamOutcome> {
    check_stream_name(name)?;
    let (stored, status) = run_piped(argv, &crate::ChildAuth::none(), |stdout| {
        session.store_root_stream(stdout, name).map_err(Error::from)
    })?;
    let mut outcome = one_stream(session, name, stored)?;
    outcome.details.command = Some(CommandRecord {
        argv: redact_argv(argv),
        exit_code: status.code().unwrap_or(0),
    });
    Ok(outcome)
}

/// Runs `argv` with its standard output handed to `consume` and its
/// standard error passed through to ours (its last line kept for the
/// error); kills it when `consume` fails, so it never blocks on a full
/// pipe. Blocks.
///
/// # Errors
/// `consume`'s error first; then [`Error::CommandFailed`] if the command
/// cannot start, exits non-zero or dies from a signal.
pub(crate) fn run_piped<T>(
    argv: &[String],
    auth: &crate::ChildAuth,
    consume: impl FnOnce(&mut std::process::ChildStdout) -> Result<T>,
) -> Result<(T, std::process::ExitStatus)> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Invalid("no command given".into()))?;
    let mut child = crate::child::command(program, auth)
        .args(args)
        .stdin(auth.stdin_or(Stdio::null())?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::CommandFailed(format!("cannot start {program:?}: {e}")))?;
    let stderr = child.stderr.take();
    let stderr_tail = std::thread::spawn(move || forward_stderr(stderr));
    let consumed = match child.stdout.take() {
        Some(mut stdout) => consume(&mut stdout),
        None => Err(Error::CommandFailed("no stdout pipe".into())),
    };
    if consumed.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Error::CommandFailed(format!("waiting for {program:?}: {e}")))?;
    let last_line = stderr_tail.join().unwrap_or_default();
    let consumed = consumed?;
    if !status.success() {
        let (how, tail) = describe_exit(status, &last_line);
        return Err(Error::CommandFailed(format!("command {program:?} {how}{tail}")));
    }
    Ok((consumed, status))
}

/// Copies the child's stderr to ours and returns its last non-empty line.
pub(crate) fn forward_stderr(stderr: Option<std::process::ChildStderr>) -> String {
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

/// Flags whose value (`--flag=value` or the next argument) is a secret.
const SECRET_FLAGS: &[&str] = &[
    "--password",
    "--pass",
    "--passwd",
    "--token",
    "--secret",
    "--secret-key",
];

/// The argv with secrets replaced by `***`, for the snapshot record: values
/// of password-like flags, mysql's `-pSECRET`, `redis-cli -a SECRET`,
/// `NAME=value` assignments whose name mentions a password, token or
/// secret, libpq's `password=…` inside a connection string, and passwords
/// in URLs (`user:pw@` and `?password=`).
#[must_use]
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    let mut redis_cli = false;
    for arg in argv {
        if std::mem::take(&mut hide_next) {
            out.push("***".to_owned());
            continue;
        }
        // `sh -c 'redis-cli -a x'` is one argument; words of it count too.
        redis_cli |= arg.rsplit('/').next() == Some("redis-cli");
        let lower = arg.to_ascii_lowercase();
        if SECRET_FLAGS.contains(&lower.as_str()) || (redis_cli && arg == "-a") {
            hide_next = true;
            out.push(arg.clone());
        } else if let Some((flag, _)) = arg.split_once('=')
            && (SECRET_FLAGS.contains(&flag.to_ascii_lowercase().as_str()) || is_secret_name(flag))
        {
            out.push(format!("{flag}=***"));
        } else if arg.len() > 2 && arg.starts_with("-p") && !arg.starts_with("--") {
            out.push("-p***".to_owned());
        } else if arg.contains(char::is_whitespace) {
            // A shell command or a libpq connection string: redact word by
            // word, keeping the separators. Words hold no whitespace, so this
            // recursion ends.
            let words: Vec<String> = arg.split(char::is_whitespace).map(str::to_owned).collect();
            let mut words = redact_argv(&words).into_iter();
            let mut joined = words.next().unwrap_or_default();
            for (separator, word) in arg.matches(char::is_whitespace).zip(words) {
                joined.push_str(separator);
                joined.push_str(&word);
            }
            out.push(joined);
        } else {
            out.push(redact_url_password(arg));
        }
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    !name.starts_with('-')
        && ["PASSWORD", "PASSWD", "TOKEN", "SECRET"]
            .iter()
            .any(|s| upper.contains(s))
}

/// `scheme://user:password@host` becomes `scheme://user:***@host`, and a
/// `password=` query parameter is masked too.
fn redact_url_password(arg: &str) -> String {
    let arg = &redact_query_password(arg);
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let rest = &arg[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return arg.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &arg[..scheme_end + 3], &rest[at..]),
        None => arg.to_owned(),
    }
}

/// `…?password=x&sslmode=y` becomes `…?password=***&sslmode=y`.
fn redact_query_password(arg: &str) -> String {
    let Some(query_start) = arg.find('?') else {
        return arg.to_owned();
    };
    let (head, query) = arg.split_at(query_start + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((key, _)) if is_secret_name(key) => format!("{key}=***"),
            _ => part.to_owned(),
        })
        .collect();
    format!("{head}{}", parts.join("&"))
}

/// How a command ended ("exited with status N" or "was killed by a signal"),
/// and its last stderr line as a `": …"` suffix (empty when it printed none).
pub(crate) fn describe_exit(status: std::process::ExitStatus, last_line: &str) -> (String, String) {
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    };
    let tail = if last_line.is_empty() {
        String::new()
    } else {
        format!(": {last_line}")
    };
    (how, tail)
}

#[cfg(test)]
mod tests {
    use super::redact_argv;

    fn redact(args: &[&str]) -> Vec<String> {
        redact_argv(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    // Issue 10: an argument holding a newline or tab but no space (a SQL
    // script given to `printf`) recursed until the stack overflowed.
    #[test]
    fn arguments_with_newlines_are_redacted_without_recursing_forever() {
        assert_eq!(
            redact(&["printf", "%s", "SELECT\n1;\tSELECT\n2;"]),
            ["printf", "%s", "SELECT\n1;\tSELECT\n2;"]
        );
    }

    #[test]
    fn secrets_never_reach_the_snapshot_record() {
        assert_eq!(
            redact(&["mysqldump", "-uroot", "-phunter2", "--single-transaction", "db"]),
            ["mysqldump", "-uroot", "-p***", "--single-transaction", "db"]
        );
        assert_eq!(
            redact(&["tool", "--password=x", "--token", "abc", "-p"]),
            ["tool", "--password=***", "--token", "***", "-p"]
        );
        assert_eq!(
            redact(&["env", "PGPASSWORD=s3cret", "pg_dump", "postgres://app:pw@db:5432/main"]),
            ["env", "PGPASSWORD=***", "pg_dump", "postgres://app:***@db:5432/main"]
        );
        assert_eq!(redact(&["sh", "-c", "seq 1 10"]), ["sh", "-c", "seq 1 10"]);
        // Issue 9, bug 4: these forms reached the snapshot record.
        assert_eq!(
            redact(&["redis-cli", "-a", "hunter2", "--rdb", "-"]),
            ["redis-cli", "-a", "***", "--rdb", "-"]
        );
        assert_eq!(redact(&["ls", "-a", "dir"]), ["ls", "-a", "dir"]);
        assert_eq!(
            redact(&["tool", "--pass", "hunter2", "--pass=hunter2"]),
            ["tool", "--pass", "***", "--pass=***"]
        );
        assert_eq!(
            redact(&["pg_dump", "host=db user=app password=hunter2 dbname=main"]),
            ["pg_dump", "host=db user=app password=*** dbname=main"]
        );
        assert_eq!(
            redact(&["psql", "postgresql://db/main?user=app&password=hunter2&sslmode=require"]),
            ["psql", "postgresql://db/main?user=app&password=***&sslmode=require"]
        );
        assert_eq!(
            redact(&["sh", "-c", "mysqldump -uroot -phunter2 db | gzip"]),
            ["sh", "-c", "mysqldump -uroot -p*** db | gzip"]
        );
        assert_eq!(
            redact(&["sh", "-c", "redis-cli -a hunter2 --rdb /dev/stdout"]),
            ["sh", "-c", "redis-cli -a *** --rdb /dev/stdout"]
        );
        assert_eq!(
            redact(&["curl", "https://example/a@b"]),
            ["curl", "https://example/a@b"]
        );
        // A newline or a tab in an argument recursed without end (a stack
        // overflow) when words were split on spaces only.
        assert_eq!(
            redact(&["sh", "-c", "echo a\n  mysqldump -phunter2\tdb\nredis-cli -a\nx"]),
            ["sh", "-c", "echo a\n  mysqldump -p***\tdb\nredis-cli -a\n***"]
        );
    }
}
