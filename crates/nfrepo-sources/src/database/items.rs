//! Which dumps of a snapshot a database restore loads, and into which
//! databases: the part of `restore --into mysql://…|postgres://…` that the
//! CLI and the panel share.
//!
//! A snapshot of a `mysql` or `postgres` source holds one `<database>.sql`
//! file per database at its root (PostgreSQL's `globals.sql`, roles and
//! tablespaces, is not a database and is never loaded). One of them is
//! chosen by name (`wanted`); a connection naming a database restores into
//! that one, under that name; otherwise every dump goes into the database of
//! its own name.

use nfrepo_engine::SnapshotEntry;
use nfrepo_format::{Node, NodeKind};

use super::DatabaseRestoreItem;
use crate::{Connection, Error, GLOBALS_STREAM, MysqlTarget, PostgresTarget, Result};

/// The dumps of `root` (the snapshot's root tree) to restore through
/// `connection`, with the row counts recorded for each.
///
/// # Errors
/// - [`Error::WrongSourceKind`] when the snapshot is not of a source of
///   the connection's kind (`RESTORE_FAILED`/`WRONG_SOURCE_KIND`);
/// - [`Error::NoSuchDatabase`] when `wanted` names no dump, or there is
///   none (`BACKUP_NOT_FOUND`/`NO_SUCH_DATABASE`);
/// - [`Error::InvalidArgument`] when several dumps would go into the one
///   database the connection names, or a database name is not one nfrepo
///   accepts (`RESTORE_FAILED`/`INVALID_ARGUMENT`);
/// - [`Error::Invalid`] for a recorded row count that is not a number.
pub fn database_restore_items(
    root: &[Node],
    snapshot: &SnapshotEntry,
    connection: &Connection,
    wanted: Option<&str>,
) -> Result<Vec<DatabaseRestoreItem>> {
    let short = snapshot.id.short();
    let kind = snapshot.snapshot.source_kind.as_str();
    if kind != connection.scheme {
        return Err(Error::WrongSourceKind(format!(
            "snapshot {short} is of a {kind} source; it cannot be restored into {connection}"
        )));
    }
    let dumps = dump_names(root);
    if dumps.is_empty() {
        return Err(Error::NoSuchDatabase(format!(
            "snapshot {short} holds no database dump"
        )));
    }
    let available = || dumps.iter().map(|(_, db)| db.as_str()).collect::<Vec<_>>().join(", ");
    let chosen: Vec<&(&Node, String)> = match wanted {
        Some(db) => {
            let found = dumps.iter().find(|(_, d)| d == db).ok_or_else(|| {
                Error::NoSuchDatabase(format!(
                    "snapshot {short} has no dump of database {db} (it has: {})",
                    available()
                ))
            })?;
            vec![found]
        }
        None if dumps.len() == 1 || connection.database.is_none() => dumps.iter().collect(),
        None => {
            return Err(Error::InvalidArgument(format!(
                "snapshot {short} holds {} databases ({}): pick one with --database",
                dumps.len(),
                available()
            )));
        }
    };
    chosen
        .into_iter()
        .map(|(node, db)| {
            let stream = node.name_lossy().into_owned();
            let expected_rows = super::expected_rows(&snapshot.snapshot.extra, &stream)?;
            let database = connection.database.clone().unwrap_or_else(|| db.clone());
            crate::connection::check_database_name(&database).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            Ok(DatabaseRestoreItem {
                node: (*node).clone(),
                stream,
                database,
                expected_rows,
            })
        })
        .collect()
}

/// The databases dumped in `root`: each `<db>.sql` file but `globals.sql`,
/// with its node, in tree order.
#[must_use]
pub fn dump_names(root: &[Node]) -> Vec<(&Node, String)> {
    root.iter()
        .filter(|n| matches!(n.kind, NodeKind::File { .. }))
        .filter_map(|n| {
            let name = n.name_lossy();
            if name == GLOBALS_STREAM {
                return None;
            }
            name.strip_suffix(".sql").map(|db| (n, db.to_owned()))
        })
        .collect()
}

