//! Content-defined chunking: FastCDC v2020 with a keyed gear table.
//!
//! Cut points depend only on the bytes and on the repository's chunker seed,
//! so an insertion early in a file moves only the chunks around it, and the
//! seed keeps an observer from learning content from chunk sizes. The cut
//! points are part of the format: the `fastcdc` crate is pinned to an exact
//! version, and a golden test below fails if they ever move.

use std::borrow::BorrowMut;
use std::io::Read;
use std::sync::Arc;

use fastcdc::v2020::Normalization;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Chunk size bounds in bytes. All three must be even.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerProfile {
    /// No chunk is shorter, except the last one of a stream.
    pub min: u32,
    /// The average the cut-point mask aims for.
    pub avg: u32,
    /// No chunk is longer.
    pub max: u32,
}

impl ChunkerProfile {
    /// For file trees and bucket objects: 256 KiB / 1 MiB / 4 MiB. Whole
    /// files change together, so larger chunks cost little dedup and keep the
    /// index small.
    pub const FILES: Self = Self {
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
    };

    /// For database dumps: 4 KiB / 16 KiB / 64 KiB. Writes touch scattered rows, so small
    /// chunks keep an incremental small; see `format-spec/chunking.md` for the
    /// measurements behind the choice.
    pub const DUMP: Self = Self {
        min: 4 * 1024,
        avg: 16 * 1024,
        max: 64 * 1024,
    };

    /// For dumps whose writes change rows or keys in place (MariaDB,
    /// Redis): 2 KiB / 8 KiB / 32 KiB. A changed row moves no other bytes,
    /// so halving the chunks about halves what an incremental adds over
    /// [`Self::DUMP`] (`format-spec/chunking.md`, "Measured again per
    /// source kind"). Repositories made before it existed have no `rows`
    /// profile; a backup asking for it there uses [`Self::fallback`]'s.
    pub const ROWS: Self = Self {
        min: 2 * 1024,
        avg: 8 * 1024,
        max: 32 * 1024,
    };

    /// The built-in profile of that name (`files`, `dump` or `rows`).
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "files" => Some(Self::FILES),
            "dump" => Some(Self::DUMP),
            "rows" => Some(Self::ROWS),
            _ => None,
        }
    }

    /// The profile to use instead of `name` in a repository whose config
    /// lacks it: a built-in profile added after the repository was made
    /// names the one its sources used before (`rows` → `dump`), so their
    /// incrementals keep deduplicating against the snapshots already stored.
    #[must_use]
    pub fn fallback(name: &str) -> Option<&'static str> {
        match name {
            "rows" => Some("dump"),
            _ => None,
        }
    }

    /// Checks the bounds FastCDC accepts.
    ///
    /// # Errors
    /// [`Error::Malformed`] if a size is odd, out of FastCDC's range, or out of order.
    pub fn validate(&self) -> Result<()> {
        let ok = self.min.is_multiple_of(2)
            && self.avg.is_multiple_of(2)
            && self.max.is_multiple_of(2)
            && (64..=1_048_576).contains(&self.min)
            && (256..=4_194_304).contains(&self.avg)
            && (1024..=16_777_216).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(Error::malformed("chunker profile", format!("invalid sizes {self:?}")))
        }
    }
}

/// Splits streams into chunks for one repository and profile.
///
/// Cheap to clone: the keyed gear tables are derived once, in
/// [`Chunker::new`], and shared. (`fastcdc`'s `FastCDC::with_level_and_seed`
/// derives them, into two fresh 2 KiB allocations, each time it is called:
/// once per chunk when a cutter is built per window: about 3 % of the CPU
/// of a dump's incremental at 8 KiB chunks, in an A/B.)
#[derive(Clone)]
pub struct Chunker {
    profile: ChunkerProfile,
    cut: Arc<CutParams>,
}

/// What every cut of one chunker needs: FastCDC's masks for the profile's
/// average and the gear tables keyed with the repository's seed.
struct CutParams {
    mask_s: u64,
    mask_l: u64,
    gear: Vec<u64>,
    gear_ls: Vec<u64>,
}

