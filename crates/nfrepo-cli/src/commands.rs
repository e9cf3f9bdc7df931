//! One module per command; each parses its arguments into engine options,
//! calls the engine, and renders the result.

pub(crate) mod alerts;
mod audit;
mod browse;
mod check;
mod cron;
mod deploy_check;
mod drill;
pub(crate) mod find;
mod forget;
pub(crate) mod gc;
mod init;
mod key;
mod mark_good;
mod metrics;
mod mount;
mod panel;
mod protect;
mod repair;
mod replicate;
mod reseal;
mod restore;
mod restore_into;
mod restore_pitr;
mod rollback;
mod serve;
mod snapshot;
pub(crate) mod snapshots;
mod source;
mod status;
mod verify;
mod wal;

use crate::cli::{Cli, Command};
use crate::failure::Failure;

/// Runs the command; returns the exit code on success (0, or 3 for partial).
/// Every command that reaches a repository leaves exactly one audit entry
/// there, appended here once it has ended (see `trail`).
pub async fn run(cli: Cli) -> Result<i32, Failure> {
    let event = crate::trail::event();
    let result = dispatch(cli).await;
    crate::trail::finish(event, &result).await;
    result
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    let global = &cli.global;
    match cli.command {
        Command::Init(args) => init::run(global, args).await,
        Command::Key { command } => key::run(global, command).await,
        Command::Snapshot(args) => snapshot::run(global, args).await,
        Command::Snapshots(args) => snapshots::run(global, args).await,
        Command::Status(args) => status::run(global, args).await,
        Command::Ls(args) => browse::ls(global, args).await,
        Command::Cat(args) => browse::cat(global, args).await,
        Command::Mount(args) => mount::run(global, args).await,
        Command::Find(args) => find::run(global, args).await,
        Command::Diff(args) => browse::diff(global, args).await,
        Command::Restore(args) => restore::run(global, args).await,
        Command::Cron(args) => cron::run(global, args),
        Command::Rollback(args) => rollback::run(global, args).await,
        Command::MarkGood(args) => mark_good::run(global, args).await,
        Command::DeployCheck(args) => deploy_check::run(global, args).await,
        Command::Forget(args) => forget::run(global, args).await,
        Command::Gc(args) => gc::run(global, args).await,
        Command::Protect(args) => protect::protect(global, args).await,
        Command::Unprotect(args) => protect::unprotect(global, args).await,
        Command::Check(args) => check::run(global, args).await,
        Command::Verify(args) => verify::run(global, args).await,
        Command::Drill(args) => drill::run(global, args).await,
        Command::Repair { command } => repair::run(global, command).await,
        Command::Replicate(args) => replicate::run(global, args).await,
        Command::Audit { command } => audit::run(global, command).await,
        Command::Serve(args) => serve::run(global, args).await,
        Command::Alerts(args) => alerts::run(global, args).await,
        Command::Metrics(args) => metrics::run(global, args).await,
        Command::Agent(args) => wal::agent(global, args).await,
        Command::WalPush(args) => wal::push(global, &args).await,
        Command::WalFetch(args) => wal::fetch(global, args).await,
    }
}
