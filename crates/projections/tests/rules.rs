//! One small hand-written log per audit rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

use ledger::{Event, FlagReason, Source, StopReason};
use projections::testing::*;
use projections::{audit, AuditConfig, Cut, Finding, Options, Rule};

fn findings_of(appends: Vec<Vec<Event>>, config: AuditConfig) -> Vec<Finding> {
    let mut log = LogBuilder::new();
    for events in appends {
        log.append(events);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.bundle");
    write_bundle(&path, log.records(), 7).unwrap();
    let source = Source::open(&path).unwrap();
    let parallel = audit(&source, Cut::Head, config, &Options { chunk_records: 2, ..Options::default() }).unwrap();
    let sequential = projections::rebuild_sequential(&source, Cut::Head, Some(config)).unwrap().findings().unwrap();
    assert_eq!(parallel, sequential, "parallel and sequential audits differ");
    parallel
}

fn only(findings: &[Finding], rule: Rule) -> Vec<(Option<String>, u64)> {
    findings.iter().filter(|f| f.rule == rule).map(|f| (f.device.as_ref().map(|d| d.to_string()), f.position)).collect()
}

fn dev(s: &str, p: u64) -> (Option<String>, u64) {
    (Some(s.to_owned()), p)
}

#[test]
fn flow_after_stop() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None)],
            vec![flow("A", 1, 500)],
            vec![stopped("A", 2, StopReason::Violation, None)],
            vec![flow("A", 3, 700)],
        ],
        AuditConfig::default(),
    );
    assert_eq!(only(&f, Rule::FlowAfterStop), vec![dev("A", 3)]);
    assert!(only(&f, Rule::IllegalTransition).is_empty(), "flow is an observation, always legal: {f:?}");
}

#[test]
fn flow_after_replacement() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None)],
            vec![stopped("A", 1, StopReason::Upgrade, None)],
            vec![replaced("A", 2, "B"), issued("B", 2, "M1", Some("A"))],
            vec![flow("A", 3, 100)],
        ],
        AuditConfig::default(),
    );
    assert_eq!(only(&f, Rule::FlowAfterReplacement), vec![dev("A", 4)]);
    assert!(only(&f, Rule::FlowAfterStop).is_empty());
    assert!(only(&f, Rule::ReplacementMismatch).is_empty());
}

#[test]
fn flow_while_contract_expired() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None)],
            vec![contract_expired("A", 1)],
            vec![flow("A", 2, 100)],
            vec![contract_renewed("A", 3)],
            vec![flow("A", 4, 100)],
        ],
        AuditConfig::default(),
    );
    assert_eq!(only(&f, Rule::FlowWhileContractExpired), vec![dev("A", 2)]);
}

#[test]
fn activation_without_flow() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None), flow("A", 0, 9_999)],
            vec![activated("A", 1)],
            vec![flow("A", 2, 1)],
            vec![activated("A", 3)],
        ],
        AuditConfig::default(),
    );
    assert_eq!(only(&f, Rule::ActivationWithoutFlow), vec![dev("A", 2)]);
    // The rules reject it too, and the fold goes on: the second activation is legal.
    assert_eq!(only(&f, Rule::IllegalTransition), vec![dev("A", 2)]);
}

#[test]
fn directive_not_enforced() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None), issued("B", 0, "M1", None), issued("C", 0, "M2", None)],
            vec![issued("E", 0, "M3", None)],
            vec![directive("D1", 10, &["M1"], Some(20)), directive("D2", 10, &["M3"], None)],
            vec![stopped("A", 15, StopReason::ModelRecall, Some("D1"))],
            // B is stopped, but only after the deadline.
            vec![stopped("B", 25, StopReason::ModelRecall, Some("D1"))],
            // F, of the recalled model M1, is put into service after the deadline and never stopped;
            // G likewise, but it is stopped before the log ends.
            vec![issued("F", 30, "M1", None), issued("G", 30, "M1", None)],
            vec![stopped("G", 35, StopReason::ModelRecall, Some("D1"))],
            vec![flow("C", 40, 1)],
        ],
        AuditConfig::default(),
    );
    // B missed D1's deadline (directive at position 4); E is never stopped under D2 (end of log); F is
    // still running at the end of the log.
    assert_eq!(only(&f, Rule::DirectiveNotEnforced), vec![dev("B", 4), dev("F", 4), dev("E", 5)]);
}

#[test]
fn flag_open_too_long() {
    let config = AuditConfig { flag_open_limit: std::time::Duration::from_secs(10 * 86_400), ..AuditConfig::default() };
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None)],
            vec![flagged("A", 1, FlagReason::CashOut)],
            vec![flagged("A", 2, FlagReason::Relocation)],
            vec![flag_cleared("A", 5, FlagReason::Relocation)],
            vec![flag_cleared("A", 20, FlagReason::CashOut)],
            vec![flagged("A", 21, FlagReason::CodeJumping)],
            vec![flow("A", 40, 1)],
        ],
        config,
    );
    // Cash-out cleared after 19 days (evidence: the clear); code jumping still open after 19 days.
    assert_eq!(only(&f, Rule::FlagOpenTooLong), vec![dev("A", 4), dev("A", 5)]);
    // With the default 30 days, nothing.
    let f = findings_of(
        vec![vec![issued("A", 0, "M1", None)], vec![flagged("A", 1, FlagReason::CashOut)], vec![flow("A", 25, 1)]],
        AuditConfig::default(),
    );
    assert!(only(&f, Rule::FlagOpenTooLong).is_empty());
}

