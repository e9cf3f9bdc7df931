//! The agent's protocol on its Unix socket: one request per connection,
//! text lines of space-separated tokens (names and codes never hold a
//! space), then raw bytes where a line announces them.
//!
//! ```text
//! client → PUSH <source> <name> <size> <blake3 hex>
//! agent  → HAVE                        archived before with the same bytes: done
//!        | SEND                        then the client sends <size> bytes, and
//!            agent → OK <snapshot id>  once they are committed in the repository
//!        | ERR <DETAIL_CODE> <message>
//! client → FETCH <source> <name>
//! agent  → FOUND <size>, then <size> bytes (a shorter stream means the read failed)
//!        | MISSING
//!        | ERR <DETAIL_CODE> <message>
//! ```

use std::io::{BufRead, Write};

use crate::{Error, Result};

/// The longest line either side sends.
const MAX_LINE: u64 = 4096;

/// Reads one line (without its `\n`); `None` at a clean end of stream.
pub(super) fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = std::io::Read::take(&mut *reader, MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a protocol line is too long or cut short",
        ));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a protocol line is not UTF-8"))
}

pub(super) fn write_line(writer: &mut impl Write, line: &str) -> std::io::Result<()> {
    let line = line.replace('\n', " ");
    writer.write_all(line.as_bytes())?;
    writer.write_all(b"\n")?;
    writer.flush()
}

/// An agent's `ERR` line for `error`.
/// The WAL errors carry their file's name, which the client makes the same error of.
pub(super) fn error_line(error: &Error) -> String {
    let payload = match error {
        Error::WalConflict(name) | Error::WalNotFound(name) => name.clone(),
        other => other.to_string(),
    };
    format!(
        "ERR {} {}",
        error.detail_code().unwrap_or("AGENT_FAILED"),
        payload.replace('\n', " ")
    )
}

/// The error an `ERR` line stands for on the client's side.
pub(super) fn parse_error(rest: &str) -> Error {
    let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
    match code {
        "WAL_CONFLICT" => Error::WalConflict(message.to_owned()),
        "WAL_NOT_FOUND" => Error::WalNotFound(message.to_owned()),
        _ => Error::AgentFailed(format!("{code}: {message}")),
    }
}

/// A source name or WAL name safe to put in a line and a path.
pub(super) fn check_token(what: &str, token: &str) -> Result<()> {
    let ok = !token.is_empty()
        && token.len() <= 255
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && token != "."
        && token != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{what} {token:?} is not a valid name")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[test]
    fn lines_are_bounded_and_errors_keep_their_code() {
        let mut input: &[u8] = b"PUSH pg 000000010000000000000001 16 ab\nrest";
        assert_eq!(
            read_line(&mut input).unwrap().as_deref(),
            Some("PUSH pg 000000010000000000000001 16 ab")
        );
        assert!(read_line(&mut input).is_err(), "a line without its end is refused");
        let long = vec![b'a'; 5000];
        assert!(read_line(&mut long.as_slice()).is_err());
        assert!(read_line(&mut [].as_slice()).unwrap().is_none());
        let line = error_line(&Error::WalConflict("x".into()));
        let back = parse_error(line.strip_prefix("ERR ").unwrap());
        assert_eq!(back.detail_code(), Some("WAL_CONFLICT"));
        assert!(check_token("source", "pg-main.1").is_ok());
        assert!(check_token("source", "../x").is_err());
        assert!(check_token("source", "a b").is_err());
    }
}
