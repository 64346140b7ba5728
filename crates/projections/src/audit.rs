//! Audit rules: projections whose output is findings, never errors.
//!
//! Rules met while folding (they depend on the state *before* an event) are recorded by the fold:
//! `flow_after_stop`, `flow_after_replacement`, `flow_while_contract_expired`, `activation_without_flow`,
//! `illegal_transition`, `flag_open_too_long` for a flag cleared too late, and the two about an event's
//! place in its terminal's history (`observe_history`): `event_before_issue` and `repeated_expiry`.
//! Rules about the end of the log are computed from the folded state by [`end_of_log`]:
//! `directive_not_enforced`, `dormant`, `replacement_mismatch`, and `flag_open_too_long` for a flag
//! still open. The end of the log is the event time of the last record folded.

use crate::fleet::{Fleet, Terminal};
use log::lifecycle::{ContractState, Status};
use log::{FlagReason, Sn, TerminalEvent};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// Default limit for an open flag: 30 days.
pub const DEFAULT_FLAG_OPEN_LIMIT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default age after which a never-activated terminal is dormant: 90 days.
pub const DEFAULT_DORMANT_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);

/// Audit settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// A flag open longer than this is a finding (default 30 days).
    pub flag_open_limit: Duration,
    /// A terminal issued longer than this before the end of the log and never activated is dormant
    /// (default 90 days).
    pub dormant_after: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { flag_open_limit: DEFAULT_FLAG_OPEN_LIMIT, dormant_after: DEFAULT_DORMANT_AFTER }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// An audit rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rule {
    /// Flow recorded on a stopped terminal.
    FlowAfterStop,
    /// Flow recorded on a replaced terminal.
    FlowAfterReplacement,
    /// Flow recorded while the contract is expired.
    FlowWhileContractExpired,
    /// `activated` before 100 yuan of cumulative flow.
    ActivationWithoutFlow,
    /// A terminal of a directive's models not stopped at its deadline (or at the end of the log).
    DirectiveNotEnforced,
    /// A flag open longer than the limit.
    FlagOpenTooLong,
    /// The two sides of a replacement do not name each other.
    ReplacementMismatch,
    /// Issued long before the end of the log and never activated.
    Dormant,
    /// An event the lifecycle rules reject (the fold goes on; the state is unchanged).
    IllegalTransition,
    /// An event dated (`at`) earlier than the `issued` of its terminal. Accepted on write (events are
    /// observations and may arrive late or with a wrong clock), reported here.
    EventBeforeIssue,
    /// A `contract_expired` while the contract is already expired, with no renewal since the earlier
    /// expiry. Accepted on write (it changes nothing), reported here.
    RepeatedExpiry,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 11] = [
        Rule::FlowAfterStop,
        Rule::FlowAfterReplacement,
        Rule::FlowWhileContractExpired,
        Rule::ActivationWithoutFlow,
        Rule::DirectiveNotEnforced,
        Rule::FlagOpenTooLong,
        Rule::ReplacementMismatch,
        Rule::Dormant,
        Rule::IllegalTransition,
        Rule::EventBeforeIssue,
        Rule::RepeatedExpiry,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::FlowAfterStop => "flow_after_stop",
            Rule::FlowAfterReplacement => "flow_after_replacement",
            Rule::FlowWhileContractExpired => "flow_while_contract_expired",
            Rule::ActivationWithoutFlow => "activation_without_flow",
            Rule::DirectiveNotEnforced => "directive_not_enforced",
            Rule::FlagOpenTooLong => "flag_open_too_long",
            Rule::ReplacementMismatch => "replacement_mismatch",
            Rule::Dormant => "dormant",
            Rule::IllegalTransition => "illegal_transition",
            Rule::EventBeforeIssue => "event_before_issue",
            Rule::RepeatedExpiry => "repeated_expiry",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding: data, not an error.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Finding {
    /// Position of the record that is the evidence.
    pub position: u64,
    /// The rule.
    pub rule: Rule,
    /// The terminal (`None` for a finding about the directives stream, e.g. a directive id reused).
    pub device: Option<Sn>,
    /// The evidence, in words.
    pub detail: String,
}

/// What the audit tracks per terminal, beside the fleet state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTerm {
    /// Position of the `issued` event.
    pub issued_position: u64,
    /// Event time of the first accepted stop, microseconds.
    pub stopped_at: Option<i64>,
    /// Whether it was ever activated.
    pub ever_active: bool,
    /// For each flag reason (by [`FlagReason`] order): when (microseconds) and where it was opened.
    pub flag_since: [Option<(i64, u64)>; 6],
}

fn flag_slot(reason: FlagReason) -> usize {
    FlagReason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}

pub(crate) fn flag_opened(term: &mut AuditTerm, reason: FlagReason, at: i64, position: u64) {
    if let Some(slot) = term.flag_since.get_mut(flag_slot(reason)) {
        // A flag raised again while open keeps its first opening: it has been open since then.
        slot.get_or_insert((at, position));
    }
}

pub(crate) fn flag_closed(
    term: &mut AuditTerm,
    reason: FlagReason,
    at: i64,
    config: &AuditConfig,
) -> Option<(i64, u64)> {
    let since = term.flag_since.get_mut(flag_slot(reason))?.take()?;
    (at.saturating_sub(since.0) > micros(config.flag_open_limit)).then_some(since)
}

fn days(us: i64) -> String {
    format!("{:.1} days", us as f64 / 86_400e6)
}

pub(crate) fn describe_flag_cleared(reason: FlagReason, since: (i64, u64), at: i64) -> String {
    format!("{reason} flag opened at position {} was open {} before it was cleared", since.1, days(at - since.0))
}

fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339()).unwrap_or_else(|| us.to_string())
}

