//! Load-friendly settings for a drill's throwaway server.
//!
//! A drill's server lives for one load and a few queries, and is deleted
//! afterwards whatever happens, so durability is worth nothing to it and
//! every setting that trades crash safety for load speed is safe **here**
//! (never on a server that keeps data):
//!
//! - MariaDB: no binary log (`--skip-log-bin`: nothing replicates from it);
//!   the redo log written but not flushed at each commit
//!   (`innodb_flush_log_at_trx_commit=0`) and no doublewrite buffer
//!   (`innodb_doublewrite=0`): both only protect against a crash, after
//!   which a drill starts over anyway; a buffer pool sized from the dump
//!   ([`server_memory`]), so that the secondary indexes of a table being
//!   loaded stay in memory instead of being read back and written out page
//!   by page (the default 128 MiB pool makes a 1 GB load I/O-bound); a redo
//!   log of a quarter of the pool (at least 256 MiB) and a 64 MiB log
//!   buffer, so that the load is not throttled by checkpoints.
//! - PostgreSQL: `fsync=off`, `synchronous_commit=off` and
//!   `full_page_writes=off` (crash safety only); `wal_level=minimal` with no
//!   WAL senders, so that a table created and loaded in one transaction
//!   (`COPY` into a new table) skips the WAL; a large `max_wal_size` so
//!   that the load does not checkpoint; `shared_buffers` and
//!   `maintenance_work_mem` (index builds after the data) sized like
//!   MariaDB's buffer pool; no autovacuum during the load.
//!
//! The checks of the drill are unchanged: the dump-time row counts and the
//! sanity queries prove the restored data, whatever the server's settings.

/// Memory for the throwaway server's caches: one and a half times the
/// dumps' size (data plus indexes of a fresh load), at least 128 MiB (the
/// servers' defaults), and at most a quarter of the memory available now
/// (`MemAvailable` of `/proc/meminfo`; 4 GiB when it cannot be read) and
/// 4 GiB, so that a drill on a busy host does not push it into swapping.
pub(super) fn server_memory(dump_bytes: u64) -> u64 {
    const MIN: u64 = 128 << 20;
    const MAX: u64 = 4 << 30;
    let ceiling = mem_available().map_or(MAX, |available| (available / 4).clamp(MIN, MAX));
    (dump_bytes.saturating_mul(3) / 2).clamp(MIN, ceiling)
}

/// Bytes of memory available to new processes, from `/proc/meminfo`.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in whole MiB, as both servers' settings take it (`512M`, `512MB`).
pub(super) fn mib(bytes: u64) -> u64 {
    (bytes >> 20).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_kib() {
        let meminfo = "MemTotal:       24684000 kB\nMemFree:          996000 kB\nMemAvailable:   23850000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(23_850_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn server_memory_follows_the_dump_within_bounds() {
        assert_eq!(server_memory(0), 128 << 20, "never below the servers' defaults");
        let ceiling = mem_available().map_or(4 << 30, |a| (a / 4).clamp(128 << 20, 4 << 30));
        assert_eq!(
            server_memory(1 << 40),
            ceiling,
            "never above a quarter of what is available"
        );
        let gigabyte = server_memory(1_000_000_000);
        assert!(gigabyte == ceiling.min(1_500_000_000), "{gigabyte}");
    }
}
