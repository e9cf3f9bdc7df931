//! Watching a dump stream as it passes: lines with a capped buffer, rows
//! counted per table.
//!
//! Every byte of a dump goes through here on its way to the repository, so
//! facts are read wherever they appear (the GTID that MariaDB prints at the
//! very end of a dump) and never from a prefix. Memory stays bounded: a line
//! is buffered only up to [`LINE_CAP`] bytes (enough for every line the
//! scanners recognise); the rest of a longer line is passed on in pieces.
//!
//! Rows are counted the way the dump tool wrote them: tuples of mysqldump's
//! `INSERT INTO … VALUES (…),(…);` (quotes and backslash escapes tracked, so
//! parentheses and commas inside strings do not count) and data lines of
//! pg_dump's `COPY … FROM stdin;` up to `\.`.

use std::collections::BTreeMap;

use crate::Result;

/// Bytes of a line kept for recognising it; longer lines are data. Big
/// enough for a `COPY` line naming hundreds of columns.
pub(crate) const LINE_CAP: usize = 64 * 1024;

/// A part of the stream, cut at line ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A whole line of at most [`LINE_CAP`] bytes with its newline (none
    /// only for a last line without one).
    Line(&'a [u8]),
    /// The first [`LINE_CAP`] bytes of a longer line.
    Head(&'a [u8]),
    /// More of a long line, up to and including its newline.
    Tail(&'a [u8]),
}

impl<'a> Piece<'a> {
    pub(crate) const fn bytes(self) -> &'a [u8] {
        match self {
            Piece::Line(b) | Piece::Head(b) | Piece::Tail(b) => b,
        }
    }

    /// The beginning of a line, without its line end, if this piece starts one.
    pub(crate) fn text(self) -> Option<&'a [u8]> {
        match self {
            Piece::Line(b) => {
                let b = b.strip_suffix(b"\n").unwrap_or(b);
                Some(b.strip_suffix(b"\r").unwrap_or(b))
            }
            Piece::Head(b) => Some(b),
            Piece::Tail(_) => None,
        }
    }
}

/// Cuts a stream into [`Piece`]s, buffering at most [`LINE_CAP`] bytes.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    partial: Vec<u8>,
    in_long_line: bool,
}

impl Lines {
    /// Hands every piece of `data` to `f`, in order.
    pub(crate) fn feed(&mut self, mut data: &[u8], f: &mut impl FnMut(Piece<'_>) -> Result<()>) -> Result<()> {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            if self.in_long_line {
                let end = newline.map_or(data.len(), |i| i + 1);
                let (piece, rest) = data.split_at(end);
                f(Piece::Tail(piece))?;
                self.in_long_line = newline.is_none();
                data = rest;
                continue;
            }
            let room = LINE_CAP - self.partial.len();
            match newline {
                Some(i) if i < room => {
                    let (line, rest) = data.split_at(i + 1);
                    if self.partial.is_empty() {
                        f(Piece::Line(line))?;
                    } else {
                        self.partial.extend_from_slice(line);
                        f(Piece::Line(&self.partial))?;
                        self.partial.clear();
                    }
                    data = rest;
                }
                None if data.len() < room => {
                    self.partial.extend_from_slice(data);
                    return Ok(());
                }
                _ => {
                    let (head, rest) = data.split_at(room);
                    self.partial.extend_from_slice(head);
                    f(Piece::Head(&self.partial))?;
                    self.partial.clear();
                    self.in_long_line = true;
                    data = rest;
                }
            }
        }
        Ok(())
    }

    /// Hands on a last line that had no newline.
    pub(crate) fn finish(&mut self, f: &mut impl FnMut(Piece<'_>) -> Result<()>) -> Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            f(Piece::Line(&line))?;
        }
        Ok(())
    }
}

/// Counts the tuples of one `INSERT … VALUES (…),(…);` statement, fed from
/// just after `VALUES` on, across any number of lines.
#[derive(Debug, Default)]
pub(crate) struct TupleCounter {
    state: TupleState,
    depth: u32,
    /// Tuples seen so far.
    pub(crate) rows: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TupleState {
    #[default]
    Code,
    /// Inside a string opened by this quote.
    Text(u8),
    /// Just after a backslash inside a string.
    Escaped(u8),
    /// Just after a quote inside a string: a doubled quote stays inside.
    QuoteSeen(u8),
}

impl TupleCounter {
    /// Counts the tuples in `bytes`. Returns the number of bytes consumed
    /// when the statement's final `;` is among them (the counter is then
    /// done), or `None` when it needs more.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match self.state {
                TupleState::Text(q) => {
                    // Skip to the next byte that can end or escape the string.
                    match bytes[i..].iter().position(|&c| c == q || c == b'\\') {
                        Some(at) => {
                            i += at;
                            self.state = if bytes.get(i) == Some(&b'\\') {
                                TupleState::Escaped(q)
                            } else {
                                TupleState::QuoteSeen(q)
                            };
                        }
                        None => return None,
                    }
                }
                TupleState::Escaped(q) => self.state = TupleState::Text(q),
                TupleState::QuoteSeen(q) => {
                    if b == q {
                        self.state = TupleState::Text(q);
                    } else {
                        self.state = TupleState::Code;
                        continue;
                    }
                }
                TupleState::Code => match b {
                    b'\'' | b'"' => self.state = TupleState::Text(b),
                    b'(' => {
                        if self.depth == 0 {
                            self.rows += 1;
                        }
                        self.depth += 1;
                    }
                    b')' => self.depth = self.depth.saturating_sub(1),
                    b';' if self.depth == 0 => return Some(i + 1),
                    _ => {}
                },
            }
            i += 1;
        }
        None
    }
}

