//! `replay fleet`: the fleet summary as of a position or a time, with its digest.

use crate::error::{output, Error};
use crate::text::{count, thousands, CsvWriter, Table};
use log::Source;
use projections::{Counts, Cut, Options};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// Terminals by lifecycle status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    /// Status issued.
    pub issued: u64,
    /// Status active.
    pub active: u64,
    /// Status stopped.
    pub stopped: u64,
    /// Status replaced.
    pub replaced: u64,
}

impl From<&Counts> for StatusCounts {
    fn from(c: &Counts) -> Self {
        StatusCounts { issued: c.issued, active: c.active, stopped: c.stopped, replaced: c.replaced }
    }
}

/// The fleet as of a cut: the JSON shape of `replay fleet --format json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FleetReport {
    /// Records folded (positions `0..position`).
    pub position: u64,
    /// Terminals.
    pub devices: u64,
    /// Terminals by status.
    pub status: StatusCounts,
    /// Terminals with at least one open flag, whatever their status.
    pub flagged: u64,
    /// Terminals whose contract is expired, whatever their status.
    pub contract_expired: u64,
    /// Terminals by model code and status.
    pub by_model: BTreeMap<String, StatusCounts>,
    /// The fleet digest: SHA-256 over the sorted, canonically encoded terminal states.
    pub digest: String,
    /// Every count by model, including flagged and contract expired (table and CSV output).
    #[serde(skip)]
    pub model_counts: BTreeMap<String, Counts>,
}

/// Folds the log up to `cut` (in parallel) and summarises the fleet.
pub fn fleet(source: &Source, cut: Cut) -> Result<FleetReport, Error> {
    let fleet = projections::rebuild(source, cut, &Options::default())?;
    let summary = fleet.summary();
    Ok(FleetReport {
        position: summary.position,
        devices: summary.total.total,
        status: StatusCounts::from(&summary.total),
        flagged: summary.total.flagged,
        contract_expired: summary.total.contract_expired,
        by_model: summary.by_model.iter().map(|(m, c)| (m.clone(), StatusCounts::from(c))).collect(),
        digest: fleet.digest_hex(),
        model_counts: summary.by_model,
    })
}

impl FleetReport {
    /// The rows of the CSV and the table; `number` writes each count (plain for CSV, with thousands
    /// separators for people).
    fn rows(&self, number: fn(u64) -> String) -> Vec<[String; 9]> {
        let row = |scope: &str, model: &str, total: u64, s: &StatusCounts, flagged: u64, expired: u64| {
            [
                scope.to_owned(),
                model.to_owned(),
                number(total),
                number(s.issued),
                number(s.active),
                number(s.stopped),
                number(s.replaced),
                number(flagged),
                number(expired),
            ]
        };
        let mut rows = vec![row("fleet", "", self.devices, &self.status, self.flagged, self.contract_expired)];
        for (model, c) in &self.model_counts {
            rows.push(row("model", model, c.total, &StatusCounts::from(c), c.flagged, c.contract_expired));
        }
        rows
    }

    /// Writes the report as CSV: a header row, one row for the fleet (`scope` = `fleet`), one row per
    /// model (`scope` = `model`).
    pub fn write_csv(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut write = || -> std::io::Result<()> {
            let mut csv = CsvWriter::new(&mut *out);
            csv.row(CSV_HEADER)?;
            for row in self.rows(|n| n.to_string()) {
                csv.row(&row)?;
            }
            csv.finish()
        };
        write().map_err(output("-"))
    }

    /// Writes the report as an aligned table for people.
    pub fn write_table(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut write = || -> std::io::Result<()> {
            let s = &self.status;
            writeln!(
                out,
                "fleet after {}: {} (issued {}, active {}, stopped {}, replaced {}); flagged {}; contract expired {}",
                count(self.position, "record", "records"),
                count(self.devices, "terminal", "terminals"),
                thousands(s.issued),
                thousands(s.active),
                thousands(s.stopped),
                thousands(s.replaced),
                thousands(self.flagged),
                thousands(self.contract_expired)
            )?;
            writeln!(out, "digest {}", self.digest)?;
            writeln!(out)?;
            let mut table =
                Table::new(&["MODEL", "DEVICES", "ISSUED", "ACTIVE", "STOPPED", "REPLACED", "FLAGGED", "EXPIRED"]);
            for row in self.rows(thousands).into_iter().skip(1) {
                table.push(row.get(1..).unwrap_or_default().to_vec());
            }
            table.write(out, 1)
        };
        write().map_err(output("-"))
    }
}

const CSV_HEADER: [&str; 9] =
    ["scope", "model", "devices", "issued", "active", "stopped", "replaced", "flagged", "contract_expired"];
