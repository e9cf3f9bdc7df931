//! Benchmarks of the format primitives the backup pipeline is made of, each
//! on one thread: FastCDC chunking, cutting and naming an incremental's
//! chunks searched for or guided by the earlier version's (the known-chunk
//! path), keyed BLAKE3 blob ids, the whole-stream
//! BLAKE3 fed chunk by chunk, blob sealing and opening (zstd-3 + AEAD) for
//! both ciphers, and whole-pack verification.
//!
//! Throughput is in input bytes: the plaintext for chunking, ids, sealing and
//! opening; the stored pack bytes for `verify_pack`.
//!
//! Run with `cargo bench -p nfrepo-engine --bench primitives`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that fails should stop loudly"
)]

use nfrepo_testing::{pseudo_random as incompressible, sqldump};

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nfrepo_format::{
    BlobCodec, BlobKind, Chunker, ChunkerProfile, Cipher, MasterKey, PackBuilder, PackKind, Precedent, RepoId,
    RepoKeys, StreamHash, verify_pack,
};

const MIB: usize = 1024 * 1024;
const CHUNKING_INPUT: usize = 64 * MIB;
const SMALL_CHUNK: usize = 16 * 1024;
const LARGE_CHUNK: usize = MIB;
const PACK_SIZE: usize = 16 * MIB;
const REPO: RepoId = RepoId([9; 32]);

fn keys() -> RepoKeys {
    MasterKey::from_bytes([7; 32]).derive()
}

fn codec(keys: &RepoKeys, cipher: Cipher) -> BlobCodec {
    BlobCodec::new(keys.clone(), keys.sealer(cipher), 3).unwrap()
}

fn short<M: criterion::measurement::Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

fn chunking(c: &mut Criterion) {
    let data = sqldump::generate(CHUNKING_INPUT, 1);
    let seed = keys().chunker_seed;
    let mut group = c.benchmark_group("chunk");
    short(&mut group);
    group.throughput(Throughput::Bytes(data.len() as u64));
    for (name, profile) in [("dump", ChunkerProfile::DUMP), ("files", ChunkerProfile::FILES)] {
        let chunker = Chunker::new(profile, seed).unwrap();
        group.bench_function(BenchmarkId::new("sql-64MiB", name), |b| {
            b.iter(|| {
                chunker
                    .chunks(black_box(&data[..]))
                    .map(|chunk| chunk.unwrap().len())
                    .sum::<usize>()
            });
        });
    }
    group.finish();
}

/// Cutting and naming every chunk of a dump's next version with the
/// `rows` profile, as an incremental does: searched for, then guided by
/// the earlier version's chunks ([`Chunker::guided`]) when nothing
/// changed and when one row in a thousand did (a byte changed every
/// 100 KiB or so).
fn known_chunks(c: &mut Criterion) {
    let earlier = sqldump::generate(CHUNKING_INPUT, 1);
    let mut changed = earlier.clone();
    for at in (50_000..changed.len()).step_by(100_003) {
        changed[at] ^= 0x20;
    }
    let keys = keys();
    let chunker = Chunker::new(ChunkerProfile::ROWS, keys.chunker_seed).unwrap();
    let precedent = Precedent::new(
        chunker
            .chunks(&earlier[..])
            .map(|chunk| chunk.unwrap())
            .map(|chunk| (keys.blob_id(&chunk), chunk.len() as u64)),
        ChunkerProfile::ROWS.max,
    )
    .unwrap();
    let mut group = c.benchmark_group("cut_and_name");
    short(&mut group);
    group.throughput(Throughput::Bytes(earlier.len() as u64));
    for (name, data) in [("unchanged", &earlier), ("rows-changed", &changed)] {
        group.bench_function(BenchmarkId::new("searched", name), |b| {
            b.iter(|| {
                chunker
                    .chunks(black_box(&data[..]))
                    .map(|chunk| keys.blob_id(&chunk.unwrap()).0[0])
                    .fold(0u8, u8::wrapping_add)
            });
        });
        group.bench_function(BenchmarkId::new("guided", name), |b| {
            b.iter(|| {
                chunker
                    .guided(black_box(&data[..]), Vec::new(), &precedent, |chunk: &[u8]| {
                        keys.blob_id(chunk)
                    })
                    .map(|chunk| chunk.unwrap().1.0[0])
                    .fold(0u8, u8::wrapping_add)
            });
        });
    }
    group.finish();
}

