//! Counters of a long operation, for a progress display.
//!
//! An operation that knows how much it has to do (a restore once it has
//! planned, check's read-data pass, gc's deletions and repack) announces a
//! phase with its totals through [`Work::phase`] and advances the counters
//! as it goes; a display samples [`Work::counts`] from another task. The
//! counters are relaxed atomics and the phase a short lock taken once per
//! phase: nothing ever waits for a display, and an operation run without a
//! [`Work`] does no bookkeeping at all.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Progress counters shared between an operation and its display.
#[derive(Debug, Default)]
pub struct Work {
    phase: Mutex<Option<(&'static str, Instant)>>,
    items_done: AtomicU64,
    items_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    growing: AtomicBool,
}

/// One sample of a [`Work`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkCounts {
    /// What is being done ("restoring", "reading packs"…).
    pub phase: &'static str,
    /// When the phase began.
    pub since: Instant,
    /// Items (files, packs) done and to do in this phase.
    pub items_done: u64,
    /// Items in the phase; 0 when unknown.
    pub items_total: u64,
    /// Bytes done in this phase.
    pub bytes_done: u64,
    /// Bytes in the phase; 0 when unknown.
    pub bytes_total: u64,
    /// The totals are still growing (see [`Work::grow`]): they count what
    /// was planned so far, so no share done or ETA can be drawn from them.
    pub growing: bool,
}

impl Work {
    /// Starts a phase of `items` items and `bytes` bytes (0: unknown),
    /// resetting the counters.
    pub fn phase(&self, name: &'static str, items: u64, bytes: u64) {
        if let Ok(mut phase) = self.phase.lock() {
            self.items_done.store(0, Ordering::Relaxed);
            self.bytes_done.store(0, Ordering::Relaxed);
            self.items_total.store(items, Ordering::Relaxed);
            self.bytes_total.store(bytes, Ordering::Relaxed);
            self.growing.store(false, Ordering::Relaxed);
            *phase = Some((name, Instant::now()));
        }
    }

    /// Adds `items` items and `bytes` bytes to the phase's totals, for an
    /// operation that learns its totals as it goes (a restore of part of a
    /// snapshot plans batch by batch).
    pub fn grow(&self, items: u64, bytes: u64) {
        self.growing.store(true, Ordering::Relaxed);
        self.items_total.fetch_add(items, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records `items` items and `bytes` bytes done.
    pub fn advance(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The current phase and counters; `None` before the first phase.
    #[must_use]
    pub fn counts(&self) -> Option<WorkCounts> {
        let (phase, since) = (*self.phase.lock().ok()?)?;
        Some(WorkCounts {
            phase,
            since,
            items_done: self.items_done.load(Ordering::Relaxed),
            items_total: self.items_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            growing: self.growing.load(Ordering::Relaxed),
        })
    }
}

/// Advances `work`, if there is one.
pub(crate) fn advance(work: Option<&Work>, items: u64, bytes: u64) {
    if let Some(work) = work {
        work.advance(items, bytes);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn a_phase_resets_the_counters_and_sets_its_totals() {
        let work = Work::default();
        assert_eq!(work.counts(), None);
        work.phase("reading packs", 3, 300);
        work.advance(1, 100);
        work.advance(1, 50);
        let c = work.counts().unwrap();
        assert_eq!(
            (c.phase, c.items_done, c.items_total, c.bytes_done, c.bytes_total),
            ("reading packs", 2, 3, 150, 300)
        );
        work.grow(2, 20);
        let c = work.counts().unwrap();
        assert_eq!((c.items_total, c.bytes_total, c.growing), (5, 320, true));
        work.phase("deleting", 0, 0);
        let c = work.counts().unwrap();
        assert_eq!(
            (c.phase, c.items_done, c.items_total, c.bytes_done),
            ("deleting", 0, 0, 0)
        );
        assert!(!work.counts().unwrap().growing, "a new phase starts with final totals");
    }
}
