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

use crate::{BlobId, Error, Result};

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
        let want = self.profile.max as usize;
        Chunks {
            chunker: self.clone(),
            reader,
            buffer,
            start: 0,
            end: 0,
            eof: false,
            want,
        }
    }

    /// Like [`Self::chunks_with_buffer`], but where `precedent` (the
    /// stream's earlier version) says the next chunk is, that chunk is
    /// named and compared instead of searched for; see [`Guided`]. Every
    /// chunk comes named by `name`. When the chunker cannot be guided
    /// ([`Self::can_guide`]), every chunk is searched for.
    pub fn guided<'p, B, R, F>(&self, reader: R, buffer: B, precedent: &'p Precedent, name: F) -> Guided<'p, B, R, F>
    where
        B: BorrowMut<Vec<u8>>,
        R: Read,
        F: FnMut(&[u8]) -> BlobId,
    {
        let mut chunks = self.chunks_with_buffer(reader, buffer);
        let guess = if self.can_guide() && !precedent.lens.is_empty() {
            // A chunk, the next one and the byte after (see [`Guided`]).
            chunks.want = 2 * self.profile.max as usize + 1;
            Some(0)
        } else {
            None
        };
        Guided {
            chunks,
            precedent,
            name,
            guess,
            matched: None,
            cut: 0,
            guessed: 0,
        }
    }

    /// Whether a guess and the chunk after it fit the read window, so that
    /// guiding ([`Self::guided`]) needs no larger buffer: true for the
    /// `dump` and `rows` profiles, false for `files`.
    #[must_use]
    pub const fn can_guide(&self) -> bool {
        2 * (self.profile.max as usize) < READ_WINDOW
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
    /// Bytes the window holds before a cut unless the stream has ended:
    /// the profile's `max`, or one chunk and the next when guided.
    want: usize,
}

impl<B: BorrowMut<Vec<u8>>, R: Read> Chunks<B, R> {
    /// Refills the window to at least `want` bytes unless the stream has
    /// ended, reading into all the room the buffer has.
    fn fill(&mut self) -> std::io::Result<()> {
        let want = self.want;
        if self.eof || self.end - self.start >= want {
            return Ok(());
        }
        let buffer = self.buffer.borrow_mut();
        buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let room = want.max(READ_WINDOW);
        if buffer.len() < room {
            buffer.resize(room, 0);
        }
        while !self.eof && self.end < want {
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

    /// The bytes read and not yet cut.
    fn window(&self) -> &[u8] {
        self.buffer.borrow().get(self.start..self.end).unwrap_or_default()
    }

    /// Cuts the window's first `len` bytes off as a chunk.
    fn cut_off(&mut self, len: usize) -> Vec<u8> {
        let chunk = self.window().get(..len).unwrap_or_default().to_vec();
        self.start += chunk.len();
        chunk
    }

    /// Cuts off the chunk a search finds at the window's start.
    fn search(&mut self) -> Vec<u8> {
        let len = self.chunker.first_cut(self.window());
        self.cut_off(len)
    }
}

impl<B: BorrowMut<Vec<u8>>, R: Read> Iterator for Chunks<B, R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        let chunk = self.search();
        (!chunk.is_empty()).then_some(Ok(chunk))
    }
}

/// The chunks of a stream's earlier version, compactly: what
/// [`Chunker::guided`] guesses the new version's cuts from. Per chunk, the
/// first 8 bytes of its id and its length, and its place in an order by
/// those 8 bytes: 16 bytes a chunk, so an earlier version of at most
/// [`Precedent::MOST`] chunks (8 GiB at 8 KiB) costs at most 16 MiB.
///
/// Only 8 bytes of each id are kept because a guess is only a guess: a
/// chunk accepted on a false match is still named by its own bytes, so
/// at worst (a 2⁻⁶⁴ chance per comparison) one cut lands where a search
/// would not have put it, costing a little deduplication, never data.
#[derive(Debug, Default)]
pub struct Precedent {
    keys: Vec<u64>,
    lens: Vec<u32>,
    by_key: Vec<u32>,
    /// The first chunk with fewer than `max` bytes from its start to the
    /// end of the earlier stream: from there on, a search depended on where
    /// that stream ended, so its cuts say nothing about a longer one.
    far_end: usize,
}

impl Precedent {
    /// The most chunks a precedent holds.
    pub const MOST: usize = 1 << 20;

    /// The precedent of a stream cut into `chunks` (ids and lengths, in
    /// order) by a chunker whose profile's `max` is `max`; `None` past
    /// [`Self::MOST`] chunks, or for a chunk longer than `max` (not cut
    /// with that profile).
    pub fn new(chunks: impl IntoIterator<Item = (BlobId, u64)>, max: u32) -> Option<Self> {
        let mut builder = Self::builder(max);
        for (id, len) in chunks {
            if !builder.push(&id, len) {
                return None;
            }
        }
        builder.build()
    }

