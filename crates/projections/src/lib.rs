//! # posledger-projections: read models folded from the log
//!
//! Folds records, in position order, into the fleet read model ([`Fleet`]: one compact state per
//! terminal, directives, summary), rebuilt in parallel ([`rebuild()`]), as of a position or a time
//! ([`Cut`]), streamed past chosen times in one pass ([`stream`]), saved as checkpoints and caught up
//! from them ([`checkpoint`]), compared with one line
//! ([`digest`]), and audited ([`audit`]); plus one terminal's history ([`history()`]).
//!
//! ## Invariants, written as absences
//! - Projections never write to the ledger: no API here appends, and nothing opens a segment for
//!   writing. The only file written is a checkpoint, on request, beside the log ([`checkpoint::save`]);
//!   [`testing`] writes fresh bundles for tests, never a ledger.
//! - There is no second copy of the lifecycle rules: every terminal event goes through
//!   [`log::lifecycle::apply`] (replacement pairing through `check_pairs`, directives through
//!   `check_directive`) inside one function, `fold::step`.
//! - No result depends on the number of threads: partitions, chunks and batches are fixed by the data
//!   and the options, and interned ids follow first appearance in position order.
//! - No illegal event stops a fold or changes a state: it is counted and, with audit on, reported.
//! - No finding is an error, and no error is a finding.
//! - No code path that input can reach calls `unwrap`, `expect` or indexes without a bound.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![warn(missing_docs)]

pub mod audit;
pub mod checkpoint;
pub mod digest;
pub mod fleet;
mod fold;
pub mod history;
pub mod intern;
pub mod rebuild;
pub mod stream;
pub mod testing;

pub use audit::{AuditConfig, Finding, Rule};
pub use checkpoint::{rebuild_from_checkpoint, Checkpoint, CheckpointError, Start};
pub use fleet::{Counts, Fleet, Memory, Summary, Terminal, TerminalView};
pub use history::{history, history_of, HistoryEntry};
pub use rebuild::{rebuild, rebuild_sequential, rebuild_with_phases, Cut, Options, Phases, RebuildError, MAX_THREADS};

impl Fleet {
    /// Every finding, sorted by position: those met while folding and those about the end of the log.
    /// `None` when the fleet was built without audit.
    pub fn findings(&self) -> Option<Vec<Finding>> {
        let log = self.audit.as_ref()?;
        Some(self.with_end_of_log(log.findings.clone(), &log.config))
    }

    /// [`findings`](Self::findings), consuming the fleet: the findings met while folding are moved,
    /// not copied (on the issue-heavy fleet of 10^7 events, most of its 927,892 findings and their texts).
    pub fn into_findings(mut self) -> Option<Vec<Finding>> {
        let folded = std::mem::take(&mut self.audit.as_mut()?.findings);
        let config = self.audit.as_ref()?.config;
        Some(self.with_end_of_log(folded, &config))
    }

    /// `folded` (the findings met while folding) and those about the end of the log, in their one order.
    /// The end-of-log rules read the terminals and directives, never the folded findings.
    fn with_end_of_log(&self, mut folded: Vec<Finding>, config: &AuditConfig) -> Vec<Finding> {
        folded.extend(audit::end_of_log(self, config));
        sort_findings(&mut folded);
        folded
    }
}

/// Findings in their one order (position, then rule, terminal and text), sorted on every core.
fn sort_findings(findings: &mut [Finding]) {
    use rayon::slice::ParallelSliceMut;
    findings.par_sort_unstable();
    debug_assert!(findings.is_sorted(), "findings are sorted");
}

/// Rebuilds with the audit rules and returns every finding, sorted by position.
pub fn audit(
    source: &log::Source,
    cut: Cut,
    config: AuditConfig,
    options: &Options,
) -> Result<Vec<Finding>, RebuildError> {
    let fleet = rebuild(source, cut, &options.audit(config))?;
    Ok(fleet.into_findings().unwrap_or_default())
}
