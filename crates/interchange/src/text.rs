//! Small text helpers for the table and CSV outputs, and for counts printed to people.

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

/// Quotes a CSV field when it needs it (RFC 4180: fields holding a comma, quote, CR or LF are quoted,
/// quotes doubled). A field starting with `=`, `+`, `-` or `@` is left as is: the values are data,
/// and the numbers (negative never occur) must stay numbers.
pub fn csv_field(field: &str) -> std::borrow::Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\"")).into()
    } else {
        field.into()
    }
}

/// Writes one CSV row (CRLF-free: `\n` line ends, which every spreadsheet reads).
pub fn csv_row<S: AsRef<str>>(out: &mut dyn Write, fields: &[S]) -> io::Result<()> {
    let mut line = String::with_capacity(128);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&csv_field(f.as_ref()));
    }
    line.push('\n');
    out.write_all(line.as_bytes())
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
