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