/// Where a terminal's history begins: the time (microseconds) and position of its `issued`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IssuedAt {
    pub at: i64,
    pub position: u64,
}

/// The rules about an event's place in its terminal's history, for an event of a terminal already
/// issued (`issued`; nothing for the first `issued` itself) in contract state `contract` just before it:
///
/// - `event_before_issue`: the event is dated before the `issued` (any event, accepted or rejected:
///   the date is wrong either way);
/// - `repeated_expiry`: an accepted `contract_expired` while the contract is already expired (a
///   `contract_renewed` in between makes it current again, so the state alone says "no renewal
///   between").
pub(crate) fn observe_history(
    issued: IssuedAt,
    contract: ContractState,
    event: &TerminalEvent,
    at: i64,
    accepted: bool,
    emit: &mut dyn FnMut(Rule, String),
) {
    if at < issued.at {
        emit(
            Rule::EventBeforeIssue,
            format!(
                "{} dated {} is {} before the terminal was issued ({}, position {})",
                event.type_name(),
                time(at),
                days(issued.at - at),
                time(issued.at),
                issued.position
            ),
        );
    }
    if accepted && matches!(event, TerminalEvent::ContractExpired) && contract == ContractState::Expired {
        emit(Rule::RepeatedExpiry, "contract_expired on a contract already expired, with no renewal since".into());
    }
}

/// The findings about the end of the log, computed from a fleet built with audit.
pub fn end_of_log(fleet: &Fleet, config: &AuditConfig) -> Vec<Finding> {
    use rayon::prelude::*;
    let Some(end) = fleet.end_at else { return Vec::new() };
    // model id -> directives naming it
    let mut by_model: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, d) in fleet.directives.list.iter().enumerate() {
        for model in &d.models {
            if let Some(id) = fleet.names.models.id(model) {
                by_model.entry(id).or_default().push(i);
            }
        }
    }
    let limit = micros(config.flag_open_limit);
    let dormant = micros(config.dormant_after);
    let mut out: Vec<Finding> = fleet
        .partitions
        .par_iter()
        .flat_map_iter(|p| {
            let mut found = Vec::new();
            for (sn, slot) in &p.index {
                let Some(t) = p.terminals.get(*slot as usize) else { continue };
                let device = || sn.to_sn();
                terminal_end_rules(
                    fleet,
                    sn.as_str(),
                    t,
                    end,
                    limit,
                    dormant,
                    &by_model,
                    &mut |rule, position, detail| found.push(Finding { position, rule, device: device(), detail }),
                );
            }
            found
        })
        .collect();
    out.par_sort_unstable();
    out
}

#[allow(clippy::too_many_arguments)]
fn terminal_end_rules(
    fleet: &Fleet,
    sn: &str,
    t: &Terminal,
    end: i64,
    limit: i64,
    dormant: i64,
    by_model: &HashMap<u32, Vec<usize>>,
    emit: &mut dyn FnMut(Rule, u64, String),
) {
    let Some(audit) = &t.audit else { return };
    for (reason, since) in FlagReason::ALL.iter().zip(&audit.flag_since) {
        if let Some((at, position)) = since {
            if end.saturating_sub(*at) > limit {
                emit(Rule::FlagOpenTooLong, *position, format!("{reason} flag still open after {}", days(end - at)));
            }
        }
    }
    if t.state.status == Status::Issued && !audit.ever_active && end.saturating_sub(t.issued_at) > dormant {
        emit(
            Rule::Dormant,
            audit.issued_position,
            format!("issued {} before the end of the log and never activated", days(end - t.issued_at)),
        );
    }
    if let Some(links) = &t.links {
        if let Some((new, position)) = &links.replaced_by {
            let back = fleet.terminal(new.as_str()).and_then(|n| n.links.as_ref()).and_then(|l| l.replaces.as_ref());
            if back.map(|(old, _)| old.as_str()) != Some(sn) {
                emit(
                    Rule::ReplacementMismatch,
                    *position,
                    format!("replaced by {new}, but {new} does not name {sn} as the terminal it replaces"),
                );
            }
        }
        if let Some((old, position)) = &links.replaces {
            let back = fleet.terminal(old.as_str()).and_then(|o| o.links.as_ref()).and_then(|l| l.replaced_by.as_ref());
            if back.map(|(new, _)| new.as_str()) != Some(sn) {
                emit(
                    Rule::ReplacementMismatch,
                    *position,
                    format!("issued to replace {old}, but {old} is not replaced by {sn}"),
                );
            }
        }
    }
    for d in by_model.get(&t.model).into_iter().flatten().filter_map(|i| fleet.directives.list.get(*i)) {
        // Checked at the deadline, or at the end of the log when there is none or it is later.
        let check_at = d.deadline.map_or(end, |deadline| deadline.min(end));
        let existed = t.issued_at <= check_at;
        let stopped = audit.stopped_at.is_some_and(|at| at <= check_at);
        let model = fleet.names.models.get(t.model).unwrap_or("?");
        if existed && !stopped {
            let when = if d.deadline.is_some_and(|dl| dl <= end) { "its deadline" } else { "the end of the log" };
            emit(
                Rule::DirectiveNotEnforced,
                d.position,
                format!("directive {} lists model {model}; terminal not stopped by {when} ({})", d.id, time(check_at)),
            );
        } else if matches!(t.state.status, Status::Issued | Status::Active) && t.issued_at > check_at {
            // Issued after the deadline (a recalled model put into service anyway) and never stopped:
            // still running at the end of the log.
            emit(
                Rule::DirectiveNotEnforced,
                d.position,
                format!(
                    "directive {} lists model {model}; terminal issued {} after its deadline and still running at the end of the log",
                    d.id,
                    time(t.issued_at)
                ),
            );
        }
    }
}
