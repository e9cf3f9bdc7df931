//! Everything the binary prints on standard output goes through here.
//!
//! A reader that stops early (`nfrepo snapshots | head -1`) closes the pipe,
//! and the next write fails with `EPIPE` (Rust ignores `SIGPIPE`, so the
//! process is not killed). [`Stdout`] turns that into a quiet end of output:
//! [`outln!`] discards everything after it, no panic and no message, and
//! the command runs to its end and exits with its own code (0 when it
//! succeeded). Streaming writers ([`Stdout`] as an [`std::io::Write`]) get
//! the `BrokenPipe` error so they can stop reading data no one wants, and
//! ask [`closed`] to tell that end from a real failure.
//!
//! `println!` and `print!` are not used anywhere in the binary.

pub mod escape;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: AtomicBool = AtomicBool::new(false);

/// Whether the reader of standard output has gone away.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Whether writing to standard output failed for another reason than a
/// closed pipe (a full disk under `> file`): the command's output is
/// incomplete, so `main` must not exit 0.
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

/// Standard output that remembers a broken pipe.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if closed() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        std::io::stdout().lock().write(buf).inspect_err(note)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if closed() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        std::io::stdout().lock().write_all(buf).inspect_err(note)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if closed() {
            return Ok(());
        }
        std::io::stdout().lock().flush().inspect_err(note)
    }
}

fn note(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes one formatted line to standard output.
///
/// A broken pipe ends output quietly (see the module docs); any other
/// write error is reported once on stderr, later lines are dropped, and
/// [`failed`] turns the exit code non-zero.
pub fn line(args: std::fmt::Arguments<'_>) {
    if closed() || failed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written {
        note(&e);
        if !closed() {
            eprintln!("error: cannot write to standard output: {e}");
            FAILED.store(true, Ordering::Relaxed);
        }
    }
}

/// Writes `text`, whole lines each ending in `\n`, to standard output in
/// one write: a table of 10,000 rows is one system call, not 10,000 (as
/// [`line()`] for each would be). Errors as for [`line()`].
pub fn lines(text: &str) {
    if closed() || failed() {
        return;
    }
    let written = std::io::stdout().lock().write_all(text.as_bytes());
    if let Err(e) = written {
        note(&e);
        if !closed() {
            eprintln!("error: cannot write to standard output: {e}");
            FAILED.store(true, Ordering::Relaxed);
        }
    }
}

static BATCH: std::sync::Mutex<Option<Vec<serde_json::Value>>> = std::sync::Mutex::new(None);

/// Prints one JSON document on a line, or, between [`begin_json_batch`] and
/// [`end_json_batch`], keeps it for the one document that ends the batch.
pub fn json(value: serde_json::Value) {
    let mut batch = BATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match batch.as_mut() {
        Some(values) => values.push(value),
        None => line(format_args!("{value}")),
    }
}

/// Starts collecting [`json`] documents (for a command that runs several
/// operations but must print one JSON document, like `snapshot --all`).
pub fn begin_json_batch() {
    *BATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Vec::new());
}

/// Stops collecting and returns the documents collected, in order.
pub fn end_json_batch() -> Vec<serde_json::Value> {
    BATCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .unwrap_or_default()
}

/// `println!` for the binary: one line on stdout through [`line()`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
