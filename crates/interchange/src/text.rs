//! Small text helpers for the table and CSV outputs (CSV through the `csv` crate), and for counts
//! printed to people.

use std::io::{self, Write};

/// `1234567` as `1,234,567`: every count either CLI prints to people goes through this (never the
/// JSON or CSV output, which programs read).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count and its noun, for people: `1 event`, `0 events`, `1,234 events`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// The CSV writer both CLIs use, over the `csv` crate: RFC 4180 quoting where a field needs it (a
/// comma, quote, CR or LF; quotes doubled), `\n` line ends (which every spreadsheet reads), no header
/// handling of its own (callers write their header row). A field starting with `=`, `+`, `-` or `@` is
/// left as is: the values are data, and the numbers (negative never occur) must stay numbers.
pub struct CsvWriter<W: Write> {
    inner: csv::Writer<W>,
}

/// A `csv` error as the `io::Error` it carries (the writer only fails writing), so a broken pipe stays
/// a broken pipe.
fn csv_io(error: csv::Error) -> io::Error {
    if !error.is_io_error() {
        return io::Error::other(error);
    }
    match error.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

impl<W: Write> CsvWriter<W> {
    /// A writer of rows to `out` (buffered: call [`finish`](Self::finish) at the end).
    pub fn new(out: W) -> Self {
        let inner = csv::WriterBuilder::new()
            .has_headers(false)
            .flexible(true)
            .quote_style(csv::QuoteStyle::Necessary)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(out);
        CsvWriter { inner }
    }

    /// Writes one row.
    pub fn row<I, S>(&mut self, fields: I) -> io::Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        self.inner.write_record(fields).map_err(csv_io)
    }

    /// Flushes the rows to the output.
    pub fn finish(mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A table with aligned columns.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Writes the table; the first `left` columns are left-aligned, the rest right-aligned; the last
    /// column is never padded.
    pub fn write(&self, out: &mut dyn Write, left: usize) -> io::Result<()> {
        let header: Vec<&str> = self.header.iter().map(String::as_str).collect();
        write_rows(out, &header, left, || self.rows.iter().map(|row| row.iter().map(|cell| Cell::Text(cell))))
    }
}

/// One cell of a table written by [`write_rows`]: text, or a count written in digits (no separators).
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    /// Text, written as is.
    Text(&'a str),
    /// A number, written in decimal digits.
    Number(u64),
}

impl Cell<'_> {
    /// Its width in characters, as written.
    fn width(self) -> usize {
        match self {
            Cell::Text(text) => text.chars().count(),
            Cell::Number(n) => n.checked_ilog10().map_or(1, |digits| digits as usize + 1),
        }
    }

    /// Appends it to `line`, padded to `width` (left- or right-aligned) or not padded.
    fn push(self, line: &mut String, width: Option<(usize, bool)>) {
        match self {
            Cell::Text(text) => pad(line, text, width),
            Cell::Number(n) => pad(line, n, width),
        }
    }
}

/// Appends `value` to `line`, padded to `width` (left- or right-aligned) or not padded.
fn pad(line: &mut String, value: impl std::fmt::Display, width: Option<(usize, bool)>) {
    use std::fmt::Write as _;
    // Writing to a String never fails.
    let _ = match width {
        None => write!(line, "{value}"),
        Some((w, true)) => write!(line, "{value:<w$}"),
        Some((w, false)) => write!(line, "{value:>w$}"),
    };
}

/// Writes a table with aligned columns without holding it as strings: `rows` is called twice, once to
/// measure the columns and once to write the rows (copying a table of 927,892 findings into strings
/// first cost a quarter of `replay audit`'s wall time on the issue-heavy fleet of 10^7 events). The
/// first `left` columns are left-aligned, the rest right-aligned; the last column is never padded, and
/// no line ends in blanks.
pub fn write_rows<'a, R, I>(out: &mut dyn Write, header: &[&str], left: usize, rows: impl Fn() -> I) -> io::Result<()>
where
    I: Iterator<Item = R>,
    R: IntoIterator<Item = Cell<'a>>,
{
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let last = widths.len().saturating_sub(1);
    let mut line = String::new();
    let mut write_line = |cells: &mut dyn Iterator<Item = Cell<'_>>| -> io::Result<()> {
        line.clear();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                line.push_str("  ");
            }
            let pad = if i == last && i < left { None } else { Some((w, i < left)) };
            cell.push(&mut line, pad);
        }
        out.write_all(line.trim_end().as_bytes())?;
        out.write_all(b"\n")
    };
    write_line(&mut header.iter().map(|h| Cell::Text(h)))?;
    for row in rows() {
        write_line(&mut row.into_iter())?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_separators_and_plurals() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(count(1, "event", "events"), "1 event");
        assert_eq!(count(0, "event", "events"), "0 events");
        assert_eq!(count(12_000, "event", "events"), "12,000 events");
    }

    #[test]
    fn tables_align_pad_and_trim_as_before_streaming() {
        let mut table = Table::new(&["POSITION", "RULE", "DETAIL"]);
        table.push(vec!["7".into(), "dormant".into(), "issued 400 days ago".into()]);
        table.push(vec!["1234567890".into(), "flow_after_stop".into(), String::new()]);
        let mut out = Vec::new();
        table.write(&mut out, 3).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "POSITION    RULE             DETAIL\n7           dormant          issued 400 days ago\n\
             1234567890  flow_after_stop\n"
        );
        // Numbers: right-aligned past `left`, measured in digits, the same as their text.
        let rows = [[Cell::Text("a"), Cell::Number(0)], [Cell::Text("bb"), Cell::Number(12345)]];
        let mut out = Vec::new();
        write_rows(&mut out, &["K", "N"], 1, || rows.iter().copied()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "K       N\na       0\nbb  12345\n");
        let mut table = Table::new(&["K", "N"]);
        table.push(vec!["a".into(), "0".into()]);
        table.push(vec!["bb".into(), "12345".into()]);
        let mut out = Vec::new();
        table.write(&mut out, 1).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "K       N\na       0\nbb  12345\n");
    }
}