    /// Builds a precedent a chunk at a time (no list of whole ids held
    /// meanwhile), as [`Self::new`] does.
    #[must_use]
    pub const fn builder(max: u32) -> PrecedentBuilder {
        PrecedentBuilder {
            keys: Vec::new(),
            lens: Vec::new(),
            max,
        }
    }

    /// A chunk of the earlier version whose id starts like `id`'s.
    fn find(&self, id: &BlobId) -> Option<usize> {
        let key = key_of(id);
        let at = self
            .by_key
            .partition_point(|&i| self.keys.get(i as usize).is_some_and(|&k| k < key));
        let &index = self.by_key.get(at)?;
        (self.keys.get(index as usize) == Some(&key)).then_some(index as usize)
    }

    /// Whether chunk `index` exists and starts with `id`'s 8 bytes.
    fn is(&self, index: usize, id: &BlobId) -> bool {
        self.keys.get(index) == Some(&key_of(id))
    }
}

/// A [`Precedent`] being built: [`Precedent::builder`].
#[derive(Debug)]
pub struct PrecedentBuilder {
    keys: Vec<u64>,
    lens: Vec<u32>,
    max: u32,
}

impl PrecedentBuilder {
    /// Adds the next chunk; false (and the precedent is not to be built)
    /// past [`Precedent::MOST`] chunks or for a chunk that is empty or
    /// longer than `max`.
    pub fn push(&mut self, id: &BlobId, len: u64) -> bool {
        let Ok(len) = u32::try_from(len) else {
            return false;
        };
        if self.keys.len() == Precedent::MOST || len == 0 || len > self.max {
            return false;
        }
        self.keys.push(key_of(id));
        self.lens.push(len);
        true
    }

    /// The precedent of the chunks pushed.
    #[must_use]
    pub fn build(self) -> Option<Precedent> {
        let Self { keys, lens, max } = self;
        let mut by_key: Vec<u32> = (0..u32::try_from(keys.len()).ok()?).collect();
        by_key.sort_unstable_by_key(|&i| keys.get(i as usize).copied());
        // Walking back from the end: the chunks starting fewer than `max`
        // bytes before it.
        let mut far_end = lens.len();
        let mut tail = 0u64;
        for &len in lens.iter().rev() {
            tail += u64::from(len);
            if tail >= u64::from(max) {
                break;
            }
            far_end -= 1;
        }
        Some(Precedent {
            keys,
            lens,
            by_key,
            far_end,
        })
    }
}

fn key_of(id: &BlobId) -> u64 {
    let mut key = [0u8; 8];
    key.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(key)
}

/// The chunks of a stream cut where a search would cut them, guessing
/// from the stream's earlier version ([`Chunker::guided`]).
///
/// Where the bytes have not changed, the earlier version's next chunk
/// is likely the next one here too: it is named (a keyed BLAKE3, which
/// every chunk needs anyway) and compared, instead of searching its bytes
/// for a cut. That is exactly the cut a search would find, because
/// FastCDC's search for a chunk starting here reads only the bytes from
/// here up to and including the one after the cut (and, near the end of
/// a stream, how far that end is):
///
/// - with at least `max` bytes left in both versions, both searches look
///   at the same bytes with the same masks;
/// - the guessed chunk's bytes are the earlier chunk's (same id);
/// - the byte after it is the earlier one's when the *next* guess matches
///   too (its first byte); when it does not, a search over this one chunk
///   decides.
///
/// After a chunk that was searched for, the guess is the chunk that
/// followed it in the earlier version, if it was there: after a change,
/// the cuts fall back into step within a chunk or two, and so do the
/// guesses. The cuts, and so the chunks, are the same as
/// [`Chunker::chunks_with_buffer`]'s whatever the precedent holds (a
/// property test checks it); only the work differs: over known data, one
/// hash per chunk instead of a hash and a search.
pub struct Guided<'p, B, R, F> {
    chunks: Chunks<B, R>,
    precedent: &'p Precedent,
    name: F,
    /// The earlier chunk guessed to start the window.
    guess: Option<usize>,
    /// A guess already named and matched at the window's start.
    matched: Option<(usize, BlobId)>,
    /// Chunks cut so far, and how many of them were guessed.
    cut: u64,
    guessed: u64,
}

impl<B, R, F> std::fmt::Debug for Guided<'_, B, R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guided")
            .field("guess", &self.guess)
            .field("cut", &self.cut)
            .field("guessed", &self.guessed)
            .finish_non_exhaustive()
    }
}

