//! Benchmarks of the restore planner (`nfrepo_engine::RestorePlanner`,
//! `group_reads`), the part of a restore that runs before any content is
//! read:
//!
//! - `restore_plan/group/dump`: grouping 64 Ki located placements of one
//!   dump (16 KiB chunks in file order over 128 packs) into pack reads.
//! - `restore_plan/group/tree`: 64 Ki placements of 16 Ki small files
//!   (4 chunks each) whose chunks are spread over 256 packs, a quarter of
//!   them shared between files: deduplication and sorting dominate.
//! - `restore_plan/dump`: planning the whole restore of a 128 MiB
//!   mysqldump-like file backed up into an in-memory repository: content
//!   lists read and opened, every chunk located with batched index
//!   lookups, reads grouped. Throughput is in bytes of the file.
//!
//! Run with `cargo bench -p nfrepo-engine --bench restore_plan`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that fails should stop loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nfrepo_engine::{
    BlobLocation, FileToRestore, InitOptions, Placement, PlanLimits, Repository, RestorePlanner, group_reads,
};
use nfrepo_format::{BlobId, BlobKind, KdfParams, Node, NodeKind, PackId, PackKind};
use nfrepo_store::MemoryStore;
use nfrepo_testing::{crafted, sqldump};

const PLACEMENTS: u32 = 64 * 1024;
const DUMP: usize = 128 * 1024 * 1024;

fn id(n: u32) -> BlobId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    bytes[4..8].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
    BlobId(bytes)
}

fn location(pack: u32, offset: u32) -> BlobLocation {
    let mut pack_id = [0u8; 32];
    pack_id[..4].copy_from_slice(&pack.wrapping_mul(40_503).to_le_bytes());
    BlobLocation {
        pack: PackId(pack_id),
        pack_kind: PackKind::Data,
        kind: BlobKind::Data,
        offset,
        sealed_len: 8 * 1024,
        raw_len: 16 * 1024,
        sealing: None,
    }
}

/// One dump: chunk `n` at file offset `n * 16 KiB`, packs filled in order.
fn dump_placements() -> Vec<(BlobId, BlobLocation, Placement)> {
    let per_pack = PLACEMENTS / 128;
    (0..PLACEMENTS)
        .map(|n| {
            (
                id(n),
                location(n / per_pack, (n % per_pack) * 8 * 1024),
                Placement {
                    file: 0,
                    offset: u64::from(n) * 16 * 1024,
                },
            )
        })
        .collect()
}

/// Small files of four chunks; chunks scattered over packs, one in four shared.
fn tree_placements() -> Vec<(BlobId, BlobLocation, Placement)> {
    (0..PLACEMENTS)
        .map(|n| {
            let chunk = if n % 4 == 3 { n % 1024 } else { n };
            let scattered = chunk.wrapping_mul(2_654_435_761) >> 8;
            (
                id(chunk),
                location(scattered % 256, (scattered / 256 % 2048) * 8 * 1024),
                Placement {
                    file: (n / 4) as usize,
                    offset: u64::from(n % 4) * 16 * 1024,
                },
            )
        })
        .collect()
}

fn grouping(c: &mut Criterion) {
    let limits = PlanLimits::default();
    let mut group = c.benchmark_group("restore_plan/group");
    group.throughput(Throughput::Elements(u64::from(PLACEMENTS)));
    let dump = dump_placements();
    group.bench_function("dump", |b| {
        b.iter_batched(
            || dump.clone(),
            |placed| group_reads(placed, &limits),
            criterion::BatchSize::LargeInput,
        );
    });
    let tree = tree_placements();
    group.bench_function("tree", |b| {
        b.iter_batched(
            || tree.clone(),
            |placed| group_reads(placed, &limits),
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A repository holding `data` as one file; returns it and the file's node.
async fn repository_with(data: Vec<u8>) -> (Repository, Node) {
    let mut options = InitOptions::default();
    options.kdf = KdfParams::insecure_for_tests();
    let repo = Repository::init(Arc::new(MemoryStore::new()), b"bench password", options)
        .await
        .unwrap();
    let (_, node) = crafted::commit_file(&repo, "sbtest.sql", data).await;
    (repo, node)
}

fn planning(c: &mut Criterion) {
    let rt = runtime();
    let (repo, node) = rt.block_on(repository_with(sqldump::generate(DUMP, 13)));
    let reader = rt.block_on(repo.reader()).unwrap();
    let NodeKind::File { content, .. } = node.kind else {
        panic!("not a file")
    };
    let mut group = c.benchmark_group("restore_plan");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(DUMP as u64));
    group.bench_function("dump", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut planner = RestorePlanner::new(&reader, PlanLimits::default());
                planner.push(FileToRestore {
                    file: 0,
                    content: content.clone(),
                });
                let mut reads = 0usize;
                while let Some(batch) = planner.next_batch().await.unwrap() {
                    assert!(batch.files.iter().all(|f| f.failed.is_none()));
                    reads += batch.reads.len();
                }
                assert!(reads > 0);
                reads
            })
        });
    });
    group.finish();
}

criterion_group!(benches, grouping, planning);
criterion_main!(benches);
