//! Benchmarks of the whole backup and read paths through the engine API, on
//! an in-memory store, with 128 MiB of mysqldump-like text as one stream:
//!
//! - `backup/first`: a backup into an empty repository (a new one for each
//!   iteration; `init` is not timed). Every chunk is new: chunk, hash, seal,
//!   pack, verify, upload.
//! - `backup/unchanged`: the same stream again into a repository that holds
//!   it: every chunk is known, so this is the dedup fast path (chunk and
//!   hash only, then a snapshot).
//! - `read/content`: streaming the file back through `Reader::content`
//!   (fetch, open, decompress, re-hash every chunk).
//! - `grow/full` and `grow/resumed`: a growing log (a binlog) of 128 MiB
//!   committed again after 1 MiB was appended, read whole as before, or
//!   continued from the shorter version's last chunk
//!   (`BackupWriter::store_stream_resumable`, what the binlog agent does).
//!   Throughput is in bytes appended.
//!
//! Throughput is in bytes of the stream. Each iteration is long, so sampling
//! is flat and the sample count is criterion's minimum.
//!
//! Run with `cargo bench -p nfrepo-engine --bench pipeline`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that fails should stop loudly"
)]

use nfrepo_testing::sqldump;

use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;
use nfrepo_engine::{BackupOptions, CommitDetails, InitOptions, Reader, Repository, StoredContent, StreamResume};
use nfrepo_format::{Content, KdfParams, Metadata, Node, NodeKind, Tree};
use nfrepo_store::MemoryStore;
use tokio::runtime::Runtime;

const INPUT: usize = 128 * 1024 * 1024;
const PASSWORD: &[u8] = b"bench password";
const FILE: &str = "sbtest.sql";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn long<M: criterion::measurement::Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
}

async fn init() -> Repository {
    let mut options = InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    Repository::init(Arc::new(MemoryStore::new()), PASSWORD, options)
        .await
        .unwrap()
}

/// The tree of one file [`FILE`] holding `stored`.
fn one_file(stored: StoredContent) -> Tree {
    let node = Node {
        name: FILE.as_bytes().to_vec(),
        kind: stored.file_kind(),
        meta: Metadata::default(),
    };
    Tree { nodes: vec![node] }
}

/// One backup of `data` as the single file [`FILE`], committed.
async fn backup(repo: &Repository, data: Arc<[u8]>) {
    let session = repo
        .begin_backup(BackupOptions::new("sbtest", "stdin", "dump"))
        .await
        .unwrap();
    let (session, root) = tokio::task::spawn_blocking(move || {
        let stored = session.store_stream(Cursor::new(data), false).unwrap();
        let root = session.store_tree(&one_file(stored)).unwrap();
        (session, root)
    })
    .await
    .unwrap();
    session.commit(root, CommitDetails::default()).await.unwrap();
}

/// One backup of `data[..len]` as [`FILE`], resumed from `from` when given; committed.
async fn backup_growing(repo: &Repository, data: Arc<[u8]>, len: usize, from: Option<StreamResume>) -> StreamResume {
    let session = repo
        .begin_backup(BackupOptions::new("binlog", "mysql-binlog", "dump"))
        .await
        .unwrap();
    let (session, root, resume) = tokio::task::spawn_blocking(move || {
        let (stored, resume, _) = session
            .store_stream_resumable(from.as_ref(), |offset| {
                let mut cursor = Cursor::new(data);
                cursor.set_position(offset);
                Ok(cursor.take(len as u64 - offset))
            })
            .unwrap();
        let root = session.store_tree(&one_file(stored)).unwrap();
        (session, root, resume)
    })
    .await
    .unwrap();
    session.commit(root, CommitDetails::default()).await.unwrap();
    resume
}

fn growing(c: &mut Criterion) {
    const APPENDED: usize = 1024 * 1024;
    let rt = runtime();
    let data: Arc<[u8]> = sqldump::generate(INPUT + APPENDED, 13).into();
    let repo = rt.block_on(init());
    let resume = rt.block_on(backup_growing(&repo, data.clone(), INPUT, None));
    let mut group = c.benchmark_group("grow");
    long(&mut group);
    group.throughput(Throughput::Bytes(APPENDED as u64));
    group.bench_function("full", |b| {
        b.iter(|| rt.block_on(backup_growing(&repo, data.clone(), INPUT + APPENDED, None)));
    });
    group.bench_function("resumed", |b| {
        b.iter(|| {
            rt.block_on(backup_growing(
                &repo,
                data.clone(),
                INPUT + APPENDED,
                Some(resume.clone()),
            ))
        });
    });
    group.finish();
}

fn backups(c: &mut Criterion) {
    let rt = runtime();
    let data: Arc<[u8]> = sqldump::generate(INPUT, 11).into();
    let mut group = c.benchmark_group("backup");
    long(&mut group);
    group.throughput(Throughput::Bytes(data.len() as u64));

    group.bench_function("first", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let repo = rt.block_on(init());
                let start = Instant::now();
                rt.block_on(backup(&repo, data.clone()));
                total += start.elapsed();
            }
            total
        });
    });

    let repo = rt.block_on(init());
    rt.block_on(backup(&repo, data.clone()));
    group.bench_function("unchanged", |b| {
        b.iter(|| rt.block_on(backup(&repo, data.clone())));
    });
    group.finish();
}

/// The file's content list in the latest snapshot.
async fn file_content(reader: &Reader) -> Content {
    let snapshots = reader.repository().snapshots().await.unwrap();
    let latest = snapshots.last().unwrap();
    let node = reader.resolve(latest, FILE).await.unwrap().unwrap();
    let NodeKind::File { content, .. } = node.kind else {
        panic!("{FILE} is not a file")
    };
    content
}

fn reads(c: &mut Criterion) {
    // A runtime of its own: the reader keeps a codec per blocking thread.
    let rt = runtime();
    let data: Arc<[u8]> = sqldump::generate(INPUT, 12).into();
    let len = data.len() as u64;
    let repo = rt.block_on(init());
    rt.block_on(backup(&repo, data));
    let reader = rt.block_on(repo.reader()).unwrap();
    let content = rt.block_on(file_content(&reader));
    let mut group = c.benchmark_group("read");
    long(&mut group);
    group.throughput(Throughput::Bytes(len));
    group.bench_function("content", |b| {
        b.iter(|| {
            let read = rt.block_on(
                reader
                    .content(&content)
                    .try_fold(0u64, |n, chunk| async move { Ok(n + chunk.len() as u64) }),
            );
            assert_eq!(read.unwrap(), len);
        });
    });
    group.finish();
}

criterion_group!(benches, backups, reads, growing);
criterion_main!(benches);
