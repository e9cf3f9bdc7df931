//! A large file's whole BLAKE3, taken while the file is still being written.
//!
//! A restored file is read back and hashed before it is placed (its node's
//! BLAKE3 must match what landed on disk). Done at the end, that read is a
//! serial tail after the last chunk of a large file: 0.2 s per GB from the
//! page cache, and with `--verify`, which reads what the device holds, a
//! whole second or more per GB during which nothing else is restored.
//!
//! [`RunningDigest`] moves that read into the restore. Writers report each
//! range they wrote ([`RunningDigest::wrote`]); the prefix of the file that
//! is written without a gap grows as reads complete (the restore plans
//! reads batch by batch in file order, so it grows steadily even though a
//! batch's chunks land in pack order). Once the unhashed part of that
//! prefix reaches [`STEP`], a blocking task started after the read hashes
//! it ([`RunningDigest::catch_up`]): read back from the page cache, or with
//! `from_device` from the device. There the file is read through a second
//! descriptor opened with `O_DIRECT` (the same inode, checked): a direct
//! read first writes back the range's dirty pages, then reads what the
//! device holds into our buffer, without passing through (or evicting)
//! the page cache, so it costs little CPU and no flush of the whole file.
//! Direct reads need aligned offsets, lengths and memory, so the prefix is
//! hashed up to a multiple of [`ALIGN`] and the buffer is aligned by
//! offsetting into a larger one. Where `O_DIRECT` is refused (tmpfs, some
//! network file systems) the range is flushed (`fdatasync`) and its cached
//! pages dropped (`POSIX_FADV_DONTNEED`) before it is read instead. The
//! check at the end hashes only the rest.
//!
//! Hashing runs on a blocking task of its own, so a read's outcome is not
//! held up by it. Only one thread hashes at a time (it takes the hasher out
//! of the state; others leave the work to it and it looks again before it
//! stops), and the final check waits for it. A write
//! below the hashed prefix (which the planner never produces: each offset is
//! written once) spoils the digest, and the check then hashes the whole file
//! again; so does a failure while hashing. Memory: the written ranges past
//! the prefix, merged as they touch, so a few entries for a restore in file
//! order, and at worst one per chunk of a batch.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Bytes of written prefix hashed at once, and the least size of a file
/// that is hashed while it is written (smaller ones are hashed at the end).
pub(super) const STEP: u64 = 16 << 20;

/// Alignment of direct reads: offsets, lengths and buffer addresses (the
/// largest logical block size in use).
pub(super) const ALIGN: u64 = 4096;

/// The running BLAKE3 of a file's written prefix.
pub(super) struct RunningDigest {
    /// Whether ranges are read from the device, not the page cache.
    from_device: bool,
    /// The file opened again with `O_DIRECT`, where the file system allows.
    direct: Option<File>,
    state: Mutex<State>,
    /// Signalled when a thread stops hashing.
    done: Condvar,
}

struct State {
    /// Written ranges past `contiguous` (start → end), merged when they touch.
    ahead: BTreeMap<u64, u64>,
    /// Every byte below this offset is written.
    contiguous: u64,
    /// Bytes fed to the hasher (`hashed <= contiguous`).
    hashed: u64,
    /// `None` while a thread hashes (or after it failed), and once taken.
    hasher: Option<blake3::Hasher>,
    /// A thread is hashing.
    busy: bool,
    /// A write landed inside the hashed prefix, or hashing failed.
    spoiled: bool,
}

/// What [`RunningDigest::take`] hands the final check.
pub(super) struct Prefix {
    pub hasher: blake3::Hasher,
    /// Bytes already hashed; the check reads from here.
    pub hashed: u64,
}

/// Opens `name` in `parent` again for direct reads, if the file system
/// allows it and it is still the inode `written` (a temporary name in the
/// target could be swapped; never followed if it became a link).
pub(super) fn open_direct(parent: &OwnedFd, name: &str, written: &File) -> Option<File> {
    reopen_direct(parent, name, written, OFlag::O_RDONLY)
}

