//! One `mysqldump --databases a b c` cut into one standalone dump per database.
//!
//! mysqldump writes, in order: a header (session settings and, with
//! `--master-data=2`, the binlog position as a comment); for each database a
//! section opened by `-- Current Database: `db`` and `USE `db`;`; when the
//! databases hold views, a second pass that reopens each database the same
//! way for the final view definitions; and a footer (MariaDB's deferred
//! `gtid_slave_pos` comment, the session settings restored, `-- Dump
//! completed`). The splitter copies the header and the footer into every
//! database's stream and routes each section to its database's stream.
//!
//! The `USE` lines are dropped (and `--no-create-db` keeps `CREATE DATABASE`
//! out), so every stream loads into whichever database the client is
//! connected to, exactly like a dump of that one database. Markers are
//! recognised only outside `DELIMITER ;;` blocks, where routine, trigger and
//! event bodies (user text) are printed.
//!
//! While the stream passes, the splitter also reads the binlog position and
//! GTID wherever they appear, and counts the rows of each table in its
//! `INSERT` statements.

use std::collections::BTreeMap;

use super::scan::{Piece, TupleCounter, quoted_ident};
use crate::{Error, Result};

/// Where the splitter's output goes: one stream per database.
pub(crate) trait Outputs {
    /// Appends `bytes` to stream `index`.
    fn write(&mut self, index: usize, bytes: &[u8]) -> Result<()>;
}

/// Blank and `--` lines held back until the next line tells which stream
/// they belong to; more than this many go to the current stream.
const MAX_HELD_LINES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Header,
    Section(usize),
    Footer,
}

/// The position mysqldump printed for its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) binlog_file: Option<String>,
    pub(crate) binlog_position: Option<String>,
    pub(crate) gtid: Option<String>,
}

/// Splits and watches a `mysqldump --databases` stream, fed [`Piece`]s.
#[derive(Debug)]
pub(crate) struct MysqldumpSplit {
    databases: Vec<String>,
    part: Part,
    /// Inside a `DELIMITER ;;` block (a routine, trigger or event body).
    delimited: bool,
    held: Vec<u8>,
    held_lines: usize,
    /// The table announced by `-- Dumping data for table`, if its data may follow.
    data_table: Option<String>,
    /// The INSERT being counted, and its table.
    insert: Option<(String, TupleCounter)>,
    /// Rows per table, per database.
    rows: Vec<BTreeMap<String, u64>>,
    position: Position,
}

/// What the splitter learnt from the whole stream.
#[derive(Debug)]
pub(crate) struct SplitFacts {
    /// Rows per table, in the order of the databases.
    pub(crate) rows: Vec<BTreeMap<String, u64>>,
    pub(crate) position: Position,
}

impl MysqldumpSplit {
    pub(crate) fn new(databases: Vec<String>) -> Self {
        let rows = vec![BTreeMap::new(); databases.len()];
        Self {
            databases,
            part: Part::Header,
            delimited: false,
            held: Vec::new(),
            held_lines: 0,
            data_table: None,
            insert: None,
            rows,
            position: Position::default(),
        }
    }

    fn emit(&self, bytes: &[u8], out: &mut impl Outputs) -> Result<()> {
        match self.part {
            Part::Section(index) => out.write(index, bytes),
            Part::Header | Part::Footer => (0..self.databases.len()).try_for_each(|i| out.write(i, bytes)),
        }
    }

    fn release_held(&mut self, out: &mut impl Outputs) -> Result<()> {
        let held = std::mem::take(&mut self.held);
        self.held_lines = 0;
        let result = self.emit(&held, out);
        self.held = held;
        self.held.clear();
        result
    }

    fn database(&self, name: &str) -> Result<usize> {
        self.databases.iter().position(|d| d == name).ok_or_else(|| {
            Error::CommandFailed(format!("mysqldump printed database {name:?}, which was not asked for"))
        })
    }

