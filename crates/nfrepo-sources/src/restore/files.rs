//! File contents of a restore, planned by pack.
//!
//! The walk's batches go through one pipeline ([`restore_batches`]). A
//! batch's directories are made, then its files are opened (temporary
//! names, created at their size) in groups of [`OPEN_GROUP`] files or
//! [`OPEN_GROUP_BYTES`] of content, never more at once than the limit on
//! open files allows ([`open_files_allowed`]), and handed to the engine's
//! [`RestorePlanner`], which resolves their chunks batch by batch and
//! groups them into ranged reads of packs ([`nfrepo_engine::PackRead`]).
//! Each read is one task: its bytes (one ranged request; on a remote store,
//! its share of one request over neighbouring reads of the pack, taken
//! apart as the response arrives: [`Reader::spans`], that request sent
//! ahead while the read still waits for the budget below:
//! [`OPENED_AHEAD`]), then every chunk
//! opened (authenticated, decompressed, its length checked) on every core, a run
//! of neighbours at a time ([`nfrepo_engine::PackRead::runs`]), and
//! written with positioned writes to each file and offset that needs it:
//! one `pwritev` per run where its chunks follow each other in one file.
//! At most [`IN_FLIGHT_READS`] reads, [`IN_FLIGHT_SEALED`] of their sealed
//! bytes (what they hold in memory; with the window buffers of large files,
//! [`IN_FLIGHT_HELD`]) and [`IN_FLIGHT_RAW`] of their plaintext (the work
//! queued) are in flight, so requests overlap storage latency while memory
//! stays bounded. A file of 8 MiB or more is written around the page cache
//! where the file system allows: its chunks are gathered in aligned windows
//! written with `O_DIRECT`, and its whole BLAKE3 is assembled from the
//! windows instead of read back ([`super::direct`]).
//!
//! Outcomes are taken in plan order by the coordinating task, which counts
//! each file's placements and hands a file whose last one is in to the
//! closer: a task of its own that checks and places complete files in that
//! order while the coordinator goes on starting reads (at most
//! [`CLOSING_AHEAD`] steps wait for it; when it was one with the
//! coordinator, no read started while files were closed, and a tree of
//! small files restored from S3 left the cores idle). Every
//! chunk was authenticated, decompressed and its length checked before it
//! was written (a run's plaintext is dropped right after its writes);
//! closing checks that the written bytes add up to the file's size and
//! reads the file back to compare its whole BLAKE3 with its node (with
//! `--verify`, from the device: the step's files are written back
//! together, by one `syncfs` when they are many ([`SYNCED_CHECKS`]), then
//! read back on [`DEVICE_CHECKS`] threads, since each direct read waits for
//! the device) before it is renamed into place.
//!
//! That whole-file check is why a chunk is not also hashed again to its id
//! when it is opened ([`Reader::open_read_unhashed`]): each restored byte is
//! hashed once, where it landed, instead of twice (the re-hash was about a
//! tenth of a local restore's CPU). The seal already binds every chunk to
//! its id, so only a writer that sealed other bytes than it named could
//! make a file fail its check; such a file is then written again chunk by
//! chunk through [`Reader::read_blob`], which re-hashes each chunk to its
//! id and tries other copies, and checked again ([`rewrite_checked`]): the
//! damaged chunk is named, as if it had been re-hashed the first time.
//!
//! A large file that is not written around the page cache (the file
//! system refuses `O_DIRECT`) is read back while it is written: after a
//! read, a blocking task hashes whatever new prefix of the file is
//! complete ([`super::digest`]), so closing reads only its tail.
//! The files a step completes are checked outside every lock, on every
//! core, so the next files are opened and planned meanwhile.
//! A chunk that did not verify is retried alone through
//! [`Reader::read_blob`] (other copies, index recovery); if that fails the
//! files needing it are not restored (or, with `skip_damaged`, listed).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use nfrepo_engine::{
    BatchFile, FileToRestore, PackRead, Placement, PlanLimits, PlannedChunk, Reader, RestoreBatch, RestorePlanner,
    SpanPart,
};
use nfrepo_format::{BlobKind, NodeKind};
use rayon::prelude::*;

use super::target::{FileSystem, FileWriter, OpenFile, Opened, Target};
use super::{Batch, RestoreOptions, RestoreReport, lock};
use crate::driver::blocking;
use crate::{Error, Result};

