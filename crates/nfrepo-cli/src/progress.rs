//! Progress on stderr for long commands: shown only on a terminal.
//!
//! A [`Progress`] line appears when stderr is a TTY and neither `--quiet`
//! nor `--json` is given; on a pipe nothing is drawn (a log file must not
//! fill with redraws). It samples counters four times a second from a
//! tokio task and redraws one line with indicatif; nothing in the engine
//! waits for it.
//!
//! Three sources of counters:
//! * a backup's own [`nfrepo_engine::Progress`], handed to
//!   [`Progress::show`] by the backup driver's callback (bytes read from the
//!   source, bytes new to the repository);
//! * an operation's [`nfrepo_engine::Work`] (restore, check, gc): its phase,
//!   items and bytes done, and, where the operation knows its totals (a
//!   restore once planned, check's read-data pass, gc's deletions and
//!   repack), the share done and an ETA from the phase's own rate;
//! * for every other command (verify, repair, …), the repository traffic
//!   counted by [`CountingStore`], which `context::open_store` puts under
//!   every store: objects and bytes fetched and written, objects deleted.
//!   These are real work done, measured where it happens, with no hook in
//!   the engine; their totals are not known in advance, so no ETA is shown.

use std::io::IsTerminal;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nfrepo_store::{ByteStream, ListStream, ObjectInfo, ObjectKey, ObjectKind, Pieces, PutMode, Result, Store};

use crate::cli::GlobalArgs;
use crate::render;

/// Repository traffic of this process.
#[derive(Debug, Default)]
pub struct Traffic {
    objects_read: AtomicU64,
    bytes_read: AtomicU64,
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
    objects_deleted: AtomicU64,
}

/// The traffic of every store this process opened.
pub static TRAFFIC: Traffic = Traffic {
    objects_read: AtomicU64::new(0),
    bytes_read: AtomicU64::new(0),
    objects_written: AtomicU64::new(0),
    bytes_written: AtomicU64::new(0),
    objects_deleted: AtomicU64::new(0),
};

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A store that counts what passes through it into [`TRAFFIC`].
#[derive(Debug)]
pub struct CountingStore(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for CountingStore {
    fn location(&self) -> &str {
        self.0.location()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, mode: PutMode) -> Result<()> {
        let len = data.len() as u64;
        self.0.put(key, data, mode).await?;
        add(&TRAFFIC.objects_written, 1);
        add(&TRAFFIC.bytes_written, len);
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let data = self.0.get(key).await?;
        add(&TRAFFIC.objects_read, 1);
        add(&TRAFFIC.bytes_read, data.len() as u64);
        Ok(data)
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        let data = self.0.get_range(key, range).await?;
        add(&TRAFFIC.objects_read, 1);
        add(&TRAFFIC.bytes_read, data.len() as u64);
        Ok(data)
    }

    async fn get_range_pieces(&self, key: &ObjectKey, range: Range<u64>) -> Result<Pieces> {
        let data = self.0.get_range_pieces(key, range).await?;
        add(&TRAFFIC.objects_read, 1);
        add(&TRAFFIC.bytes_read, data.len() as u64);
        Ok(data)
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.0.stat(key).await
    }

    fn list_stream(&self, kind: ObjectKind) -> ListStream<'_> {
        self.0.list_stream(kind)
    }

    async fn list_names(&self, kind: ObjectKind) -> Result<Vec<ObjectKey>> {
        self.0.list_names(kind).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.0.delete(key).await?;
        add(&TRAFFIC.objects_deleted, 1);
        Ok(())
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.0.object_lock_enabled().await
    }

    async fn set_retention(&self, key: &ObjectKey, retention: nfrepo_store::Retention) -> Result<()> {
        self.0.set_retention(key, retention).await
    }

    async fn purge(&self, key: &ObjectKey) -> Result<()> {
        self.0.purge(key).await
    }

    async fn list_purgeable(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.0.list_purgeable(kind).await
    }

    async fn get_range_stream(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteStream<'static>> {
        use futures::TryStreamExt;
        let stream = self.0.get_range_stream(key, range).await?;
        add(&TRAFFIC.objects_read, 1);
        Ok(Box::pin(
            stream.inspect_ok(|chunk| add(&TRAFFIC.bytes_read, chunk.len() as u64)),
        ))
    }

    fn streams_ranges(&self) -> bool {
        self.0.streams_ranges()
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream<'static>> {
        use futures::TryStreamExt;
        let stream = self.0.get_stream(key).await?;
        add(&TRAFFIC.objects_read, 1);
        Ok(Box::pin(
            stream.inspect_ok(|chunk| add(&TRAFFIC.bytes_read, chunk.len() as u64)),
        ))
    }

    async fn put_stream(&self, key: &ObjectKey, body: ByteStream<'_>, mode: PutMode) -> Result<u64> {
        let len = self.0.put_stream(key, body, mode).await?;
        add(&TRAFFIC.objects_written, 1);
        add(&TRAFFIC.bytes_written, len);
        Ok(len)
    }
}

