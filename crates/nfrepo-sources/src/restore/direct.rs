//! Large files written around the page cache (`O_DIRECT`).
//!
//! A restored byte written through the page cache is copied into it,
//! written back later by the kernel, and (for the whole-file check) copied
//! out of it again; the final `syncfs` then waits for whatever writeback is
//! left, and the restore has filled memory with pages nobody will read
//! (on a database host, the database's own cache is what gets evicted).
//! A file of at least [`DIRECT_MIN`] bytes, on a file system that accepts
//! direct I/O, skips all of that:
//!
//! - Its content is gathered in **windows**: aligned [`WINDOW`]-byte
//!   buffers, one per window of the file that chunks are landing in. A
//!   chunk's bytes are copied into the windows it covers; the planner
//!   writes every offset once, so a window whose bytes add up to its length
//!   is complete.
//! - A complete window is hashed on the core that completed it, then goes
//!   to a writer thread ([`writers`]): its blocks are written with `pwrite`
//!   through a second descriptor opened with `O_DIRECT` (blocks only zero
//!   chunks touched are left unwritten: holes, as in the buffered path),
//!   its last partial block, at the end of the file, through the ordinary
//!   one. With `--verify`, the window is instead hashed after the writer
//!   has read it back through the direct descriptor into the same buffer:
//!   what the device holds.
//! - The file's whole BLAKE3 is assembled from its windows without reading
//!   the file back in order: BLAKE3 is a tree hash, and a window of a
//!   power-of-two size at an offset that is a multiple of it is a subtree,
//!   whose chaining value is taken from the window's bytes alone
//!   (`blake3::hazmat`). Sibling subtrees are merged as soon as both are
//!   in, so what is kept is a few chaining values, not one per window. At
//!   the check, the root is computed from them and compared with the
//!   node's hash, as a read-back would have been: the bytes hashed are the
//!   bytes handed to the device at that offset (or, with `--verify`, read
//!   back from it).
//!
//! **Preallocated.** The file's blocks are allocated at open, unwritten
//! (`fallocate`), and the blocks no chunk wrote are punched out again as
//! each window is written ([`DirectFile::punch`]), so zeros still come back
//! as holes. Without it every direct write allocated blocks, for which
//! ext4 takes the inode's lock exclusively, so the four writers and, with
//! `--verify`, their read-backs of the same file waited on each other;
//! writing into allocated blocks takes it shared. The 964 MB dump, 4
//! alternated runs of each into a new ext4 (`restore && sync`, cold): with
//! `--verify` 3.33 → 2.70 s (median), +40 % → +10 % over the plain
//! restore, which stayed within its spread (2.38 and 2.46 s). Where
//! `fallocate` fails (no room for the whole size at once, or a file system
//! without it) the file stays as it was and its blocks are allocated as
//! they are written. A file mostly of zeros holds its whole size on disk
//! until its windows are written and punched.
//!
//! **Memory.** Windows being filled or waiting for their writer hold at
//! most [`STAGED_MOST`] bytes across all files of a restore, in buffers of
//! which [`KEEP_FREE`] are kept for reuse (a fresh 2 MiB buffer costs 512
//! page faults). The restore starts fewer reads while window buffers are
//! allocated (`files::IN_FLIGHT_HELD`), so the reads' sealed bytes and the
//! windows together stay within 8 MiB of what the reads alone held. A
//! chunk landing in a new window when the budget is spent is written
//! through the page cache instead, as before ([`Window::Passed`]); such a
//! window's chaining value comes from reading it back once it is complete
//! (from the page cache, or from the device with `--verify`). So memory
//! stays bounded whatever order the chunks arrive in, and a slow device
//! turns the restore back into a buffered one rather than stalling it.
//!
//! **Measured** (964 MB dump into a new ext4, `restore && sync`, 3 runs
//! alternated, 2-core VM, with the planner issuing reads in the order the
//! files need them, which keeps few windows open: `read/plan.rs` in the
//! engine): its first snapshot 1.596 → 1.286 s; the snapshot of its
//! incremental, whose chunks come from two generations of packs, 1.658 →
//! 1.494 s (CPU 2.81 → 2.31 s), with `--verify` 2.468 → 2.246 s; peaks
//! 75 → 78-87 MiB; the 1.43 GB tree 3.778 → 3.668 s; from S3 (SeaweedFS
//! on the same cores) unchanged within the spread, at 10 % less CPU.
//! Windows of 1 MiB and 512 KiB, smaller budgets, more writer threads and
//! `fallocate` before each write were slower or no faster (the
//! performance history in `docs/`).
//!
//! **Failures.** A file system that opens a file for direct I/O but
//! refuses the writes or reads themselves (`EINVAL`) gets them through
//! the page cache instead (a read from the device then flushes the range
//! and drops its cached pages first). Any other error writing or reading a
//! window is the file's error, reported by the check (the restore stops,
//! as with a failed buffered write). Anything else that keeps the tree
//! from closing (a window left incomplete, a rewrite after a failed check)
//! gives up the staged hash: the check then reads the whole file back, as
//! for any other file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};
use nfrepo_store::AlignedBuf;
use nix::fcntl::{FallocateFlags, OFlag};