/// Files opened at a time for planning (each holds a descriptor until
/// complete), fewer where the limit on open files is low
/// ([`open_files_allowed`]), and fewer than [`OPEN_GROUP_BYTES`] of
/// content. The reads of a group are planned together, and one request
/// only spans reads planned together ([`Reader::spans`]): with groups of
/// 128 small files (about 1.7 MB sealed), a tree's restore from S3 made
/// 555 requests of about 1 MiB. With 256 it made 401, and through
/// `remote-s3 10,100` took 7.31–7.40 s against 7.65–8.01 s at the same
/// peak (87 MiB); 512 made 313, 6.93–7.18 s, but peaked at 93–96 MiB.
const OPEN_GROUP: usize = 256;
/// Bytes of content of a group of files at most (a larger file is a group
/// of its own): larger files fill a group's reads without more of them
/// open at once.
const OPEN_GROUP_BYTES: u64 = 16 << 20;
/// Files being written at once at most, however high the limit on open
/// files: far more than the reads in flight keep busy.
const MOST_OPEN_FILES: usize = 4096;
/// Descriptors left for all but the files being written: the packs being
/// read, the cache's database, network connections, standard streams.
const RESERVED_DESCRIPTORS: u64 = 96;
/// Descriptors one file being written may hold: its own, a second one to
/// read it back from the device (`--verify`) or to write it around the page
/// cache (a large file, `direct.rs`), and its directory's (shared
/// with the other files of that directory, so usually fewer).
const DESCRIPTORS_PER_FILE: u64 = 3;
/// Batches planned ahead of the reads.
const PLANNED_AHEAD: usize = 2;
/// Reads in flight at most.
const IN_FLIGHT_READS: usize = 16;
/// Reads after those in flight whose request is sent ahead, on a remote
/// store ([`Reader::open_ahead`]): each holds the first frame of its
/// response, the rest waits in the transport until the read is admitted.
const OPENED_AHEAD: usize = 16;
/// Sealed bytes of the reads in flight at most: what the fetched reads
/// hold in memory until their chunks are opened (a read larger than this
/// still goes, alone).
const IN_FLIGHT_SEALED: u64 = 16 << 20;
/// Sealed bytes of the reads in flight plus the window buffers of large
/// files written around the page cache (`direct.rs`: up to 24 MiB of
/// plaintext gathered for direct writes) at most: while the device is
/// behind and windows wait for it, fewer reads start. 24 MiB until the
/// requests of waiting reads were sent ahead ([`OPENED_AHEAD`]): then
/// fewer reads in flight hid less of a remote store's latency (16 MiB cost
/// a restore from S3 a tenth of its speed). With them, 16 MiB restores as
/// fast at a lower peak (alternated runs, 16 against 24 MiB: 3 each from
/// a local directory, the dump 1.418 against 1.468 s at 76.8–79.9 against
/// 83.0–88.6 MiB, the tree 3.424 against 3.484 s at 75.6–75.8 against
/// 82.4–85.5 MiB; 2 each from S3, the dump through `remote-s3` 2.69–2.80
/// against 2.66–2.71 s at 80.3–82.6 against 86.0–87.2 MiB, the tree from
/// the loopback server 4.63–4.94 against 4.62–4.89 s at 86.7–88.3 against
/// 99.0–101.0 MiB).
const IN_FLIGHT_HELD: u64 = 16 << 20;
/// Plaintext bytes of the reads in flight at most: the work queued for
/// the cores (each chunk's plaintext is dropped once written, so this is
/// not memory held at once).
const IN_FLIGHT_RAW: u64 = 32 << 20;
/// Complete files read back from the device at once (`--verify`): each
/// read waits for the device, so many keep it busy where one per core
/// left it idle between them.
const DEVICE_CHECKS: usize = 16;
/// Complete files checked at once from which a `--verify` restore writes
/// the target's whole file system back (`syncfs`) before reading them from
/// the device, instead of starting each file's writeback: the kernel
/// writes many small files back together for less than a call per file
/// cost. A tree of 44,000 files restored with `--verify` into a new ext4
/// (3 alternated runs, about 540 files a step): 8.53–10.53 s with a
/// writeback started per file, 7.69–9.12 s with one `syncfs` per step. It
/// flushes other writers' data on that file system too, which the
/// restore's final `syncfs` does anyway; fewer files (a large file and a
/// few others) keep their own writeback.
const SYNCED_CHECKS: usize = 32;
/// Steps of complete files waiting for the closer: while they are checked
/// and renamed into place, the coordinator goes on starting reads.
const CLOSING_AHEAD: usize = 6;

/// A file being restored.
struct Restoring {
    open: Box<OpenFile>,
    /// The walk's batch it is in, and its place there.
    batch: Arc<Batch>,
    index: usize,
    /// Its share of the descriptors ([`open_files_allowed`]), given back
    /// when it is dropped, after the file was closed.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Placements announced by the planner, and those done.
    expected: u64,
    done: u64,
    /// Whether the planner has announced every placement.
    listed: bool,
    /// Why its content cannot be restored (with `skip_damaged`).
    failed: Option<String>,
}

/// What one read produced: per chunk, its length (written to every
/// placement already) or why not.
struct ReadOutcome {
    read: PackRead,
    chunks: Vec<Result<u64>>,
}

/// Plan-ordered work: a batch's word on its files comes before its reads,
/// and the end of a walk's batch after the reads of all its files.
enum Step {
    Files(Vec<BatchFile>),
    Read(ReadOutcome),
    End(WalkEnd),
}

/// What the planner hands the coordinator, in plan order.
enum Planning {
    /// Reads planned, and the files they write to.
    Reads(RestoreBatch),
    /// Every file of a walk's batch was planned.
    End(WalkEnd),
}

/// The end of a walk's batch: its files are those keyed `first..first +
/// batch.entries.len()` (the keys of [`State::files`]).
struct WalkEnd {
    batch: Arc<Batch>,
    first: usize,
}