/// What a progress line shows.
enum Counters {
    Backup(std::sync::Mutex<nfrepo_engine::Progress>),
    Work(Arc<nfrepo_engine::Work>, &'static str),
    Traffic,
}

/// `done` of `total` after `elapsed`: the time left at the same rate.
fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if done == 0 || total <= done {
        return None;
    }
    let left = (total - done) as f64 / done as f64;
    Some(Duration::from_secs_f64(elapsed.as_secs_f64() * left))
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A [`Counters::Work`] line: `phase: 3/10 files, 1.0 MiB/4.0 MiB (2.0 MiB/s), ETA 0:03`.
fn work_line(c: &nfrepo_engine::WorkCounts, unit: &str) -> String {
    let elapsed = c.since.elapsed();
    let mut line = format!("{}: {}", c.phase, c.items_done);
    if c.items_total > 0 {
        line.push_str(&format!("/{}", c.items_total));
    }
    line.push(' ');
    line.push_str(unit);
    if c.bytes_total > 0 || c.bytes_done > 0 {
        line.push_str(&format!(", {}", render::bytes(c.bytes_done)));
        if c.bytes_total > 0 {
            line.push_str(&format!("/{}", render::bytes(c.bytes_total)));
        }
        let rate = c.bytes_done as f64 / elapsed.as_secs_f64().max(0.001);
        line.push_str(&format!(" ({}/s)", render::bytes(rate as u64)));
    }
    let left = if c.growing {
        None
    } else if c.bytes_total > 0 {
        eta(c.bytes_done, c.bytes_total, elapsed)
    } else {
        eta(c.items_done, c.items_total, elapsed)
    };
    if let Some(left) = left {
        line.push_str(&format!(", ETA {}", clock(left)));
    }
    line
}

impl Counters {
    fn line(&self, started: Instant) -> String {
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = |bytes: u64| render::bytes((bytes as f64 / secs) as u64);
        match self {
            Self::Backup(latest) => {
                let p = latest.lock().map(|p| *p).unwrap_or_default();
                format!(
                    "{} read ({}/s), {} new in {} blobs",
                    render::bytes(p.bytes_read),
                    rate(p.bytes_read),
                    render::bytes(p.bytes_added_raw),
                    p.blobs_added
                )
            }
            Self::Work(work, unit) => match work.counts() {
                Some(counts) => work_line(&counts, unit),
                None => Self::Traffic.line(started),
            },
            Self::Traffic => {
                let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let read = load(&TRAFFIC.bytes_read);
                let written = load(&TRAFFIC.bytes_written);
                let mut line = format!(
                    "{} objects, {} read ({}/s)",
                    load(&TRAFFIC.objects_read),
                    render::bytes(read),
                    rate(read)
                );
                if written > 0 {
                    line.push_str(&format!(
                        "; {} objects, {} written",
                        load(&TRAFFIC.objects_written),
                        render::bytes(written)
                    ));
                }
                let deleted = load(&TRAFFIC.objects_deleted);
                if deleted > 0 {
                    line.push_str(&format!("; {deleted} deleted"));
                }
                line
            }
        }
    }
}

/// A progress line on stderr while a command runs (see the module docs).
pub struct Progress {
    task: Option<(tokio::task::JoinHandle<()>, indicatif::ProgressBar)>,
    counters: Arc<Counters>,
}

/// Whether progress may be drawn: stderr is a terminal, no `--quiet`/`--json`.
pub fn wanted(global: &GlobalArgs) -> bool {
    !global.quiet && !global.json && std::io::stderr().is_terminal()
}

impl Progress {
    /// Shows a backup's progress under `label`, as [`Self::show`] reports it.
    pub fn backup(global: &GlobalArgs, label: &str) -> Self {
        Self::start(global, label, Counters::Backup(std::sync::Mutex::default()))
    }