/// The plain BLAKE3 of a whole dump fed its `rows` chunks one by one, as
/// a backup and `cat` see them: straight into `blake3::Hasher`, and through
/// [`StreamHash`], which gathers them into aligned 64 KiB pieces.
fn stream_hash(c: &mut Criterion) {
    let data = sqldump::generate(CHUNKING_INPUT, 1);
    let chunker = Chunker::new(ChunkerProfile::ROWS, keys().chunker_seed).unwrap();
    let chunks: Vec<Vec<u8>> = chunker.chunks(&data[..]).map(Result::unwrap).collect();
    let mut group = c.benchmark_group("stream_hash");
    short(&mut group);
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("sql-64MiB-rows/blake3-hasher", |b| {
        b.iter(|| {
            let mut hasher = blake3::Hasher::new();
            for chunk in &chunks {
                hasher.update(black_box(chunk));
            }
            hasher.finalize()
        });
    });
    group.bench_function("sql-64MiB-rows/stream-hash", |b| {
        b.iter(|| {
            let mut hash = StreamHash::default();
            for chunk in &chunks {
                hash.update(black_box(chunk));
            }
            hash.finalize()
        });
    });
    group.finish();
}

fn blob_ids(c: &mut Criterion) {
    let keys = keys();
    let chunk = sqldump::generate(SMALL_CHUNK, 2);
    let mut group = c.benchmark_group("blob_id");
    short(&mut group);
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("keyed-blake3/16KiB", |b| b.iter(|| keys.blob_id(black_box(&chunk))));
    group.finish();
}

/// The inputs sealing and opening run on: (label, plaintext).
fn blob_inputs() -> [(&'static str, Vec<u8>); 2] {
    [
        ("sql-16KiB", sqldump::generate(SMALL_CHUNK, 3)),
        ("random-1MiB", incompressible(LARGE_CHUNK, 4)),
    ]
}

const CIPHERS: [(&str, Cipher); 2] = [
    ("xchacha20poly1305", Cipher::XChaCha20Poly1305),
    ("aes256gcm", Cipher::Aes256Gcm),
];

fn seal(c: &mut Criterion) {
    let keys = keys();
    let inputs = blob_inputs();
    let mut group = c.benchmark_group("seal");
    short(&mut group);
    for (cipher_name, cipher) in CIPHERS {
        let mut codec = codec(&keys, cipher);
        for (input_name, plaintext) in &inputs {
            group.throughput(Throughput::Bytes(plaintext.len() as u64));
            group.bench_function(BenchmarkId::new(cipher_name, input_name), |b| {
                b.iter(|| codec.seal(BlobKind::Data, black_box(plaintext)).unwrap());
            });
        }
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let keys = keys();
    let inputs = blob_inputs();
    let mut group = c.benchmark_group("open");
    short(&mut group);
    for (cipher_name, cipher) in CIPHERS {
        let mut codec = codec(&keys, cipher);
        for (input_name, plaintext) in &inputs {
            let blob = codec.seal(BlobKind::Data, plaintext).unwrap();
            group.throughput(Throughput::Bytes(plaintext.len() as u64));
            group.bench_function(BenchmarkId::new(cipher_name, input_name), |b| {
                b.iter(|| {
                    codec
                        .open(BlobKind::Data, &blob.id, blob.raw_len, black_box(&blob.sealed))
                        .unwrap()
                });
            });
        }
    }
    group.finish();
}

fn pack_verification(c: &mut Criterion) {
    let keys = keys();
    let mut codec = codec(&keys, Cipher::default());
    // Dump-profile chunks of SQL text, sealed, until the pack reaches 16 MiB.
    let data = sqldump::generate(CHUNKING_INPUT, 5);
    let chunker = Chunker::new(ChunkerProfile::DUMP, keys.chunker_seed).unwrap();
    let mut builder = PackBuilder::new(PackKind::Data, PACK_SIZE + MIB);
    for chunk in chunker.chunks(&data[..]) {
        builder
            .add(&codec.seal(BlobKind::Data, &chunk.unwrap()).unwrap())
            .unwrap();
        if builder.len() >= PACK_SIZE {
            break;
        }
    }
    assert!(builder.len() >= PACK_SIZE, "the input did not fill a pack");
    let pack = builder.finish(codec.sealer(), &REPO).unwrap();
    let mut group = c.benchmark_group("verify_pack");
    short(&mut group);
    group.throughput(Throughput::Bytes(pack.bytes.len() as u64));
    group.bench_function("sql-16MiB", |b| {
        b.iter(|| {
            let (_, entries, faults) = verify_pack(&pack.id, black_box(&pack.bytes), &mut codec, &REPO).unwrap();
            assert!(faults.is_empty());
            entries.len()
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    chunking,
    known_chunks,
    stream_hash,
    blob_ids,
    seal,
    open,
    pack_verification
);
criterion_main!(benches);