/// What the closer takes, in plan order.
enum Closing {
    /// A complete file.
    File(Restoring),
    /// A walk's batch whose every file was placed: its links, FIFOs and
    /// devices are made and the directories it left finished
    /// ([`Batch::finish`]).
    End(Arc<Batch>),
}

/// Where the restore's coordinating task spent its time (logged at debug level).
#[derive(Default)]
struct Timing {
    planning: std::time::Duration,
    waiting: std::time::Duration,
    recording: std::time::Duration,
    /// Waiting for the closer to take complete files.
    handing_over: std::time::Duration,
    steps: u64,
}

/// Complete files and ends of batches of one or more steps, in plan
/// order, for the closer.
type Complete = Vec<Closing>;

/// What the consumer needs of the restore's options.
struct Settings {
    /// Rewrites a file that failed its check ([`rewrite_checked`]).
    reader: Reader,
    skip_damaged: bool,
    work: Option<Arc<nfrepo_engine::Work>>,
    root: PathBuf,
    /// The target's file system, written back at once before a `--verify`
    /// check of many files ([`SYNCED_CHECKS`]).
    file_system: FileSystem,
}

/// The files of a walk's batch: their places in it and their sizes.
fn files_of(batch: &Batch) -> impl Iterator<Item = (usize, u64)> + '_ {
    batch.entries.iter().enumerate().filter_map(|(i, p)| match p.node.kind {
        NodeKind::File { size, .. } => Some((i, size)),
        _ => None,
    })
}

/// Files the restore may hold open at once: the soft limit on open files
/// (raised to the hard one by the CLI) less [`RESERVED_DESCRIPTORS`], over
/// [`DESCRIPTORS_PER_FILE`], at most [`MOST_OPEN_FILES`]. A tree restore
/// unbounded held about 2,400 descriptors for 44,000 files, and failed
/// with "Too many open files" under a limit of 1,024.
fn open_files_allowed() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let files = soft.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_FILE;
    usize::try_from(files).unwrap_or(usize::MAX).clamp(8, MOST_OPEN_FILES)
}

/// The pool of [`DEVICE_CHECKS`] threads that check files read from the
/// device (`--verify`), started when first needed: those threads mostly
/// wait for the device, so more of them than cores keep it busy.
fn device_checks() -> Result<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(DEVICE_CHECKS)
        .thread_name(|i| format!("nfrepo-verify-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the threads that verify restored files: {e}")))?;
    Ok(POOL.get_or_init(|| pool))
}

/// The consumer's state: the files open for writing, by key (the walk's
/// entries numbered from the first batch on).
#[derive(Default)]
struct State {
    files: HashMap<usize, Restoring>,
    report: RestoreReport,
}