    fn enter(&mut self, name: &str) -> Result<()> {
        if self.part == Part::Footer {
            return Err(Error::CommandFailed(format!(
                "mysqldump printed database {name:?} after its closing lines"
            )));
        }
        self.part = Part::Section(self.database(name)?);
        self.data_table = None;
        Ok(())
    }

    /// Takes the next piece of the stream.
    pub(crate) fn piece(&mut self, piece: Piece<'_>, out: &mut impl Outputs) -> Result<()> {
        if let Some((table, counter)) = &mut self.insert {
            if counter.feed(piece.bytes()).is_some() {
                let rows = counter.rows;
                let table = std::mem::take(table);
                self.insert = None;
                if let Part::Section(i) = self.part
                    && let Some(map) = self.rows.get_mut(i)
                {
                    *map.entry(table).or_default() += rows;
                }
            }
            return self.emit(piece.bytes(), out);
        }
        let Some(text) = piece.text() else {
            return self.emit(piece.bytes(), out);
        };
        if let Some(rewritten) = self.unnamed_alter_database(piece.bytes(), text) {
            self.release_held(out)?;
            return self.emit(&rewritten, out);
        }
        if self.delimited {
            if text == b"DELIMITER ;" {
                self.delimited = false;
            }
            return self.emit(piece.bytes(), out);
        }
        if text.is_empty() || text == b"--" {
            self.held.extend_from_slice(piece.bytes());
            self.held_lines += 1;
            if self.held_lines > MAX_HELD_LINES {
                self.release_held(out)?;
            }
            return Ok(());
        }
        if self.part == Part::Header && text.starts_with(b"-- Host: ") {
            return self.host_line(text, piece.bytes(), out);
        }
        let mut keep = true;
        if let Some(name) = text.strip_prefix(b"-- Current Database: ") {
            let (name, _) = quoted_ident(name, b'`').unwrap_or_default();
            self.enter(&name)?;
        } else if let Some(name) = text.strip_prefix(b"USE ") {
            let (name, _) = quoted_ident(name, b'`').unwrap_or_default();
            self.enter(&name)?;
            keep = false;
        } else if text.starts_with(b"CREATE DATABASE ") {
            keep = false;
        } else if is_footer_start(text) && self.part != Part::Header {
            self.part = Part::Footer;
        } else if text.starts_with(b"DELIMITER ") {
            self.delimited = text != b"DELIMITER ;";
        } else if text.starts_with(b"-- ") {
            self.comment(text);
        } else if text.starts_with(b"INSERT INTO ") {
            self.insert_start(piece.bytes(), text);
        }
        self.release_held(out)?;
        if keep {
            self.emit(piece.bytes(), out)?;
        }
        Ok(())
    }

    /// mysqldump's `-- Host: h    Database: first` names the first
    /// database only; each file names its own.
    fn host_line(&mut self, text: &[u8], line: &[u8], out: &mut impl Outputs) -> Result<()> {
        self.release_held(out)?;
        const KEY: &[u8] = b"Database: ";
        let Some(at) = text.windows(KEY.len()).position(|w| w == KEY) else {
            return self.emit(line, out);
        };
        let (head, ending) = (&text[..at + KEY.len()], &line[text.len()..]);
        for (index, database) in self.databases.iter().enumerate() {
            out.write(index, &[head, database.as_bytes(), ending].concat())?;
        }
        Ok(())
    }

    /// mysqldump switches the database's character set around each
    /// routine, trigger and event created under another one, naming the
    /// database: `ALTER DATABASE `a` CHARACTER SET … ;`. Loaded into
    /// another database, that line would alter `a` (or fail where `a` does
    /// not exist); without the name it alters the database being loaded.
    fn unnamed_alter_database(&self, line: &[u8], text: &[u8]) -> Option<Vec<u8>> {
        let Part::Section(index) = self.part else { return None };
        let (name, rest) = quoted_ident(text.strip_prefix(b"ALTER DATABASE ")?, b'`')?;
        if Some(&name) != self.databases.get(index) || !rest.starts_with(b" CHARACTER SET ") {
            return None;
        }
        let mut rewritten = b"ALTER DATABASE".to_vec();
        // `text` starts `line`, and `rest` ends `text`.
        rewritten.extend_from_slice(line.get(text.len() - rest.len()..)?);
        Some(rewritten)
    }

