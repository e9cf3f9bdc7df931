//! The audit entry of this process: what it reached, and the one append at its end.
//!
//! `context::open_store` reports the repository's store here (and puts an
//! [`ActivityStore`] under it), `context::open_repository` and `init` report
//! the opened repository, and `commands::run` calls [`finish`] once, after
//! the command, whatever it was and however it ended. No command logs
//! anything itself.
//!
//! What is written (format-spec/audit.md):
//! - a repository was opened: an authenticated entry naming the key slot;
//! - a put-only credential opened it (a backup host's `snapshot`, or any
//!   other command it runs, refused with `PERMISSION_DENIED/PUT_ONLY`): an
//!   entry sealed to the credential's public key, naming the credential,
//!   without MAC;
//! - only the store was reached and the command needs no key (`replicate`)
//!   or failed with `PERMISSION_DENIED/WRONG_PASSWORD`, `/NO_PASSWORD` or
//!   `/REVOKED_CREDENTIAL`: an entry sealed to the repository public key,
//!   without MAC;
//! - nothing was reached, or the failure came before the repository was
//!   (no repository, not found, unreachable, usage error): nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::CommandFactory;
use nfrepo_engine::{Activity, ActivityStore, AuditEvent, AuditWriter, ErrorCode, ReplacedLease, Repository, Takeover};
use nfrepo_store::Store;

use crate::cli::Cli;
use crate::failure::Failure;

/// Operations whose entry records every writer's head: they read the whole
/// repository (or log) anyway, so one more listing costs little.
const CHECKPOINTING: [&str; 3] = ["check", "gc", "audit verify"];

struct Reached {
    store: Arc<dyn Store>,
    cache_dir: Option<PathBuf>,
    activity: Activity,
    repo: Option<Repository>,
}

static REACHED: Mutex<Option<Reached>> = Mutex::new(None);

/// What a successful command must leave in its entry's message (a lease it
/// replaced), in the order it happened.
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Sources the command turned out to act on without naming them with
/// `--source` (a restore names a snapshot), for the entry's `sources`.
static SOURCES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// When the command started ([`event`]), for the entry's `duration_ms`.
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Records that the command acts on `source` (a restore of one of its
/// snapshots), so that its entry names it and the `high_latency` rule
/// compares its duration with the source's earlier restores.
pub fn acting_on(source: &str) {
    if let Ok(mut sources) = SOURCES.lock()
        && !sources.iter().any(|s| s == source)
    {
        sources.push(source.to_owned());
    }
}

/// Reports on stderr, and records for the audit entry, the maintenance
/// lease a command replaced: broken with `--break-lease`, expired, or left
/// by an exited process of this host. With `--break-lease` and nothing to
/// break, says so.
pub fn replaced_lease(replaced: Option<&ReplacedLease>, break_lease: bool, global: &crate::cli::GlobalArgs) {
    let Some(replaced) = replaced else {
        if break_lease && !global.quiet {
            eprintln!("note: --break-lease: no other holder's lease was valid; none broken");
        }
        return;
    };
    let text = match replaced.how {
        Takeover::Broken => format!("broke the maintenance lease {replaced}"),
        _ => format!("took over the maintenance lease {replaced}"),
    };
    let text = crate::output::escape::text(&text).into_owned();
    if replaced.how == Takeover::Broken {
        eprintln!("warning[LEASE_BROKEN]: {text}");
    } else if !global.quiet {
        eprintln!("note: {text}");
    }
    if let Ok(mut notes) = NOTES.lock() {
        notes.push(text);
    }
}

/// Reports what a `forget` or `gc` did with the tombstones of killed
/// `forget` runs (format-spec/protect.md), one line each.
pub fn settled_forgets(settled: &nfrepo_engine::SettledForgets) {
    for id in &settled.restored {
        crate::output::outln!("put back snapshot {id}: a killed forget had deleted it, and it is protected");
    }
    for id in &settled.finished {
        crate::output::outln!("finished forgetting snapshot {id} (its forget had been killed)");
    }
}

/// [`settled_forgets`] in `--json` output.
pub fn settled_forgets_json(settled: &nfrepo_engine::SettledForgets) -> serde_json::Value {
    let hex = |ids: &[nfrepo_format::SnapshotId]| ids.iter().map(|id| id.to_hex()).collect::<Vec<_>>();
    serde_json::json!({
        "restored": hex(&settled.restored),
        "finished": hex(&settled.finished),
        "abandoned": hex(&settled.abandoned),
    })
}

/// A replaced lease in `--json` output.
pub fn replaced_lease_json(replaced: &ReplacedLease) -> serde_json::Value {
    serde_json::json!({
        "object": replaced.object,
        "hostname": replaced.hostname,
        "pid": replaced.pid,
        "operation": replaced.operation,
        "renewed_secs_ago": replaced.renewed_secs_ago,
        "how": match replaced.how {
            Takeover::Expired => "expired",
            Takeover::HolderExited => "holder_exited",
            Takeover::Broken => "broken",
            _ => "replaced",
        },
    })
}

/// Remembers the repository's store (with retries) for the entry;
/// `activity` is what an [`ActivityStore`] under it records.
pub fn reached(store: Arc<dyn Store>, cache_dir: Option<PathBuf>, activity: Activity) {
    if let Ok(mut reached) = REACHED.lock()
        && reached.is_none()
    {
        *reached = Some(Reached {
            store,
            cache_dir,
            activity,
            repo: None,
        });
    }
}

/// Puts an [`ActivityStore`] recording into `activity` over `store`.
pub fn recording(store: Arc<dyn Store>, activity: &Activity) -> Arc<dyn Store> {
    Arc::new(ActivityStore::new(store, activity.clone()))
}

/// Remembers the opened repository (its key signs the entry).
pub fn opened(repo: &Repository) {
    if let Ok(mut reached) = REACHED.lock()
        && let Some(reached) = reached.as_mut()
        && reached.repo.is_none()
    {
        reached.repo = Some(repo.clone());
    }
}

/// The entry's description of this command, taken before it runs.
pub fn event() -> AuditEvent {
    let _ = STARTED.set(std::time::Instant::now());
    let args: Vec<String> = std::env::args().collect();
    let mut operation = Vec::new();
    if let Ok(matches) = Cli::command().try_get_matches_from(&args) {
        let mut at = matches.subcommand();
        while let Some((name, sub)) = at {
            operation.push(name.to_owned());
            at = sub.subcommand();
        }
    }
    let mask = |text: &str| nfrepo_sources::redact_secrets(text).into_owned();
    let command = nfrepo_engine::redact_command_line(&args, &mask);
    let mut event = AuditEvent::new(operation.join(" "), command);
    event.sources = sources(&args);
    event.checkpoint = CHECKPOINTING.contains(&event.operation.as_str());
    event
}

/// The values of `--source` on the command line.
fn sources(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if word == "--source" {
            out.extend(words.next().cloned());
        } else if let Some(value) = word.strip_prefix("--source=") {
            out.push(value.to_owned());
        }
    }
    out
}