/// Restores every batch the walk hands over on `walked`, in order; returns
/// files and bytes written and the files skipped.
///
/// One pipeline runs through all the batches: a batch's directories are
/// made and its files opened and planned by a task of their own, a batch
/// of reads ahead, while reads are in flight and finished files are
/// closed; the closer finishes a batch ([`Batch::finish`]) once its last
/// file is placed, while the next batch's reads go on. (When each batch
/// was restored whole before the next began, the reads in flight ran dry
/// at every batch's end: a tree of 44,000 files from S3 through a 20 ms
/// round trip waited thirteen times for its pipeline to drain and fill.)
/// Opening and closing take turns on the target (two threads creating and
/// renaming in one directory at once only contend for its lock in the
/// kernel).
pub(super) async fn restore_batches(
    reader: &Reader,
    walked: tokio::sync::mpsc::Receiver<Batch>,
    target: &Arc<Mutex<Target>>,
    root: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let state = Arc::new(Mutex::new(State::default()));
    let settings = Arc::new(Settings {
        reader: reader.clone(),
        skip_damaged: options.skip_damaged,
        work: options.work.clone(),
        root: root.to_path_buf(),
        file_system: lock(target)?.file_system(),
    });
    let (planned_tx, mut planned) = tokio::sync::mpsc::channel(PLANNED_AHEAD);
    let _planning = AbortOnDrop(tokio::spawn(plan_ahead(
        reader.clone(),
        walked,
        target.clone(),
        state.clone(),
        options.work.clone(),
        planned_tx,
    )));
    let (closing_tx, closing_rx) = tokio::sync::mpsc::channel::<Complete>(CLOSING_AHEAD);
    let mut closer = AbortOnDrop(tokio::spawn(close_in_order(
        closing_rx,
        state.clone(),
        target.clone(),
        settings.clone(),
    )));
    // Each read with its place in a span of neighbouring reads fetched
    // with one request (on a remote store, `Reader::spans`).
    let mut reads: VecDeque<(PackRead, Option<SpanPart>)> = VecDeque::new();
    let mut in_flight: FuturesOrdered<Task> = FuturesOrdered::new();
    let mut in_flight_bytes = InFlight::default();
    // Requests sent ahead for the first `opened` reads of `reads`.
    let mut ahead = tokio::task::JoinSet::new();
    let mut opened: usize = 0;
    let staging = lock(target)?.staging();
    let mut planned_all = false;
    let mut timing = Timing::default();
    loop {
        // Start reads while the window has room, planning more as needed.
        loop {
            if let Some((read, _)) = reads.front() {
                let cost = InFlight::of(read);
                if in_flight.len() >= IN_FLIGHT_READS
                    || (!in_flight.is_empty() && !in_flight_bytes.fits(cost, staging.allocated()))
                {
                    break;
                }
                if let Some((read, part)) = reads.pop_front() {
                    opened = opened.saturating_sub(1);
                    in_flight_bytes.add(cost);
                    let writers = writers_for(&state, &read)?;
                    in_flight.push_back(Task::start(reader.clone(), read, part, writers));
                }
                continue;
            }
            if planned_all {
                break;
            }
            // The next batch: waited for only when nothing else is in flight.
            let started = std::time::Instant::now();
            let next = if in_flight.is_empty() {
                planned.recv().await
            } else {
                match planned.try_recv() {
                    Ok(batch) => Some(batch),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            timing.planning += started.elapsed();
            match next.transpose()? {
                // Every read of earlier batches is in flight: the batch's
                // word on its files comes after them and before its reads.
                Some(Planning::Reads(batch)) => {
                    in_flight.push_back(Task::ready(Step::Files(batch.files)));
                    let parts = reader.spans(&batch.reads);
                    reads.extend(batch.reads.into_iter().zip(parts));
                }
                // And the end of a walk's batch after every one of its reads.
                Some(Planning::End(end)) => in_flight.push_back(Task::ready(Step::End(end))),
                None => planned_all = true,
            }
        }
        open_ahead(reader, &reads, &mut opened, &mut ahead);
        let started = std::time::Instant::now();
        let next = in_flight.next().await;
        timing.waiting += started.elapsed();
        let Some(step) = next else {
            break;
        };
        let step = step?;
        if let Step::Read(outcome) = &step {
            in_flight_bytes.remove(InFlight::of(&outcome.read));
        }
        let started = std::time::Instant::now();
        let complete = record_step(&state, &settings, step)?;
        timing.recording += started.elapsed();
        timing.steps += 1;
        // The closer only stops early on an error, which its join reports.
        if closer.0.is_finished() {
            break;
        }
        if !complete.is_empty() {
            let started = std::time::Instant::now();
            let handed = closing_tx.send(complete).await;
            timing.handing_over += started.elapsed();
            if handed.is_err() {
                break;
            }
        }
    }
    drop(closing_tx);
    let closing = (&mut closer.0).await.map_err(crate::driver::worker_failed)??;
    tracing::debug!(
        waiting_for_plans = ?timing.planning,
        waiting_for_reads = ?timing.waiting,
        recording = ?timing.recording,
        waiting_for_the_closer = ?timing.handing_over,
        checking_and_closing = ?closing,
        steps = timing.steps,
        "restored file contents"
    );
    let mut state = lock(&state)?;
    if let Some((&index, _)) = state.files.iter().next() {
        return Err(Error::Invalid(format!(
            "restore planned file {index} was never completed"
        )));
    }
    Ok(std::mem::take(&mut state.report))
}

/// Sealed and plaintext bytes of reads (one read's, or those in flight).
#[derive(Clone, Copy, Default)]
struct InFlight {
    sealed: u64,
    raw: u64,
}

impl InFlight {
    fn of(read: &PackRead) -> Self {
        Self {
            sealed: read.end - read.start,
            raw: read.raw_len(),
        }
    }

    /// Whether `read` may join the reads in flight, with `staged` bytes of
    /// window buffers allocated ([`IN_FLIGHT_HELD`]).
    const fn fits(&self, read: Self, staged: u64) -> bool {
        let sealed = self.sealed + read.sealed;
        sealed <= IN_FLIGHT_SEALED && sealed + staged <= IN_FLIGHT_HELD && self.raw + read.raw <= IN_FLIGHT_RAW
    }

    const fn add(&mut self, read: Self) {
        self.sealed += read.sealed;
        self.raw += read.raw;
    }

    const fn remove(&mut self, read: Self) {
        self.sealed = self.sealed.saturating_sub(read.sealed);
        self.raw = self.raw.saturating_sub(read.raw);
    }
}

/// Takes the walk's batches in turn: makes each one's directories, then
/// opens its files group by group and plans them, sending each batch of
/// reads, then the batch's end (or the error that stopped planning), to the
/// coordinator.
async fn plan_ahead(
    reader: Reader,
    walked: tokio::sync::mpsc::Receiver<Batch>,
    opener: Arc<Mutex<Target>>,
    state: Arc<Mutex<State>>,
    work: Option<Arc<nfrepo_engine::Work>>,
    planned: tokio::sync::mpsc::Sender<Result<Planning>>,
) {
    if let Err(e) = open_and_plan(&reader, walked, &opener, &state, work, &planned).await {
        let _ = planned.send(Err(e)).await;
    }
}

/// The body of [`plan_ahead`].
async fn open_and_plan(
    reader: &Reader,
    mut walked: tokio::sync::mpsc::Receiver<Batch>,
    opener: &Arc<Mutex<Target>>,
    state: &Arc<Mutex<State>>,
    work: Option<Arc<nfrepo_engine::Work>>,
    planned: &tokio::sync::mpsc::Sender<Result<Planning>>,
) -> Result<()> {
    // One planner for the whole walk: its first batches of reads are small,
    // so the first read starts soon, and later ones grow to its limit.
    let mut planner = RestorePlanner::new(reader, PlanLimits::default());
    // A file's slot is taken before it is opened and given back once it is
    // closed. Every file opened was planned before the next group is opened
    // (the planner has nothing pending), so the files holding slots complete
    // without waiting for more: a group waits for slots, never forever.
    let allowed = open_files_allowed();
    let slots = Arc::new(tokio::sync::Semaphore::new(allowed));
    let group_len = OPEN_GROUP.min(allowed);
    let mut first = 0;
    while let Some(batch) = walked.recv().await {
        let batch = Arc::new(batch);
        let (made, target) = (batch.clone(), opener.clone());
        blocking(move || made.make_dirs(&mut *lock(&target)?)).await?;
        let mut files = files_of(&batch).collect::<Vec<_>>().into_iter().peekable();
        loop {
            if planner.pending() == 0 {
                let group = next_group(&mut files, group_len);
                if group.is_empty() {
                    break;
                }
                let taken = slots
                    .clone()
                    .acquire_many_owned(u32::try_from(group.len()).unwrap_or(u32::MAX))
                    .await
                    .map_err(|e| Error::Invalid(format!("restore stopped opening files: {e}")))?;
                for file in open_group(&batch, first, opener, state, group, taken, work.clone()).await? {
                    planner.push(file);
                }
                continue;
            }
            if let Some(reads) = planner.next_batch().await?
                && planned.send(Ok(Planning::Reads(reads))).await.is_err()
            {
                // The restore stopped.
                return Ok(());
            }
        }
        let len = batch.entries.len();
        if planned.send(Ok(Planning::End(WalkEnd { batch, first }))).await.is_err() {
            return Ok(());
        }
        first += len;
    }
    Ok(())
}

/// The next group of files to open from `files` (places and sizes): at
/// most `most` of them and [`OPEN_GROUP_BYTES`] of content, at least one.
fn next_group(files: &mut std::iter::Peekable<impl Iterator<Item = (usize, u64)>>, most: usize) -> Vec<usize> {
    let mut group = Vec::new();
    let mut bytes = 0u64;
    while group.len() < most
        && let Some(&(index, size)) = files.peek()
        && (group.is_empty() || bytes + size <= OPEN_GROUP_BYTES)
    {
        group.push(index);
        bytes += size;
        files.next();
    }
    group
}

/// Sends the requests of the reads waiting for the budget, up to
/// [`OPENED_AHEAD`] of them (`opened` counts those at the front of `reads`
/// already sent; a read without a span part, on a local store, is passed).
/// The tasks in `ahead` are aborted when it is dropped (the restore stopped).
fn open_ahead(
    reader: &Reader,
    reads: &VecDeque<(PackRead, Option<SpanPart>)>,
    opened: &mut usize,
    ahead: &mut tokio::task::JoinSet<()>,
) {
    while ahead.try_join_next().is_some() {}
    while *opened < OPENED_AHEAD.min(reads.len()) {
        if let Some((_, Some(part))) = reads.get(*opened) {
            let (reader, part) = (reader.clone(), part.clone());
            ahead.spawn(async move { reader.open_ahead(&part).await });
        }
        *opened += 1;
    }
}

/// A spawned task, aborted when dropped (the restore stopped).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writers for every file a read writes to.
fn writers_for(state: &Mutex<State>, read: &PackRead) -> Result<HashMap<usize, FileWriter>> {
    let state = lock(state)?;
    let mut writers = HashMap::new();
    for placement in read.chunks.iter().flat_map(|c| &c.placements) {
        if let Some(file) = state.files.get(&placement.file) {
            writers.entry(placement.file).or_insert_with(|| file.open.writer());
        }
    }
    Ok(writers)
}

/// Opens a group of files of `batch` (temporary names), by their places in
/// it; returns those to write, keyed from `first` on. Files already
/// identical in the target count as done.
async fn open_group(
    batch: &Arc<Batch>,
    first: usize,
    target: &Arc<Mutex<Target>>,
    state: &Arc<Mutex<State>>,
    group: Vec<usize>,
    mut slots: tokio::sync::OwnedSemaphorePermit,
    work: Option<Arc<nfrepo_engine::Work>>,
) -> Result<Vec<FileToRestore>> {
    let (batch, target, state) = (batch.clone(), target.clone(), state.clone());
    blocking(move || {
        // The target's lock is never held while taking the state's: closing
        // files takes them the other way round.
        let mut opened = Vec::with_capacity(group.len());
        {
            let mut target = lock(&target)?;
            for index in group {
                let planned = batch
                    .entries
                    .get(index)
                    .ok_or_else(|| Error::Invalid(format!("no planned node {index}")))?;
                let NodeKind::File { content, size, .. } = &planned.node.kind else {
                    continue;
                };
                match target.open_file(planned)? {
                    Opened::Unchanged => {
                        if let Some(work) = &work {
                            work.advance(1, *size);
                        }
                    }
                    Opened::Write(open) => opened.push((index, open, content.clone())),
                }
            }
        }
        let mut state = lock(&state)?;
        let mut to_write = Vec::with_capacity(opened.len());
        for (index, open, content) in opened {
            // One slot per file written; those of unchanged files go back.
            let Some(slot) = slots.split(1) else {
                return Err(Error::Invalid(
                    "restore opened more files than it took slots for".into(),
                ));
            };
            let key = first + index;
            state.files.insert(
                key,
                Restoring {
                    open,
                    batch: batch.clone(),
                    index,
                    _slot: slot,
                    expected: 0,
                    done: 0,
                    listed: false,
                    failed: None,
                },
            );
            to_write.push(FileToRestore { file: key, content });
        }
        Ok(to_write)
    })
    .await
}

/// One read in flight (a spawned task, aborted if the restore stops), or a
/// step that is ready and only waits for its turn.
enum Task {
    Read(tokio::task::JoinHandle<Result<Step>>),
    Ready(Option<Step>),
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Self::Read(handle) = self {
            handle.abort();
        }
    }
}

impl Task {
    const fn ready(step: Step) -> Self {
        Self::Ready(Some(step))
    }

    fn start(reader: Reader, read: PackRead, part: Option<SpanPart>, writers: HashMap<usize, FileWriter>) -> Self {
        Self::Read(tokio::spawn(async move {
            run_read(reader, read, part, writers).await.map(Step::Read)
        }))
    }
}

impl std::future::Future for Task {
    type Output = Result<Step>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(step) => std::task::Poll::Ready(
                step.take()
                    .ok_or_else(|| Error::Invalid("restore step taken twice".into())),
            ),
            Self::Read(handle) => std::pin::Pin::new(handle)
                .poll(cx)
                .map(|joined| joined.map_err(|e| Error::Invalid(format!("restore read failed: {e}")))?),
        }
    }
}

