//! The operator CLI's fleet summary and audit counts, from the `projections` crate.
//!
//! [`fleet_summary`] is the one place the CLI asks for fleet numbers: it rebuilds the fleet projection
//! in parallel with the audit rules on ([`projections::rebuild`]) and flattens what the demo prints into
//! a [`FleetSummary`]. Callers only use [`FleetSummary`], so the projection behind it can change freely.

use ledger::Source;
use projections::{AuditConfig, Cut, Options, RebuildError, Rule};
use std::collections::BTreeMap;

/// Fleet counts and audit findings as of the end of a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Records folded.
    pub records: u64,
    /// Terminals ever issued.
    pub devices: u64,
    /// Terminals by lifecycle status, in the order issued, active, stopped, replaced.
    pub by_status: [u64; 4],
    /// Terminals with at least one open flag, whatever their status.
    pub flagged: u64,
    /// Terminals whose contract is expired, whatever their status.
    pub contract_expired: u64,
    /// Terminals by provider: (issued, active, stopped, replaced).
    pub by_provider: BTreeMap<String, [u64; 4]>,
    /// Directives recorded.
    pub directives: u64,
    /// Records the rules refuse (a well-formed ledger has none; replay's audit explains them).
    pub illegal: u64,
    /// Audit findings by rule name, every rule listed (0 when none).
    pub findings: BTreeMap<&'static str, u64>,
    /// The fleet digest (SHA-256 over the sorted device states), as `replay fleet` prints it.
    pub digest: String,
}

/// Rebuilds the fleet of `source` (in parallel, audit on, default audit settings) and summarizes it.
/// `progress` gets the number of records folded once the rebuild is done.
pub fn fleet_summary(source: &Source, progress: &mut dyn FnMut(u64)) -> Result<FleetSummary, RebuildError> {
    let fleet = projections::rebuild(source, Cut::Head, &Options::default().audit(AuditConfig::default()))?;
    let summary = fleet.summary();
    let counts = |c: &projections::Counts| [c.issued, c.active, c.stopped, c.replaced];
    let mut findings: BTreeMap<&'static str, u64> = Rule::ALL.iter().map(|r| (r.as_str(), 0)).collect();
    for finding in fleet.findings().unwrap_or_default() {
        *findings.entry(finding.rule.as_str()).or_default() += 1;
    }
    progress(summary.position);
    Ok(FleetSummary {
        records: summary.position,
        devices: summary.total.total,
        by_status: counts(&summary.total),
        flagged: summary.total.flagged,
        contract_expired: summary.total.contract_expired,
        by_provider: summary.by_provider.iter().map(|(p, c)| (p.clone(), counts(c))).collect(),
        directives: fleet.directives().list().len() as u64,
        illegal: fleet.illegal_events(),
        findings,
        digest: projections::digest::digest_hex(&fleet),
    })
}