use super::digest::{self, ALIGN};
use super::target::is_zero;

/// Bytes of a window: a power of two and a multiple of [`ALIGN`] (and of
/// BLAKE3's 1 KiB chunk), so that each window is a BLAKE3 subtree.
pub(super) const WINDOW: u64 = 2 << 20;
/// The least size of a file written this way (smaller files are many, and
/// their page-cache writes cost less than a window each).
pub(super) const DIRECT_MIN: u64 = 8 << 20;
/// Window bytes held at once by a restore, in windows being filled and
/// windows waiting for their writer.
const STAGED_MOST: u64 = 24 << 20;
/// Window buffers kept for reuse at most (a fresh one costs 512 page
/// faults; kept ones are memory the restore holds).
const KEEP_FREE: usize = 4;
/// Threads writing windows (and, with `--verify`, reading them back).
/// Direct writes to one file take its inode lock in turn; more threads
/// serve several files at once.
const WRITERS: usize = 4;

/// `fallocate` mode that frees a range (whole blocks; zeros within one)
/// and keeps the file's size.
const PUNCH: FallocateFlags = FallocateFlags::FALLOC_FL_PUNCH_HOLE.union(FallocateFlags::FALLOC_FL_KEEP_SIZE);

const WINDOW_LEN: usize = WINDOW as usize;
const BLOCKS: usize = WINDOW_LEN / ALIGN as usize;

/// The window buffers of one restore and their budget (see the module docs).
pub(crate) struct Staging {
    /// Bytes of windows held at most.
    most: u64,
    state: Mutex<Budget>,
}

impl Default for Staging {
    fn default() -> Self {
        Self::with_budget(STAGED_MOST)
    }
}

#[derive(Default)]
struct Budget {
    /// Bytes of windows handed out and not yet given back.
    held: u64,
    /// Buffers given back, for reuse.
    free: Vec<AlignedBuf>,
}

impl Staging {
    /// Staging that holds at most `most` bytes of windows.
    pub(crate) fn with_budget(most: u64) -> Self {
        Self {
            most,
            state: Mutex::new(Budget::default()),
        }
    }

    /// Bytes of window buffers allocated now: held (being filled or
    /// waiting for a writer) or kept for reuse.
    pub(crate) fn allocated(&self) -> u64 {
        self.state
            .lock()
            .map_or(0, |budget| budget.held + budget.free.len() as u64 * WINDOW)
    }

    /// A window buffer, if the budget allows one more.
    fn take(&self) -> Option<AlignedBuf> {
        let mut budget = self.state.lock().ok()?;
        if budget.held + WINDOW > self.most {
            return None;
        }
        budget.held += WINDOW;
        Some(
            budget
                .free
                .pop()
                .unwrap_or_else(|| AlignedBuf::zeroed(WINDOW_LEN, ALIGN as usize)),
        )
    }

    /// Gives back the buffers of `windows`, which are emptied.
    fn give_windows(&self, windows: &mut HashMap<u64, Window>) {
        for (_, window) in windows.drain() {
            if let Window::Staged { buf, .. } = window {
                self.give(buf);
            }
        }
    }

    /// Gives a window buffer back. Its bytes are left as they are: every
    /// byte of a window is copied in before it is used again.
    fn give(&self, buf: AlignedBuf) {
        if let Ok(mut budget) = self.state.lock() {
            budget.held = budget.held.saturating_sub(WINDOW);
            if budget.free.len() < KEEP_FREE {
                budget.free.push(buf);
            }
        }
    }
}

