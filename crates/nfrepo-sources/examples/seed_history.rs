//! Adds N tiny stream snapshots to a repository, each shaped as `nfrepo
//! snapshot --stdin` writes it (a data pack with its chunk, a tree pack with
//! its root tree, an index delta naming both, then the snapshot), in one
//! process: the history `scripts/bench-history.sh` measures against.
//!
//! ```text
//! NFREPO_PASSWORD=… cargo run --release --example seed_history -- URL COUNT [CONCURRENCY]
//! ```
//! S3 credentials come from `NFREPO_S3_*`/`AWS_*` as for `nfrepo`.
//!
//! Why not a backup session per snapshot: a session's start reads the
//! history (the very cost being measured), so seeding that way slows down
//! as the history grows (about 40 snapshots a minute near 7,600 on a loaded
//! machine). Here each snapshot's objects are built with the format crate's
//! encoders under the repository's keys and written in commit order (packs,
//! then the delta, then the snapshot), `CONCURRENCY` snapshots at a time
//! (default 32): the cost per snapshot does not depend on the history. The
//! snapshots are spaced 5 minutes apart, ending now, under the source `db`.

#[path = "seed/open.rs"]
mod open;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use nfrepo_engine::Repository;
use nfrepo_format::{
    BlobKind, ContentListBuilder, IndexDelta, IndexedPack, ListEntry, Metadata, Node, NodeKind, PackBuilder, PackKind,
    SealedBlob, Snapshot, Summary, Tree,
};
use nfrepo_store::{ObjectKey, ObjectKind, PutMode};
use open::BoxError;

/// Seconds between two seeded snapshots: the 5-minute schedule.
const INTERVAL_NS: i64 = 300 * 1_000_000_000;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(count)) = (args.first(), args.get(1)) else {
        return Err("usage: seed_history URL COUNT [CONCURRENCY]".into());
    };
    let count: i64 = count.parse().map_err(|_| "COUNT must be a number")?;
    let concurrency: usize = match args.get(2) {
        Some(n) => n.parse().map_err(|_| "CONCURRENCY must be a number")?,
        None => 32,
    };
    let repo = open::open_repository(url).await?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let run = std::process::id();
    let started = std::time::Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let repo = repo.clone();
            async move {
                let time_ns = now - (count - i) * INTERVAL_NS;
                let objects = tokio::task::spawn_blocking({
                    let repo = repo.clone();
                    move || build(&repo, format!("run {run} row {i}\n").into_bytes(), time_ns)
                })
                .await??;
                for (key, bytes) in objects {
                    repo.store().put(&key, bytes, PutMode::CreateNew).await?;
                }
                if (i + 1) % 1000 == 0 {
                    eprintln!("{} snapshots added ({:.0?})", i + 1, started.elapsed());
                }
                Ok::<_, BoxError>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// The objects of one stream snapshot holding `line` as `db.sql`, in the
/// order they must be written.
fn build(repo: &Repository, line: Vec<u8>, time_ns: i64) -> Result<Vec<(ObjectKey, Bytes)>, BoxError> {
    let mut codec = repo.codec()?;
    let sealer = repo.sealer();
    let chunk = codec.seal(BlobKind::Data, &line)?;
    let mut lists = ContentListBuilder::new();
    let mut emitted = Vec::new();
    lists.push(
        repo.keys(),
        ListEntry {
            id: chunk.id,
            len: line.len() as u64,
        },
        &mut emitted,
    )?;
    let content = lists.finish(repo.keys(), &mut emitted)?;
    let tree = Tree {
        nodes: vec![Node {
            name: b"db.sql".to_vec(),
            kind: NodeKind::File {
                size: line.len() as u64,
                content,
                blake3: *blake3::hash(&line).as_bytes(),
                sha256: None,
            },
            meta: Metadata {
                mode: 0o600,
                mtime_ns: time_ns,
                ..Metadata::default()
            },
        }],
    };
    let root = codec.seal(BlobKind::Tree, &tree.encode()?)?;
    let mut objects = Vec::new();
    let mut packs = Vec::new();
    for (kind, object_kind, blob) in [
        (PackKind::Data, ObjectKind::Data, &chunk),
        (PackKind::Tree, ObjectKind::Tree, &root),
    ] {
        packs.push(pack(repo, kind, object_kind, blob, &mut objects)?);
    }
    let delta = IndexDelta {
        packs,
        supersedes: Vec::new(),
    };
    let (index_id, bytes) = delta.encode(sealer, &repo.id())?;
    objects.push((
        ObjectKey::new(ObjectKind::Index, index_id.to_hex())?,
        Bytes::from(bytes),
    ));
    let snapshot = Snapshot {
        time_ns,
        source: "db".into(),
        source_kind: "stdin".into(),
        hostname: "seed".into(),
        username: "seed".into(),
        paths: vec!["db.sql".into()],
        tags: Vec::new(),
        profile: "dump".into(),
        parent: None,
        root: root.id,
        summary: Summary {
            files: 1,
            bytes: line.len() as u64,
            bytes_read: line.len() as u64,
            blobs_added: 2,
            bytes_added_raw: line.len() as u64,
            packs_added: 2,
            ..Summary::default()
        },
        command: None,
        skipped: Vec::new(),
        extra: Vec::new(),
        program_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let (id, bytes) = snapshot.encode(sealer, &repo.id())?;
    objects.push((ObjectKey::new(ObjectKind::Snapshot, id.to_hex())?, Bytes::from(bytes)));
    Ok(objects)
}

/// A pack of `kind` holding `blob`, added to `objects`; its index entry.
fn pack(
    repo: &Repository,
    kind: PackKind,
    object_kind: ObjectKind,
    blob: &SealedBlob,
    objects: &mut Vec<(ObjectKey, Bytes)>,
) -> Result<IndexedPack, BoxError> {
    let mut builder = PackBuilder::new(kind, 4096);
    builder.add(blob)?;
    let finished = builder.finish(repo.sealer(), &repo.id())?;
    let size = finished.bytes.len() as u64;
    objects.push((
        ObjectKey::new(object_kind, finished.id.to_hex())?,
        Bytes::from(finished.bytes),
    ));
    Ok(IndexedPack {
        id: finished.id,
        kind,
        size,
        blobs: finished.entries,
        sealing: None,
    })
}
