//! Fault injection at named steps of maintenance, for the end-to-end tests
//! that kill a command in the middle of its work.
//!
//! Compiled only with the `failpoints` feature, which nothing enables in a
//! release build: `nfrepo-cli` turns it on through a dev-dependency, so
//! only the binary `cargo test` builds honours it. There the environment
//! variable `NFREPO_FAILPOINT_<NAME>=pause-before:N` holds the protocol
//! `NAME` before its step `N` (0 = the first): it prints `nfrepo failpoint:
//! <name> paused before step N` on stderr (`name` in lower case, `_` as
//! spaces) and sleeps until killed, its background tasks (the lease's
//! renewals) still running.

/// The pack deletions of a GC sweep; each delete is a step.
pub(crate) const GC_SWEEP: &str = "GC_SWEEP";

/// Called before step `step` of protocol `name`.
#[cfg(feature = "failpoints")]
pub(crate) fn before_step(name: &'static str, step: usize) {
    let spec = std::env::var(format!("NFREPO_FAILPOINT_{name}")).unwrap_or_default();
    if let Some(("pause-before", at)) = spec.split_once(':')
        && at.parse() == Ok(step)
    {
        // Test-only: the test waits for this line, then kills the process.
        let name = name.to_lowercase().replace('_', " ");
        eprintln!("nfrepo failpoint: {name} paused before step {step}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
pub(crate) fn before_step(_name: &'static str, _step: usize) {}
