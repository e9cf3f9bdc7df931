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
//! The password reaches the tools only through an option file of mode 0600
//! (`--defaults-file=`, see [`crate::ChildAuth`]), never in their command
//! line or environment.

use std::path::PathBuf;

use crate::child::ChildAuth;
use crate::connection::{Connection, check_database_name};
use crate::dump::{DumpCommand, DumpOutput, DumpPlan, capture, tool_version};
use crate::{Error, Result};

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

pub(crate) fn tool(source_bin: Option<&std::path::Path>, name: &str) -> String {
    source_bin.map_or_else(|| name.to_owned(), |d| d.join(name).display().to_string())
}

/// `program` (`mysql` or `mysqldump`) with the connection flags, and the
/// option file that holds the password. `--defaults-file=` must come
/// first; like `--no-defaults` without a password, it keeps the tool from
/// reading any other option file.
pub(crate) fn client(program: String, connection: &Connection) -> Result<(Vec<String>, ChildAuth)> {
    let (first, auth) = match &connection.password {
        Some(password) => {
            let auth = ChildAuth::file("client.cnf", option_file(password.expose()).as_bytes())?;
            let path = auth.path().map(|p| p.display().to_string()).unwrap_or_default();
            (format!("--defaults-file={path}"), auth)
        }
        None => ("--no-defaults".to_owned(), ChildAuth::none()),
    };
    let mut args = vec![program, first];
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
    Ok((args, auth))
}

/// A `[client]` option file giving `password`, quoted and escaped as the
/// MySQL/MariaDB option-file reader expects.
fn option_file(password: &str) -> String {
    let mut escaped = String::with_capacity(password.len() + 2);
    for c in password.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\'' => escaped.push_str("\\'"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c => escaped.push(c),
        }
    }
    format!("[client]\npassword=\"{escaped}\"\n")
}

/// Runs one SQL statement with `mysql` and returns the rows, tab-separated. Blocks.
pub(crate) fn query(connection: &Connection, bin: Option<&std::path::Path>, sql: &str) -> Result<String> {
    let (mut argv, auth) = client(tool(bin, "mysql"), connection)?;
    argv.extend([
        "--batch".into(),
        "--skip-column-names".into(),
        "-e".into(),
        sql.to_owned(),
    ]);
    capture(&argv, &auth)
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
        let (mut argv, auth) = client(mysqldump, &self.connection)?;
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
                auth,
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
    /// `mysql` with the connection flags (never the password) and the
    /// option file with the password; the staged restore in
    /// [`crate::database`] adds what it runs.
    pub(crate) fn client(&self) -> Result<(Vec<String>, ChildAuth)> {
        client(tool(self.bin_dir.as_deref(), "mysql"), &self.connection)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    // Issue 12, item 5: the password reaches mysql and mysqldump in an
    // option file, quoted and escaped, never on the command line.
    #[test]
    fn the_password_is_in_a_private_option_file() {
        assert_eq!(
            option_file("a\"b\\c'd#e f\tg\nh"),
            "[client]\npassword=\"a\\\"b\\\\c\\'d#e f\\tg\\nh\"\n"
        );
        let connection = Connection::parse("mysql://backup@db1:3306")
            .unwrap()
            .with_password(Some(crate::Secret::new("pw-in-file".into())));
        let (argv, auth) = client("mysqldump".into(), &connection).unwrap();
        let path = auth.path().unwrap();
        assert_eq!(argv[0], "mysqldump");
        assert_eq!(argv[1], format!("--defaults-file={}", path.display()));
        assert!(!argv.iter().any(|a| a.contains("pw-in-file")), "{argv:?}");
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "[client]\npassword=\"pw-in-file\"\n"
        );
        assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);

        let (argv, auth) = client("mysql".into(), &Connection::parse("mysql://backup@db1").unwrap()).unwrap();
        assert_eq!(argv[1], "--no-defaults");
        assert!(auth.path().is_none());
    }
}
