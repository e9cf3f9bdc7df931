//! The thin clients `archive_command` and `restore_command` run: they hand
//! a file to the agent, or ask it for one, and exit.
//!
//! `wal-push` never opens the repository itself: without an agent it fails
//! ([`Error::AgentUnavailable`]) and PostgreSQL keeps the segment in
//! `pg_wal` and calls `archive_command` again later, so nothing is lost and
//! no second writer ever races the agent's duplicate check. `wal-fetch`
//! falls back to reading the repository directly (that is the caller's
//! choice, in the CLI): reading is safe beside any writer.

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::WalName;
use super::protocol::{check_token, parse_error, read_line, write_line};
use crate::stream::hex;
use crate::{Error, Result};

/// What the agent did with a pushed file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// Committed in this snapshot.
    Stored(String),
    /// Archived before with the same bytes; nothing stored.
    AlreadyArchived,
}

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).map_err(|e| Error::AgentUnavailable {
        path: socket.to_owned(),
        reason: e.to_string(),
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn lost(socket: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::AgentFailed(format!("the connection to {} broke: {e}", socket.display()))
}

/// Hands the WAL file at `path` to the agent at `socket` for `source`;
/// returns once it is committed in the repository (or was already). Blocks.
///
/// # Errors
/// [`Error::AgentUnavailable`] without an agent; [`Error::WalConflict`]
/// when the name is archived with other bytes; [`Error::Invalid`] for a
/// file whose name is not a WAL name; the agent's failures.
pub fn push_wal(socket: &Path, source: &str, path: &Path) -> Result<PushOutcome> {
    check_token("source", source)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| WalName::parse(n).is_some())
        .ok_or_else(|| Error::Invalid(format!("{} is not a WAL file name", path.display())))?
        .to_owned();
    // Hash first: the agent acknowledges a duplicate without the bytes.
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = blake3::Hasher::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    let digest = hasher.finalize();
    let mut stream = connect(socket)?;
    write_line(
        &mut stream,
        &format!("PUSH {source} {name} {size} {}", hex(digest.as_bytes())),
    )
    .map_err(lost(socket))?;
    let mut replies = BufReader::new(stream.try_clone().map_err(lost(socket))?);
    let answer = read_line(&mut replies).map_err(lost(socket))?.unwrap_or_default();
    match answer.split_once(' ').unwrap_or((answer.as_str(), "")) {
        ("HAVE", _) => return Ok(PushOutcome::AlreadyArchived),
        ("SEND", _) => {}
        ("ERR", rest) => return Err(parse_error(rest)),
        _ => return Err(Error::AgentFailed(format!("unexpected answer {answer:?}"))),
    }
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let sent = std::io::copy(&mut (&mut file).take(size), &mut stream).map_err(lost(socket))?;
    if sent != size {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was sent"),
        });
    }
    stream.flush().map_err(lost(socket))?;
    let answer = read_line(&mut replies)
        .map_err(lost(socket))?
        .ok_or_else(|| Error::AgentFailed("the agent closed the connection before the commit".into()))?;
    match answer.split_once(' ') {
        Some(("OK", snapshot)) => Ok(PushOutcome::Stored(snapshot.to_owned())),
        Some(("ERR", rest)) => Err(parse_error(rest)),
        _ => Err(Error::AgentFailed(format!("unexpected answer {answer:?}"))),
    }
}

/// Asks the agent at `socket` for `name` of `source` and writes it to
/// `dest` (through a temporary file beside it, synced, then renamed, so
/// `dest` is whole or absent); returns its size. Blocks.
///
/// # Errors
/// [`Error::AgentUnavailable`] without an agent (the caller may read the
/// repository itself); [`Error::WalNotFound`] when it is not archived; the
/// agent's failures and local I/O errors.
pub fn fetch_wal_via_agent(socket: &Path, source: &str, name: &str, dest: &Path) -> Result<u64> {
    check_token("source", source)?;
    check_token("WAL name", name)?;
    let mut stream = connect(socket)?;
    write_line(&mut stream, &format!("FETCH {source} {name}")).map_err(lost(socket))?;
    let mut replies = BufReader::new(stream);
    let answer = read_line(&mut replies).map_err(lost(socket))?.unwrap_or_default();
    let size = match answer.split_once(' ').unwrap_or((answer.as_str(), "")) {
        ("FOUND", size) => size
            .parse::<u64>()
            .map_err(|_| Error::AgentFailed(format!("unexpected answer {answer:?}")))?,
        ("MISSING", _) => return Err(Error::WalNotFound(name.to_owned())),
        ("ERR", rest) => return Err(parse_error(rest)),
        _ => return Err(Error::AgentFailed(format!("unexpected answer {answer:?}"))),
    };
    write_whole(dest, |out| {
        let copied = std::io::copy(&mut (&mut replies).take(size), out).map_err(lost(socket))?;
        if copied == size {
            Ok(copied)
        } else {
            Err(Error::AgentFailed(format!(
                "the agent sent {copied} of {size} bytes of {name}"
            )))
        }
    })
}

/// Writes `dest` through `<dest>.nfrepo-partial` (created new, mode 0600,
/// synced, renamed): PostgreSQL never sees a partial segment under the
/// name it asked for.
///
/// # Errors
/// [`Error::Io`] naming `dest`, or what `fill` fails with (the temporary
/// file is then removed); one left by a killed run is replaced.
pub fn write_whole(dest: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<u64>) -> Result<u64> {
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".nfrepo-partial");
    let partial = PathBuf::from(partial);
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&partial)(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o600)
        .open(&partial)
        .map_err(io(&partial))?;
    let written = fill(&mut file).and_then(|n| file.sync_all().map(|()| n).map_err(io(dest)));
    let written = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, dest).map_err(io(dest))?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(written)
}
