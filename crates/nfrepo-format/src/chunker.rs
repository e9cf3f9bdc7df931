//! Content-defined chunking: FastCDC v2020 with a keyed gear table.
//!
//! Cut points depend only on the bytes and on the repository's chunker seed,
//! so an insertion early in a file moves only the chunks around it, and the
//! seed keeps an observer from learning content from chunk sizes. The cut
//! points are part of the format: the `fastcdc` crate is pinned to an exact
//! version, and a golden test below fails if they ever move.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};
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

    /// The built-in profile of that name (`files` or `dump`).
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "files" => Some(Self::FILES),
            "dump" => Some(Self::DUMP),
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
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    profile: ChunkerProfile,
    seed: u64,
}

impl Chunker {
    /// A chunker with the repository's seed (see [`crate::RepoKeys::chunker_seed`]).
    ///
    /// # Errors
    /// If the profile is invalid.
    pub fn new(profile: ChunkerProfile, seed: u64) -> Result<Self> {
        profile.validate()?;
        Ok(Self { profile, seed })
    }

    /// The profile in use.
    #[must_use]
    pub const fn profile(&self) -> ChunkerProfile {
        self.profile
    }

    /// Iterates over the chunks of `reader`. Holds at most one maximum-size
    /// chunk of buffer; each item owns its bytes.
    pub fn chunks<R: Read>(&self, reader: R) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
        StreamCDC::with_level_and_seed(
            reader,
            self.profile.min as usize,
            self.profile.avg as usize,
            self.profile.max as usize,
            Normalization::Level1,
            self.seed,
        )
        .map(|chunk| {
            chunk.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            })
        })
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

    #[test]
    fn rejects_bad_profiles() {
        assert!(
            ChunkerProfile {
                min: 3,
                avg: 1024,
                max: 4096
            }
            .validate()
            .is_err()
        );
        assert!(
            ChunkerProfile {
                min: 4096,
                avg: 1024,
                max: 8192
            }
            .validate()
            .is_err()
        );
        assert!(ChunkerProfile::FILES.validate().is_ok());
    }
}
