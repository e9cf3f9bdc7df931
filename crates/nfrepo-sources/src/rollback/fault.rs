//! Fault injection into the swap, for the end-to-end crash tests.
//!
//! Compiled only with the `failpoints` feature, which nothing enables in a
//! release build: `nfrepo-cli` turns it on through a dev-dependency, so
//! only the binary `cargo test` builds honours it. There,
//! `NFREPO_FAILPOINT_ROLLBACK_SWAP` stops a rollback's swap after a given
//! number of steps, as a crash would:
//!
//! - `kill-after:N`: the process sends itself `SIGKILL`;
//! - `pause-after:N`: it prints `nfrepo failpoint: rollback swap paused
//!   after N steps` on stderr and sleeps until killed.

/// The check run after each swap step; never returns `true` (a fault
/// kills or parks the process instead).
#[cfg(feature = "failpoints")]
pub(crate) fn after_step() -> impl FnMut(usize) -> bool {
    let spec = std::env::var("NFREPO_FAILPOINT_ROLLBACK_SWAP").unwrap_or_default();
    let (action, count) = spec.split_once(':').unwrap_or(("", ""));
    let action = action.to_owned();
    let count: Option<usize> = count.parse().ok();
    move |done| {
        if Some(done) == count {
            match action.as_str() {
                "kill-after" => {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                }
                "pause-after" => {
                    // Test-only: the test waits for this line, then kills the process.
                    eprintln!("nfrepo failpoint: rollback swap paused after {done} steps");
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                }
                _ => {}
            }
        }
        false
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
pub(crate) fn after_step() -> impl FnMut(usize) -> bool {
    |_| false
}
