//! Fault injection at named steps of the protocols that must survive a
//! crash anywhere: the engine's (a gc sweep's pack deletions, a reseal's
//! pack copying) and, through this one function, nfrepo-sources' (a
//! rollback's swap, a database switch), for the end-to-end kill tests.
//!
//! Compiled only with the `failpoints` feature, which nothing enables in a
//! release build: `nfrepo-cli` turns it on through a dev-dependency, so only
//! the binary `cargo test` builds honours it. There the environment variable
//! `NFREPO_FAILPOINT_<NAME>` stops the protocol `NAME` after a given number
//! of steps, as a crash would:
//!
//! - `kill-after:N`: the process sends itself `SIGKILL`;
//! - `pause-after:N`: it prints `nfrepo failpoint: <name> paused after N
//!   steps` on stderr (`name` in lower case, `_` as spaces) and sleeps until
//!   killed, its background tasks (the lease's renewals) still running;
//! - `pause-before:N`: the same, said from the other side: before step `N`
//!   (0 = the first), printing `... paused before step N`.

/// The failpoint of a reseal; one step is one old pack read and sealed again.
pub(crate) const RESEAL: &str = "RESEAL";

/// The pack deletions of a GC sweep; each delete is a step.
pub(crate) const GC_SWEEP: &str = "GC_SWEEP";

/// Called after step `done` of protocol `name`.
#[cfg(feature = "failpoints")]
pub fn step(name: &str, done: u64) {
    let spec = std::env::var(format!("NFREPO_FAILPOINT_{name}")).unwrap_or_default();
    let (action, count) = spec.split_once(':').unwrap_or(("", ""));
    if count.parse::<u64>().ok() != Some(done) {
        return;
    }
    match action {
        "kill-after" => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        "pause-after" | "pause-before" => {
            // Test-only: the test waits for this line, then kills the process.
            let name = name.to_lowercase().replace('_', " ");
            if action == "pause-after" {
                eprintln!("nfrepo failpoint: {name} paused after {done} steps");
            } else {
                eprintln!("nfrepo failpoint: {name} paused before step {done}");
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        _ => {}
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
pub const fn step(_name: &str, _done: u64) {}