/// Appends the entry of this command, if it reached a repository. A failed
/// append is reported on stderr; it does not change the command's outcome.
pub async fn finish(mut event: AuditEvent, result: &Result<i32, Failure>) {
    let Some(reached) = REACHED.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    event.duration_ms = STARTED
        .get()
        .map(|started| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    if let Ok(sources) = SOURCES.lock() {
        for source in sources.iter() {
            if !event.sources.contains(source) {
                event.sources.push(source.clone());
            }
        }
    }
    match result {
        Ok(exit) => {
            event.exit_code = *exit;
            event.code = code_of_exit(*exit).to_owned();
            // A success's message holds what it must not keep quiet (format-spec/audit.md).
            if let Ok(notes) = NOTES.lock() {
                event.message = notes.join("; ");
            }
        }
        Err(failure) => {
            event.exit_code = failure.exit_code();
            event.code = failure.code_str().to_owned();
            event.detail = failure.detail.unwrap_or_default().to_owned();
            let mask = |text: &str| nfrepo_sources::redact_secrets(text).into_owned();
            event.message = nfrepo_engine::redact_command_line(std::slice::from_ref(&failure.message), &mask).concat();
        }
    }
    // A storage refusal means the repository was not reached: nothing to log.
    let keyless_allowed = match result {
        Ok(_) => true,
        Err(failure) => {
            failure.code == ErrorCode::PermissionDenied
                && matches!(
                    failure.detail,
                    Some("WRONG_PASSWORD" | "NO_PASSWORD" | "REVOKED_CREDENTIAL")
                )
        }
    };
    if reached.repo.is_none() && !keyless_allowed {
        return;
    }
    let writer = AuditWriter::new(reached.store, reached.cache_dir);
    let activity = reached.activity.summary();
    if let Err(e) = writer.append(reached.repo.as_ref(), &event, &activity).await {
        eprintln!(
            "warning[AUDIT]: the audit log entry of this command was not written: {}",
            crate::output::escape::text(&nfrepo_sources::redact_secrets(&e.to_string()))
        );
    }
}

/// The code name of a command that returned an exit code instead of a failure.
fn code_of_exit(exit: i32) -> &'static str {
    match exit {
        0 => "",
        3 => "PARTIAL",
        10 => "BACKUP_FAILED",
        11 => "BACKUP_CORRUPTED",
        12 => "BACKUP_NOT_FOUND",
        13 => "RESTORE_FAILED",
        14 => "RESTORE_CONFLICT",
        15 => "ROLLBACK_FAILED",
        16 => "PERMISSION_DENIED",
        17 => "SNAPSHOT_INVALID",
        _ => "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_read_from_the_command_line() {
        let args: Vec<String> = [
            "nfrepo",
            "snapshot",
            "--source",
            "db",
            "--source=web",
            "--",
            "--source",
            "x",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(sources(&args), ["db", "web"]);
    }
}
