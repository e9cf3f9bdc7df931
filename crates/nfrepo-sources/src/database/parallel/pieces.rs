//! Cutting a mysqldump stream into the pieces a parallel load runs.
//!
//! A dump is mostly `INSERT` statements, and the rows of one table inserted
//! over several connections end up the same as over one: every row carries
//! its primary key, and InnoDB takes concurrent inserts into one table. The
//! rest (`DROP`/`CREATE TABLE`, views, triggers, routines, events, the
//! session settings around them) depends on order. So the stream becomes a
//! sequence of [`Piece`]s:
//!
//! - [`Piece::Prologue`]: the opening session settings (`SET NAMES`,
//!   `TIME_ZONE`, `UNIQUE_CHECKS`, `FOREIGN_KEY_CHECKS`, `SQL_MODE`, …),
//!   which every connection runs before anything else;
//! - [`Piece::Rows`]: whole `INSERT` statements (batched up to
//!   [`BATCH_BYTES`]), each of which may run on any connection, in any
//!   order, between the serial pieces around it;
//! - [`Piece::Serial`]: everything else, byte for byte and in order, on one
//!   connection, after every earlier piece has finished and before any
//!   later one starts.
//!
//! What counts as a table's data is what the dump splitter
//! (`dump/split.rs`) counts rows in, recognised the same way with the same
//! scanners: outside `DELIMITER` blocks, after `-- Dumping data for table
//! `t``, a line `INSERT INTO `t` VALUES`, up to the `;` that ends the
//! statement as [`TupleCounter`] finds it (quotes and escapes tracked). An
//! `INSERT` in a trigger or routine body is inside a `DELIMITER` block and
//! stays serial. A statement longer than [`MAX_STATEMENT_BYTES`] goes on
//! serially as it streams, so memory stays bounded whatever the dump holds.
//!
//! `LOCK TABLES … WRITE;` and `UNLOCK TABLES;` lines are dropped: the lock
//! would make the other connections wait for the one holding it, which in
//! turn waits for them at the next serial piece; in a staging database that
//! nothing else uses, the lock protects nothing. Every other byte of the
//! dump reaches the server.

use std::collections::VecDeque;

use crate::dump::scan::{Lines, Piece as Line, TupleCounter, quoted_ident};

/// `INSERT` statements are handed to a connection in batches of this size.
pub(crate) const BATCH_BYTES: usize = 1 << 20;

/// An `INSERT` statement longer than this is streamed serially instead of
/// buffered whole.
pub(crate) const MAX_STATEMENT_BYTES: usize = 16 << 20;

/// One piece of a dump, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Session settings every connection runs first.
    Prologue(Vec<u8>),
    /// Whole `INSERT` statements that may run on any connection.
    Rows(Vec<u8>),
    /// Bytes that run in order on one connection, after everything before.
    Serial(Vec<u8>),
}

impl Piece {
    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Prologue(b) | Piece::Rows(b) | Piece::Serial(b) => b,
        }
    }

    fn bytes_mut(&mut self) -> &mut Vec<u8> {
        match self {
            Piece::Prologue(b) | Piece::Rows(b) | Piece::Serial(b) => b,
        }
    }

    fn is_full(&self) -> bool {
        match self {
            Piece::Prologue(_) => false,
            Piece::Rows(b) | Piece::Serial(b) => b.len() >= BATCH_BYTES,
        }
    }
}

/// Cuts a mysqldump stream into [`Piece`]s: [`feed`](Self::feed) it bytes,
/// take finished pieces with [`next`](Self::next), end with
/// [`finish`](Self::finish).
#[derive(Default)]
pub(crate) struct Pieces {
    lines: Lines,
    cutter: Cutter,
}

impl Pieces {
    /// Takes the next bytes of the dump.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let cutter = &mut self.cutter;
        // The callback never fails.
        let _ = self.lines.feed(bytes, &mut |line| {
            cutter.line(line);
            Ok(())
        });
    }

    /// The next finished piece. The last piece stays until it is full or a
    /// piece of another kind follows, so batches are as large as they can be.
    pub(crate) fn next(&mut self) -> Option<Piece> {
        let pieces = &mut self.cutter.pieces;
        let finished = pieces.len() > 1 || pieces.front().is_some_and(Piece::is_full);
        if finished { pieces.pop_front() } else { None }
    }

    /// Ends the stream; returns the pieces not yet taken. A statement the
    /// stream cut short goes on serially, so the client sees (and reports)
    /// exactly what the dump holds.
    pub(crate) fn finish(mut self) -> Vec<Piece> {
        let cutter = &mut self.cutter;
        let _ = self.lines.finish(&mut |line| {
            cutter.line(line);
            Ok(())
        });
        if let Some(insert) = cutter.insert.take() {
            cutter.push(Piece::Serial(insert.statement));
        }
        cutter.pieces.drain(..).collect()
    }
}

