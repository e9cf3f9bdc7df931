//! The `nfrepo` binary: parse, run one engine operation, render, exit.
//!
//! Every failure ends as one line on stderr (or one JSON object with
//! `--json`) carrying a stable error code, and a distinct exit code:
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | success |
//! | 2 | usage error |
//! | 3 | partial: the snapshot was committed but some entries were skipped |
//! | 10–17 | `BACKUP_FAILED`, `BACKUP_CORRUPTED`, `BACKUP_NOT_FOUND`, `RESTORE_FAILED`, `RESTORE_CONFLICT`, `ROLLBACK_FAILED`, `PERMISSION_DENIED`, `SNAPSHOT_INVALID` |
//!
//! Usage errors (exit 2) are clap's own, or `error[USAGE/INVALID_ARGUMENT]`
//! for a value clap cannot judge alone. A reader that closes standard output
//! early (`nfrepo snapshots | head -1`) is a normal end: output stops, and the
//! command finishes with its own exit code (see [`output`]).
//!
//! Logs go to stderr, with colour only when stderr is a terminal and
//! `NO_COLOR` is unset. `-v` / `-vv` raise nfrepo's own log level only;
//! dependencies (OpenDAL, reqsign, hyper…) stay at `warn` unless `NFREPO_LOG`
//! asks for more. At any level every log line passes through
//! [`nfrepo_sources::redact_secrets`], so no password or S3 secret is written.

mod cli;
mod commands;
mod config;
mod context;
mod failure;
mod output;
mod progress;
mod render;
mod trail;

use std::io::{IsTerminal, Write};

use clap::Parser;

use crate::cli::Cli;

fn main() {
    tune_malloc();
    raise_open_file_limit();
    let cli = Cli::parse();
    let json = cli.global.json;
    // A server's access log (one `info` line per request) is on by default.
    let serving = matches!(cli.command, cli::Command::Serve(_));
    init_logging(cli.global.verbose.max(u8::from(serving)), cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(0) if output::failed() => 1,
        Ok(code) => code,
        Err(failure) => failure.report(json),
    };
    // Don't wait for blocking tasks stuck on a dead pipe.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

/// Tunes glibc's allocator for nfrepo's few busy threads.
///
/// - **Freed pack buffers go back to the kernel.** glibc raises its mmap
///   threshold to the size of the first large block freed, so after the
///   first 16 MiB pack every later pack buffer came from the heap and
///   stayed resident after it was freed. Holding the threshold at 1 MiB
///   returns each one when dropped: peak RSS of a 964 MB dump backup
///   measured 116 MiB without this and 69 MiB with it.
/// - **Small buffers stay.** Holding the mmap threshold also pins the trim
///   threshold at its 128 KiB default, so a thread's arena handed its free
///   top back to the kernel after nearly every restore run or sealed chunk
///   and took fresh pages again for the next: 550,000 minor faults in a
///   restore of a 44,000-file tree from S3, 770,000 in its first backup.
///   A 4 MiB trim threshold with one arena per core (glibc's default is
///   eight per core; memory kept in an arena no running thread uses is
///   memory held for nothing) keeps them: 120,000–145,000 and 310,000
///   faults, the restore's system time 2.4 → 1.9 s and wall time 3.84 →
///   3.58 s, the first backup's 5.4 → 5.0 s, the same peak RSS (80–85 MiB),
///   the dump's incremental unchanged (1.88 s), 2-core VM (README).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "mallopt has no safe wrapper; it only sets tuning parameters")]
fn tune_malloc() {
    let arenas = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt is thread-safe and called before any other thread exists.
    unsafe {
        let _ = libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        let _ = libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
        let _ = libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// Raises the soft limit on open files to the hard one.
///
/// A restore keeps every file it is writing open until it is checked and
/// renamed into place, with the directories on its path and, with
/// `--verify`, a second descriptor per file read back: about 2,400 at once
/// restoring a 44,000-file tree. The soft limit most systems give a login
/// shell or a cron job is 1,024, under which that restore failed with
/// "Too many open files" (`EMFILE`). The hard limit is the one the
/// administrator set; the soft one is only the default below it (Go
/// programs, restic among them, raise it the same way at start). Children
/// inherit the raised limit; nfrepo's (the database dump and restore
/// tools) do not `select(2)` on descriptors that high. A failure leaves
/// the limit as it was.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Linux refuses more than `fs.nr_open` (1 Mi by default), even under
    // an unlimited hard limit.
    const MOST: u64 = 1 << 20;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let wanted = hard.min(MOST);
        if soft < wanted {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted, hard);
        }
    }
}

/// Whether stderr may carry ANSI colour: a terminal, and `NO_COLOR` unset
/// (<https://no-color.org>: any non-empty value).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The default log filter: nfrepo's own crates at the level `-q`/`-v`
/// ask for, every dependency at `warn` (their debug output has held
/// credentials).
fn default_filter(verbose: u8, quiet: bool) -> String {
    let ours = match (quiet, verbose) {
        (true, _) => return "error".to_owned(),
        (false, 0) => return "warn".to_owned(),
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    format!("warn,nfrepo={ours}")
}

fn init_logging(verbose: u8, quiet: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NFREPO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter(verbose, quiet)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr(Vec::new()))
        .with_ansi(colour_on_stderr())
        .with_target(false)
        .without_time()
        .init();
}

/// One log event, buffered, written to stderr with every known secret
/// masked when the event is complete (the formatter writes each event
/// through one writer, so a secret is never split across two buffers).
struct RedactingStderr(Vec<u8>);

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingStderr {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr()
            .lock()
            .write_all(nfrepo_sources::redact_secrets(&text).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::default_filter;

    #[test]
    fn verbosity_never_raises_dependencies() {
        assert_eq!(default_filter(0, false), "warn");
        assert_eq!(default_filter(2, false), "warn,nfrepo=debug");
        assert_eq!(default_filter(5, false), "warn,nfrepo=trace");
        assert_eq!(default_filter(2, true), "error");
    }
}