/// Writes one chunk's plaintext at each of `placements` (those of a file
/// not being written are skipped).
fn write_chunk(writers: &HashMap<usize, FileWriter>, placements: &[Placement], data: &[u8]) -> Result<()> {
    for placement in placements {
        if let Some(writer) = writers.get(&placement.file) {
            writer.write_at(placement.offset, data)?;
        }
    }
    Ok(())
}

/// Writes one run of a read ([`PackRead::runs`]): each stretch of chunks
/// that opened goes to their first placements (which follow each other in
/// one file) with one call, and each other placement alone. Returns each
/// chunk's length, or why it was not written (a chunk that did not open
/// keeps its own error, which decides whether it is retried).
fn write_run(
    writers: &HashMap<usize, FileWriter>,
    chunks: &[PlannedChunk],
    opened: Vec<nfrepo_engine::Result<Vec<u8>>>,
) -> Vec<Result<u64>> {
    let mut results = Vec::with_capacity(chunks.len());
    let mut stretch: Vec<(&PlannedChunk, Vec<u8>)> = Vec::new();
    for (chunk, opened) in chunks.iter().zip(opened) {
        match opened {
            Ok(data) => stretch.push((chunk, data)),
            Err(e) => {
                write_stretch(writers, &mut stretch, &mut results);
                results.push(Err(e.into()));
            }
        }
    }
    write_stretch(writers, &mut stretch, &mut results);
    results
}