#[derive(Default)]
struct Cutter {
    /// Past the opening session settings.
    started: bool,
    /// Inside a `DELIMITER ;;` block (a routine, trigger or event body).
    delimited: bool,
    /// The table whose data the dump is printing.
    data_table: Option<String>,
    insert: Option<Insert>,
    pieces: VecDeque<Piece>,
}

/// The `INSERT` statement being read.
struct Insert {
    counter: TupleCounter,
    /// Gathered while `serial` is false; pending bytes otherwise.
    statement: Vec<u8>,
    /// Grew past [`MAX_STATEMENT_BYTES`]: goes on serially as it streams.
    serial: bool,
}

impl Cutter {
    fn line(&mut self, line: Line<'_>) {
        if self.insert.is_some() {
            return self.continue_insert(line.bytes());
        }
        let Some(text) = line.text() else {
            return self.push(Piece::Serial(line.bytes().to_vec()));
        };
        if !self.started {
            if is_setting(text) {
                self.comment(text);
                return self.push(Piece::Prologue(line.bytes().to_vec()));
            }
            self.started = true;
        }
        if self.delimited || text.starts_with(b"DELIMITER ") {
            self.delimited = text != b"DELIMITER ;";
        } else if text.starts_with(b"-- ") {
            self.comment(text);
        } else if is_table_lock(text) {
            return;
        } else if let Some(values) = self.data_values(text) {
            let start = text.len() - values.len();
            self.insert = Some(Insert {
                counter: TupleCounter::default(),
                statement: line.bytes()[..start].to_vec(),
                serial: false,
            });
            return self.continue_insert(&line.bytes()[start..]);
        }
        self.push(Piece::Serial(line.bytes().to_vec()));
    }

    /// `-- Dumping data for table `t`` announces `t`'s data; any other
    /// comment ends it.
    fn comment(&mut self, text: &[u8]) {
        if let Some(comment) = text.strip_prefix(b"-- ") {
            self.data_table = comment
                .strip_prefix(b"Dumping data for table ")
                .and_then(|name| quoted_ident(name, b'`'))
                .map(|(table, _)| table);
        }
    }

    /// What follows `VALUES` when `text` starts an `INSERT` of the table
    /// whose data the dump is printing.
    fn data_values<'t>(&self, text: &'t [u8]) -> Option<&'t [u8]> {
        let (table, after) = quoted_ident(text.strip_prefix(b"INSERT INTO ")?, b'`')?;
        let values = after.strip_prefix(b" VALUES")?;
        (self.data_table.as_deref() == Some(table.as_str())).then_some(values)
    }

    fn continue_insert(&mut self, bytes: &[u8]) {
        let Some(insert) = self.insert.as_mut() else { return };
        let end = insert.counter.feed(bytes);
        let (body, rest) = match end {
            // Whitespace after the `;` (the line break) stays with it.
            Some(n) if bytes[n..].iter().all(u8::is_ascii_whitespace) => (bytes, &[][..]),
            Some(n) => bytes.split_at(n),
            None => (bytes, &[][..]),
        };
        insert.statement.extend_from_slice(body);
        if !insert.serial && insert.statement.len() > MAX_STATEMENT_BYTES {
            insert.serial = true;
        }
        if insert.serial || end.is_some() {
            let statement = std::mem::take(&mut insert.statement);
            let serial = insert.serial;
            if end.is_some() {
                self.insert = None;
            }
            self.push(if serial {
                Piece::Serial(statement)
            } else {
                Piece::Rows(statement)
            });
        }
        if !rest.is_empty() {
            self.push(Piece::Serial(rest.to_vec()));
        }
    }

    /// Appends to the last piece when it is of the same kind and not full.
    fn push(&mut self, mut piece: Piece) {
        if let Some(last) = self.pieces.back_mut()
            && std::mem::discriminant(last) == std::mem::discriminant(&piece)
            && !last.is_full()
        {
            last.bytes_mut().append(piece.bytes_mut());
        } else if !piece.bytes_mut().is_empty() {
            self.pieces.push_back(piece);
        }
    }
}

/// A line of the dump's opening block: a comment, a blank line, or one
/// `SET` (plain or in a versioned comment), or MariaDB's sandbox marker.
fn is_setting(text: &[u8]) -> bool {
    let text = text.trim_ascii_end();
    if text.is_empty() || text.starts_with(b"--") {
        return true;
    }
    let body = match text.strip_prefix(b"/*") {
        // `/*!40101 SET … */;`, `/*M!999999\- enable the sandbox mode */`.
        Some(rest) => {
            let Some(rest) = rest.strip_prefix(b"M").unwrap_or(rest).strip_prefix(b"!") else {
                return false;
            };
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            &rest[digits..]
        }
        None => text,
    };
    let body = body.trim_ascii_start();
    let one_statement = text.ends_with(b";") && text.iter().filter(|&&b| b == b';').count() == 1;
    (body.starts_with(b"SET ") && one_statement) || (body.starts_with(b"\\-") && text.ends_with(b"*/"))
}

