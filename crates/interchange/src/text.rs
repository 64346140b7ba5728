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
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let last = widths.len().saturating_sub(1);
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i > 0 {
                    line.push_str("  ");
                }
                if i == last && i < left {
                    line.push_str(cell);
                } else if i < left {
                    line.push_str(&format!("{cell:<w$}"));
                } else {
                    line.push_str(&format!("{cell:>w$}"));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
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
}