/// Writes and empties a stretch of opened chunks (see [`write_run`]).
fn write_stretch(
    writers: &HashMap<usize, FileWriter>,
    stretch: &mut Vec<(&PlannedChunk, Vec<u8>)>,
    results: &mut Vec<Result<u64>>,
) {
    let Some(first) = stretch.first().and_then(|(chunk, _)| chunk.placements.first()) else {
        results.extend(stretch.drain(..).map(|(_, data)| Ok(data.len() as u64)));
        return;
    };
    let parts: Vec<&[u8]> = stretch.iter().map(|(_, data)| data.as_slice()).collect();
    let written = writers
        .get(&first.file)
        .map_or(Ok(()), |writer| writer.write_run(first.offset, &parts));
    match written {
        Ok(()) => {
            for (chunk, data) in stretch.iter() {
                let others = chunk.placements.get(1..).unwrap_or_default();
                results.push(write_chunk(writers, others, data).map(|()| data.len() as u64));
            }
        }
        Err(e) => {
            // The restore stops at the first chunk's error; the others repeat it.
            let repeats: Vec<Error> = stretch.iter().skip(1).map(|_| same_error(&e)).collect();
            results.push(Err(e));
            results.extend(repeats.into_iter().map(Err));
        }
    }
    stretch.clear();
}