    fn comment(&mut self, text: &[u8]) {
        self.data_table = None;
        if let Some(name) = text.strip_prefix(b"-- Dumping data for table ") {
            if let (Some((table, _)), Part::Section(i)) = (quoted_ident(name, b'`'), self.part) {
                if let Some(map) = self.rows.get_mut(i) {
                    map.entry(table.clone()).or_default();
                }
                self.data_table = Some(table);
            }
        } else if text.starts_with(b"-- CHANGE MASTER TO MASTER_LOG_FILE=") {
            let text = String::from_utf8_lossy(text);
            keep_first(&mut self.position.binlog_file, quoted_after(&text, "MASTER_LOG_FILE="));
            keep_first(
                &mut self.position.binlog_position,
                number_after(&text, "MASTER_LOG_POS="),
            );
        } else if text.starts_with(b"-- SET GLOBAL gtid_slave_pos=") {
            let text = String::from_utf8_lossy(text);
            keep_first(&mut self.position.gtid, quoted_after(&text, "gtid_slave_pos="));
        }
    }

    /// `text` is the start of `line`, an `INSERT INTO` line. Only the
    /// announced table's INSERTs are the dump's data.
    fn insert_start(&mut self, line: &[u8], text: &[u8]) {
        let rest = text.get(b"INSERT INTO ".len()..).unwrap_or_default();
        let Some((table, after)) = quoted_ident(rest, b'`') else {
            return;
        };
        let Some(values) = after.strip_prefix(b" VALUES") else {
            return;
        };
        if self.data_table.as_deref() != Some(table.as_str()) {
            return;
        }
        let mut counter = TupleCounter::default();
        let start = text.len() - values.len();
        let done = counter.feed(line.get(start..).unwrap_or_default()).is_some();
        if done {
            if let Part::Section(i) = self.part
                && let Some(map) = self.rows.get_mut(i)
            {
                *map.entry(table).or_default() += counter.rows;
            }
        } else {
            self.insert = Some((table, counter));
        }
    }

    /// Ends the stream: held lines go to the current stream.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] when the stream ended inside an INSERT.
    pub(crate) fn finish(mut self, out: &mut impl Outputs) -> Result<SplitFacts> {
        self.release_held(out)?;
        if let Some((table, _)) = &self.insert {
            return Err(Error::CommandFailed(format!(
                "mysqldump's output ended inside the data of table {table:?}"
            )));
        }
        Ok(SplitFacts {
            rows: self.rows,
            position: self.position,
        })
    }
}

/// The first line of mysqldump's closing part: MariaDB's deferred GTID
/// comment, or the session settings restored.
fn is_footer_start(text: &[u8]) -> bool {
    text.starts_with(b"-- The deferred gtid setting")
        || text == b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;"
        || text == b"/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;"
}

