//! `replay device`: one terminal's whole history, each event with the state after it.

use crate::error::{output, Error, Failure};
use crate::ndjson;
use crate::text::{count, thousands, Table};
use chrono::{DateTime, SecondsFormat, Utc};
use log::lifecycle::State;
use log::{Sn, Source};
use projections::{history, Cut};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;

/// A terminal's lifecycle state, for output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateView {
    /// `issued`, `active`, `stopped` or `replaced`.
    pub status: &'static str,
    /// `current` or `expired`.
    pub contract: &'static str,
    /// Cumulative recorded flow, in fen.
    pub flow_fen: u64,
    /// The open flags.
    pub flags: Vec<&'static str>,
}

impl From<&State> for StateView {
    fn from(s: &State) -> Self {
        StateView {
            status: s.status.as_str(),
            contract: s.contract.as_str(),
            flow_fen: s.flow_fen,
            flags: s.flags.iter().map(|f| f.as_str()).collect(),
        }
    }
}

/// One event of the terminal's stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceEntry {
    /// Position in the log.
    pub position: u64,
    /// Version in the terminal's stream.
    pub version: u64,
    /// When the ledger recorded it (RFC 3339 UTC).
    pub recorded_at: String,
    /// When it happened (RFC 3339 UTC).
    pub at: String,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The event, exactly as an NDJSON line of docs/NDJSON.md.
    pub event: Value,
    /// The lifecycle rule the event broke, if the rules rejected it (the state is then unchanged).
    pub violation: Option<String>,
    /// The state after the event (`null` while the terminal does not exist).
    pub state: Option<StateView>,
}

/// The JSON shape of `replay device --format json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DeviceReport {
    /// The terminal's SN.
    pub device: String,
    /// Its events in position order.
    pub events: Vec<DeviceEntry>,
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The history of `sn`. A terminal that never appears in the log is a failure naming it.
pub fn device(source: &Source, sn: &Sn) -> Result<DeviceReport, Error> {
    let entries = history(source, sn, Cut::Head)?;
    if entries.is_empty() {
        return Err(Failure {
            path: source.path.clone(),
            position: None,
            what: format!(
                "terminal {sn} does not appear in the log ({})",
                count(source.head.size, "record", "records")
            ),
        }
        .into());
    }
    report_of(sn, entries)
}

/// The report of `sn`'s history from its folded entries ([`projections::history`] over a log, or
/// [`projections::history_of`] over a terminal's evidence): one printer for both.
pub fn report_of(sn: &Sn, entries: Vec<projections::HistoryEntry>) -> Result<DeviceReport, Error> {
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let line = ndjson::render(&entry.record).map_err(|e| Error::Usage(format!("cannot render an event: {e}")))?;
        let event: Value =
            serde_json::from_str(&line).map_err(|e| Error::Usage(format!("cannot render an event: {e}")))?;
        let log::Event::Terminal(e) = &entry.record.event else { continue };
        events.push(DeviceEntry {
            position: entry.record.position,
            version: entry.record.version,
            recorded_at: time(&entry.record.recorded_at),
            at: time(&e.at),
            kind: e.event.type_name(),
            event,
            violation: entry.violation.map(|v| v.to_string()),
            state: entry.state.as_ref().map(StateView::from),
        });
    }
    Ok(DeviceReport { device: sn.to_string(), events })
}

/// The event's own fields as `key=value` words (without device, type and time).
fn details(event: &Value) -> String {
    let Value::Object(map) = event else { return String::new() };
    let mut words = Vec::new();
    for (key, value) in map {
        if matches!(key.as_str(), "device" | "type" | "at") {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| format!("{k}:{}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        words.push(format!("{key}={text}"));
    }
    words.join(" ")
}

impl DeviceReport {
    /// Writes the history as an aligned table for people.
    pub fn write_table(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut table = Table::new(&[
            "POSITION",
            "RECORDED_AT",
            "AT",
            "EVENT",
            "STATUS",
            "CONTRACT",
            "FLOW_FEN",
            "FLAGS",
            "DETAILS",
        ]);
        for e in &self.events {
            let (status, contract, flow, flags) = match &e.state {
                Some(s) => (s.status.to_owned(), s.contract.to_owned(), thousands(s.flow_fen), s.flags.join(",")),
                None => ("-".into(), "-".into(), "-".into(), String::new()),
            };
            let mut detail = details(&e.event);
            if let Some(v) = &e.violation {
                detail = format!("REJECTED: {v}; {detail}");
            }
            table.push(vec![
                e.position.to_string(),
                e.recorded_at.clone(),
                e.at.clone(),
                e.kind.to_owned(),
                status,
                contract,
                flow,
                if flags.is_empty() { "-".into() } else { flags },
                detail,
            ]);
        }
        let mut write = || -> std::io::Result<()> {
            writeln!(out, "terminal {}: {}", self.device, count(self.events.len() as u64, "event", "events"))?;
            table.write(out, 9)
        };
        write().map_err(output("-"))
    }
}
