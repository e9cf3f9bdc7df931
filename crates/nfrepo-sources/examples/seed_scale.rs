//! Fills a repository with BLOBS tiny distinct data blobs spread over
//! SNAPSHOTS snapshots, through the engine's own backup writer (real packs,
//! index deltas, trees and snapshots, which `check` accepts): the
//! repository `scripts/bench-scale.sh` measures every command against.
//!
//! ```text
//! NFREPO_PASSWORD=… cargo run --release --example seed_scale -- URL BLOBS SNAPSHOTS [CACHE_DIR]
//! ```
//!
//! Each snapshot of source `scale` is a root directory of directories of
//! [`FILES_PER_DIR`] files, each file one 24-byte blob of its own, so the
//! repository holds BLOBS data blobs plus about BLOBS / 1000 tree blobs.
//! A blob costs the writer a few microseconds, not the 1 MiB of data a
//! real chunk would take to make.

#[path = "seed/open.rs"]
mod open;

use nfrepo_engine::{BackupOptions, CommitDetails};
use nfrepo_format::{Metadata, Node, NodeKind, Tree};

/// Files (blobs) per directory tree.
const FILES_PER_DIR: u64 = 1000;

#[tokio::main]
async fn main() -> Result<(), open::BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(blobs), Some(snapshots)) = (args.first(), args.get(1), args.get(2)) else {
        return Err("usage: seed_scale URL BLOBS SNAPSHOTS [CACHE_DIR]".into());
    };
    let blobs: u64 = blobs.parse().map_err(|_| "BLOBS must be a number")?;
    let snapshots: u64 = snapshots.parse().map_err(|_| "SNAPSHOTS must be a number")?;
    if snapshots == 0 {
        return Err("SNAPSHOTS must be at least 1".into());
    }
    let repo = open::open_repository(url)
        .await?
        .with_index_cache(args.get(3).map(Into::into));
    // Distinct content in every run, so a second seeding adds as many blobs.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let started = std::time::Instant::now();
    for s in 0..snapshots {
        let count = blobs / snapshots + u64::from(s < blobs % snapshots);
        let mut options = BackupOptions::new("scale", "files", "files");
        options.use_parent = false;
        let session = repo.begin_backup(options).await?;
        let writer = session.writer();
        let root = tokio::task::spawn_blocking(move || -> nfrepo_engine::Result<_> {
            let mut dirs = Vec::new();
            let mut next = 0u64;
            while next < count {
                let mut files = Vec::new();
                let end = (next + FILES_PER_DIR).min(count);
                for i in next..end {
                    let body = format!("{run:032x}{s:08x}{i:012x}");
                    let stored = writer.store_stream(body.as_bytes(), false)?;
                    files.push(Node {
                        name: format!("f{i:012}").into_bytes(),
                        kind: stored.file_kind(),
                        meta: Metadata::default(),
                    });
                }
                let tree = writer.store_tree(&Tree { nodes: files })?;
                dirs.push(Node {
                    name: format!("d{next:012}").into_bytes(),
                    kind: NodeKind::Dir { tree },
                    meta: Metadata::default(),
                });
                next = end;
            }
            writer.store_tree(&Tree { nodes: dirs })
        })
        .await??;
        let details = CommitDetails {
            files: count,
            bytes: count * 52,
            ..CommitDetails::default()
        };
        session.commit(root, details).await?;
        eprintln!(
            "snapshot {}/{snapshots}: {count} blobs ({:.0} s)",
            s + 1,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
