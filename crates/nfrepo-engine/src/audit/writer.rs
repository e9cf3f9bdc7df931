//! One writer's local state: its head, kept beside the cache, under a lock.
//!
//! `<cache dir>/audit/<repository id>/<writer id>.state` holds one line,
//! `<seq> <hash hex> <last checkpoint ns> <public key published 0|1>`, for
//! the writer's last entry. Every process of the host that uses the same
//! cache directory is the same writer; they take turns through an
//! exclusive `flock` on `<writer id>.lock`, held from reading the state to
//! writing it back after the put. Lost or unreadable state is not trusted:
//! the head is found again by listing `audit/`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use nfrepo_format::{RepoId, WriterId};
use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

/// The head of a chain: the last entry's sequence number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// The local state of one writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocalState {
    pub head: Option<Head>,
    pub last_checkpoint_ns: i64,
    pub public_key_published: bool,
}

/// The writer id of this host, user and cache directory in `repo` at
/// `location` (a replica read with `--from-replica` logs into its own chain
/// there, never into the source's chain).
pub(crate) fn writer_id(
    repo: &RepoId,
    location: &str,
    host: &str,
    user: &str,
    cache_dir: Option<&std::path::Path>,
) -> WriterId {
    let mut material = Vec::new();
    material.extend_from_slice(&repo.0);
    for part in [
        location,
        host,
        user,
        &cache_dir.map(|d| d.display().to_string()).unwrap_or_default(),
    ] {
        material.extend_from_slice(part.as_bytes());
        material.push(0);
    }
    WriterId(blake3::derive_key("nfrepo 2026-12 audit writer id", &material))
}

/// The locked state files of one writer, or nothing without a cache directory.
pub(crate) struct Locked {
    paths: Option<(PathBuf, Flock<File>)>,
}

impl Locked {
    /// Takes the writer's lock (blocking until other processes release it).
    pub(crate) async fn acquire(cache_dir: Option<PathBuf>, repo: RepoId, writer: WriterId) -> Result<Self> {
        let Some(dir) = cache_dir else {
            return Ok(Self { paths: None });
        };
        tokio::task::spawn_blocking(move || {
            let dir = dir.join("audit").join(repo.to_hex());
            // Owner-only, like the rest of the cache.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| local_error(&dir, e))?;
            let lock_path = dir.join(format!("{}.lock", writer.to_hex()));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&lock_path)
                .map_err(|e| local_error(&lock_path, e))?;
            let lock =
                Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| local_error(&lock_path, e.into()))?;
            Ok(Self {
                paths: Some((dir.join(format!("{}.state", writer.to_hex())), lock)),
            })
        })
        .await
        .map_err(|e| Error::Pipeline(format!("audit lock task failed: {e}")))?
    }

    /// The state, or `None` when there is none or it does not parse.
    pub(crate) fn read(&self) -> Option<LocalState> {
        let (path, _) = self.paths.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let mut fields = text.split_whitespace();
        let seq = fields.next()?.parse().ok()?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(fields.next()?, &mut hash).ok()?;
        let last_checkpoint_ns = fields.next()?.parse().ok()?;
        let public_key_published = fields.next()? == "1";
        Some(LocalState {
            head: Some(Head { seq, hash }),
            last_checkpoint_ns,
            public_key_published,
        })
    }

    /// Replaces the state (write to a temporary file, then rename).
    pub(crate) fn write(&self, state: &LocalState) -> Result<()> {
        let Some((path, _)) = self.paths.as_ref() else {
            return Ok(());
        };
        let Some(head) = state.head else {
            return Ok(());
        };
        let tmp = path.with_extension("state.tmp");
        let line = format!(
            "{} {} {} {}\n",
            head.seq,
            hex::encode(head.hash),
            state.last_checkpoint_ns,
            u8::from(state.public_key_published)
        );
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| local_error(&tmp, e))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| local_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| local_error(path, e))
    }
}

fn local_error(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Source {
        what: format!("audit state {}", path.display()),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    #[tokio::test]
    async fn state_round_trip_and_garbage_is_no_state() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        let writer = writer_id(&repo, "l", "h", "u", Some(dir.path()));
        let locked = Locked::acquire(Some(dir.path().to_owned()), repo, writer)
            .await
            .unwrap();
        assert_eq!(locked.read(), None);
        let state = LocalState {
            head: Some(Head { seq: 7, hash: [3; 32] }),
            last_checkpoint_ns: 99,
            public_key_published: true,
        };
        locked.write(&state).unwrap();
        assert_eq!(locked.read(), Some(state));
        let path = dir
            .path()
            .join("audit")
            .join(repo.to_hex())
            .join(format!("{}.state", writer.to_hex()));
        std::fs::write(&path, "7 nothex").unwrap();
        assert_eq!(locked.read(), None);
    }

    #[test]
    fn writer_ids_differ_by_location_host_user_and_cache_dir() {
        let repo = RepoId([1; 32]);
        let a = writer_id(&repo, "l", "h", "u", None);
        assert_eq!(a, writer_id(&repo, "l", "h", "u", None));
        assert_ne!(a, writer_id(&repo, "l2", "h", "u", None));
        assert_ne!(a, writer_id(&repo, "l", "h2", "u", None));
        assert_ne!(a, writer_id(&repo, "l", "h", "u2", None));
        assert_ne!(a, writer_id(&repo, "l", "h", "u", Some(std::path::Path::new("/c"))));
        assert_ne!(a, writer_id(&RepoId([2; 32]), "l", "h", "u", None));
    }
}
