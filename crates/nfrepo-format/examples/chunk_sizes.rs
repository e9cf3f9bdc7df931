//! What an incremental backup of a changed dump adds at each chunk size.
//!
//! ```text
//! cargo run --release -p nfrepo-format --example chunk_sizes -- OLD NEW [AVG_KIB...]
//! ```
//!
//! Cuts OLD and NEW with the dump profile's shape (min = avg / 4,
//! max = avg × 4) at each average size (default 4, 8, 16, 32, 64 KiB and
//! 1 MiB), and prints, for NEW after OLD: the chunks of NEW, those not in
//! OLD, their bytes raw and compressed (zstd level 3, chunk by chunk, as
//! the repository stores them), and an estimate of what the backup adds:
//! the compressed new chunks, about 163 bytes of pack trailer, index and
//! sealing per new chunk, and a 35-byte content-list entry for every chunk
//! of NEW (scattered changes make most list blobs new).
//! `format-spec/chunking.md` records what it measured.

use std::collections::HashSet;
use std::io::BufReader;

use nfrepo_format::{Chunker, ChunkerProfile};

/// Per new chunk: pack trailer and index entries, sealing (chunking.md).
const PER_NEW_CHUNK: u64 = 43 + 43 + 41 + 1;
/// Per chunk of the new stream: its content-list entry.
const PER_LISTED_CHUNK: u64 = 35;

fn chunks(path: &str, chunker: &Chunker) -> std::io::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    chunker.chunks(BufReader::with_capacity(1 << 20, file)).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [old, new, sizes @ ..] = args.as_slice() else {
        return Err("usage: chunk_sizes OLD NEW [AVG_KIB...]".into());
    };
    let sizes: Vec<u32> = if sizes.is_empty() {
        vec![4, 8, 16, 32, 64, 1024]
    } else {
        sizes.iter().map(|s| s.parse()).collect::<Result<_, _>>()?
    };
    println!("| avg | min/max | chunks of NEW | new chunks | new raw MB | new zstd MB | added est. MB |");
    println!("|---|---|---|---|---|---|---|");
    for kib in sizes {
        let avg = kib * 1024;
        let profile = ChunkerProfile {
            min: avg / 4,
            avg,
            max: (avg * 4).min(16 << 20),
        };
        let chunker = Chunker::new(profile, 0x6e66_7265_706f)?;
        let seen: HashSet<[u8; 32]> = chunks(old, &chunker)?
            .iter()
            .map(|c| *blake3::hash(c).as_bytes())
            .collect();
        let mut compressor = zstd::bulk::Compressor::new(3)?;
        let (mut total, mut fresh, mut raw, mut packed) = (0u64, 0u64, 0u64, 0u64);
        let mut stored: HashSet<[u8; 32]> = HashSet::new();
        for chunk in chunks(new, &chunker)? {
            total += 1;
            let id = *blake3::hash(&chunk).as_bytes();
            if seen.contains(&id) || !stored.insert(id) {
                continue;
            }
            fresh += 1;
            raw += chunk.len() as u64;
            packed += (compressor.compress(&chunk)?.len() as u64).min(chunk.len() as u64);
        }
        let added = packed + fresh * PER_NEW_CHUNK + total * PER_LISTED_CHUNK;
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "| {kib} KiB | {}/{} KiB | {total} | {fresh} | {:.1} | {:.1} | {:.1} |",
            profile.min / 1024,
            profile.max / 1024,
            mb(raw),
            mb(packed),
            mb(added)
        );
    }
    Ok(())
}
