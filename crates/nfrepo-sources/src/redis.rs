//! Redis: the RDB streamed with `redis-cli --rdb -`, and the AOF directory as files.
//!
//! `redis-cli --rdb -` asks the server for a fresh RDB over the replication
//! protocol and writes it to standard output, so it goes straight into the
//! repository as `dump.rdb`. When the source names the server's
//! `appendonlydir`, that directory is stored beside it as a file tree.
//! Restoring is a file restore into a stopped server's data directory; the
//! CLI prints how to restart it.
//!
//! The password reaches `redis-cli` only through `--askpass`, which reads it
//! from standard input: a file of mode 0600 (see [`crate::ChildAuth`]), so
//! it is never in the command line (`-a`) or environment (`REDISCLI_AUTH`).

use std::path::PathBuf;

use crate::Result;
use crate::child::ChildAuth;
use crate::connection::Connection;
use crate::dump::{DumpCommand, DumpOutput, DumpPlan, capture, tool_version};

/// The name of the RDB stream in the snapshot.
pub const RDB_STREAM: &str = "dump.rdb";

/// A Redis source.
#[derive(Clone, Debug)]
pub struct RedisSource {
    /// The server.
    pub connection: Connection,
    /// The server's `appendonlydir`, stored as files when given.
    pub aof_dir: Option<PathBuf>,
    /// Where `redis-cli` is, if not on `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl RedisSource {
    /// `redis-cli` with the connection flags, and `--askpass` when a
    /// password is given through [`RedisSource::auth`].
    fn cli(&self) -> Vec<String> {
        let program = self
            .bin_dir
            .as_ref()
            .map_or_else(|| "redis-cli".to_owned(), |d| d.join("redis-cli").display().to_string());
        let mut argv = vec![program];
        match &self.connection.socket {
            Some(socket) => argv.extend(["-s".to_owned(), socket.clone()]),
            None => {
                argv.extend(["-h".to_owned(), self.connection.host.clone()]);
                argv.extend(["-p".to_owned(), self.connection.port.unwrap_or(6379).to_string()]);
            }
        }
        if let Some(user) = &self.connection.user {
            argv.extend(["--user".to_owned(), user.clone()]);
        }
        if self.connection.password.is_some() {
            argv.push("--askpass".to_owned());
        }
        argv
    }

    /// The password as `redis-cli --askpass` reads it: one line on standard input.
    fn auth(&self) -> Result<ChildAuth> {
        let Some(password) = &self.connection.password else {
            return Ok(ChildAuth::none());
        };
        let mut line = Vec::with_capacity(password.expose().len() + 1);
        line.extend_from_slice(password.expose().as_bytes());
        line.push(b'\n');
        let auth = ChildAuth::file("askpass", &line).map(ChildAuth::fed_on_stdin);
        zeroize::Zeroize::zeroize(&mut line);
        auth
    }

    /// Asks the server for its version and returns the commands. Blocks.
    ///
    /// # Errors
    /// [`crate::Error::CommandFailed`] if the server does not answer.
    pub fn plan(&self) -> Result<DumpPlan> {
        let mut info = self.cli();
        info.extend(["INFO".to_owned(), "server".to_owned()]);
        let info = capture(&info, &self.auth()?)?;
        let version = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .to_owned();
        // The key count a drill compares with the restored server's
        // (`redis.keys`). Read just before the RDB is taken: a server
        // written to in between makes the two differ, which the drill
        // reports rather than hides.
        let mut keyspace = self.cli();
        keyspace.extend(["INFO".to_owned(), "keyspace".to_owned()]);
        let keys = crate::drill::keyspace_total(&capture(&keyspace, &self.auth()?)?)?;
        let mut rdb = self.cli();
        rdb.extend(["--rdb".to_owned(), "-".to_owned()]);
        let facts = vec![
            ("redis.server_version".to_owned(), version),
            (crate::drill::REDIS_KEYS_FACT.to_owned(), keys.to_string()),
            ("tool.redis-cli".to_owned(), tool_version(&self.cli()[0])),
        ];
        Ok(DumpPlan {
            commands: vec![DumpCommand {
                argv: rdb,
                auth: self.auth()?,
                output: DumpOutput::Raw(RDB_STREAM.to_owned()),
            }],
            facts,
            paths: self.aof_dir.iter().cloned().collect(),
        })
    }
}