impl<B: BorrowMut<Vec<u8>>, R: Read, F: FnMut(&[u8]) -> BlobId> Guided<'_, B, R, F> {
    /// Chunks cut so far, and how many of them were guessed rather than
    /// searched for.
    pub const fn counts(&self) -> (u64, u64) {
        (self.cut, self.guessed)
    }

    /// Whether the guessed chunk at the window's start is the one a search
    /// would cut.
    fn guessed(&mut self) -> Guess {
        let matched = self.matched.take();
        let Some(guess) = self.guess.take() else {
            return Guess::Miss;
        };
        let max = self.chunks.chunker.profile.max as usize;
        let precedent = self.precedent;
        let window = self.chunks.window();
        let Some(len) = precedent.lens.get(guess).map(|&len| len as usize) else {
            return Guess::Miss;
        };
        // A search, where one decides: the guess stands if it cuts there.
        let searched = |chunker: &Chunker, id: BlobId| match chunker.first_cut(window) {
            cut if cut == len => Guess::Hit(len, id),
            cut => Guess::Searched(cut),
        };
        if guess >= precedent.far_end || window.len() < max {
            // Near an end a search decides; a chunk named already need
            // not be named again.
            return match matched {
                Some((index, id)) if index == guess => searched(&self.chunks.chunker, id),
                _ => Guess::Miss,
            };
        }
        let id = match matched {
            Some((index, id)) if index == guess => id,
            _ => {
                let Some(bytes) = window.get(..len) else {
                    return Guess::Miss;
                };
                let id = (self.name)(bytes);
                if !precedent.is(guess, &id) {
                    return Guess::Miss;
                }
                id
            }
        };
        // The byte after it: shown by the next guess matching, else searched.
        let next = guess + 1;
        let after = precedent
            .lens
            .get(next)
            .and_then(|&next_len| window.get(len..len + next_len as usize));
        let Some(bytes) = after else {
            self.guess = Some(next);
            return searched(&self.chunks.chunker, id);
        };
        let next_id = (self.name)(bytes);
        if precedent.is(next, &next_id) {
            self.matched = Some((next, next_id));
            self.guess = Some(next);
            return Guess::Hit(len, id);
        }
        searched(&self.chunks.chunker, id)
    }
}

/// What a guided step found at the window's start.
enum Guess {
    /// The guessed chunk is the one a search would cut: its length and id.
    Hit(usize, BlobId),
    /// A search cut elsewhere, at this length.
    Searched(usize),
    /// No guess, or it did not match: search.
    Miss,
}

