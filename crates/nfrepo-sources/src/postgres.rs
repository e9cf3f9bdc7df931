//! PostgreSQL: plain `pg_dump` per database plus `pg_dumpall --globals-only`,
//! and restores piped into `psql`.
//!
//! Each database is dumped at its own point in time (PostgreSQL has no
//! transaction that spans databases); the snapshot says so with the fact
//! `postgres.consistency = per-database`. The data lines of every `COPY`
//! block are counted per table as the dump passes
//! (`dump.<db>.sql.rows.<schema>.<table>`).
//!
//! Plain SQL is the default because it deduplicates: unchanged rows give
//! unchanged bytes, while the compressed custom format (`-Fc`) rewrites the
//! whole stream on any change. Each database becomes `<database>.sql` and
//! the roles and tablespaces `globals.sql`. Tools are looked up in the
//! source's `bin_dir`, on `PATH`, then in the newest
//! `/usr/lib/postgresql/*/bin`.
//!
//! The password reaches the tools only through a password file of mode 0600
//! that `PGPASSFILE` names by path (see [`crate::ChildAuth`]), never in
//! their command line or environment.

mod basebackup;
mod recovery;

use std::path::PathBuf;

use crate::child::ChildAuth;
use crate::connection::{Connection, check_database_name};
use crate::dump::{DumpCommand, DumpOutput, DumpPlan, capture, find_tool, tool_version};
use crate::{Error, Result};

pub use basebackup::{
    BASEBACKUP_KIND, BaseBackupSource, START_LSN, START_WAL, STOP_LSN, STOP_TIME, STOP_TIMELINE, SYSTEM_ID, TIMELINE,
};
pub(crate) use recovery::base_finished_ns;
pub use recovery::{
    PitrRestoreOptions, PitrRestoreReport, RecoveryTarget, choose_base, recovery_settings, restore_postgres_data,
};

/// The name of the globals stream (roles, tablespaces).
pub const GLOBALS_STREAM: &str = "globals.sql";

/// A PostgreSQL source.
#[derive(Clone, Debug)]
pub struct PostgresSource {
    /// The server; a database in its path limits the dump to that one.
    pub connection: Connection,
    /// Databases to dump; empty means every database that accepts connections.
    pub databases: Vec<String>,
    /// Where `pg_dump`, `pg_dumpall` and `psql` are.
    pub bin_dir: Option<PathBuf>,
}

fn client_args(connection: &Connection) -> Vec<String> {
    let mut args = Vec::new();
    match &connection.socket {
        Some(socket) => args.push(format!("--host={socket}")),
        None => args.push(format!("--host={}", connection.host)),
    }
    if let Some(port) = connection.port {
        args.push(format!("--port={port}"));
    }
    if let Some(user) = &connection.user {
        args.push(format!("--username={user}"));
    }
    args.push("--no-password".into());
    args
}

/// How the tools get the password: a password file of mode 0600 that
/// `PGPASSFILE` names by path (the variable holds no secret), matching any
/// host, port, database and user.
fn client_auth(connection: &Connection) -> Result<ChildAuth> {
    let Some(password) = &connection.password else {
        return Ok(ChildAuth::none());
    };
    Ok(ChildAuth::file("pgpass", pgpass_line(password.expose())?.as_bytes())?.path_in_env("PGPASSFILE"))
}

/// `*:*:*:*:password`, with `\` and `:` escaped as libpq reads them.
fn pgpass_line(password: &str) -> Result<String> {
    if password.contains(['\n', '\r']) {
        return Err(Error::Invalid(
            "a PostgreSQL password cannot hold a line break (a password file holds one per line)".into(),
        ));
    }
    Ok(format!(
        "*:*:*:*:{}\n",
        password.replace('\\', "\\\\").replace(':', "\\:")
    ))
}

pub(crate) fn query(
    connection: &Connection,
    bin: Option<&std::path::Path>,
    database: &str,
    sql: &str,
) -> Result<String> {
    let mut argv = vec![find_tool("psql", bin)];
    argv.extend(client_args(connection));
    argv.extend([
        "-X".into(),
        "--tuples-only".into(),
        "--no-align".into(),
        format!("--dbname={database}"),
        "-c".into(),
        sql.to_owned(),
    ]);
    capture(&argv, &client_auth(connection)?)
}

