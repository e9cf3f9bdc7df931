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

mod cli;
mod commands;
mod config;
mod context;
mod failure;
mod render;

use clap::Parser;

use crate::cli::Cli;

fn main() {
    hold_malloc_mmap_threshold();
    let cli = Cli::parse();
    let json = cli.global.json;
    init_logging(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(failure) => failure.report(json),
    };
    // Don't wait for blocking tasks stuck on a dead pipe.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

/// Keeps glibc from retaining freed pack buffers.
///
/// glibc raises its mmap threshold to the size of the first large block
/// freed, so after the first 16 MiB pack every later pack buffer comes from
/// the heap and stays resident after it is freed. Holding the threshold at
/// 1 MiB returns each buffer to the kernel when dropped: peak RSS of a 964 MB
/// dump backup measured 116 MiB without this and 69 MiB with it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "mallopt has no safe wrapper; it only sets a tuning parameter")]
fn hold_malloc_mmap_threshold() {
    // SAFETY: mallopt is thread-safe and called before any other thread exists.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn hold_malloc_mmap_threshold() {}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NFREPO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
