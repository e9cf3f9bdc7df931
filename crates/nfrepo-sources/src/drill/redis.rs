//! A throwaway `redis-server` on a restored `dump.rdb`, and the key count.

use std::path::Path;

use super::server::{Throwaway, free_port};
use crate::{Error, Result};

/// The snapshot fact holding the key count at backup time (all databases).
pub const KEYS_FACT: &str = "redis.keys";

fn tool(bin_dir: Option<&Path>, name: &str) -> String {
    bin_dir.map_or_else(|| name.to_owned(), |d| d.join(name).display().to_string())
}

/// The total of `keys=N` over the databases of an `INFO keyspace` answer.
pub(crate) fn keyspace_total(info: &str) -> Result<u64> {
    let mut total = 0u64;
    for line in info.lines().map(str::trim).filter(|l| l.starts_with("db")) {
        let keys = line
            .split_once(':')
            .and_then(|(_, fields)| fields.split(',').find_map(|f| f.strip_prefix("keys=")))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| Error::CommandFailed(format!("unexpected INFO keyspace line {line:?}")))?;
        total = total.saturating_add(keys);
    }
    Ok(total)
}

/// Starts `redis-server` on `data_dir/dump.rdb` and waits until it has
/// loaded it; returns its port.
pub(super) fn start(guard: &Throwaway, data_dir: &Path, bin_dir: Option<&Path>) -> Result<u16> {
    let port = free_port()?;
    let server = [
        tool(bin_dir, "redis-server"),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--dir".into(),
        data_dir.display().to_string(),
        "--dbfilename".into(),
        crate::RDB_STREAM.into(),
        "--appendonly".into(),
        "no".into(),
        "--save".into(),
        String::new(),
    ];
    guard.start(&server, |_| {})?;
    let cli = tool(bin_dir, "redis-cli");
    guard.wait_ready(|| {
        crate::dump::capture(
            &[
                cli.clone(),
                "-p".into(),
                port.to_string(),
                "INFO".into(),
                "persistence".into(),
            ],
            &crate::ChildAuth::none(),
        )
        .is_ok_and(|out| out.lines().any(|l| l.trim() == "loading:0"))
    })?;
    Ok(port)
}

/// The server's key count over all databases.
pub(super) fn keys(port: u16, bin_dir: Option<&Path>) -> Result<u64> {
    let info = crate::dump::capture(
        &[
            tool(bin_dir, "redis-cli"),
            "-p".into(),
            port.to_string(),
            "INFO".into(),
            "keyspace".into(),
        ],
        &crate::ChildAuth::none(),
    )?;
    keyspace_total(&info)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

    #[test]
    fn keyspace_lines_are_summed() {
        let info = "# Keyspace\r\ndb0:keys=12,expires=0,avg_ttl=0\r\ndb3:keys=5,expires=1,avg_ttl=9\r\n";
        assert_eq!(super::keyspace_total(info).unwrap(), 17);
        assert_eq!(super::keyspace_total("# Keyspace\r\n").unwrap(), 0);
        assert!(super::keyspace_total("db0:nokeys").is_err());
    }
}
