//! Mounting: the session's lifetime, refreshes and the clean unmount.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};
use nfrepo_engine::Repository;
use nfrepo_format::SnapshotId;
use tokio::sync::mpsc;

use crate::fs::{Fs, Shared, View};
use crate::{Error, Result};
use nfrepo_engine::Layout;

/// The kernel's FUSE device.
pub const FUSE_DEVICE: &str = "/dev/fuse";

/// How a mount runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MountOptions {
    /// Let every user of the machine see the mount (FUSE's `allow_other`;
    /// as a non-root user this needs `user_allow_other` in /etc/fuse.conf).
    /// Recorded permissions are enforced by the kernel either way.
    pub allow_other: bool,
    /// Bytes of decoded chunks kept for re-reads and random reads.
    pub cache_size: u64,
    /// How often the list of snapshots is read again.
    pub refresh: Duration,
}

impl Default for MountOptions {
    /// Not shared with other users; a 64 MiB cache; a refresh every 30 s.
    fn default() -> Self {
        Self {
            allow_other: false,
            cache_size: 64 << 20,
            refresh: Duration::from_secs(30),
        }
    }
}

/// What the caller asks of a running mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Read the list of snapshots again now (the CLI sends this on SIGHUP).
    Refresh,
    /// Unmount and return (the CLI sends this on SIGINT and SIGTERM).
    Unmount,
}

/// How a mount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// Unmounted on request ([`Control::Unmount`] or the control channel closed).
    Unmounted,
    /// Unmounted from outside (`umount`, `fusermount3 -u`).
    UnmountedOutside,
}

/// Mounts `repo` read-only at `mountpoint` (layout: see [`nfrepo_engine::layout`])
/// and serves it until it is unmounted from outside or `control` asks;
/// then unmounts cleanly. Runs on the caller's tokio runtime; fuser's
/// threads hand every request to it.
///
/// # Errors
/// [`Error::NoFuse`] without `/dev/fuse`; [`Error::MountPoint`] when the
/// mount point is not a directory; [`Error::Mount`] when the kernel or
/// fusermount refuses; repository errors loading the snapshots and index.
pub async fn mount(
    repo: &Repository,
    mountpoint: &Path,
    options: &MountOptions,
    mut control: mpsc::Receiver<Control>,
) -> Result<Ended> {
    fuse_available()?;
    if !mountpoint.is_dir() {
        return Err(Error::MountPoint {
            path: mountpoint.display().to_string(),
            detail: "not a directory".into(),
        });
    }
    let (view, mut ids) = load(repo).await?;
    tracing::info!(snapshots = view.layout.len(), "mounting at {}", mountpoint.display());
    let shared = Arc::new(Shared::new(view, options.cache_size));
    let fs = Fs {
        shared: shared.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("nfrepo".into()),
        MountOption::Subtype("nfrepo".into()),
        // The kernel checks the recorded owners and modes.
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(2);
    let at: PathBuf = mountpoint.to_path_buf();
    let session = tokio::task::spawn_blocking(move || fuser::spawn_mount(fs, &at, &config))
        .await
        .map_err(|e| mount_error(mountpoint, std::io::Error::other(e.to_string())))?
        .map_err(|e| mount_error(mountpoint, e))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_refresh = tokio::time::Instant::now();
    let ended = loop {
        tokio::select! {
            asked = control.recv() => match asked {
                Some(Control::Refresh) => {
                    refresh(repo, &shared, &mut ids).await;
                    last_refresh = tokio::time::Instant::now();
                }
                Some(Control::Unmount) | None => break Ended::Unmounted,
            },
            _ = tick.tick() => {
                if session.guard.is_finished() {
                    break Ended::UnmountedOutside;
                }
                if last_refresh.elapsed() >= options.refresh {
                    refresh(repo, &shared, &mut ids).await;
                    last_refresh = tokio::time::Instant::now();
                }
            }
        }
    };
    let at = mountpoint.to_path_buf();
    let unmounted = tokio::task::spawn_blocking(move || match ended {
        Ended::UnmountedOutside => session.join(),
        _ => session.umount_and_join().or_else(|e| {
            // Busy (a shell inside it, an open file): detach it now; the
            // kernel lets go when the last user does.
            tracing::warn!("unmount: {e}; detaching {}", at.display());
            nix::mount::umount2(at.as_path(), nix::mount::MntFlags::MNT_DETACH).map_err(std::io::Error::from)
        }),
    })
    .await
    .map_err(|e| mount_error(mountpoint, std::io::Error::other(e.to_string())))?;
    unmounted.map_err(|e| mount_error(mountpoint, e))?;
    tracing::info!("unmounted {}", mountpoint.display());
    Ok(ended)
}

/// Whether this machine can mount: the kernel's FUSE device exists.
///
/// # Errors
/// [`Error::NoFuse`], whose message says how to install FUSE.
pub fn fuse_available() -> Result<()> {
    if Path::new(FUSE_DEVICE).exists() {
        Ok(())
    } else {
        Err(Error::NoFuse {
            device: FUSE_DEVICE.into(),
        })
    }
}

fn mount_error(mountpoint: &Path, source: std::io::Error) -> Error {
    Error::Mount {
        path: mountpoint.display().to_string(),
        source,
    }
}

/// The view of the repository as it is now, and the snapshot ids it shows.
async fn load(repo: &Repository) -> Result<(View, BTreeSet<SnapshotId>)> {
    let snapshots = repo.readable_snapshots().await?;
    let ids = snapshots.iter().map(|s| s.id).collect();
    let reader = repo.reader().await?;
    Ok((
        View {
            reader,
            layout: Layout::build(snapshots),
        },
        ids,
    ))
}

/// Reads the snapshots again; when they changed, loads the index again (new
/// snapshots' blobs are in new index deltas) and shows the new layout. A
/// failure keeps the current view and is logged.
async fn refresh(repo: &Repository, shared: &Shared, ids: &mut BTreeSet<SnapshotId>) {
    let snapshots = match repo.readable_snapshots().await {
        Ok(snapshots) => snapshots,
        Err(e) => {
            tracing::warn!("refresh: listing snapshots failed, keeping the current view: {e}");
            return;
        }
    };
    let now: BTreeSet<SnapshotId> = snapshots.iter().map(|s| s.id).collect();
    if now == *ids {
        return;
    }
    let reader = match repo.reader().await {
        Ok(reader) => reader,
        Err(e) => {
            tracing::warn!("refresh: loading the index failed, keeping the current view: {e}");
            return;
        }
    };
    let added = now.difference(ids).count();
    let removed = ids.difference(&now).count();
    shared.replace(View {
        reader,
        layout: Layout::build(snapshots),
    });
    *ids = now;
    tracing::info!(added, removed, "snapshots changed");
}