impl std::fmt::Debug for Chunker {
    /// The profile only: the gear tables are derived from the secret seed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// A chunker with the repository's seed (see [`crate::RepoKeys::chunker_seed`]).
    ///
    /// # Errors
    /// If the profile is invalid.
    pub fn new(profile: ChunkerProfile, seed: u64) -> Result<Self> {
        profile.validate()?;
        let (mask_s, mask_l) = fastcdc::v2020::select_masks(profile.avg as usize, NORMALIZATION);
        let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(seed);
        let cut = CutParams {
            mask_s,
            mask_l,
            gear: gear.into_owned(),
            gear_ls: gear_ls.into_owned(),
        };
        Ok(Self {
            profile,
            cut: Arc::new(cut),
        })
    }

    /// The length of the first chunk of `window`, searched in its first
    /// `max` bytes (all of it when shorter; then the end of the stream).
    fn first_cut(&self, window: &[u8]) -> usize {
        let (p, c) = (self.profile, &*self.cut);
        fastcdc::v2020::cut_gear(
            window,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            c.mask_s,
            c.mask_l,
            c.mask_s << 1,
            c.mask_l << 1,
            &c.gear,
            &c.gear_ls,
        )
        .1
    }

    /// The profile in use.
    #[must_use]
    pub const fn profile(&self) -> ChunkerProfile {
        self.profile
    }

    /// Iterates over the chunks of `reader` with a buffer of its own.
    pub fn chunks<R: Read>(&self, reader: R) -> Chunks<Vec<u8>, R> {
        self.chunks_with_buffer(reader, Vec::new())
    }

