//! Telling whether a process of this machine is still running.
//!
//! A process id alone says little: ids are reused, another container may
//! share the host name but not the pid namespace, and a reboot restarts
//! every count. A [`ProcessStamp`] therefore names a process by the boot it
//! runs in (`/proc/sys/kernel/random/boot_id`), its pid namespace (the inode
//! of `/proc/self/ns/pid`), its pid, and its start time in clock ticks after
//! boot (field 22 of `/proc/<pid>/stat`). A stamp of the same boot and pid
//! namespace whose pid is absent, or present with another start time, is
//! certainly gone ([`ProcessStamp::is_gone`]). Anything else, including a
//! stamp from another boot or namespace, or a system without `/proc`, is
//! *unknown*, and callers must then assume the process may still run.

/// Who a process is, on this machine. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStamp {
    /// The kernel's boot id (a UUID in text).
    pub boot_id: String,
    /// The inode number of the pid namespace.
    pub pid_namespace: u64,
    /// The process id inside that namespace.
    pub pid: u32,
    /// Start time, in clock ticks after boot.
    pub start_ticks: u64,
}

impl ProcessStamp {
    /// This process's stamp; `None` where `/proc` does not tell.
    #[must_use]
    pub fn current() -> Option<Self> {
        let pid = std::process::id();
        Some(Self {
            boot_id: boot_id()?,
            pid_namespace: pid_namespace()?,
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether the process is certainly no longer running: same boot and
    /// pid namespace as this process, and its pid is free or taken by a
    /// process that started at another time. `false` when in doubt.
    #[must_use]
    pub fn is_gone(&self) -> bool {
        if boot_id().as_deref() != Some(self.boot_id.as_str()) || pid_namespace() != Some(self.pid_namespace) {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => parse_start_ticks(&stat).is_some_and(|start| start != self.start_ticks),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// `pid:[4026531836]` → 4026531836.
fn pid_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

fn start_ticks(pid: u32) -> Option<u64> {
    parse_start_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of `/proc/<pid>/stat`. The second field (the command name, in
/// parentheses) may hold spaces and parentheses, so fields are counted from
/// the last `)`: the state is field 3, the start time 19 fields later.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn parses_the_start_time_after_an_awkward_command_name() {
        let stat = "42 (a) b (c) d) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(987_654));
        assert_eq!(parse_start_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_running_and_an_exited_child_is_gone() {
        let Some(me) = ProcessStamp::current() else {
            return; // no /proc: nothing to tell
        };
        assert!(!me.is_gone());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let stamp = ProcessStamp {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            ..me.clone()
        };
        child.wait().unwrap();
        assert!(stamp.is_gone(), "an exited, reaped child");
        // Same pid, another start time: the pid was reused.
        let reused = ProcessStamp {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(reused.is_gone());
        // Another boot: unknown, so not gone.
        let elsewhere = ProcessStamp {
            boot_id: "another-boot".into(),
            pid,
            ..me
        };
        assert!(!elsewhere.is_gone());
    }
}