/// [`open_direct`] with another access mode (`O_RDWR` to write around the
/// page cache, `direct.rs`).
pub(super) fn reopen_direct(parent: &OwnedFd, name: &str, written: &File, access: OFlag) -> Option<File> {
    let flags = access | OFlag::O_DIRECT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let direct = File::from(nix::fcntl::openat(parent, name, flags, Mode::empty()).ok()?);
    let (a, b) = (
        nix::sys::stat::fstat(direct.as_fd()).ok()?,
        nix::sys::stat::fstat(written.as_fd()).ok()?,
    );
    ((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)).then_some(direct)
}

/// Hashes `[from, to)` of `file` into `hasher` from the device: its own
/// descriptor switched to direct reads (`fcntl(F_SETFL, O_DIRECT)`) for
/// the while, so no second descriptor is opened (a path lookup, two
/// `fstat`s to check it is the same inode, a `close`: per small file of a
/// `--verify` restore). `None` where the file system refuses direct I/O,
/// or `from` is not aligned; call it only once nothing else writes the
/// file, since its writes would need alignment as long as it reads direct.
pub(super) fn hash_direct(file: &File, hasher: &mut blake3::Hasher, from: u64, to: u64) -> Option<std::io::Result<()>> {
    use nix::fcntl::{FcntlArg, fcntl};
    if !aligned(from) {
        return None;
    }
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL).ok()?);
    fcntl(file, FcntlArg::F_SETFL(flags | OFlag::O_DIRECT)).ok()?;
    let hashed = hash_blocks(file, hasher, from, to);
    let restored = fcntl(file, FcntlArg::F_SETFL(flags))
        .map(drop)
        .map_err(std::io::Error::from);
    Some(hashed.and(restored))
}