    /// Iterates over the chunks of `reader`, reading through `buffer`, which
    /// grows once to the larger of the profile's maximum chunk size and
    /// 256 KiB (the read-ahead window), and can be reused for the next
    /// stream. Reusing it matters for many small files: a fresh buffer per
    /// file costs more than chunking the file.
    pub fn chunks_with_buffer<B: BorrowMut<Vec<u8>>, R: Read>(&self, reader: R, buffer: B) -> Chunks<B, R> {
        Chunks {
            chunker: self.clone(),
            reader,
            buffer,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// FastCDC's normalization level, part of the format with the profiles.
const NORMALIZATION: Normalization = Normalization::Level1;

/// Bytes a stream is read ahead by, at least: with a window of only the
/// profile's `max`, each 8 KiB chunk of a dump cost a `read` of about
/// 8 KiB and moved the 24 KiB left in the window to its front; with
/// 256 KiB, both happen about once per thirty chunks. Reads never wait
/// for more than `max` bytes, as before: the rest of the window is filled
/// only with what one `read` returns.
const READ_WINDOW: usize = 256 * 1024;

/// The chunks of one stream, in order; each item owns its bytes.
///
/// Cut points are those of `fastcdc::v2020::StreamCDC` with the same
/// parameters (a test checks it): each cut is searched in the next `max`
/// bytes of the stream, or what is left of it at the end (FastCDC looks no
/// further than `max` into the longer window it is given).
#[derive(Debug)]
pub struct Chunks<B, R> {
    chunker: Chunker,
    reader: R,
    buffer: B,
    start: usize,
    end: usize,
    eof: bool,
}

impl<B: BorrowMut<Vec<u8>>, R: Read> Chunks<B, R> {
    /// Refills the window to at least `max` bytes unless the stream has
    /// ended, reading into all the room the buffer has.
    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.chunker.profile.max as usize;
        if self.eof || self.end - self.start >= max {
            return Ok(());
        }
        let buffer = self.buffer.borrow_mut();
        buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let room = max.max(READ_WINDOW);
        if buffer.len() < room {
            buffer.resize(room, 0);
        }
        while !self.eof && self.end < max {
            let Some(free) = buffer.get_mut(self.end..) else {
                break;
            };
            match self.reader.read(free) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<B: BorrowMut<Vec<u8>>, R: Read> Iterator for Chunks<B, R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        let window = self.buffer.borrow().get(self.start..self.end)?;
        if window.is_empty() {
            return None;
        }
        let count = self.chunker.first_cut(window);
        let chunk = window.get(..count)?.to_vec();
        self.start += count;
        (count > 0).then_some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_input_in_order() {
        let data = pseudo_random(300_000);
        let chunker = Chunker::new(ChunkerProfile::DUMP, 42).unwrap();
        let joined: Vec<u8> = chunker.chunks(&data[..]).flat_map(Result::unwrap).collect();
        assert_eq!(joined, data);
    }

    /// Golden cut points: if this fails, every existing repository loses dedup.
    #[test]
    fn golden_cut_points() {
        let data = pseudo_random(200_000);
        let lens = |seed| -> Vec<usize> {
            Chunker::new(ChunkerProfile::DUMP, seed)
                .unwrap()
                .chunks(&data[..])
                .map(|c| c.unwrap().len())
                .collect()
        };
        assert_eq!(lens(0), GOLDEN_SEED_0);
        assert_eq!(lens(0xDEAD_BEEF), GOLDEN_SEED_DEADBEEF);
        assert_ne!(lens(0), lens(1), "the seed must move cut points");
    }

    const GOLDEN_SEED_0: &[usize] = &[
        6191, 8763, 17021, 17777, 15442, 16619, 24411, 10767, 23092, 24826, 30843, 4248,
    ];
    const GOLDEN_SEED_DEADBEEF: &[usize] = &[
        14042, 18278, 5598, 24037, 10007, 15041, 21283, 30176, 24231, 14239, 17603, 5465,
    ];

    /// A reader that returns at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            let (head, tail) = self.data.split_at(n);
            buf[..n].copy_from_slice(head);
            self.data = tail;
            Ok(n)
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Our reader-driven chunker cuts exactly where fastcdc's StreamCDC does,
        /// whatever the read sizes, and a reused buffer changes nothing.
        #[test]
        fn cuts_match_streamcdc(len in 0usize..400_000, seed in proptest::prelude::any::<u64>(), step in 1usize..70_000) {
            let data = pseudo_random(len);
            for profile in [ChunkerProfile::DUMP, ChunkerProfile::ROWS, ChunkerProfile { min: 2048, avg: 8192, max: 65_536 }] {
                let reference: Vec<usize> = fastcdc::v2020::StreamCDC::with_level_and_seed(
                    &data[..], profile.min as usize, profile.avg as usize, profile.max as usize, Normalization::Level1, seed,
                )
                .map(|c| c.unwrap().length)
                .collect();
                let chunker = Chunker::new(profile, seed).unwrap();
                let mut buffer = vec![7u8; 3];
                for _ in 0..2 {
                    let ours: Vec<usize> = chunker
                        .chunks_with_buffer(Trickle { data: &data, step }, &mut buffer)
                        .map(|c| c.unwrap().len())
                        .collect();
                    proptest::prop_assert_eq!(&ours, &reference);
                }
            }
        }
    }

    /// Counts the `read` calls a stream gets.
    struct Counted<'a> {
        data: &'a [u8],
        reads: usize,
    }

    impl Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.data.len());
            let (head, tail) = self.data.split_at(n);
            buf[..n].copy_from_slice(head);
            self.data = tail;
            Ok(n)
        }
    }

    #[test]
    fn a_dump_is_read_a_window_at_a_time_not_a_chunk_at_a_time() {
        let data = pseudo_random(8 << 20);
        let chunker = Chunker::new(ChunkerProfile::ROWS, 7).unwrap();
        let mut stream = Counted { data: &data, reads: 0 };
        let mut chunks = 0;
        for chunk in chunker.chunks(&mut stream) {
            assert!(!chunk.unwrap().is_empty());
            chunks += 1;
        }
        // About 1,000 chunks of 8 KiB; each refill reads what the window
        // has room for (at least 224 KiB here), so about 40 reads and the
        // one that finds the end.
        assert!(chunks > 500, "{chunks} chunks");
        let most = data.len() / (READ_WINDOW - ChunkerProfile::ROWS.max as usize) + 2;
        assert!(stream.reads <= most, "{} reads for {chunks} chunks", stream.reads);
    }

    #[test]
    fn rejects_bad_profiles() {
        assert!(matches!(
            ChunkerProfile {
                min: 3,
                avg: 1024,
                max: 4096
            }
            .validate(),
            Err(Error::Malformed {
                what: "chunker profile",
                ..
            })
        ));
        assert!(matches!(
            ChunkerProfile {
                min: 4096,
                avg: 1024,
                max: 8192
            }
            .validate(),
            Err(Error::Malformed {
                what: "chunker profile",
                ..
            })
        ));
        assert!(ChunkerProfile::FILES.validate().is_ok());
    }
}