impl<B: BorrowMut<Vec<u8>>, R: Read, F: FnMut(&[u8]) -> BlobId> Iterator for Guided<'_, B, R, F> {
    type Item = std::io::Result<(Vec<u8>, BlobId)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.chunks.fill() {
            return Some(Err(e));
        }
        if self.chunks.window().is_empty() {
            return None;
        }
        self.cut += 1;
        let chunk = match self.guessed() {
            Guess::Hit(len, id) => {
                self.guessed += 1;
                return Some(Ok((self.chunks.cut_off(len), id)));
            }
            Guess::Searched(len) => self.chunks.cut_off(len),
            Guess::Miss => self.chunks.search(),
        };
        let id = (self.name)(&chunk);
        self.guess = self.precedent.find(&id).map(|index| index + 1);
        Some(Ok((chunk, id)))
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

    fn name(bytes: &[u8]) -> BlobId {
        BlobId(*blake3::hash(bytes).as_bytes())
    }

    /// The chunks of `data` (lengths and ids), searched for.
    fn searched(chunker: &Chunker, data: &[u8]) -> Vec<(usize, BlobId)> {
        chunker
            .chunks(data)
            .map(|c| c.unwrap())
            .map(|c| (c.len(), name(&c)))
            .collect()
    }

    /// The chunks of `data` guided by `earlier`'s, and how many chunks were named.
    fn guided(chunker: &Chunker, data: &[u8], earlier: &[u8], step: usize) -> (Vec<(usize, BlobId)>, usize) {
        let max = chunker.profile().max;
        let precedent = Precedent::new(
            searched(chunker, earlier).into_iter().map(|(len, id)| (id, len as u64)),
            max,
        )
        .unwrap();
        let mut named = 0;
        let chunks: Vec<(usize, BlobId)> = chunker
            .guided(Trickle { data, step }, Vec::new(), &precedent, |bytes: &[u8]| {
                named += 1;
                name(bytes)
            })
            .map(|c| c.unwrap())
            .map(|(c, id)| {
                assert_eq!(id, name(&c), "each chunk comes with its own name");
                (c.len(), id)
            })
            .collect();
        (chunks, named)
    }

    /// `data` with some of its bytes changed, some inserted, some removed,
    /// and its end cut or extended, as `edits` says.
    fn edited(data: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut out = data.to_vec();
        for &(at, kind, byte) in edits {
            let at = if out.is_empty() { 0 } else { at % out.len() };
            match kind % 5 {
                0 | 1 => {
                    if let Some(b) = out.get_mut(at) {
                        *b = b.wrapping_add(byte | 1);
                    }
                }
                2 => out
                    .splice(at..at, std::iter::repeat_n(byte, usize::from(byte) + 1))
                    .for_each(drop),
                3 => out
                    .drain(at..(at + usize::from(byte) + 1).min(out.len()))
                    .for_each(drop),
                _ => out.truncate(at.max(out.len().saturating_sub(usize::from(byte) * 97))),
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Guided by any earlier version (an edited one, the same, a
        /// shorter or a longer one, an unrelated one), the chunks are
        /// exactly those a search finds.
        #[test]
        fn guided_cuts_are_searched_cuts(
            len in 0usize..300_000,
            seed in proptest::prelude::any::<u64>(),
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), proptest::prelude::any::<u8>()), 0..12),
            step in 1usize..70_000,
            which in 0u8..5,
        ) {
            let data = pseudo_random(len);
            for profile in [ChunkerProfile::ROWS, ChunkerProfile::DUMP, ChunkerProfile { min: 64, avg: 256, max: 1024 }] {
                let chunker = Chunker::new(profile, seed).unwrap();
                let earlier = match which {
                    0 => edited(&data, &edits),
                    1 => data.clone(),
                    2 => data[..data.len() / 2].to_vec(),
                    3 => [&data[..], &pseudo_random(5000)[..]].concat(),
                    _ => pseudo_random(len / 3).iter().map(|b| b ^ 0x5a).collect(),
                };
                // Both ways round: the new version edited, or the earlier one.
                for (new, old) in [(&data, &earlier), (&earlier, &data)] {
                    let (ours, _) = guided(&chunker, new, old, step);
                    proptest::prop_assert_eq!(ours, searched(&chunker, new));
                }
            }
        }
    }

    /// Over unchanged data each chunk is named once (the guess that
    /// confirmed the chunk before it is not named again), and a few
    /// scattered edits cost a few chunks more.
    #[test]
    fn guided_names_each_known_chunk_once() {
        let data = pseudo_random(2 << 20);
        let chunker = Chunker::new(ChunkerProfile::ROWS, 3).unwrap();
        let chunks = searched(&chunker, &data).len();
        let (same, named) = guided(&chunker, &data, &data, 1 << 20);
        assert_eq!(same.len(), chunks);
        assert_eq!(named, chunks);
        let changed = edited(&data, &[(100_000, 0, 1), (900_000, 2, 30), (1_500_000, 3, 200)]);
        let (ours, named) = guided(&chunker, &changed, &data, 1 << 20);
        assert_eq!(ours, searched(&chunker, &changed));
        assert!(named <= ours.len() + 12, "{named} names for {} chunks", ours.len());
    }

    /// A chunk whose bytes are unchanged but whose next byte changed may
    /// be cut elsewhere (a search reads the byte after the cut): each
    /// chunk boundary edited in turn, by a change, an insertion and a
    /// removal there, and the chunks are still a search's.
    #[test]
    fn a_change_right_after_a_known_chunk_is_searched() {
        let data = pseudo_random(40_000);
        let chunker = Chunker::new(
            ChunkerProfile {
                min: 64,
                avg: 256,
                max: 1024,
            },
            9,
        )
        .unwrap();
        let mut at = 0;
        for (len, _) in searched(&chunker, &data) {
            at += len;
            for kind in [0, 2, 3] {
                let changed = edited(&data, &[(at, kind, 0x3c)]);
                let (ours, _) = guided(&chunker, &changed, &data, 70_000);
                assert_eq!(ours, searched(&chunker, &changed), "edit {kind} at {at}");
            }
        }
    }

    #[test]
    fn a_precedent_is_refused_for_chunks_longer_than_max_and_files_chunks_are_not_guided() {
        let long = [(BlobId([1; 32]), u64::from(ChunkerProfile::ROWS.max) + 2)];
        assert!(Precedent::new(long, ChunkerProfile::ROWS.max).is_none());
        let files = Chunker::new(ChunkerProfile::FILES, 1).unwrap();
        assert!(!files.can_guide());
        assert!(Chunker::new(ChunkerProfile::DUMP, 1).unwrap().can_guide());
        // Unguided, a `files` chunker still cuts where a search does.
        let data = pseudo_random(3 << 20);
        let precedent = Precedent::new(
            searched(&files, &data).into_iter().map(|(len, id)| (id, len as u64)),
            ChunkerProfile::FILES.max,
        )
        .unwrap();
        let ours: Vec<(usize, BlobId)> = files
            .guided(&data[..], Vec::new(), &precedent, name)
            .map(|c| c.unwrap())
            .map(|(c, id)| (c.len(), id))
            .collect();
        assert_eq!(ours, searched(&files, &data));
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
