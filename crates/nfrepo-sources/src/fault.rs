//! The failpoints of nfrepo-sources' crash-safe protocols, for the
//! end-to-end crash tests; what `NFREPO_FAILPOINT_<NAME>` does is
//! `nfrepo_engine::failpoint`'s, the one place that reads it.

/// The failpoint of the rollback swap; its steps are the journal's steps.
pub(crate) const ROLLBACK_SWAP: &str = "ROLLBACK_SWAP";
/// The failpoint of the MariaDB switch; its steps are those of the switch
/// journal (`database/mysql.rs`).
pub(crate) const MYSQL_SWITCH: &str = "MYSQL_SWITCH";
/// The failpoint of finishing a MariaDB switch a dead process left; its one
/// step is the switch claimed and its journal read (`database/mysql.rs`).
pub(crate) const MYSQL_RECOVER: &str = "MYSQL_RECOVER";

/// The check run after each step of protocol `name`; never returns `true`
/// (a fault kills or parks the process instead).
pub(crate) fn after_step(name: &'static str) -> impl FnMut(usize) -> bool {
    move |done| {
        nfrepo_engine::failpoint::step(name, u64::try_from(done).unwrap_or(u64::MAX));
        false
    }
}