/// The identifier quoted by `open`/`close` at the start of `text` (a doubled
/// closing quote stands for itself), and the rest after it.
pub(crate) fn quoted_ident(text: &[u8], quote: u8) -> Option<(String, &[u8])> {
    let mut rest = text.strip_prefix(&[quote])?;
    let mut name = Vec::new();
    loop {
        let at = rest.iter().position(|&b| b == quote)?;
        name.extend_from_slice(&rest[..at]);
        rest = &rest[at + 1..];
        if rest.first() == Some(&quote) {
            name.push(quote);
            rest = &rest[1..];
        } else {
            return Some((String::from_utf8_lossy(&name).into_owned(), rest));
        }
    }
}

/// A PostgreSQL identifier as pg_dump prints it: `"quoted"` or bare up to
/// `.`, a space or `(`.
fn pg_ident(text: &[u8]) -> Option<(String, &[u8])> {
    if text.first() == Some(&b'"') {
        return quoted_ident(text, b'"');
    }
    let end = text
        .iter()
        .position(|&b| matches!(b, b'.' | b' ' | b'('))
        .unwrap_or(text.len());
    (end > 0).then(|| (String::from_utf8_lossy(&text[..end]).into_owned(), &text[end..]))
}

/// `schema.table` from a `COPY schema.table (…) FROM stdin;` line.
fn copy_table(text: &[u8]) -> Option<String> {
    let rest = text.strip_prefix(b"COPY ")?;
    if !text.ends_with(b" FROM stdin;") {
        return None;
    }
    let (schema, rest) = pg_ident(rest)?;
    let (table, _) = pg_ident(rest.strip_prefix(b".")?)?;
    Some(format!("{schema}.{table}"))
}

/// Watches a plain-format `pg_dump`: counts the data lines of every
/// `COPY … FROM stdin;` block that pg_dump's table-of-contents comment
/// announces as `TABLE DATA` (so a `COPY` inside a function body is not
/// taken for data).
#[derive(Debug, Default)]
pub(crate) struct PgDumpScan {
    /// The last table-of-contents comment announced table data.
    data_announced: bool,
    /// The table whose COPY data lines are passing, and their count.
    copying: Option<(String, u64)>,
    rows: BTreeMap<String, u64>,
}

impl PgDumpScan {
    pub(crate) fn piece(&mut self, piece: Piece<'_>) {
        if let Some((_, rows)) = &mut self.copying {
            match piece {
                Piece::Line(b"\\.\n" | b"\\.") => {
                    if let Some((table, rows)) = self.copying.take() {
                        *self.rows.entry(table).or_default() += rows;
                    }
                }
                Piece::Line(_) | Piece::Head(_) => *rows += 1,
                Piece::Tail(_) => {}
            }
            return;
        }
        let Some(text) = piece.text() else { return };
        if text.starts_with(b"-- ") {
            self.data_announced =
                text.starts_with(b"-- Data for Name: ") && text.windows(18).any(|w| w == b"; Type: TABLE DATA");
        } else if self.data_announced
            && let Some(table) = copy_table(text)
        {
            self.data_announced = false;
            self.rows.entry(table.clone()).or_default();
            self.copying = Some((table, 0));
        }
    }

    /// Rows per `schema.table`; an unterminated COPY (a cut-short dump) is
    /// an error.
    pub(crate) fn finish(self) -> std::result::Result<BTreeMap<String, u64>, String> {
        match self.copying {
            Some((table, _)) => Err(format!("the dump ended inside the data of {table}")),
            None => Ok(self.rows),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every piece `Lines` makes of `data` fed in `cuts`-sized parts.
    fn pieces(data: &[u8], cut: usize) -> Vec<(char, Vec<u8>)> {
        let mut out = Vec::new();
        let mut lines = Lines::default();
        let mut f = |p: Piece<'_>| {
            let tag = match p {
                Piece::Line(_) => 'L',
                Piece::Head(_) => 'H',
                Piece::Tail(_) => 'T',
            };
            out.push((tag, p.bytes().to_vec()));
            Ok(())
        };
        for part in data.chunks(cut.max(1)) {
            lines.feed(part, &mut f).unwrap();
        }
        lines.finish(&mut f).unwrap();
        out
    }

    #[test]
    fn lines_keep_every_byte_and_cap_the_buffer() {
        let long = vec![b'x'; LINE_CAP + 10];
        let mut data = b"a\nbc\n".to_vec();
        data.extend_from_slice(&long);
        data.extend_from_slice(b"\nend");
        for cut in [1, 3, 7, 4096, 100_000] {
            let got = pieces(&data, cut);
            let joined: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone()).collect();
            assert_eq!(joined, data, "cut {cut}");
            let tags: String = got.iter().map(|(t, _)| *t).collect();
            let tags = tags.trim_end_matches('T').to_owned();
            assert!(tags.starts_with("LLH"), "cut {cut}: {tags}");
            assert!(
                got.iter().all(|(_, b)| b.len() <= LINE_CAP || cut > LINE_CAP),
                "cut {cut}"
            );
            assert_eq!(got.last().unwrap(), &('L', b"end".to_vec()), "cut {cut}");
        }
    }