impl super::DatabaseTarget {
    /// The server `connection` names, restored into with the client tools
    /// on `PATH`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a scheme other than `mysql` and `postgres`.
    pub fn for_connection(connection: Connection) -> Result<Self> {
        match connection.scheme.as_str() {
            "mysql" => Ok(Self::Mysql(MysqlTarget {
                connection,
                bin_dir: None,
            })),
            "postgres" => Ok(Self::Postgres(PostgresTarget {
                connection,
                bin_dir: None,
            })),
            other => Err(Error::InvalidArgument(format!(
                "cannot restore a database into {other}:// (mysql or postgres)"
            ))),
        }
    }

    /// The server's connection (its password included: never print it
    /// but through its redacting `Display`).
    #[must_use]
    pub fn connection(&self) -> &Connection {
        match self {
            Self::Mysql(t) => &t.connection,
            Self::Postgres(t) => &t.connection,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use nfrepo_engine::ErrorCode;
    use nfrepo_engine::Operation;
    use nfrepo_format::{Content, Metadata, SnapshotId};

    use super::*;

    fn file(name: &str) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File {
                size: 0,
                content: Content::Inline(Vec::new()),
                blake3: [0; 32],
                sha256: None,
            },
            meta: Metadata::default(),
        }
    }

    fn entry(kind: &str, facts: &[(&str, &str)]) -> SnapshotEntry {
        let mut snapshot = nfrepo_testing::header::snapshot("db", kind, 0);
        snapshot.extra = facts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        SnapshotEntry {
            id: SnapshotId([7; 32]),
            snapshot,
        }
    }

    fn codes(e: &Error) -> (ErrorCode, Option<&'static str>) {
        (e.code(Operation::Restore), e.detail_code())
    }

    #[test]
    fn every_dump_goes_into_its_own_database_and_globals_is_left_out() {
        let root = [
            file("app.sql"),
            file("globals.sql"),
            file("shop.sql"),
            file("notes.txt"),
        ];
        let snapshot = entry("postgres", &[("dump.shop.sql.rows.public.t", "12")]);
        let server = Connection::parse("postgres://u@h:5432").unwrap();
        let items = database_restore_items(&root, &snapshot, &server, None).unwrap();
        let names: Vec<_> = items.iter().map(|i| (i.stream.as_str(), i.database.as_str())).collect();
        assert_eq!(names, [("app.sql", "app"), ("shop.sql", "shop")]);
        assert_eq!(items[1].expected_rows["public.t"], 12);
        // One picked, into the database the URL names.
        let into = Connection::parse("postgres://u@h:5432/copy").unwrap();
        let items = database_restore_items(&root, &snapshot, &into, Some("shop")).unwrap();
        assert_eq!((items.len(), items[0].database.as_str()), (1, "copy"));
    }

    #[test]
    fn refusals_carry_their_codes() {
        let root = [file("app.sql"), file("shop.sql")];
        let into = Connection::parse("mysql://u@h/copy").unwrap();
        let e = database_restore_items(&root, &entry("postgres", &[]), &into, None).unwrap_err();
        assert_eq!(codes(&e), (ErrorCode::RestoreFailed, Some("WRONG_SOURCE_KIND")), "{e}");
        let e = database_restore_items(&root, &entry("mysql", &[]), &into, None).unwrap_err();
        assert_eq!(codes(&e), (ErrorCode::RestoreFailed, Some("INVALID_ARGUMENT")), "{e}");
        assert!(e.to_string().contains("2 databases (app, shop)"), "{e}");
        let e = database_restore_items(&root, &entry("mysql", &[]), &into, Some("nope")).unwrap_err();
        assert_eq!(codes(&e), (ErrorCode::BackupNotFound, Some("NO_SUCH_DATABASE")), "{e}");
        let mut odd = into.clone();
        odd.database = Some("x\nforged log line".into());
        let e = database_restore_items(&root, &entry("mysql", &[]), &odd, Some("app")).unwrap_err();
        assert_eq!(codes(&e), (ErrorCode::RestoreFailed, Some("INVALID_ARGUMENT")), "{e}");
        let e = database_restore_items(&[], &entry("mysql", &[]), &into, None).unwrap_err();
        assert_eq!(codes(&e), (ErrorCode::BackupNotFound, Some("NO_SUCH_DATABASE")), "{e}");
        let e = super::super::DatabaseTarget::for_connection(Connection::parse("redis://h").unwrap()).unwrap_err();
        assert_eq!(codes(&e), (ErrorCode::RestoreFailed, Some("INVALID_ARGUMENT")), "{e}");
    }
}
