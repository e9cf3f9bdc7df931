//! MySQL and MariaDB: `mysqldump` per database, and restores piped into `mysql`.
//!
//! Each database is dumped by its own `mysqldump --single-transaction
//! --routines --triggers --events` (a consistent InnoDB view without locking
//! writers), streamed into the snapshot as `<database>.sql`. Per-database
//! dumps carry no `CREATE DATABASE`/`USE`, so any one of them can be restored
//! into a database of another name. When the server writes a binary log the
//! dump also asks for `--master-data=2` (and `--gtid` on MariaDB), and the
//! position it prints at the top of the dump is recorded in the snapshot —
//! the point to replay the binlog from after a restore.
//!
//! The password reaches the tools only as `MYSQL_PWD`.

use std::path::PathBuf;

use crate::connection::{Connection, check_database_name};
use crate::dump::{DumpCommand, DumpPlan, capture, tool_version};
use crate::{Error, Result, Secret};

/// Schemas that are the server's own and are never dumped by "all databases".
const SYSTEM_SCHEMAS: &[&str] = &["information_schema", "performance_schema", "sys", "mysql"];

/// A MySQL/MariaDB source.
#[derive(Clone, Debug)]
pub struct MysqlSource {
    /// The server; a database in its path limits the dump to that one.
    pub connection: Connection,
    /// Databases to dump; empty means every non-system database.
    pub databases: Vec<String>,
    /// Where `mysql` and `mysqldump` are, if not on `PATH`.
    pub bin_dir: Option<PathBuf>,
}

fn tool(source_bin: Option<&std::path::Path>, name: &str) -> String {
    source_bin.map_or_else(|| name.to_owned(), |d| d.join(name).display().to_string())
}

/// Connection flags shared by `mysql` and `mysqldump` (never the password).
fn client_args(connection: &Connection) -> Vec<String> {
    let mut args = vec!["--no-defaults".to_owned()];
    if let Some(socket) = &connection.socket {
        args.push(format!("--socket={socket}"));
    } else {
        args.push("--protocol=TCP".into());
        args.push(format!("--host={}", connection.host));
        if let Some(port) = connection.port {
            args.push(format!("--port={port}"));
        }
    }
    if let Some(user) = &connection.user {
        args.push(format!("--user={user}"));
    }
    args
}

fn client_env(connection: &Connection) -> Vec<(String, Secret)> {
    connection
        .password
        .iter()
        .map(|p| ("MYSQL_PWD".to_owned(), p.clone()))
        .collect()
}

/// Runs one SQL statement with `mysql` and returns the rows, tab-separated. Blocks.
fn query(connection: &Connection, bin: Option<&std::path::Path>, sql: &str) -> Result<String> {
    let mut argv = vec![tool(bin, "mysql")];
    argv.extend(client_args(connection));
    argv.extend([
        "--batch".into(),
        "--skip-column-names".into(),
        "-e".into(),
        sql.to_owned(),
    ]);
    capture(&argv, &client_env(connection))
}