    #[test]
    fn a_tuple_counter_ignores_what_is_quoted() {
        let mut c = TupleCounter::default();
        let stmt = b" (1,'a(b),c\\'(',0x00FF),\n(2,'x''(y',NULL),(3,\"q\\\"(\");\nrest";
        let end = c.feed(stmt).unwrap();
        assert_eq!(&stmt[end..], b"\nrest");
        assert_eq!(c.rows, 3);
    }

    /// A MariaDB string literal as mysqldump writes it.
    pub(crate) fn mysql_quote(s: &str) -> String {
        let mut out = String::from("'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\0' => out.push_str("\\0"),
                '"' => out.push_str("\\\""),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    /// A COPY text-format field as pg_dump writes it.
    pub(crate) fn copy_field(s: Option<&str>) -> String {
        let Some(s) = s else { return "\\N".into() };
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c => out.push(c),
            }
        }
        out
    }

    pub(crate) fn value() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[a-z(),;'\"\\\\\n\r\t \\.`-]{0,12}")
    }

    pub(crate) fn table() -> impl Strategy<Value = Vec<Vec<Option<String>>>> {
        prop::collection::vec(prop::collection::vec(value(), 1..4), 0..20)
    }

    fn feed_in_parts(scan: &mut PgDumpScan, data: &[u8], cut: usize) {
        let mut lines = Lines::default();
        let mut f = |p: Piece<'_>| {
            scan.piece(p);
            Ok(())
        };
        for part in data.chunks(cut) {
            lines.feed(part, &mut f).unwrap();
        }
        lines.finish(&mut f).unwrap();
    }

    proptest! {
        #[test]
        fn counts_the_tuples_mysqldump_writes(
            rows in table(),
            one_line in any::<bool>(),
            cut in 1usize..64,
        ) {
            let tuples: Vec<String> = rows
                .iter()
                .map(|r| {
                    let vals: Vec<String> = r
                        .iter()
                        .map(|v| v.as_deref().map_or_else(|| "NULL".to_owned(), mysql_quote))
                        .collect();
                    format!("({})", vals.join(","))
                })
                .collect();
            prop_assume!(!tuples.is_empty());
            let sep = if one_line { "," } else { ",\n" };
            let stmt = format!(" {};\nUNLOCK TABLES;\n", tuples.join(sep));
            let mut c = TupleCounter::default();
            let mut end = None;
            let mut offset = 0;
            for part in stmt.as_bytes().chunks(cut) {
                if let Some(at) = c.feed(part) {
                    end = Some(offset + at);
                    break;
                }
                offset += part.len();
            }
            prop_assert_eq!(c.rows, rows.len() as u64);
            prop_assert_eq!(&stmt[end.unwrap()..], "\nUNLOCK TABLES;\n");
        }

        #[test]
        fn counts_the_lines_pg_dump_copies(
            tables in prop::collection::vec(table(), 1..4),
            cut in 1usize..200,
        ) {
            let mut dump = String::from("--\n-- PostgreSQL database dump\n--\n\nCREATE FUNCTION f() RETURNS void AS $$\nCOPY public.fake (a) FROM stdin;\n$$;\n");
            for (n, rows) in tables.iter().enumerate() {
                dump.push_str(&format!(
                    "\n--\n-- Data for Name: t{n}; Type: TABLE DATA; Schema: \"My S\"; Owner: postgres\n--\n\nCOPY \"My S\".\"t\"\"{n}\" (a, b) FROM stdin;\n"
                ));
                for r in rows {
                    let fields: Vec<String> = r.iter().map(|v| copy_field(v.as_deref())).collect();
                    dump.push_str(&fields.join("\t"));
                    dump.push('\n');
                }
                dump.push_str("\\.\n\n");
            }
            let mut scan = PgDumpScan::default();
            feed_in_parts(&mut scan, dump.as_bytes(), cut);
            let got = scan.finish().unwrap();
            let want: BTreeMap<String, u64> = tables
                .iter()
                .enumerate()
                .map(|(n, rows)| (format!("My S.t\"{n}"), rows.len() as u64))
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_copy_cut_short_is_an_error() {
        let mut scan = PgDumpScan::default();
        feed_in_parts(
            &mut scan,
            b"-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: x\nCOPY public.t  FROM stdin;\n\n\n",
            5,
        );
        assert_eq!(scan.finish().unwrap_err(), "the dump ended inside the data of public.t");
    }
}
