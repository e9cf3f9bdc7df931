//! `nfrepo mount MOUNTPOINT`.

use nfrepo_engine::Operation;
use nfrepo_mount::{Control, MountOptions};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::{GlobalArgs, MountArgs};
use crate::context;
use crate::failure::Failure;

pub async fn run(global: &GlobalArgs, args: MountArgs) -> Result<i32, Failure> {
    // Before the repository is opened: no password asked for a mount that cannot happen.
    nfrepo_mount::fuse_available().map_err(|e| Failure::mount(&e))?;
    let repo = context::open_repository(global, Operation::Inspect).await?.repo;
    let mut options = MountOptions::default();
    options.allow_other = args.allow_other;
    options.cache_size = args.cache_size << 20;
    let (tx, rx) = mpsc::channel(4);
    let signals = tokio::spawn(forward_signals(tx));
    let ended = nfrepo_mount::mount(&repo, &args.mountpoint, &options, rx).await;
    signals.abort();
    ended.map_err(|e| Failure::mount(&e))?;
    Ok(0)
}

/// SIGHUP refreshes the snapshot list; SIGINT and SIGTERM unmount.
async fn forward_signals(tx: mpsc::Sender<Control>) {
    let (Ok(mut hup), Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for signals; unmount with `umount`");
        return;
    };
    loop {
        let control = tokio::select! {
            _ = hup.recv() => Control::Refresh,
            _ = int.recv() => Control::Unmount,
            _ = term.recv() => Control::Unmount,
        };
        if tx.send(control).await.is_err() {
            return;
        }
    }
}