impl MysqlSource {
    /// Asks the server what to dump and returns the commands. Blocks.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] if the server cannot be queried;
    /// [`Error::Invalid`] for an unsupported database name.
    pub fn plan(&self) -> Result<DumpPlan> {
        let bin = self.bin_dir.as_deref();
        let version = query(&self.connection, bin, "SELECT VERSION()")?.trim().to_owned();
        // Reading the binlog position needs a privilege a backup user may
        // lack; without it the dump still runs, just without a position.
        let binlog = query(&self.connection, bin, "SHOW MASTER STATUS");
        let binlog_on = binlog.as_ref().is_ok_and(|b| !b.trim().is_empty());
        let databases = if !self.databases.is_empty() {
            self.databases.clone()
        } else if let Some(db) = &self.connection.database {
            vec![db.clone()]
        } else {
            query(&self.connection, bin, "SHOW DATABASES")?
                .lines()
                .map(str::trim)
                .filter(|d| !d.is_empty() && !SYSTEM_SCHEMAS.contains(d))
                .map(str::to_owned)
                .collect()
        };
        if databases.is_empty() {
            return Err(Error::Invalid(format!("{} has no database to dump", self.connection)));
        }
        let mysqldump = tool(bin, "mysqldump");
        let mut facts = vec![
            ("mysql.server_version".to_owned(), version.clone()),
            ("tool.mysqldump".to_owned(), tool_version(&mysqldump)),
            (
                "mysql.binlog".to_owned(),
                if binlog_on { "on" } else { "off" }.to_owned(),
            ),
        ];
        match &binlog {
            Ok(_) if !binlog_on => facts.push((
                "mysql.binlog_note".to_owned(),
                "binary log off on the server: no position to replay from".to_owned(),
            )),
            Err(e) => facts.push((
                "mysql.binlog_note".to_owned(),
                format!("binary log status unreadable: {e}"),
            )),
            Ok(_) => {}
        }
        let mut commands = Vec::with_capacity(databases.len());
        for db in databases {
            check_database_name(&db)?;
            let mut argv = vec![mysqldump.clone()];
            argv.extend(client_args(&self.connection));
            argv.extend(
                [
                    "--single-transaction",
                    "--routines",
                    "--triggers",
                    "--events",
                    "--hex-blob",
                    "--default-character-set=utf8mb4",
                ]
                .map(str::to_owned),
            );
            if binlog_on {
                argv.push("--master-data=2".into());
                if version.contains("MariaDB") {
                    argv.push("--gtid".into());
                }
            }
            argv.push(db.clone());
            commands.push(DumpCommand {
                name: format!("{db}.sql"),
                argv,
                env: client_env(&self.connection),
                head_facts: Some(binlog_position),
            });
        }
        Ok(DumpPlan {
            commands,
            facts,
            paths: Vec::new(),
        })
    }
}

/// The binlog file, position and GTID that `--master-data=2` (and
/// `--gtid`) print as comments near the top of a dump.
fn binlog_position(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut facts = Vec::new();
    for line in text.lines() {
        if line.contains("CHANGE MASTER TO") {
            if let Some(file) = quoted_after(line, "MASTER_LOG_FILE=") {
                facts.push(("binlog_file".to_owned(), file));
            }
            if let Some(pos) = number_after(line, "MASTER_LOG_POS=") {
                facts.push(("binlog_position".to_owned(), pos));
            }
        }
        if line.contains("gtid_slave_pos")
            && let Some(gtid) = quoted_after(line, "gtid_slave_pos=")
        {
            facts.push(("gtid".to_owned(), gtid));
        }
    }
    facts
}

fn quoted_after(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    let rest = rest.strip_prefix('\'')?;
    Some(rest[..rest.find('\'')?].to_owned())
}

fn number_after(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// Where a MySQL restore goes.
#[derive(Clone, Debug)]
pub struct MysqlTarget {
    /// The server; its `database` is the database to restore into.
    pub connection: Connection,
    /// Where `mysql` is, if not on `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl MysqlTarget {
    /// `mysql` with the connection flags (never the password); the staged
    /// restore in [`crate::database`] adds what it runs.
    pub(crate) fn client_argv(&self) -> Vec<String> {
        let mut argv = vec![tool(self.bin_dir.as_deref(), "mysql")];
        argv.extend(client_args(&self.connection));
        argv
    }

    pub(crate) fn env(&self) -> Vec<(String, Secret)> {
        client_env(&self.connection)
    }
}

#[cfg(test)]
mod tests {
    use super::binlog_position;

    #[test]
    fn reads_the_position_printed_by_master_data() {
        let head = b"-- MySQL dump\n--\n-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=1234;\n-- SET GLOBAL gtid_slave_pos='0-1-42';\nCREATE TABLE";
        assert_eq!(
            binlog_position(head),
            [
                ("binlog_file".to_owned(), "binlog.000002".to_owned()),
                ("binlog_position".to_owned(), "1234".to_owned()),
                ("gtid".to_owned(), "0-1-42".to_owned()),
            ]
        );
        assert!(binlog_position(b"CREATE TABLE t (a int);").is_empty());
    }
}