/// A copy of a write error, for the other chunks it left unwritten.
fn same_error(e: &Error) -> Error {
    match e {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// Fetches (from its span's response, if it has one) and opens one read,
/// writing every chunk; a chunk that fails (or every chunk, if the read
/// itself failed) is tried again alone.
async fn run_read(
    reader: Reader,
    read: PackRead,
    part: Option<SpanPart>,
    writers: HashMap<usize, FileWriter>,
) -> Result<ReadOutcome> {
    let (read, writers, mut chunks) = match reader.fetch_planned(&read, part.as_ref()).await {
        Ok(sealed) => {
            let reader = reader.clone();
            blocking(move || {
                let chunks = reader.open_read_unhashed(&read, &sealed, |run, opened| write_run(&writers, run, opened));
                Ok((read, writers, chunks))
            })
            .await?
        }
        Err(e) => {
            let failed: Vec<Result<u64>> = read.chunks.iter().map(|_| Err(Error::from(clone_error(&e)))).collect();
            (read, writers, failed)
        }
    };
    // A large file's new prefix is hashed on a thread of its own (it may
    // wait for the device), so this read's outcome is not held up; the
    // file's check waits for it.
    for writer in writers.values().filter(|w| w.hash_due()) {
        let writer = writer.clone();
        drop(tokio::task::spawn_blocking(move || writer.catch_up()));
    }
    let writers = Arc::new(writers);
    for (chunk, result) in read.chunks.iter().zip(chunks.iter_mut()) {
        // Only content that did not verify (or was not read) is retried;
        // an error writing the target is the target's.
        match result {
            Err(Error::Engine(_)) => {}
            _ => continue,
        }
        let data = match reader.read_blob(&chunk.id, BlobKind::Data).await {
            Ok(data) => data,
            Err(e) => {
                *result = Err(e.into());
                continue;
            }
        };
        let (writers, chunk) = (writers.clone(), chunk.clone());
        *result = blocking(move || {
            write_chunk(&writers, &chunk.placements, &data)?;
            Ok(data.len() as u64)
        })
        .await;
    }
    Ok(ReadOutcome { read, chunks })
}

/// The engine error of a failed read, for each of its chunks (the retry
/// through `read_blob` replaces it with the chunk's own).
fn clone_error(e: &nfrepo_engine::Error) -> nfrepo_engine::Error {
    nfrepo_engine::Error::Pipeline(e.to_string())
}

/// Records one step's placements, in plan order, and takes the files it
/// completed out of the state for the closer ([`close_complete`]). Holds
/// only the state's lock, briefly: it runs on the coordinating task.
fn record_step(state_lock: &Mutex<State>, settings: &Settings, step: Step) -> Result<Complete> {
    let (skip_damaged, work) = (settings.skip_damaged, settings.work.as_deref());
    let mut state = lock(state_lock)?;
    let mut touched: Vec<usize> = Vec::new();
    match step {
        // Every read of the batch's files is in: each was complete, and
        // handed to the closer, by an earlier step.
        Step::End(WalkEnd { batch, first }) => {
            let keys = first..first + batch.entries.len();
            if let Some(key) = state.files.keys().find(|key| keys.contains(key)) {
                return Err(Error::Invalid(format!(
                    "restore planned file {key} was never completed"
                )));
            }
            return Ok(vec![Closing::End(batch)]);
        }
        Step::Files(files) => {
            for announced in files {
                if let Some(file) = state.files.get_mut(&announced.file) {
                    file.expected += announced.placements;
                    file.listed |= announced.listed;
                    if let Some(e) = announced.failed {
                        fail(file, e.into(), skip_damaged)?;
                    }
                    touched.push(announced.file);
                }
            }
        }
        Step::Read(outcome) => {
            for (chunk, result) in outcome.read.chunks.iter().zip(outcome.chunks) {
                // A chunk that failed stops the restore, unless it is
                // damage and damaged files are skipped.
                let written = match result {
                    Ok(len) => Ok(len),
                    Err(e) if skip_damaged && e.is_damage() => Err(e.to_string()),
                    Err(e) => return Err(e),
                };
                for placement in &chunk.placements {
                    let Some(file) = state.files.get_mut(&placement.file) else {
                        continue;
                    };
                    file.done += 1;
                    match &written {
                        Ok(len) => {
                            file.open.record(*len);
                            if let Some(work) = work {
                                work.advance(0, *len);
                            }
                        }
                        Err(reason) => {
                            file.failed.get_or_insert_with(|| reason.clone());
                        }
                    }
                    touched.push(placement.file);
                }
            }
        }
    }
    touched.dedup();
    let mut complete = Complete::new();
    for index in touched {
        let done = state
            .files
            .get(&index)
            .is_some_and(|f| f.listed && f.done >= f.expected);
        if done && let Some(file) = state.files.remove(&index) {
            complete.push(Closing::File(file));
        }
    }
    Ok(complete)
}

/// Checks and closes complete files on a task of its own, a step at a time
/// in plan order (the steps waiting are taken together), while the
/// coordinator goes on starting reads. Returns the time it spent; stops at
/// the first error, dropping the files it holds (which removes their
/// temporary names).
async fn close_in_order(
    mut steps: tokio::sync::mpsc::Receiver<Complete>,
    state: Arc<Mutex<State>>,
    target: Arc<Mutex<Target>>,
    settings: Arc<Settings>,
) -> Result<std::time::Duration> {
    let mut spent = std::time::Duration::ZERO;
    while let Some(mut complete) = steps.recv().await {
        while let Ok(more) = steps.try_recv() {
            complete.extend(more);
        }
        let (state, target, settings) = (state.clone(), target.clone(), settings.clone());
        let started = std::time::Instant::now();
        blocking(move || {
            // Files up to each batch's end, then that batch's end.
            let mut files = Vec::new();
            for closing in complete {
                match closing {
                    Closing::File(file) => files.push(file),
                    Closing::End(batch) => {
                        close_complete(&state, &target, &settings, std::mem::take(&mut files))?;
                        batch.finish(&mut *lock(&target)?)?;
                    }
                }
            }
            close_complete(&state, &target, &settings, files)
        })
        .await?;
        spent += started.elapsed();
    }
    Ok(spent)
}

/// Checks complete files (read back and hashed, several at once, outside
/// every lock, so opening the next files goes on meanwhile), then places
/// them under the target's lock and counts them under the state's (never
/// both at once).
fn close_complete(
    state_lock: &Mutex<State>,
    target: &Mutex<Target>,
    settings: &Settings,
    complete: Vec<Restoring>,
) -> Result<()> {
    if complete.is_empty() {
        return Ok(());
    }
    let (skip_damaged, work, root) = (settings.skip_damaged, settings.work.as_deref(), &settings.root);
    let from_device = lock(target)?.verifies();
    let check = |mut file: Restoring| {
        let checked = match file.failed {
            Some(_) => Ok(()),
            None => file.open.check(from_device),
        };
        (file, checked)
    };
    let mut checked: Vec<(Restoring, Result<()>)> = if from_device {
        // Each read from the device first waits for the file's writeback:
        // done for every file at once (many: the whole file system's,
        // `SYNCED_CHECKS`; else started per file), and read by many
        // threads at once, the device works on many files instead of one
        // per core.
        let synced = complete.len() >= SYNCED_CHECKS;
        if synced {
            settings.file_system.sync()?;
        }
        device_checks()?.install(|| {
            if !synced {
                complete.par_iter().for_each(|file| file.open.start_writeback());
            }
            complete.into_par_iter().map(check).collect()
        })
    } else {
        complete.into_par_iter().map(check).collect()
    };
    for (file, checked) in &mut checked {
        if matches!(checked, Err(Error::ContentMismatch(_)))
            && let Some(planned) = file.batch.entries.get(file.index)
        {
            *checked = rewrite_checked(&settings.reader, &planned.node, &mut file.open, from_device);
        }
    }
    let mut closed_files = Vec::with_capacity(checked.len());
    {
        let mut target = lock(target)?;
        for (file, checked) in checked {
            let (batch, index) = (file.batch.clone(), file.index);
            let closed = match (file.failed, checked) {
                // Dropping the file removes its temporary name.
                (Some(reason), _) => Err(reason),
                (None, Err(e)) if skip_damaged && e.is_damage() => Err(e.to_string()),
                (None, Err(e)) => return Err(e),
                (None, Ok(())) => match target.close_file(file.open) {
                    Ok(closed) => Ok(closed),
                    Err(e) if skip_damaged && e.is_damage() => Err(e.to_string()),
                    Err(e) => return Err(e),
                },
            };
            closed_files.push((batch, index, closed));
        }
    }
    let mut state = lock(state_lock)?;
    for (batch, index, closed) in closed_files {
        if let Some(work) = work {
            work.advance(1, 0);
        }
        match closed {
            Ok(Some(bytes)) => {
                state.report.files += 1;
                state.report.bytes += bytes;
            }
            Ok(None) => {}
            Err(reason) => {
                let rel = batch.entries.get(index).map(|p| p.rel.as_slice()).unwrap_or_default();
                state.report.skipped.push((root.join(OsStr::from_bytes(rel)), reason));
            }
        }
    }
    Ok(())
}

/// Writes a file that failed its whole-file check again, every chunk
/// through [`Reader::read_blob`] (re-hashed to its id, other copies tried),
/// and checks it again. Its chunks were opened without the re-hash
/// ([`Reader::open_read_unhashed`]): a chunk sealed under an id it does not hash
/// to is named here, as a chunk whose seal failed is named when it is read.
/// Call it from a blocking thread of the runtime (the one `close_complete`
/// runs on); it waits for the reads.
///
/// # Errors
/// The first chunk that does not verify anywhere; [`Error::ContentMismatch`]
/// if the chunks all verify and the file still differs from its node.
fn rewrite_checked(reader: &Reader, node: &nfrepo_format::Node, file: &mut OpenFile, from_device: bool) -> Result<()> {
    let NodeKind::File { content, .. } = &node.kind else {
        return Ok(());
    };
    let writer = file.writer();
    tokio::runtime::Handle::current().block_on(async {
        let mut entries = std::pin::pin!(reader.content_chunks(content));
        let mut offset = 0u64;
        while let Some(entry) = entries.next().await {
            let data = reader.read_blob(&entry?.id, BlobKind::Data).await?;
            writer.overwrite_at(offset, &data)?;
            offset += data.len() as u64;
        }
        Ok::<_, Error>(())
    })?;
    file.check(from_device)
}

/// Marks a file whose content cannot be restored: the restore stops with
/// `error`, unless it is damage and damaged files are skipped.
fn fail(file: &mut Restoring, error: Error, skip_damaged: bool) -> Result<()> {
    if skip_damaged && error.is_damage() {
        file.failed.get_or_insert_with(|| error.to_string());
        Ok(())
    } else {
        Err(error)
    }
}
