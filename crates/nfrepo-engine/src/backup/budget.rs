//! A blocking counting budget shared by threads: sealing workers take bytes
//! of plaintext from it, and pack senders take upload slots.
//!
//! It is the pipeline's backpressure: a caller that would pass the cap
//! waits until others release, so memory in flight has a fixed ceiling.

use std::sync::Mutex;

/// A counting limit on units in flight (bytes, or upload slots). A single
/// item larger than the cap is admitted alone.
pub(crate) struct ByteBudget {
    used: Mutex<usize>,
    freed: std::sync::Condvar,
    cap: usize,
}

impl ByteBudget {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            used: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            cap,
        }
    }

    pub(crate) fn acquire(&self, n: usize) {
        let Ok(mut used) = self.used.lock() else { return };
        while *used > 0 && *used + n > self.cap {
            match self.freed.wait(used) {
                Ok(guard) => used = guard,
                Err(_) => return,
            }
        }
        *used += n;
    }

    pub(crate) fn release(&self, n: usize) {
        if let Ok(mut used) = self.used.lock() {
            *used = used.saturating_sub(n);
        }
        self.freed.notify_all();
    }

    pub(crate) fn wait_idle(&self) {
        let Ok(mut used) = self.used.lock() else { return };
        while *used > 0 {
            match self.freed.wait(used) {
                Ok(guard) => used = guard,
                Err(_) => return,
            }
        }
    }
}
