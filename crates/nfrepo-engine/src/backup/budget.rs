//! A blocking counting budget shared by threads: sealing workers take bytes
//! of plaintext from it, and pack senders take upload slots.
//!
//! It is the pipeline's backpressure: a caller that would pass the cap
//! waits until others release, so memory in flight has a fixed ceiling.

use std::sync::Mutex;

/// A counting limit on units in flight (bytes, or upload slots). A single
/// item larger than the cap is admitted alone.
///
/// Waiters are woken only once what is in flight has fallen to the low
/// mark, and only when there are waiters: the sealing budget is released a
/// chunk at a time, and waking the feeding thread (and entering the kernel
/// to do so) at every release was about one `futex` call per chunk of a
/// backup.
pub(crate) struct ByteBudget {
    state: Mutex<State>,
    freed: std::sync::Condvar,
    cap: usize,
    low: usize,
}

#[derive(Default)]
struct State {
    used: usize,
    waiting: usize,
}

impl ByteBudget {
    /// A budget of `cap` whose waiters are woken by any release.
    pub(crate) fn new(cap: usize) -> Self {
        Self::with_low_mark(cap, cap)
    }

    /// A budget of `cap` whose waiters are woken once at most `low` is in
    /// flight (so always once nothing is): they then find room for a run
    /// of items, not one.
    pub(crate) fn with_low_mark(cap: usize, low: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            freed: std::sync::Condvar::new(),
            cap,
            low: low.min(cap),
        }
    }

    pub(crate) fn acquire(&self, n: usize) {
        let Ok(mut state) = self.state.lock() else { return };
        while state.used > 0 && state.used + n > self.cap {
            state.waiting += 1;
            let woken = self.freed.wait(state);
            match woken {
                Ok(guard) => state = guard,
                Err(_) => return,
            }
            state.waiting -= 1;
        }
        state.used += n;
    }

    pub(crate) fn release(&self, n: usize) {
        let wake = match self.state.lock() {
            Ok(mut state) => {
                state.used = state.used.saturating_sub(n);
                state.waiting > 0 && state.used <= self.low
            }
            Err(_) => true,
        };
        if wake {
            self.freed.notify_all();
        }
    }

    pub(crate) fn wait_idle(&self) {
        let Ok(mut state) = self.state.lock() else { return };
        while state.used > 0 {
            state.waiting += 1;
            match self.freed.wait(state) {
                Ok(guard) => state = guard,
                Err(_) => return,
            }
            state.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A waiter is let in once the budget has drained to its low mark, not
    /// at the first release; `wait_idle` returns once everything is
    /// released; nothing is lost however the releases interleave.
    #[test]
    fn waiters_resume_at_the_low_mark_and_at_idle() {
        let budget = Arc::new(ByteBudget::with_low_mark(100, 50));
        budget.acquire(40);
        budget.acquire(40);
        let admitted = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (budget, admitted) = (budget.clone(), admitted.clone());
            std::thread::spawn(move || {
                budget.acquire(40);
                admitted.fetch_add(1, Ordering::SeqCst);
            })
        };
        while budget.state.lock().unwrap().waiting == 0 {
            std::thread::yield_now();
        }
        // 60 in flight: room for 40, but above the low mark.
        budget.release(20);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(admitted.load(Ordering::SeqCst), 0, "woken above the low mark");
        budget.release(20);
        waiter.join().unwrap();
        assert_eq!(admitted.load(Ordering::SeqCst), 1);
        assert_eq!(budget.state.lock().unwrap().used, 80);

        let idle = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.wait_idle())
        };
        budget.release(40);
        budget.release(40);
        idle.join().unwrap();
        assert_eq!(budget.state.lock().unwrap().used, 0);
    }

    /// Many threads taking and giving back small amounts never deadlock
    /// and never pass the cap.
    #[test]
    fn contended_acquires_stay_under_the_cap() {
        let budget = Arc::new(ByteBudget::with_low_mark(64, 32));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (budget, peak) = (budget.clone(), peak.clone());
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let n = 1 + (i * 7 + t) % 16;
                        budget.acquire(n);
                        let used = budget.state.lock().unwrap().used;
                        peak.fetch_max(used, Ordering::SeqCst);
                        budget.release(n);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        budget.wait_idle();
        assert!(peak.load(Ordering::SeqCst) <= 64);
    }
}
