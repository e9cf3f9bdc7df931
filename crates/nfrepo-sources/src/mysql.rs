//! MySQL and MariaDB: one `mysqldump` for all databases, and restores piped into `mysql`.
//!
//! Every database of the source is dumped by one `mysqldump
//! --single-transaction --databases a b c` (with routines, triggers and
//! events): one InnoDB snapshot for all of them, taken without locking
//! writers, so a transaction that wrote to two databases is in both files or
//! in neither (non-transactional MyISAM/Aria tables are read as they are
//! when mysqldump reaches them, as with any `--single-transaction` dump). The output is cut on the fly into one file per database,
//! `<database>.sql`, that carries no `CREATE DATABASE`/`USE`, so each can be
//! restored into a database of another name (see `dump::split`). When the
//! server writes a binary log the dump also asks for `--master-data=2` (and
//! `--gtid` on MariaDB); the one position of that snapshot — the point to
//! replay the binlog from after a restore — is read wherever mysqldump
//! prints it (MariaDB prints the GTID at the very end) and recorded as
//! `mysql.binlog_file`, `mysql.binlog_position` and `mysql.gtid`.
//!
//! The position is read from the dump rather than asked of the server: the
//! dump's transaction lives in mysqldump's own connection, and only
//! mysqldump knows the position that matches its snapshot.
//!
//! The password reaches the tools only as `MYSQL_PWD`.

use std::path::PathBuf;

use crate::connection::{Connection, check_database_name};
use crate::dump::{DumpCommand, DumpOutput, DumpPlan, capture, tool_version};
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
pub(crate) fn query(connection: &Connection, bin: Option<&std::path::Path>, sql: &str) -> Result<String> {
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
        for db in &databases {
            check_database_name(db)?;
        }
        let mut argv = vec![mysqldump];
        argv.extend(client_args(&self.connection));
        argv.extend(
            [
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--default-character-set=utf8mb4",
                // The splitter relies on mysqldump's section comments, and
                // leaves `CREATE DATABASE` out so each file loads into a
                // database of any name.
                "--comments",
                "--no-create-db",
            ]
            .map(str::to_owned),
        );
        if binlog_on {
            argv.push("--master-data=2".into());
            if version.contains("MariaDB") {
                argv.push("--gtid".into());
            }
        }
        argv.push("--databases".into());
        argv.extend(databases.iter().cloned());
        facts.push(("mysql.consistency".to_owned(), "one-transaction".to_owned()));
        Ok(DumpPlan {
            commands: vec![DumpCommand {
                argv,
                env: client_env(&self.connection),
                output: DumpOutput::Mysqldump(databases),
            }],
            facts,
            paths: Vec::new(),
        })
    }
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
