//! `replay audit`: the audit rules' findings, as data.

use crate::error::{output, Error};
use crate::text::{count, thousands, write_rows, Cell, CsvWriter};
use log::Source;
use projections::{AuditConfig, Cut, Options, Rule};
use serde::Serialize;
use std::io::Write;

/// One finding, in the JSON shape of `replay audit --format json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FindingView {
    /// The rule's snake_case name.
    pub rule: &'static str,
    /// The terminal (`null` for a finding about the directives stream).
    pub device: Option<String>,
    /// Position of the record that is the evidence.
    pub position: u64,
    /// The evidence, in words.
    pub detail: String,
    /// The ledger the finding is in (many-source audits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_id: Option<String>,
    /// The other ledger of a finding across sources (`one_sn_one_binding`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_ledger_id: Option<String>,
    /// The position of the evidence in the other ledger (`one_sn_one_binding`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_position: Option<u64>,
}

/// Parses rule names; an unknown name is a usage error listing the known ones.
pub fn parse_rules(names: &[String]) -> Result<Vec<Rule>, Error> {
    names
        .iter()
        .map(|name| {
            Rule::parse(name).ok_or_else(|| {
                Error::Usage(format!(
                    "unknown rule {name:?} (known rules: {})",
                    Rule::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })
        })
        .collect()
}

/// Every finding of the log up to `cut`, sorted by position; only those of `rules` when it is not empty.
pub fn audit(source: &Source, cut: Cut, rules: &[Rule], config: AuditConfig) -> Result<Vec<FindingView>, Error> {
    let findings = projections::audit(source, cut, config, &Options::default())?;
    Ok(findings
        .into_iter()
        .filter(|f| rules.is_empty() || rules.contains(&f.rule))
        .map(|f| FindingView {
            rule: f.rule.as_str(),
            device: f.device.map(|d| d.to_string()),
            position: f.position,
            detail: f.detail,
            ledger_id: None,
            other_ledger_id: None,
            other_position: None,
        })
        .collect())
}

/// Writes findings as CSV with a header row.
pub fn write_csv(findings: &[FindingView], out: &mut dyn Write) -> Result<(), Error> {
    let mut write = || -> std::io::Result<()> {
        let mut csv = CsvWriter::new(&mut *out);
        csv.row(["position", "rule", "device", "detail"])?;
        for f in findings {
            let position = f.position.to_string();
            csv.row([position.as_str(), f.rule, f.device.as_deref().unwrap_or(""), f.detail.as_str()])?;
        }
        csv.finish()
    };
    write().map_err(output("-"))
}

/// Writes findings as an aligned table, with a count per rule (streamed: no copy of the findings).
pub fn write_table(findings: &[FindingView], out: &mut dyn Write) -> Result<(), Error> {
    let mut write = || -> std::io::Result<()> {
        if findings.is_empty() {
            return writeln!(out, "no findings");
        }
        let rows = || {
            findings.iter().map(|f| {
                let device = f.device.as_deref().unwrap_or("-");
                [Cell::Number(f.position), Cell::Text(f.rule), Cell::Text(device), Cell::Text(&f.detail)]
            })
        };
        write_rows(out, &["POSITION", "RULE", "DEVICE", "DETAIL"], 4, rows)?;
        writeln!(out)?;
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for f in findings {
            *counts.entry(f.rule).or_default() += 1;
        }
        let by_rule: Vec<String> = counts.iter().map(|(r, n)| format!("{r}: {}", thousands(*n as u64))).collect();
        writeln!(out, "{} ({})", count(findings.len() as u64, "finding", "findings"), by_rule.join(", "))
    };
    write().map_err(output("-"))
}