    /// Records a backup's latest progress (the driver's callback).
    pub fn show(&self, progress: nfrepo_engine::Progress) {
        if let Counters::Backup(latest) = &*self.counters
            && let Ok(mut latest) = latest.lock()
        {
            *latest = progress;
        }
    }

    /// Shows the phase and counters of `work` under `label`, counting items
    /// as `unit` ("files", "objects"); the traffic until its first phase.
    pub fn work(global: &GlobalArgs, label: &str, work: Arc<nfrepo_engine::Work>, unit: &'static str) -> Self {
        Self::start(global, label, Counters::Work(work, unit))
    }

    /// Shows the repository traffic under `label` (verify, repair…).
    pub fn traffic(global: &GlobalArgs, label: &str) -> Self {
        Self::start(global, label, Counters::Traffic)
    }

    fn start(global: &GlobalArgs, label: &str, counters: Counters) -> Self {
        let counters = Arc::new(counters);
        if !wanted(global) {
            return Self { task: None, counters };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_prefix(label.to_owned());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let shown = bar.clone();
        let started = Instant::now();
        let sampled = counters.clone();
        let task = tokio::spawn(async move {
            let counters = sampled;
            loop {
                shown.set_message(counters.line(started));
                shown.tick();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self {
            task: Some((task, bar)),
            counters,
        }
    }

    /// Stops the display, clears its line, and waits for the task (so it
    /// no longer holds a backup session).
    pub async fn finish(self) {
        if let Some((task, bar)) = self.task {
            task.abort();
            let _ = task.await;
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{clock, eta, work_line};

    #[test]
    fn eta_follows_the_rate_so_far() {
        assert_eq!(eta(25, 100, Duration::from_secs(10)), Some(Duration::from_secs(30)));
        assert_eq!(eta(0, 100, Duration::from_secs(10)), None);
        assert_eq!(eta(100, 100, Duration::from_secs(10)), None);
        assert_eq!(clock(Duration::from_secs(3 * 3600 + 62)), "3:01:02");
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
    }

    #[test]
    fn a_work_line_shows_counts_totals_and_an_eta_once_known() {
        let work = nfrepo_engine::Work::default();
        work.phase("restoring", 4, 4 << 20);
        work.advance(1, 1 << 20);
        let line = work_line(&work.counts().unwrap(), "files");
        assert!(line.starts_with("restoring: 1/4 files, 1.0 MiB/4.0 MiB ("), "{line}");
        assert!(line.contains("ETA "), "{line}");
        work.phase("restoring", 0, 0);
        work.grow(4, 4 << 20);
        work.advance(1, 1 << 20);
        let line = work_line(&work.counts().unwrap(), "files");
        assert!(line.starts_with("restoring: 1/4 files, 1.0 MiB/4.0 MiB ("), "{line}");
        assert!(!line.contains("ETA"), "no ETA while the totals grow: {line}");
        work.phase("marking trees", 0, 0);
        work.advance(7, 0);
        assert_eq!(
            work_line(&work.counts().unwrap(), "objects"),
            "marking trees: 7 objects"
        );
    }
}
