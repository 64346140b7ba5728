//! `replay export`: every record, one line each, in position order (line i is position i).
//!
//! NDJSON lines are exactly the docs/NDJSON.md schema ([`crate::ndjson::render`]), so appending an export
//! into an empty ledger rebuilds a fleet with the same digest. CSV has a header row and one row per
//! record, with one column per field of any event type (empty where a type has no such field).

use crate::error::{output, Error};
use crate::ndjson;
use crate::text::CsvWriter;
use chrono::{DateTime, SecondsFormat, Utc};
use log::{Event, Record, Source, TerminalEvent};
use std::io::Write;
use std::path::Path;

/// The export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// One docs/NDJSON.md JSON object a line.
    Ndjson,
    /// A header row, then one row a record.
    Csv,
}

/// The CSV columns.
pub const CSV_COLUMNS: [&str; 25] = [
    "position",
    "version",
    "recorded_at",
    "commit",
    "event_id",
    "type",
    "device",
    "at",
    "model",
    "merchant",
    "provider",
    "region",
    "contract_id",
    "contract_start",
    "contract_end",
    "replaces",
    "amount_fen",
    "transactions",
    "reason",
    "note",
    "directive",
    "by",
    "models",
    "deadline",
    "directive_reason",
];

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One record as CSV fields, in [`CSV_COLUMNS`] order.
pub fn csv_fields(record: &Record) -> [String; 25] {
    let mut f: [String; 25] = Default::default();
    let mut set = |column: &str, value: String| {
        if let Some(i) = CSV_COLUMNS.iter().position(|c| *c == column) {
            if let Some(slot) = f.get_mut(i) {
                *slot = value;
            }
        }
    };
    set("position", record.position.to_string());
    set("version", record.version.to_string());
    set("recorded_at", time(&record.recorded_at));
    set("commit", record.commit.to_string());
    set("event_id", record.event_id.as_ref().map(|e| e.to_string()).unwrap_or_default());
    set("type", record.event.type_name().to_owned());
    set("at", time(&record.event.at()));
    match &record.event {
        Event::Directive(d) => {
            set("directive", d.id.to_string());
            set("models", d.models.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(";"));
            set("deadline", d.deadline.as_ref().map(time).unwrap_or_default());
            set("directive_reason", d.reason.to_string());
        }
        Event::Terminal(e) => {
            set("device", e.device.to_string());
            match &e.event {
                TerminalEvent::Issued(i) => {
                    set("model", i.model.to_string());
                    set("merchant", i.merchant.to_string());
                    set("provider", i.provider.to_string());
                    set("region", i.region.to_string());
                    set("contract_id", i.contract.id.to_string());
                    set("contract_start", time(&i.contract.start));
                    set("contract_end", time(&i.contract.end));
                    set("replaces", i.replaces.as_ref().map(|s| s.to_string()).unwrap_or_default());
                }
                TerminalEvent::Flow { amount_fen, transactions } => {
                    set("amount_fen", amount_fen.to_string());
                    set("transactions", transactions.to_string());
                }
                TerminalEvent::ContractRenewed { contract } => {
                    set("contract_id", contract.id.to_string());
                    set("contract_start", time(&contract.start));
                    set("contract_end", time(&contract.end));
                }
                TerminalEvent::Flagged { reason, note } | TerminalEvent::FlagCleared { reason, note } => {
                    set("reason", reason.as_str().to_owned());
                    set("note", note.to_string());
                }
                TerminalEvent::Stopped { reason, directive } => {
                    set("reason", reason.as_str().to_owned());
                    set("directive", directive.as_ref().map(|d| d.to_string()).unwrap_or_default());
                }
                TerminalEvent::Replaced { by } => set("by", by.to_string()),
                TerminalEvent::Activated | TerminalEvent::ContractExpired => {}
            }
        }
    }
    f
}

/// Writes every record of `source` to `out` in `format`; `out_path` names the output in errors.
/// Returns the number of records written. `progress` gets the records written so far.
pub fn export(
    source: &Source,
    format: Format,
    out: &mut dyn Write,
    out_path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Error> {
    let io = |e| output(out_path)(e);
    /// Where the rows go: through the CSV writer, or NDJSON lines straight to the output.
    enum Sink<'a> {
        Csv(Box<CsvWriter<&'a mut dyn Write>>),
        Ndjson(&'a mut dyn Write),
    }
    let mut sink = match format {
        Format::Csv => {
            let mut csv = CsvWriter::new(out);
            csv.row(CSV_COLUMNS).map_err(io)?;
            Sink::Csv(Box::new(csv))
        }
        Format::Ndjson => Sink::Ndjson(out),
    };
    let mut written = 0u64;
    for record in source.records(0) {
        let record = record?;
        match &mut sink {
            Sink::Ndjson(out) => {
                let line = ndjson::render(&record)
                    .map_err(|e| Error::Usage(format!("position {}: cannot render: {e}", record.position)))?;
                out.write_all(line.as_bytes()).map_err(io)?;
                out.write_all(b"\n").map_err(io)?;
            }
            Sink::Csv(csv) => csv.row(csv_fields(&record)).map_err(io)?,
        }
        written += 1;
        if written.is_multiple_of(65_536) {
            progress(written);
        }
    }
    match sink {
        Sink::Csv(csv) => csv.finish().map_err(io)?,
        Sink::Ndjson(out) => out.flush().map_err(io)?,
    }
    progress(written);
    Ok(written)
}

/// Writes every record of several sources (each named by its ledger id) to `out` as one CSV: a
/// leading `source` column (the ledger id) before [`CSV_COLUMNS`], the sources one after the other in
/// the order given, each in position order. Returns the records written. (NDJSON is one ledger's
/// append stream, so several sources export as CSV or Parquet only.)
pub fn export_many_csv(
    sources: &[crate::many::Named<'_>],
    out: &mut dyn Write,
    out_path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Error> {
    let io = |e| output(out_path)(e);
    let mut csv = CsvWriter::new(out);
    let mut header = vec!["source"];
    header.extend(CSV_COLUMNS);
    csv.row(&header).map_err(io)?;
    let mut written = 0u64;
    let n = sources.len();
    for (i, s) in sources.iter().enumerate() {
        for record in s.source.records(0) {
            let record = record.map_err(|e| crate::many::in_source(i, n, s, e.into()))?;
            let fields = csv_fields(&record);
            let row = std::iter::once(s.ledger_id).chain(fields.iter().map(String::as_str));
            csv.row(row).map_err(io)?;
            written += 1;
            if written.is_multiple_of(65_536) {
                progress(written);
            }
        }
    }
    csv.finish().map_err(io)?;
    progress(written);
    Ok(written)
}