/// mysqldump prints one position; should it print another, the first stands.
fn keep_first(slot: &mut Option<String>, found: Option<String>) {
    if slot.is_none() {
        *slot = found;
    }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::scan::tests::{mysql_quote, table};
    use super::super::scan::{Lines, Piece};
    use super::*;

    impl Outputs for Vec<Vec<u8>> {
        fn write(&mut self, index: usize, bytes: &[u8]) -> Result<()> {
            self[index].extend_from_slice(bytes);
            Ok(())
        }
    }

    fn split(databases: &[&str], dump: &[u8], cut: usize) -> Result<(Vec<String>, SplitFacts)> {
        let mut splitter = MysqldumpSplit::new(databases.iter().map(|d| (*d).to_owned()).collect());
        let mut out = vec![Vec::new(); databases.len()];
        let mut lines = Lines::default();
        let mut f = |p: Piece<'_>| splitter.piece(p, &mut out);
        for part in dump.chunks(cut) {
            lines.feed(part, &mut f)?;
        }
        lines.finish(&mut f)?;
        let facts = splitter.finish(&mut out)?;
        let text = out.into_iter().map(|o| String::from_utf8(o).unwrap()).collect();
        Ok((text, facts))
    }

    const HEADER: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n/*!40101 SET NAMES utf8mb4 */;\n-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;\n\n-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=2532;\n";
    const FOOTER: &str = "\n-- The deferred gtid setting for slave corresponding to the master-data CHANGE-MASTER follows\n\n-- SET GLOBAL gtid_slave_pos='0-1-109';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on 2026-12-02  1:46:01\n";

    fn section(db: &str, body: &str) -> String {
        format!("\n--\n-- Current Database: `{db}`\n--\n\nUSE `{db}`;\n{body}")
    }

    #[test]
    fn each_database_gets_header_its_sections_and_footer() {
        let a1 = "\n--\n-- Dumping data for table `t`\n--\n\nLOCK TABLES `t` WRITE;\nINSERT INTO `t` VALUES\n(1,'USE `b`;\\n'),\n(2,NULL);\nUNLOCK TABLES;\n";
        let b1 = "DELIMITER ;;\nCREATE PROCEDURE p() BEGIN\nUSE `a`;\nINSERT INTO `u` VALUES (1),(2);\nEND ;;\nDELIMITER ;\n\n--\n-- Dumping data for table `u`\n--\n\nINSERT INTO `u` VALUES (7);\n";
        let a2 = "\n--\n-- Final view structure for view `v`\n--\n\n/*!50001 VIEW `v` AS select 1 */;\n";
        let dump = format!(
            "{HEADER}{}{}{}{}{FOOTER}",
            section("a", a1),
            section("b", b1),
            section("a", a2),
            section("b", "")
        );
        for cut in [1, 2, 5, 64, 100_000] {
            let (out, facts) = split(&["a", "b"], dump.as_bytes(), cut).unwrap();
            let p = |db: &str| format!("\n--\n-- Current Database: `{db}`\n--\n\n");
            let a = format!("{HEADER}{}{a1}{}{a2}{FOOTER}", p("a"), p("a"));
            let b = format!("{HEADER}{}{b1}{}{FOOTER}", p("b"), p("b"));
            assert_eq!(out[0], a, "cut {cut}");
            assert_eq!(out[1], b, "cut {cut}");
            assert_eq!(facts.rows[0], BTreeMap::from([("t".to_owned(), 2)]));
            assert_eq!(facts.rows[1], BTreeMap::from([("u".to_owned(), 1)]));
            assert_eq!(
                facts.position,
                Position {
                    binlog_file: Some("binlog.000002".into()),
                    binlog_position: Some("2532".into()),
                    gtid: Some("0-1-109".into()),
                }
            );
        }
    }

    #[test]
    fn each_file_names_its_own_database_in_the_host_line() {
        let dump = format!(
            "-- Host: 127.0.0.1    Database: a\n{HEADER}{}{}{FOOTER}",
            section("a", ""),
            section("b", "")
        );
        let (out, _) = split(&["a", "b"], dump.as_bytes(), 3).unwrap();
        assert!(
            out[0].starts_with("-- Host: 127.0.0.1    Database: a\n/*M!"),
            "{}",
            out[0]
        );
        assert!(
            out[1].starts_with("-- Host: 127.0.0.1    Database: b\n/*M!"),
            "{}",
            out[1]
        );
    }

    #[test]
    fn character_set_switches_name_no_database() {
        let body = "ALTER DATABASE `a` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\nDELIMITER ;;\n\
                    ALTER DATABASE `a` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;;\n\
                    ALTER DATABASE `other` CHARACTER SET latin1 ;;\nDELIMITER ;\n";
        let dump = format!("{HEADER}{}{FOOTER}", section("a", body));
        let (out, _) = split(&["a"], dump.as_bytes(), 4).unwrap();
        let want = "ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\nDELIMITER ;;\n\
                    ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;;\n\
                    ALTER DATABASE `other` CHARACTER SET latin1 ;;\nDELIMITER ;\n";
        assert!(out[0].contains(want), "{}", out[0]);
    }

    #[test]
    fn a_database_not_asked_for_or_after_the_footer_is_refused() {
        let dump = format!("{HEADER}{}", section("c", ""));
        let err = split(&["a"], dump.as_bytes(), 7).unwrap_err();
        assert!(
            matches!(&err, Error::CommandFailed(m) if m.contains("\"c\", which was not asked for")),
            "{err}"
        );
        let dump = format!("{HEADER}{}{FOOTER}{}", section("a", ""), section("a", ""));
        let err = split(&["a"], dump.as_bytes(), 7).unwrap_err();
        assert!(
            matches!(&err, Error::CommandFailed(m) if m.contains("after its closing lines")),
            "{err}"
        );
    }

    #[test]
    fn a_dump_cut_inside_an_insert_is_refused() {
        let dump = format!(
            "{HEADER}{}",
            section("a", "-- Dumping data for table `t`\nINSERT INTO `t` VALUES (1,'a;")
        );
        let err = split(&["a"], dump.as_bytes(), 3).unwrap_err();
        assert!(
            matches!(&err, Error::CommandFailed(m) if m.contains("inside the data of table \"t\"")),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn counts_rows_of_random_tables_in_every_database(
            dbs in prop::collection::vec(prop::collection::vec(table(), 0..3), 1..4),
            extended in 1usize..4,
            cut in 1usize..300,
        ) {
            let names: Vec<String> = (0..dbs.len()).map(|i| format!("db{i}")).collect();
            let mut dump = HEADER.to_owned();
            for (name, tables) in names.iter().zip(&dbs) {
                let mut body = String::new();
                for (n, rows) in tables.iter().enumerate() {
                    let t = format!("t`{n}(");
                    let q = format!("`{}`", t.replace('`', "``"));
                    body.push_str(&format!("\n--\n-- Table structure for table {q}\n--\n\nCREATE TABLE {q} (\n  `a` text\n);\n\n--\n-- Dumping data for table {q}\n--\n\nLOCK TABLES {q} WRITE;\n"));
                    for group in rows.chunks(extended) {
                        let tuples: Vec<String> = group
                            .iter()
                            .map(|r| {
                                let v: Vec<String> = r.iter().map(|v| v.as_deref().map_or_else(|| "NULL".to_owned(), mysql_quote)).collect();
                                format!("({})", v.join(","))
                            })
                            .collect();
                        body.push_str(&format!("INSERT INTO {q} VALUES\n{};\n", tuples.join(",\n")));
                    }
                    body.push_str("UNLOCK TABLES;\n");
                }
                dump.push_str(&section(name, &body));
            }
            dump.push_str(FOOTER);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let (out, facts) = split(&refs, dump.as_bytes(), cut).unwrap();
            for (i, tables) in dbs.iter().enumerate() {
                let want: BTreeMap<String, u64> = tables
                    .iter()
                    .enumerate()
                    .map(|(n, rows)| (format!("t`{n}("), rows.len() as u64))
                    .collect();
                prop_assert_eq!(&facts.rows[i], &want);
                prop_assert!(!out[i].lines().any(|l| l.starts_with("USE `")));
                prop_assert!(out[i].starts_with(HEADER) && out[i].ends_with(FOOTER));
            }
        }
    }
}