/// A window of the file that chunks have started landing in.
enum Window {
    /// Gathered in a buffer, to be written whole.
    Staged {
        buf: AlignedBuf,
        filled: u64,
        /// Blocks holding bytes of a chunk that is not all zeros.
        dirty: [u64; BLOCKS / 64],
    },
    /// Written through the page cache (no buffer was free when it began).
    Passed { filled: u64 },
}

/// A large file being written around the page cache (see the module docs).
pub(super) struct DirectFile {
    staging: Arc<Staging>,
    /// The ordinary descriptor: the last partial block, passed windows,
    /// and their read-back from the page cache.
    file: Arc<File>,
    /// The same file opened again with `O_DIRECT`.
    direct: File,
    size: u64,
    /// Whether windows are hashed from the device (`--verify`).
    from_device: bool,
    /// Whether the file's blocks were allocated at open (see the module
    /// docs): what no chunk writes must then be punched out.
    preallocated: bool,
    state: Mutex<State>,
    /// Signalled when a window's writer is done.
    idle: Condvar,
    /// Tests: direct writes and reads fail as a file system that refuses
    /// them would.
    #[cfg(test)]
    refuse_direct: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    /// Windows begun and not complete, by index.
    windows: HashMap<u64, Window>,
    /// Chaining values of complete subtrees, by (offset, length).
    subtrees: BTreeMap<(u64, u64), ChainingValue>,
    /// Complete windows not yet written and hashed.
    pending: usize,
    /// The staged hash cannot be trusted; the check reads the file.
    spoiled: bool,
    /// The first error writing or reading back a window.
    error: Option<std::io::Error>,
}