/// Flushes `file` and drops its cached pages in `[offset, offset + len)`
/// (`len` 0: to the end), so the next buffered read of them comes from
/// the device: what `--verify` does where direct reads are refused.
pub(super) fn flush_and_drop(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    file.sync_data()?;
    let offset = i64::try_from(offset).map_err(std::io::Error::other)?;
    let len = i64::try_from(len).map_err(std::io::Error::other)?;
    nix::fcntl::posix_fadvise(file, offset, len, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
    Ok(())
}

/// Starts writing `[offset, offset + len)` of `file` back to its device
/// (`len` 0: to the end) without waiting for it: the restore's write-behind.
///
/// Restored data otherwise stays dirty in the page cache until the final
/// `syncfs` (the kernel starts writing back only past
/// `vm.dirty_background_ratio`, 10 % of memory by default, or after 30 s),
/// so the restore's wall time was its computing followed by the whole
/// flush. Started as each verified range is done, the device writes while
/// the restore computes, and the final `syncfs` finds little left; the
/// dirty pages a large restore leaves behind stay few, too. Worth it for
/// large files only: for a small one the call costs more than the
/// kernel's own writeback of many files at once (`target::WRITTEN_BEHIND`).
///
/// `POSIX_FADV_DONTNEED` is how a safe call asks for it: Linux writes the
/// range's dirty pages back asynchronously (`WB_SYNC_NONE`, the same as
/// `sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which has no safe
/// binding here), then drops only the pages already clean, which the
/// restore has read back by then. Advisory: an error is ignored, and
/// durability still comes from the final `syncfs` alone (an I/O error of
/// the writeback is reported there).
pub(super) fn write_behind(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let _ = nix::fcntl::posix_fadvise(file, offset, len, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

impl RunningDigest {
    /// A digest that reads back from the page cache, or, with
    /// `from_device`, through `direct` (from [`open_direct`], given only
    /// then) or by flushing and dropping cached pages where that is `None`.
    pub(super) fn new(from_device: bool, direct: Option<File>) -> Self {
        Self {
            from_device,
            direct,
            state: Mutex::new(State {
                ahead: BTreeMap::new(),
                contiguous: 0,
                hashed: 0,
                hasher: Some(blake3::Hasher::new()),
                busy: false,
                spoiled: false,
            }),
            done: Condvar::new(),
        }
    }

    /// Records that `[offset, offset + len)` holds its final bytes.
    pub(super) fn wrote(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let end = offset.saturating_add(len);
        if offset < state.hashed {
            state.spoiled = true;
            return;
        }
        if offset <= state.contiguous {
            state.contiguous = state.contiguous.max(end);
        } else {
            let (mut start, mut end) = (offset, end);
            // Merge with a range that ends at or after `start` and begins before it …
            if let Some((&s, &e)) = state.ahead.range(..=start).next_back()
                && e >= start
            {
                state.ahead.remove(&s);
                start = s;
                end = end.max(e);
            }
            // … and with every range that begins inside the new one.
            while let Some((&s, &e)) = state.ahead.range(start..=end).next() {
                state.ahead.remove(&s);
                end = end.max(e);
            }
            state.ahead.insert(start, end);
        }
        // The prefix swallows every range it now reaches.
        while let Some((&s, &e)) = state.ahead.first_key_value()
            && s <= state.contiguous
        {
            state.ahead.remove(&s);
            state.contiguous = state.contiguous.max(e);
        }
    }

    /// The end of the prefix the next hashing would reach: a multiple of
    /// [`ALIGN`] for direct reads (the next one starts there).
    fn reach(&self, state: &State) -> u64 {
        match self.direct {
            Some(_) => state.contiguous / ALIGN * ALIGN,
            None => state.contiguous,
        }
    }

    /// Whether [`Self::catch_up`] has work: at least [`STEP`] of new
    /// prefix and no other thread at it.
    pub(super) fn due(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|state| !state.spoiled && !state.busy && self.reach(&state).saturating_sub(state.hashed) >= STEP)
    }

    /// Hashes the written prefix while at least [`STEP`] of it is new and
    /// no other thread is at it. Never fails: an error reading spoils the
    /// digest, and the final check reads the whole file (and reports it).
    pub(super) fn catch_up(&self, file: &File) {
        loop {
            let (mut hasher, from, to) = {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                let to = self.reach(&state);
                if state.spoiled || state.busy || to.saturating_sub(state.hashed) < STEP {
                    // Nothing new, or another thread is hashing: it looks again when done.
                    return;
                }
                let Some(hasher) = state.hasher.take() else {
                    return;
                };
                state.busy = true;
                (hasher, state.hashed, to)
            };
            let hashed = self.hash_range(file, &mut hasher, from, to);
            if hashed.is_ok() && !self.from_device {
                // Read back from the page cache: the device may have it now.
                write_behind(file, from, to - from);
            }
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            match hashed {
                Ok(()) if !state.spoiled => {
                    state.hashed = to;
                    state.hasher = Some(hasher);
                }
                _ => state.spoiled = true,
            }
            state.busy = false;
            self.done.notify_all();
        }
    }

    /// The end of the prefix hashed so far: read back already, and so
    /// already written back to the device (a direct read writes its range
    /// back first; a read from the page cache starts its writeback).
    pub(super) fn hashed(&self) -> u64 {
        self.state.lock().map_or(0, |state| state.hashed)
    }

    /// The hashed prefix, for a check that reads `from_device` (or from the
    /// page cache): `None` if there is none to trust, and the check hashes
    /// the whole file. Waits for a thread that is hashing. Taken once.
    pub(super) fn take(&self, from_device: bool) -> Option<Prefix> {
        let mut state = self.state.lock().ok()?;
        while state.busy {
            state = self.done.wait(state).ok()?;
        }
        let hasher = state.hasher.take()?;
        (!state.spoiled && (self.from_device || !from_device)).then_some(Prefix {
            hasher,
            hashed: state.hashed,
        })
    }

    fn hash_range(&self, file: &File, hasher: &mut blake3::Hasher, from: u64, to: u64) -> std::io::Result<()> {
        let source = match &self.direct {
            Some(direct) => {
                // Each direct read first writes its block back and waits
                // for it: started for the whole range now, the device
                // writes the next blocks while the first ones are read.
                write_behind(file, from, to - from);
                direct
            }
            None => {
                if self.from_device {
                    flush_and_drop(file, from, to - from)?;
                }
                file
            }
        };
        hash_blocks(source, hasher, from, to)
    }
}

/// Hashes `[from, to)` of `source` into `hasher`, a block at a time into an
/// aligned buffer, so `source` may be a direct descriptor (from
/// [`open_direct`]): then `from` must be a multiple of [`ALIGN`], and `to`
/// may be the end of the file, whatever its alignment (the last block is
/// read at its aligned length and comes back short at the end of the file).
pub(super) fn hash_blocks(source: &File, hasher: &mut blake3::Hasher, from: u64, to: u64) -> std::io::Result<()> {
    // A block, or less when less is left (rounded up to the alignment):
    // most files a tree restore checks are small, and a zeroed 1 MiB
    // buffer for each was an eighth of a `--verify` restore's CPU.
    let align = usize::try_from(ALIGN).unwrap_or(4096);
    let block_len = usize::try_from(to.saturating_sub(from).min(BLOCK))
        .unwrap_or(1 << 20)
        .next_multiple_of(align)
        .max(align);
    let mut buf = nfrepo_store::AlignedBuf::zeroed(block_len, align);
    let mut offset = from;
    while offset < to {
        let want = usize::try_from(to - offset).unwrap_or(usize::MAX).min(block_len);
        read_blocks(source, &mut buf, offset, want)?;
        hasher.update(buf.get(..want).unwrap_or_default());
        offset += want as u64;
    }
    Ok(())
}

/// Reads `want` bytes at `offset` into `buf` (aligned, at least `want`
/// rounded up to [`ALIGN`] long when `source` is a direct descriptor):
/// the last block is asked for whole, and comes back short at the end of
/// the file.
pub(super) fn read_blocks(source: &File, buf: &mut [u8], offset: u64, want: usize) -> std::io::Result<()> {
    let asked = want.next_multiple_of(ALIGN as usize).min(buf.len());
    let mut got = 0;
    while got < want {
        let n = source.read_at(buf.get_mut(got..asked).unwrap_or_default(), offset + got as u64)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(())
}

/// Whether `offset` may start a direct read.
pub(super) const fn aligned(offset: u64) -> bool {
    offset.is_multiple_of(ALIGN)
}

/// Bytes read back at once (a multiple of [`ALIGN`]).
const BLOCK: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    // The check's read of a whole file from the device: through a direct
    // descriptor where the file system allows (else the file itself), to
    // an end that is not aligned, from 0 and from an aligned offset.
    #[test]
    fn hashing_blocks_to_an_unaligned_end_matches_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let content = data(usize::try_from(BLOCK).unwrap() * 3 / 2 + 123);
        std::fs::write(dir.path().join("f"), &content).unwrap();
        let file = File::open(dir.path().join("f")).unwrap();
        let parent: OwnedFd = File::open(dir.path()).unwrap().into();
        let direct = open_direct(&parent, "f", &file);
        let source = direct.as_ref().unwrap_or(&file);
        for from in [0, 2 * ALIGN] {
            let mut hasher = blake3::Hasher::new();
            hash_blocks(source, &mut hasher, from, content.len() as u64).unwrap();
            let rest = &content[usize::try_from(from).unwrap()..];
            assert_eq!(hasher.finalize(), blake3::hash(rest), "from {from}");
        }
        // A file shorter than asked for is an error, not a shorter hash.
        let mut hasher = blake3::Hasher::new();
        let past = hash_blocks(source, &mut hasher, 0, content.len() as u64 + 1).unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// Finishes the digest the way the check does: the rest from `hashed`.
    fn finish(digest: &RunningDigest, file: &File, from_device: bool) -> Option<([u8; 32], u64)> {
        let Prefix { mut hasher, hashed } = digest.take(from_device)?;
        let mut rest = Vec::new();
        let len = file.metadata().unwrap().len();
        rest.resize(usize::try_from(len - hashed).unwrap(), 0);
        file.read_exact_at(&mut rest, hashed).unwrap();
        hasher.update(&rest);
        Some((*hasher.finalize().as_bytes(), hashed))
    }

    #[test]
    fn ranges_written_out_of_order_are_hashed_in_order() {
        let len = 3 * STEP as usize + 12_345;
        let bytes = data(len);
        let file = file_with(&bytes);
        let digest = RunningDigest::new(false, None);
        // Chunks of 1 MiB, each batch of 8 in reverse order, as a planner
        // grouping by pack would land them.
        let chunk = 1 << 20;
        let offsets: Vec<usize> = (0..len).step_by(chunk).collect();
        for batch in offsets.chunks(8) {
            for &offset in batch.iter().rev() {
                digest.wrote(offset as u64, (chunk.min(len - offset)) as u64);
            }
            digest.catch_up(&file);
        }
        let (hash, hashed) = finish(&digest, &file, false).unwrap();
        assert_eq!(hash, *blake3::hash(&bytes).as_bytes());
        assert!(hashed >= 3 * STEP, "only {hashed} bytes were hashed while writing");
    }

    #[test]
    fn a_gap_holds_the_prefix_back_until_it_is_filled() {
        let len = 2 * STEP as usize;
        let bytes = data(len);
        let file = file_with(&bytes);
        let digest = RunningDigest::new(false, None);
        digest.wrote(4096, len as u64 - 4096);
        digest.catch_up(&file);
        assert_eq!(digest.state.lock().unwrap().hashed, 0);
        digest.wrote(0, 4096);
        digest.catch_up(&file);
        assert_eq!(digest.state.lock().unwrap().hashed, len as u64);
        let (hash, _) = finish(&digest, &file, false).unwrap();
        assert_eq!(hash, *blake3::hash(&bytes).as_bytes());
    }

    #[test]
    fn a_write_inside_the_hashed_prefix_spoils_the_digest() {
        let bytes = data(2 * STEP as usize);
        let file = file_with(&bytes);
        let digest = RunningDigest::new(false, None);
        digest.wrote(0, bytes.len() as u64);
        digest.catch_up(&file);
        digest.wrote(100, 10);
        assert!(digest.take(false).is_none(), "the check must hash the whole file again");
    }

    #[test]
    fn a_page_cache_prefix_does_not_serve_a_device_check() {
        let bytes = data(STEP as usize);
        let file = file_with(&bytes);
        let digest = RunningDigest::new(false, None);
        digest.wrote(0, bytes.len() as u64);
        digest.catch_up(&file);
        assert!(digest.take(true).is_none());

        let digest = RunningDigest::new(true, None);
        digest.wrote(0, bytes.len() as u64);
        digest.catch_up(&file);
        let (hash, hashed) = finish(&digest, &file, true).unwrap();
        assert_eq!((hash, hashed), (*blake3::hash(&bytes).as_bytes(), STEP));
    }

    #[test]
    fn a_read_that_fails_spoils_the_digest() {
        // The file is shorter than the ranges reported written.
        let file = file_with(&data(1000));
        let digest = RunningDigest::new(false, None);
        digest.wrote(0, STEP);
        digest.catch_up(&file);
        assert!(digest.take(false).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever the chunk sizes and however each window of chunks is
        /// ordered, the digest is the file's BLAKE3.
        #[test]
        fn any_write_order_within_windows_gives_the_files_hash(
            chunk_lens in proptest::collection::vec(1usize..(3 << 20), 1..40),
            window in 1usize..12,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let len: usize = chunk_lens.iter().sum();
            let bytes = data(len);
            let file = file_with(&bytes);
            let digest = RunningDigest::new(false, None);
            let mut ranges = Vec::new();
            let mut offset = 0;
            for chunk in &chunk_lens {
                ranges.push((offset as u64, *chunk as u64));
                offset += chunk;
            }
            let mut state = seed;
            for batch in ranges.chunks(window) {
                let mut batch = batch.to_vec();
                // A small deterministic shuffle (xorshift).
                for i in (1..batch.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    batch.swap(i, usize::try_from(state % (i as u64 + 1)).unwrap());
                }
                for (offset, len) in batch {
                    digest.wrote(offset, len);
                }
                digest.catch_up(&file);
            }
            let (hash, _) = finish(&digest, &file, false).unwrap();
            proptest::prop_assert_eq!(hash, *blake3::hash(&bytes).as_bytes());
        }
    }

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let digest = RunningDigest::new(false, None);
        digest.wrote(100, 50);
        digest.wrote(200, 50);
        digest.wrote(140, 70);
        digest.wrote(250, 10);
        {
            let state = digest.state.lock().unwrap();
            assert_eq!(
                state.ahead.iter().map(|(s, e)| (*s, *e)).collect::<Vec<_>>(),
                [(100, 260)]
            );
            assert_eq!(state.contiguous, 0);
        }
        digest.wrote(0, 100);
        let state = digest.state.lock().unwrap();
        assert!(state.ahead.is_empty());
        assert_eq!(state.contiguous, 260);
    }
}