#[test]
fn replacement_mismatch() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None)],
            // A is not stopped: its `replaced` is rejected, B's `issued` is accepted and names A.
            vec![replaced("A", 1, "B"), issued("B", 1, "M1", Some("A"))],
        ],
        AuditConfig::default(),
    );
    assert_eq!(only(&f, Rule::IllegalTransition), vec![dev("A", 1)]);
    assert_eq!(only(&f, Rule::ReplacementMismatch), vec![dev("B", 2)]);
}

#[test]
fn dormant() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None), issued("B", 0, "M1", None), issued("C", 50, "M1", None)],
            vec![flow("B", 1, 10_000), activated("B", 1)],
            vec![flow("C", 100, 1)],
        ],
        AuditConfig::default(),
    );
    // A: 100 days, never activated. B: activated. C: 50 days only.
    assert_eq!(only(&f, Rule::Dormant), vec![dev("A", 0)]);
}

#[test]
fn illegal_transition() {
    let f = findings_of(
        vec![
            vec![flow("GHOST", 0, 1)],
            vec![issued("A", 0, "M1", None)],
            vec![issued("A", 1, "M1", None)],
            vec![stopped("A", 2, StopReason::ModelRecall, Some("NOPE"))],
            vec![flag_cleared("A", 3, FlagReason::Other)],
            vec![directive("D1", 4, &["M1"], None)],
            vec![directive("D1", 5, &["M2"], None)],
            // Unpaired replacement: issued naming a terminal not replaced in the same append.
            vec![issued("B", 6, "M1", Some("A"))],
            vec![activated("A", 7)],
        ],
        AuditConfig::default(),
    );
    let illegal: Vec<_> = f.iter().filter(|f| f.rule == Rule::IllegalTransition).map(|f| f.position).collect();
    assert_eq!(illegal, vec![0, 2, 3, 4, 6, 7, 8]);
    let directive_finding = f.iter().find(|f| f.position == 6).unwrap();
    assert_eq!(directive_finding.device, None);
    assert!(directive_finding.detail.contains("already recorded"), "{directive_finding:?}");
}

#[test]
fn a_rejected_event_leaves_the_state_unchanged() {
    let mut log = LogBuilder::new();
    log.append(vec![issued("A", 0, "M1", None)]);
    log.append(vec![activated("A", 1)]);
    log.append(vec![stopped("A", 2, StopReason::ModelRecall, None)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_bundle(&path, log.records(), 1).unwrap();
    let source = Source::open(&path).unwrap();
    let fleet = projections::rebuild(&source, Cut::Head, &Options::default()).unwrap();
    let before = projections::rebuild(&source, Cut::Position(1), &Options::default()).unwrap();
    assert_eq!(fleet.illegal_events(), 2);
    assert_eq!(fleet.terminal("A").unwrap().state, before.terminal("A").unwrap().state);
    assert_eq!(fleet.digest_hex(), before.digest_hex());
}

#[test]
fn event_before_issue() {
    let f = findings_of(
        vec![
            vec![issued("A", 10, "M1", None)],
            vec![flow("A", 3, 500)],
            vec![flow("A", 10, 500)],
            vec![contract_expired("A", 9)],
            // Rejected (already issued) and dated before the issue: both findings.
            vec![issued("A", 2, "M1", None)],
            vec![flow("A", 11, 500)],
        ],
        AuditConfig::default(),
    );
    // An event at the issue's own time is not before it.
    assert_eq!(only(&f, Rule::EventBeforeIssue), vec![dev("A", 1), dev("A", 3), dev("A", 4)]);
    assert_eq!(only(&f, Rule::IllegalTransition), vec![dev("A", 4)]);
    let detail = &f.iter().find(|f| f.rule == Rule::EventBeforeIssue).unwrap().detail;
    assert_eq!(
        detail,
        "flow dated 2026-01-04T00:00:00+00:00 is 7.0 days before the terminal was issued (2026-01-11T00:00:00+00:00, position 0)"
    );
    // The flow itself is still folded (an observation).
    assert!(only(&f, Rule::FlowAfterStop).is_empty());
}

#[test]
fn repeated_expiry() {
    let f = findings_of(
        vec![
            vec![issued("A", 0, "M1", None)],
            vec![contract_expired("A", 1)],
            vec![contract_expired("A", 2)],
            vec![contract_renewed("A", 3)],
            vec![contract_expired("A", 4)],
            vec![flow("A", 5, 1), contract_expired("A", 5)],
            vec![stopped("A", 6, StopReason::Upgrade, None)],
            vec![replaced("A", 7, "B"), issued("B", 7, "M1", Some("A"))],
            // Rejected on a replaced terminal: an illegal transition, not a repeated expiry.
            vec![contract_expired("A", 8)],
        ],
        AuditConfig::default(),
    );
    // The second expiry in a row; after the renewal the first is fine, the one after it is not.
    assert_eq!(only(&f, Rule::RepeatedExpiry), vec![dev("A", 2), dev("A", 6)]);
    assert_eq!(only(&f, Rule::IllegalTransition), vec![dev("A", 10)]);
    let detail = &f.iter().find(|f| f.rule == Rule::RepeatedExpiry).unwrap().detail;
    assert_eq!(detail, "contract_expired on a contract already expired, with no renewal since");
}