impl DirectFile {
    /// Opens the temporary file `name` in `parent` again for direct I/O,
    /// if the file system allows it and it is still the inode `file`
    /// (the name is never followed if it became a link). `None` for a
    /// file under [`DIRECT_MIN`] or where direct I/O is refused.
    pub(super) fn open(
        staging: &Arc<Staging>,
        parent: &OwnedFd,
        name: &str,
        file: &Arc<File>,
        size: u64,
        from_device: bool,
    ) -> Option<Self> {
        if size < DIRECT_MIN {
            return None;
        }
        let direct = digest::reopen_direct(parent, name, file, OFlag::O_RDWR)?;
        let preallocated = preallocate(file, size);
        Some(Self {
            staging: Arc::clone(staging),
            file: Arc::clone(file),
            direct,
            size,
            from_device,
            preallocated,
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            #[cfg(test)]
            refuse_direct: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Takes `parts`, one after the other from `offset`, into their
    /// windows (a part of zeros is left a hole on disk). Complete windows
    /// go to a writer.
    pub(super) fn write_run(self: &Arc<Self>, offset: u64, parts: &[&[u8]]) -> std::io::Result<()> {
        let mut at = offset;
        for part in parts {
            let is_zero = is_zero(part);
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                let index = at / WINDOW;
                let within = at % WINDOW;
                let take = rest.len().min(usize::try_from(WINDOW - within).unwrap_or(WINDOW_LEN));
                let (piece, after) = rest.split_at(take);
                self.take_piece(index, within, piece, is_zero)?;
                rest = after;
                at += take as u64;
            }
        }
        Ok(())
    }

    /// Length of window `index` (the last one may be short).
    fn window_len(&self, index: u64) -> u64 {
        self.size.saturating_sub(index * WINDOW).min(WINDOW)
    }

    fn take_piece(self: &Arc<Self>, index: u64, within: u64, piece: &[u8], is_zero: bool) -> std::io::Result<()> {
        let len = piece.len() as u64;
        let window_len = self.window_len(index);
        if within + len > window_len {
            return Err(std::io::Error::other("a write past the end of the file"));
        }
        let mut state = self.state.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        if state.spoiled {
            drop(state);
            return self.pass(index * WINDOW + within, piece, is_zero);
        }
        state.windows.entry(index).or_insert_with(|| match self.staging.take() {
            Some(buf) => Window::Staged {
                buf,
                filled: 0,
                dirty: [0; BLOCKS / 64],
            },
            None => Window::Passed { filled: 0 },
        });
        let complete = match state.windows.get_mut(&index) {
            Some(Window::Staged { buf, filled, dirty }) => {
                let start = usize::try_from(within).unwrap_or(usize::MAX);
                let target = buf
                    .get_mut(start..start + piece.len())
                    .ok_or_else(|| std::io::Error::other("a write past the window"))?;
                target.copy_from_slice(piece);
                if !is_zero {
                    let first = within / ALIGN;
                    let last = (within + len - 1) / ALIGN;
                    for block in first..=last {
                        let block = usize::try_from(block).unwrap_or(0);
                        if let Some(word) = dirty.get_mut(block / 64) {
                            *word |= 1 << (block % 64);
                        }
                    }
                }
                *filled += len;
                *filled >= window_len
            }
            Some(Window::Passed { .. }) => {
                drop(state);
                self.pass(index * WINDOW + within, piece, is_zero)?;
                state = self.state.lock().map_err(|_| std::io::Error::other("poisoned"))?;
                match state.windows.get_mut(&index) {
                    Some(Window::Passed { filled }) => {
                        *filled += len;
                        *filled >= window_len
                    }
                    _ => false,
                }
            }
            None => false,
        };
        if complete && let Some(window) = state.windows.remove(&index) {
            state.pending += 1;
            drop(state);
            // Hashed here, on the core that filled it, unless the hash must
            // come from the device: the writer then only waits for it.
            let hashed = match &window {
                Window::Staged { buf, .. } if !self.from_device => {
                    let len = usize::try_from(window_len).unwrap_or(WINDOW_LEN);
                    Some(chaining_value(index * WINDOW, buf.get(..len).unwrap_or_default()))
                }
                _ => None,
            };
            let file = Arc::clone(self);
            match writers() {
                Some(pool) => pool.spawn(move || file.finish_window(index, window, hashed)),
                None => file.finish_window(index, window, hashed),
            }
        }
        Ok(())
    }

    /// Writes `piece` at `offset` through the page cache (a hole if zero).
    fn pass(&self, offset: u64, piece: &[u8], is_zero: bool) -> std::io::Result<()> {
        if is_zero {
            return self.punch(offset, piece.len() as u64);
        }
        self.file.write_all_at(piece, offset)
    }

    /// Frees the blocks of `[offset, offset + len)`, which no chunk writes,
    /// in a preallocated file. Only whole blocks are punched (and the last
    /// one, at the end of the file): a preallocated block reads as zeros
    /// until written, and a block a neighbouring chunk writes part of is
    /// zeroed around it by the file system, so a punch within a block would
    /// be a call (and an exclusive lock) for nothing. Nothing to do in a
    /// file allocated as written.
    fn punch(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let end = offset + len;
        let from = offset.next_multiple_of(ALIGN);
        let to = if end == self.size { end } else { end - end % ALIGN };
        if !self.preallocated || from >= to {
            return Ok(());
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
            return Err(std::io::Error::other("a range past what fallocate takes"));
        };
        nix::fcntl::fallocate(self.file.as_fd(), PUNCH, offset, len).map_err(std::io::Error::from)
    }

    /// Writes a complete window and adds its chaining value (on a writer).
    fn finish_window(&self, index: u64, window: Window, hashed: Option<ChainingValue>) {
        let start = index * WINDOW;
        let len = self.window_len(index);
        let outcome = match window {
            Window::Staged { mut buf, dirty, .. } => {
                let outcome = self.write_staged(start, len, &mut buf, &dirty, hashed);
                self.staging.give(buf);
                outcome
            }
            Window::Passed { .. } => self.hash_passed(start, len),
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match outcome {
            Ok(cv) => add_subtree(&mut state.subtrees, self.size, start, len, cv),
            Err(e) => {
                state.error.get_or_insert(e);
            }
        }
        state.pending -= 1;
        self.idle.notify_all();
    }

    /// Writes a staged window's dirty blocks (its last partial block through
    /// the ordinary descriptor) and hashes it: the buffer, or with
    /// `from_device` the window read back into the buffer.
    fn write_staged(
        &self,
        start: u64,
        len: u64,
        buf: &mut AlignedBuf,
        dirty: &[u64; BLOCKS / 64],
        hashed: Option<ChainingValue>,
    ) -> std::io::Result<ChainingValue> {
        let len_bytes = usize::try_from(len).unwrap_or(WINDOW_LEN);
        let aligned_blocks = len_bytes / ALIGN as usize;
        let is_dirty = |block: usize| dirty.get(block / 64).is_some_and(|w| w & (1 << (block % 64)) != 0);
        let block_len = ALIGN as usize;
        let mut block = 0;
        while block < aligned_blocks {
            let run_start = block;
            let dirty = is_dirty(block);
            while block < aligned_blocks && is_dirty(block) == dirty {
                block += 1;
            }
            let at = start + (run_start * block_len) as u64;
            if dirty {
                let bytes = buf.get(run_start * block_len..block * block_len).unwrap_or_default();
                self.write_blocks(bytes, at)?;
            } else {
                self.punch(at, ((block - run_start) * block_len) as u64)?;
            }
        }
        let tail_start = aligned_blocks * block_len;
        if tail_start < len_bytes {
            let at = start + tail_start as u64;
            if is_dirty(aligned_blocks) {
                let tail = buf.get(tail_start..len_bytes).unwrap_or_default();
                self.file.write_all_at(tail, at)?;
            } else {
                self.punch(at, (len_bytes - tail_start) as u64)?;
            }
        }
        if let Some(cv) = hashed {
            return Ok(cv);
        }
        if self.from_device {
            self.read_back(&mut buf[..], start, len_bytes)?;
        }
        Ok(chaining_value(start, buf.get(..len_bytes).unwrap_or_default()))
    }

    /// Runs `io` on the direct descriptor; where the file system opened it
    /// but refuses the write or read itself (`EINVAL`: some network and
    /// FUSE file systems, or another alignment than [`ALIGN`]), runs it on
    /// the ordinary descriptor instead, as the buffered path would have: a
    /// read from the device (`flushed`) after flushing `[start, start +
    /// len)` and dropping its cached pages.
    fn direct_or_buffered<T>(
        &self,
        flushed: Option<(u64, u64)>,
        mut io: impl FnMut(&File) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        #[cfg(test)]
        let refused = self.refuse_direct.load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(test))]
        let refused = false;
        let direct = if refused { Err(refusal()) } else { io(&self.direct) };
        match direct {
            Err(e) if is_refusal(&e) => {
                if let Some((start, len)) = flushed {
                    digest::flush_and_drop(&self.file, start, len)?;
                }
                io(&self.file)
            }
            other => other,
        }
    }

    /// Writes aligned blocks at `at` ([`Self::direct_or_buffered`]).
    fn write_blocks(&self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        self.direct_or_buffered(None, |file| file.write_all_at(bytes, at))
    }

    /// Reads `len` bytes of a window at `start` back from the device into
    /// `buf` ([`Self::direct_or_buffered`]).
    fn read_back(&self, buf: &mut [u8], start: u64, len: usize) -> std::io::Result<()> {
        self.direct_or_buffered(Some((start, len as u64)), |file| {
            digest::read_blocks(file, buf, start, len)
        })
    }

    /// Hashes a window written through the page cache, read back from it
    /// (then its writeback is started), or with `from_device` from the
    /// device through the direct descriptor (which writes the range back
    /// first).
    fn hash_passed(&self, start: u64, len: u64) -> std::io::Result<ChainingValue> {
        let hash = |source: &File| {
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(start);
            digest::hash_blocks(source, &mut hasher, start, start + len).map(|()| hasher.finalize_non_root())
        };
        if !self.from_device {
            let cv = hash(&self.file)?;
            digest::write_behind(&self.file, start, len);
            return Ok(cv);
        }
        self.direct_or_buffered(Some((start, len)), hash)
    }

    /// The file's whole BLAKE3 from its windows, once every window's
    /// writer is done; `None` when the staged hash cannot be trusted (the
    /// check then reads the file), or when it was taken for another source
    /// than `from_device` asks for.
    ///
    /// # Errors
    /// The first error writing or reading back a window.
    pub(super) fn finish(&self, from_device: bool) -> std::io::Result<Option<[u8; 32]>> {
        let mut state = self.state.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        while state.pending > 0 {
            state = self.idle.wait(state).map_err(|_| std::io::Error::other("poisoned"))?;
        }
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        if state.spoiled || !state.windows.is_empty() || (from_device && !self.from_device) {
            return Ok(None);
        }
        Ok(root(&mut state.subtrees, self.size).map(|hash| *hash.as_bytes()))
    }

    /// Gives up the staged hash (a rewrite after a failed check writes
    /// through the page cache; the check then reads the whole file). Waits
    /// for the writers, so nothing staged lands after the rewrite.
    pub(super) fn spoil(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        while state.pending > 0 {
            match self.idle.wait(state) {
                Ok(next) => state = next,
                Err(_) => return,
            }
        }
        state.spoiled = true;
        self.staging.give_windows(&mut state.windows);
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // A file given up half written: its staged windows go back.
        if let Ok(state) = self.state.get_mut() {
            self.staging.give_windows(&mut state.windows);
        }
    }
}

/// Allocates the blocks of the `size`-byte `file` (just created, empty)
/// unwritten, so direct writes into it need not allocate (see the module
/// docs). `false` where that fails: whatever a partial allocation left is
/// freed again, and the file is as it was. Also `false` on a file system
/// that cannot punch holes, where zeros would then stay allocated: the
/// punch over the still empty file is asked for first (it frees nothing).
fn preallocate(file: &File, size: u64) -> bool {
    let Ok(len) = i64::try_from(size) else {
        return false;
    };
    if nix::fcntl::fallocate(file.as_fd(), PUNCH, 0, len).is_err() {
        return false;
    }
    match nix::fcntl::fallocate(file.as_fd(), FallocateFlags::empty(), 0, len) {
        Ok(()) => true,
        Err(_) => {
            let _ = nix::fcntl::fallocate(file.as_fd(), PUNCH, 0, len);
            false
        }
    }
}

/// The error of a direct write or read the file system refuses.
fn refusal() -> std::io::Error {
    std::io::Error::from_raw_os_error(nix::errno::Errno::EINVAL as i32)
}

/// Whether `e` is a refused direct write or read (see [`refusal`]).
fn is_refusal(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32)
}

