//! Fault injection at named steps of the protocols that must survive a
//! crash anywhere (a rollback's swap, a database switch), for the
//! end-to-end crash tests.
//!
//! Compiled only with the `failpoints` feature, which nothing enables in a
//! release build: `nfrepo-cli` turns it on through a dev-dependency, so
//! only the binary `cargo test` builds honours it. There the environment
//! variable `NFREPO_FAILPOINT_<NAME>` stops the protocol `NAME` after a
//! given number of steps, as a crash would:
//!
//! - `kill-after:N`: the process sends itself `SIGKILL`;
//! - `pause-after:N`: it prints `nfrepo failpoint: <name> paused after N
//!   steps` on stderr (`name` in lower case, `_` as spaces) and sleeps
//!   until killed.

/// The failpoint of the rollback swap; its steps are the journal's steps.
pub(crate) const ROLLBACK_SWAP: &str = "ROLLBACK_SWAP";
/// The failpoint of the MariaDB switch; its steps are those of the switch
/// journal (`database/mysql.rs`).
pub(crate) const MYSQL_SWITCH: &str = "MYSQL_SWITCH";

/// The check run after each step of protocol `name`; never returns `true`
/// (a fault kills or parks the process instead).
#[cfg(feature = "failpoints")]
pub(crate) fn after_step(name: &'static str) -> impl FnMut(usize) -> bool {
    let spec = std::env::var(format!("NFREPO_FAILPOINT_{name}")).unwrap_or_default();
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
                    let name = name.to_lowercase().replace('_', " ");
                    eprintln!("nfrepo failpoint: {name} paused after {done} steps");
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
pub(crate) fn after_step(_name: &'static str) -> impl FnMut(usize) -> bool {
    |_| false
}
