//! Who and where: host and user names recorded in snapshots and key slots.

/// Environment variable overriding the host name recorded in snapshots,
/// session markers and leases (tests simulate several hosts with it; an
/// operator can pin a stable name for a host whose name changes).
pub const NFREPO_HOSTNAME: &str = "NFREPO_HOSTNAME";

/// The host name: `$NFREPO_HOSTNAME`, else the kernel's, else `unknown`.
#[must_use]
pub fn hostname() -> String {
    if let Some(name) = std::env::var(NFREPO_HOSTNAME).ok().filter(|n| !n.trim().is_empty()) {
        return name.trim().to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The user name from the environment, or `unknown`.
#[must_use]
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// `user@host`.
#[must_use]
pub fn user_at_host() -> String {
    format!("{}@{}", username(), hostname())
}

/// This process, precisely enough for another process of this host to tell
/// when it has exited ([`process_exited`]); `None` where `/proc` does not tell.
#[must_use]
pub(crate) fn this_process() -> Option<nfrepo_format::ProcessStart> {
    nfrepo_store::ProcessStamp::current().map(|p| nfrepo_format::ProcessStart {
        boot_id: p.boot_id,
        pid_namespace: p.pid_namespace,
        start_ticks: p.start_ticks,
    })
}

/// Whether process `pid` of `hostname`, started as `process` says, is a
/// process of this host (`here`) that is certainly no longer running.
/// Another host, boot or pid namespace is never judged this way.
#[must_use]
pub(crate) fn process_exited(hostname: &str, pid: u32, process: &nfrepo_format::ProcessStart, here: &str) -> bool {
    hostname == here
        && nfrepo_store::ProcessStamp {
            boot_id: process.boot_id.clone(),
            pid_namespace: process.pid_namespace,
            pid,
            start_ticks: process.start_ticks,
        }
        .is_gone()
}