/// The chaining value of the subtree of the file's BLAKE3 tree that holds
/// `bytes` at `start` (a window: a multiple of its power-of-two size).
fn chaining_value(start: u64, bytes: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(start);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// Adds a complete subtree, merging it with its sibling while that is in
/// and their parent is a full, non-root node of the tree of a `size`-byte
/// input (an aligned power-of-two range inside the input, smaller than it).
fn add_subtree(
    subtrees: &mut BTreeMap<(u64, u64), ChainingValue>,
    size: u64,
    mut at: u64,
    mut len: u64,
    mut cv: ChainingValue,
) {
    while len.is_power_of_two() {
        let parent_len = 2 * len;
        let parent_at = at & !(parent_len - 1);
        if parent_at + parent_len > size || parent_len >= size {
            break;
        }
        let left = parent_at == at;
        let sibling_at = if left { at + len } else { parent_at };
        let Some(sibling) = subtrees.remove(&(sibling_at, len)) else {
            break;
        };
        cv = if left {
            merge_subtrees_non_root(&cv, &sibling, Mode::Hash)
        } else {
            merge_subtrees_non_root(&sibling, &cv, Mode::Hash)
        };
        (at, len) = (parent_at, parent_len);
    }
    subtrees.insert((at, len), cv);
}

/// The chaining value of the node `[at, at + len)`, from the subtrees in
/// (taken out), splitting as BLAKE3 does; `None` if one is missing.
fn node(subtrees: &mut BTreeMap<(u64, u64), ChainingValue>, at: u64, len: u64) -> Option<ChainingValue> {
    if let Some(cv) = subtrees.remove(&(at, len)) {
        return Some(cv);
    }
    if len <= WINDOW {
        return None;
    }
    let left = left_subtree_len(len);
    let l = node(subtrees, at, left)?;
    let r = node(subtrees, at + left, len - left)?;
    Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

/// The BLAKE3 of a `size`-byte input (more than one window) from the
/// subtrees in; `None` if one is missing or one is left over.
fn root(subtrees: &mut BTreeMap<(u64, u64), ChainingValue>, size: u64) -> Option<blake3::Hash> {
    if size <= WINDOW {
        return None;
    }
    let left = left_subtree_len(size);
    let l = node(subtrees, 0, left)?;
    let r = node(subtrees, left, size - left)?;
    subtrees.is_empty().then(|| merge_subtrees_root(&l, &r, Mode::Hash))
}

/// The threads that write windows; `None` if they cannot be started (each
/// window is then written on the thread that completed it).
fn writers() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(WRITERS)
            .thread_name(|i| format!("nfrepo-direct-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn data(len: usize, zero_from: usize, zero_to: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                if (zero_from..zero_to).contains(&i) {
                    0
                } else {
                    (i * 7 + i / 4093) as u8
                }
            })
            .collect()
    }

    /// A small deterministic shuffle (xorshift).
    fn shuffle<T>(items: &mut [T], mut state: u64) {
        for i in (1..items.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            items.swap(i, usize::try_from(state % (i as u64 + 1)).unwrap());
        }
    }

    fn hash_of_windows(bytes: &[u8], seed: u64) -> Option<blake3::Hash> {
        let size = bytes.len() as u64;
        let mut windows: Vec<u64> = (0..size.div_ceil(WINDOW)).collect();
        shuffle(&mut windows, seed);
        let mut subtrees = BTreeMap::new();
        for index in windows {
            let start = index * WINDOW;
            let end = (start + WINDOW).min(size);
            let part = &bytes[usize::try_from(start).unwrap()..usize::try_from(end).unwrap()];
            add_subtree(&mut subtrees, size, start, end - start, chaining_value(start, part));
        }
        root(&mut subtrees, size)
    }

    // The tree assembled from windows, in any order, is BLAKE3 itself:
    // sizes at, just under and just over powers of two of windows, and
    // ends that are not a multiple of a block or of BLAKE3's chunk.
    #[test]
    fn windows_in_any_order_hash_to_the_files_blake3() {
        let w = WINDOW_LEN;
        for (n, len) in [
            w + 1,
            2 * w,
            2 * w + 1,
            3 * w,
            4 * w - 1,
            4 * w,
            5 * w + 4095,
            7 * w + 1023,
            8 * w,
            9 * w + 1,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes = data(len, 0, 0);
            for seed in [1, 7 + n as u64] {
                assert_eq!(hash_of_windows(&bytes, seed), Some(blake3::hash(&bytes)), "{len} bytes");
            }
        }
    }

    #[test]
    fn a_missing_window_gives_no_hash() {
        let bytes = data(5 * WINDOW_LEN + 10, 0, 0);
        let size = bytes.len() as u64;
        let mut subtrees = BTreeMap::new();
        for index in [0u64, 1, 2, 4, 5] {
            let start = index * WINDOW;
            let end = (start + WINDOW).min(size);
            let part = &bytes[usize::try_from(start).unwrap()..usize::try_from(end).unwrap()];
            add_subtree(&mut subtrees, size, start, end - start, chaining_value(start, part));
        }
        assert_eq!(root(&mut subtrees, size), None);
    }

    /// A temporary file of `len` bytes (sized, sparse) and its direct twin:
    /// in the temporary directory, or, where that file system refuses
    /// direct I/O (tmpfs), in one under the crate's directory.
    fn direct_file(staging: &Arc<Staging>, len: u64, from_device: bool) -> (tempfile::TempDir, Arc<DirectFile>) {
        for dir in [tempfile::tempdir(), tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR"))] {
            let dir = dir.unwrap();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join("f"))
                .unwrap();
            file.set_len(len).unwrap();
            let file = Arc::new(file);
            let parent: OwnedFd = File::open(dir.path()).unwrap().into();
            if let Some(direct) = DirectFile::open(staging, &parent, "f", &file, len, from_device) {
                return (dir, Arc::new(direct));
            }
        }
        panic!("neither the temporary directory's file system nor the crate's accepts O_DIRECT");
    }

    /// Writes `bytes` as chunks of varied sizes, each run of 16 chunks
    /// in shuffled order (as a batch's reads land in pack order).
    fn write_chunks(file: &Arc<DirectFile>, bytes: &[u8], seed: u64) {
        let mut ranges = Vec::new();
        let mut at = 0;
        let mut n = seed;
        while at < bytes.len() {
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = (4096 + usize::try_from(n >> 44).unwrap() % (700 << 10)).min(bytes.len() - at);
            ranges.push((at, len));
            at += len;
        }
        for (i, batch) in ranges.chunks_mut(16).enumerate() {
            shuffle(batch, seed + i as u64);
            for &(at, len) in batch.iter() {
                file.write_run(at as u64, &[&bytes[at..at + len]]).unwrap();
            }
        }
    }

    // What a restore relies on: the file holds exactly the bytes written,
    // the staged hash is the file's BLAKE3, and a stretch of zeros larger
    // than a block stays a hole, whether windows were staged or passed
    // through the page cache (a budget of one window), from the page
    // cache or read back from the device.
    #[test]
    fn written_out_of_order_the_file_and_its_hash_are_the_content() {
        let len = 6 * WINDOW_LEN + 12_345;
        let bytes = data(len, WINDOW_LEN + 100, 3 * WINDOW_LEN + 200);
        for (budget, from_device) in [
            (STAGED_MOST, false),
            (STAGED_MOST, true),
            (WINDOW, false),
            (WINDOW, true),
        ] {
            let staging = Arc::new(Staging::with_budget(budget));
            let (dir, file) = direct_file(&staging, len as u64, from_device);
            assert!(file.preallocated, "the test's file system allocates with fallocate");
            write_chunks(&file, &bytes, budget + u64::from(from_device));
            let whole = file.finish(from_device).unwrap();
            assert_eq!(
                whole,
                Some(*blake3::hash(&bytes).as_bytes()),
                "budget {budget}, device {from_device}"
            );
            let on_disk = std::fs::read(dir.path().join("f")).unwrap();
            assert!(on_disk == bytes, "the file's content differs (budget {budget})");
            let blocks = std::fs::metadata(dir.path().join("f")).unwrap().blocks() * 512;
            assert!(
                blocks < len as u64 - (3 << 20),
                "{blocks} bytes allocated: the zeros were written (budget {budget})"
            );
            assert_eq!(staging.state.lock().unwrap().held, 0, "every window went back");
        }
    }

    // A page-cache hash does not serve a check from the device, and a
    // rewrite (after a failed check) gives the staged hash up: the check
    // then reads the file.
    #[test]
    fn a_rewrite_or_another_source_gives_up_the_staged_hash() {
        let len = 5 * WINDOW_LEN;
        let bytes = data(len, 0, 0);
        let staging = Arc::new(Staging::default());
        let (_dir, file) = direct_file(&staging, len as u64, false);
        write_chunks(&file, &bytes, 3);
        assert_eq!(file.finish(true).unwrap(), None);
        assert!(file.finish(false).unwrap().is_some());
        file.spoil();
        assert_eq!(file.finish(false).unwrap(), None);
    }

    #[test]
    fn a_window_left_incomplete_gives_no_hash_and_no_wait() {
        let len = 5 * WINDOW_LEN;
        let bytes = data(len, 0, 0);
        let staging = Arc::new(Staging::default());
        let (_dir, file) = direct_file(&staging, len as u64, false);
        file.write_run(0, &[&bytes[..len - 10]]).unwrap();
        assert_eq!(file.finish(false).unwrap(), None);
        // The writers of the complete windows may still hold the file for
        // a moment after signalling: the last holder's drop gives back the
        // incomplete window's buffer.
        let weak = Arc::downgrade(&file);
        drop(file);
        while weak.strong_count() > 0 {
            std::thread::yield_now();
        }
        assert_eq!(staging.state.lock().unwrap().held, 0, "the staged window went back");
    }

    // A file system that opens files for direct I/O but refuses the
    // writes (EINVAL): the windows go through the page cache, and the file
    // and its hash are still right, from the page cache or the device.
    #[test]
    fn refused_direct_writes_go_through_the_page_cache() {
        let len = 5 * WINDOW_LEN + 777;
        let bytes = data(len, 0, 0);
        // A budget of one window: windows staged and windows passed through
        // the page cache (whose read-back from the device is refused too).
        for from_device in [false, true] {
            let staging = Arc::new(Staging::with_budget(WINDOW));
            let (dir, file) = direct_file(&staging, len as u64, from_device);
            file.refuse_direct.store(true, std::sync::atomic::Ordering::Relaxed);
            write_chunks(&file, &bytes, 11);
            let whole = file.finish(from_device).unwrap();
            assert_eq!(whole, Some(*blake3::hash(&bytes).as_bytes()), "device {from_device}");
            assert!(
                std::fs::read(dir.path().join("f")).unwrap() == bytes,
                "device {from_device}"
            );
        }
    }

    #[test]
    fn a_write_past_the_end_is_an_error() {
        let staging = Arc::new(Staging::default());
        let (_dir, file) = direct_file(&staging, DIRECT_MIN, false);
        let err = file.write_run(DIRECT_MIN - 10, &[&[1u8; 20]]).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