/// The database to connect to for server-wide queries.
fn maintenance_db(connection: &Connection) -> String {
    connection.database.clone().unwrap_or_else(|| "postgres".into())
}

impl PostgresSource {
    /// Asks the server what to dump and returns the commands. Blocks.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] if the server cannot be queried.
    pub fn plan(&self) -> Result<DumpPlan> {
        let bin = self.bin_dir.as_deref();
        let home = maintenance_db(&self.connection);
        let version = query(&self.connection, bin, &home, "SHOW server_version")?
            .trim()
            .to_owned();
        let databases = if !self.databases.is_empty() {
            self.databases.clone()
        } else if let Some(db) = &self.connection.database {
            vec![db.clone()]
        } else {
            query(
                &self.connection,
                bin,
                &home,
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            )?
            .lines()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect()
        };
        let pg_dump = find_tool("pg_dump", bin);
        let pg_dumpall = find_tool("pg_dumpall", bin);
        let mut facts = vec![
            ("postgres.server_version".to_owned(), version),
            ("tool.pg_dump".to_owned(), tool_version(&pg_dump)),
            // pg_dump takes one snapshot per database: there is no
            // transaction that spans databases on PostgreSQL.
            ("postgres.consistency".to_owned(), "per-database".to_owned()),
        ];
        if let Ok(lsn) = query(&self.connection, bin, &home, "SELECT pg_current_wal_lsn()") {
            facts.push(("postgres.wal_lsn_before_dump".to_owned(), lsn.trim().to_owned()));
        }
        let mut commands = Vec::with_capacity(databases.len() + 1);
        // One password file for every command of the plan, removed with it.
        let auth = client_auth(&self.connection)?;
        let mut globals = vec![pg_dumpall];
        globals.extend(client_args(&self.connection));
        globals.extend(["--globals-only".to_owned(), format!("--database={home}")]);
        commands.push(DumpCommand {
            argv: globals,
            auth: auth.clone(),
            output: DumpOutput::Raw(GLOBALS_STREAM.to_owned()),
        });
        for db in databases {
            check_database_name(&db)?;
            if format!("{db}.sql") == GLOBALS_STREAM {
                return Err(Error::Invalid(
                    "a database named \"globals\" would clash with globals.sql".into(),
                ));
            }
            let mut argv = vec![pg_dump.clone()];
            argv.extend(client_args(&self.connection));
            argv.extend(["--format=plain".to_owned(), format!("--dbname={db}")]);
            commands.push(DumpCommand {
                argv,
                auth: auth.clone(),
                output: DumpOutput::PgDump(format!("{db}.sql")),
            });
        }
        Ok(DumpPlan {
            commands,
            facts,
            paths: Vec::new(),
        })
    }
}

/// Where a PostgreSQL restore goes.
#[derive(Clone, Debug)]
pub struct PostgresTarget {
    /// The server; its `database` is the database to restore into.
    pub connection: Connection,
    /// Where `psql` is.
    pub bin_dir: Option<PathBuf>,
}

impl PostgresTarget {
    /// `psql` with the connection flags (never the password) and the
    /// password file; the staged restore in [`crate::database`] adds what it runs.
    pub(crate) fn client(&self) -> Result<(Vec<String>, ChildAuth)> {
        let mut argv = vec![find_tool("psql", self.bin_dir.as_deref())];
        argv.extend(client_args(&self.connection));
        Ok((argv, client_auth(&self.connection)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    // Issue 12, item 5: the password reaches the PostgreSQL tools in a
    // password file that PGPASSFILE names by path.
    #[test]
    fn the_password_is_in_a_password_file_named_by_path() {
        assert_eq!(pgpass_line("a:b\\c").unwrap(), "*:*:*:*:a\\:b\\\\c\n");
        assert!(matches!(pgpass_line("a\nb"), Err(Error::Invalid(_))));
        let connection = Connection::parse("postgres://backup@db1:5432")
            .unwrap()
            .with_password(Some(crate::Secret::new("pw-in-file".into())));
        let auth = client_auth(&connection).unwrap();
        let path = auth.path().unwrap().to_owned();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "*:*:*:*:pw-in-file\n");
        let envs: Vec<_> = crate::child::command("true", &auth)
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        assert_eq!(envs, [("PGPASSFILE".into(), path.into_os_string())]);
        assert!(client_args(&connection).iter().all(|a| !a.contains("pw-in-file")));
    }
}