fn is_table_lock(text: &[u8]) -> bool {
    (text.starts_with(b"LOCK TABLES `") && text.ends_with(b" WRITE;")) || text == b"UNLOCK TABLES;"
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
        -- MariaDB dump 10.19\n\
        /*!40101 SET NAMES utf8mb4 */;\n\
        /*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n\
        \n\
        --\n\
        -- Table structure for table `t`\n\
        --\n\
        \n\
        DROP TABLE IF EXISTS `t`;\n\
        CREATE TABLE `t` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n);\n\
        \n\
        --\n\
        -- Dumping data for table `t`\n\
        --\n\
        \n\
        LOCK TABLES `t` WRITE;\n\
        /*!40000 ALTER TABLE `t` DISABLE KEYS */;\n\
        INSERT INTO `t` VALUES\n(1,'a;\\nINSERT INTO `t` VALUES (9);'),\n(2,'b');\n\
        INSERT INTO `t` VALUES (3,'c'),(4,')');\n\
        /*!40000 ALTER TABLE `t` ENABLE KEYS */;\n\
        UNLOCK TABLES;\n\
        DELIMITER ;;\n\
        /*!50003 CREATE*/ /*!50003 TRIGGER `tr` AFTER INSERT ON `t` FOR EACH ROW\n\
        INSERT INTO `t` VALUES (5) */;;\n\
        DELIMITER ;\n\
        INSERT INTO `u` VALUES (6);\n\
        /*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n";

    fn cut(dump: &[u8], step: usize) -> Vec<Piece> {
        let mut pieces = Pieces::default();
        let mut out = Vec::new();
        for part in dump.chunks(step.max(1)) {
            pieces.feed(part);
            out.extend(std::iter::from_fn(|| pieces.next()));
        }
        out.extend(pieces.finish());
        out
    }

    fn text(piece: &Piece) -> (&'static str, String) {
        match piece {
            Piece::Prologue(b) => ("prologue", String::from_utf8_lossy(b).into_owned()),
            Piece::Rows(b) => ("rows", String::from_utf8_lossy(b).into_owned()),
            Piece::Serial(b) => ("serial", String::from_utf8_lossy(b).into_owned()),
        }
    }

    #[test]
    fn data_inserts_are_rows_and_everything_else_stays_serial_in_order() {
        let pieces = cut(DUMP.as_bytes(), DUMP.len());
        let kinds: Vec<&str> = pieces.iter().map(|p| text(p).0).collect();
        assert_eq!(kinds, ["prologue", "serial", "rows", "serial"]);
        let (_, prologue) = text(&pieces[0]);
        assert!(prologue.starts_with("/*M!999999"));
        assert!(prologue.ends_with("UNIQUE_CHECKS=0 */;\n\n--\n-- Table structure for table `t`\n--\n\n"));
        let (_, rows) = text(&pieces[2]);
        assert_eq!(
            rows,
            "INSERT INTO `t` VALUES\n(1,'a;\\nINSERT INTO `t` VALUES (9);'),\n(2,'b');\n\
             INSERT INTO `t` VALUES (3,'c'),(4,')');\n"
        );
        let (_, tail) = text(&pieces[3]);
        // The trigger's INSERT and a table the dump did not announce stay serial.
        assert!(tail.contains("FOR EACH ROW\nINSERT INTO `t` VALUES (5) */;;\n"));
        assert!(tail.contains("INSERT INTO `u` VALUES (6);\n"));
        assert!(!tail.contains("LOCK TABLES"));
    }

    #[test]
    fn a_statement_past_the_cap_streams_serially() {
        let row = format!("({},'{}'),\n", 1, "x".repeat(1000));
        let mut dump = String::from("-- Dumping data for table `t`\nINSERT INTO `t` VALUES\n");
        while dump.len() < MAX_STATEMENT_BYTES + BATCH_BYTES {
            dump.push_str(&row);
        }
        dump.push_str("(2,'y');\nINSERT INTO `t` VALUES (3,'z');\n");
        let pieces = cut(dump.as_bytes(), 64 * 1024);
        let rows: Vec<String> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Rows(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(rows, ["INSERT INTO `t` VALUES (3,'z');\n"]);
        // The opening comment is the prologue; everything else streamed serially.
        assert!(matches!(&pieces[0], Piece::Prologue(b) if b.as_slice() == b"-- Dumping data for table `t`\n"));
        let serial: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Serial(b) => b.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(serial, dump.len() - rows[0].len() - pieces[0].bytes().len());
    }

    proptest! {
        /// However the stream is fed, every byte comes out once, in order,
        /// but for the dropped lock lines.
        #[test]
        fn no_byte_is_lost_or_moved_whatever_the_feeding(step in 1usize..200) {
            let pieces = cut(DUMP.as_bytes(), step);
            prop_assert_eq!(pieces, cut(DUMP.as_bytes(), DUMP.len()));
            let joined: String = cut(DUMP.as_bytes(), step).iter().map(|p| text(p).1).collect();
            let expected: String = DUMP.lines().filter(|l| !l.starts_with("LOCK TABLES") && *l != "UNLOCK TABLES;").map(|l| format!("{l}\n")).collect();
            prop_assert_eq!(joined, expected);
        }
    }
}
