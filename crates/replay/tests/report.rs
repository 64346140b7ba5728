//! `replay report`: the HTML is well-formed and self-contained, every chart is there, its numbers
//! are those of `replay fleet --as-of` and `replay audit --as-of` for the same cuts, two runs give the
//! same bytes, and bad input fails with one clear line (exit 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// The tests write files (the ledgers they report on); the library never does.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A small simulated ledger (24 months, a directive, every kind of event), made once per test.
fn sim_ledger(dir: &Path) -> PathBuf {
    let path = dir.join("ledger");
    let options = ledger::Options { durability: ledger::Durability::Relaxed, ..ledger::Options::default() };
    let ledger = ledger::Ledger::open_with(&path, options).unwrap();
    let config = sim::Config { devices: 400, months: 24, seed: 11, batch_events: 400, ..sim::Config::default() };
    sim::run(&ledger, &config, &mut |_| {}).unwrap();
    assert_eq!(ledger.close().unwrap().index_warning, None);
    path
}

fn report(source: &Path, out: &Path, rest: &[&str]) -> std::process::Output {
    let mut args = vec!["--out", out.to_str().unwrap()];
    args.extend_from_slice(rest);
    replay_on("report", source, &args)
}

fn json(o: &std::process::Output) -> Value {
    assert_eq!(code(o), 0, "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn attr(node: roxmltree::Node<'_, '_>, name: &str) -> String {
    node.attribute(name).unwrap_or_else(|| panic!("{name} missing on {:?}", node.tag_name())).to_owned()
}

fn num(node: roxmltree::Node<'_, '_>, name: &str) -> u64 {
    attr(node, name).parse().unwrap()
}

fn by_id<'a, 'i>(doc: &'a roxmltree::Document<'i>, id: &str) -> Option<roxmltree::Node<'a, 'i>> {
    doc.descendants().find(|n| n.attribute("id") == Some(id))
}

/// Rows of the table `id` that carry `data_attr`.
fn rows<'a, 'i>(doc: &'a roxmltree::Document<'i>, id: &str, data_attr: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    let table = by_id(doc, id).unwrap_or_else(|| panic!("no #{id}"));
    table.descendants().filter(|n| n.has_tag_name("tr") && n.attribute(data_attr).is_some()).collect()
}

#[test]
fn the_report_is_well_formed_self_contained_and_its_numbers_are_replays() {
    let dir = tempfile::tempdir().unwrap();
    let source = sim_ledger(dir.path());
    let out = dir.path().join("report.html");
    let o = report(&source, &out, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("wrote the report"), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .expect("the report is well-formed XHTML");

    // Self-contained: no script, no external reference of any kind.
    for node in doc.descendants().filter(|n| n.is_element()) {
        assert!(!node.has_tag_name("script") && !node.has_tag_name("link") && !node.has_tag_name("img"));
        for a in node.attributes() {
            assert!(!["src", "href"].contains(&a.name()), "{} on {:?}", a.name(), node.tag_name());
            assert!(!a.name().starts_with("on"), "event handler {}", a.name());
        }
    }
    assert!(!html.contains("url("), "CSS fetches nothing");

    // Every chart and table is there.
    for id in [
        "header",
        "chart-fleet",
        "data-months",
        "chart-activations",
        "chart-flow",
        "chart-dormant",
        "dormant-share",
        "chart-stops",
        "findings-heatmap",
        "table-providers",
        "table-models",
        "table-regions",
    ] {
        assert!(by_id(&doc, id).is_some(), "#{id} missing");
    }
    let charts = doc.descendants().filter(|n| n.has_tag_name("svg")).count();
    assert!(charts >= 5, "{charts} charts");

    // Month ends: the fleet of each equals `replay fleet --as-of` that time, and the dormant count
    // `replay audit --as-of` that time.
    let months = rows(&doc, "data-months", "data-as-of");
    assert!(months.len() >= 24, "{} month rows", months.len());
    let picks = [0, months.len() / 3, months.len() / 2, months.len() - 2, months.len() - 1];
    for i in picks {
        let row = months[i];
        let as_of = attr(row, "data-as-of");
        let fleet = json(&replay_on("fleet", &source, &["--as-of", &as_of, "--format", "json"]));
        assert_eq!(num(row, "data-position"), fleet["position"].as_u64().unwrap(), "{as_of}");
        assert_eq!(num(row, "data-devices"), fleet["devices"].as_u64().unwrap(), "{as_of}");
        for status in ["issued", "active", "stopped", "replaced"] {
            assert_eq!(
                num(row, &format!("data-{status}")),
                fleet["status"][status].as_u64().unwrap(),
                "{as_of} {status}"
            );
        }
        assert_eq!(num(row, "data-flagged"), fleet["flagged"].as_u64().unwrap(), "{as_of}");
        assert_eq!(num(row, "data-contract-expired"), fleet["contract_expired"].as_u64().unwrap(), "{as_of}");
        let dormant = json(&replay_on("audit", &source, &["--as-of", &as_of, "--rule", "dormant", "--format", "json"]));
        assert_eq!(num(row, "data-dormant"), dormant.as_array().unwrap().len() as u64, "{as_of}");
    }
    // Not a flat line: the fleet grows and some of it stops.
    assert!(num(months[0], "data-devices") < num(months[months.len() - 1], "data-devices"));
    let stops: u64 = months.iter().map(|r| num(*r, "data-stops-violation") + num(*r, "data-stops-model-recall")).sum();
    assert!(stops > 0);
    // New terminals per month add up to the fleet, and activations to those ever activated.
    let issued: u64 = months.iter().map(|r| num(*r, "data-new")).sum();
    assert_eq!(issued, num(months[months.len() - 1], "data-devices"));

    // Findings by rule: those of `replay audit`.
    let findings = json(&replay_on("audit", &source, &["--format", "json"]));
    let findings = findings.as_array().unwrap();
    let heat = rows(&doc, "findings-heatmap", "data-rule");
    assert_eq!(heat.len(), 11);
    for row in heat {
        let rule = attr(row, "data-rule");
        let expected = findings.iter().filter(|f| f["rule"] == rule.as_str()).count() as u64;
        assert_eq!(num(row, "data-count"), expected, "{rule}");
        let cells: u64 =
            row.children().filter(|c| c.attribute("data-provider").is_some()).map(|c| num(c, "data-count")).sum();
        assert_eq!(cells, expected, "{rule}: the providers' cells add up");
    }
    assert!(findings.iter().any(|f| f["rule"] == "dormant"), "the sim plants dormant terminals");
    // Each rule's examples are its first findings, with the command that shows each terminal.
    let dormant_examples = rows(&doc, "examples-table-dormant", "data-sn");
    assert!(!dormant_examples.is_empty());
    let first = findings.iter().find(|f| f["rule"] == "dormant").unwrap();
    assert_eq!(attr(dormant_examples[0], "data-sn"), first["device"].as_str().unwrap());
    assert!(html.contains(&format!("replay device {} {}", source.display(), first["device"].as_str().unwrap())));

    // Directives: the not-enforced count is the audit's, and is the running at the deadline plus
    // those issued after it.
    let not_enforced = findings.iter().filter(|f| f["rule"] == "directive_not_enforced").count() as u64;
    let directives: Vec<_> =
        doc.descendants().filter(|n| n.has_tag_name("h3") && n.attribute("data-not-enforced").is_some()).collect();
    assert!(!directives.is_empty(), "the sim records a directive");
    assert_eq!(directives.iter().map(|d| num(*d, "data-not-enforced")).sum::<u64>(), not_enforced);
    for d in &directives {
        assert_eq!(num(*d, "data-running-at-deadline") + num(*d, "data-issued-after"), num(*d, "data-not-enforced"));
    }
    assert!(by_id(&doc, "chart-directive-0").is_some());
    assert!(!rows(&doc, "data-directive-0", "data-day").is_empty());

    // Tables: the providers' terminals add up to the fleet's.
    let fleet = json(&replay_on("fleet", &source, &["--format", "json"]));
    let providers: u64 = rows(&doc, "table-providers", "data-devices").iter().map(|r| num(*r, "data-devices")).sum();
    assert_eq!(providers, fleet["devices"].as_u64().unwrap());
    let models: u64 = rows(&doc, "table-models", "data-devices").iter().map(|r| num(*r, "data-devices")).sum();
    assert_eq!(models, fleet["devices"].as_u64().unwrap());
    assert!(html.contains(fleet["digest"].as_str().unwrap()), "the header names the fleet digest");

    // Deterministic: a second run gives the same bytes; the time it was made is the data's.
    let again = dir.path().join("again.html");
    assert_eq!(code(&report(&source, &again, &[])), 0);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let given = dir.path().join("given.html");
    assert_eq!(code(&report(&source, &given, &["--generated-at", "2027-01-05T10:00:00Z"])), 0);
    let given = std::fs::read_to_string(&given).unwrap();
    assert!(given.contains("2027-01-05T10:00:00Z (--generated-at)"));
    assert_ne!(given, html);
}

#[test]
fn a_report_as_of_a_time_reports_that_cut() {
    let dir = tempfile::tempdir().unwrap();
    let source = sim_ledger(dir.path());
    let out = dir.path().join("h1.html");
    let as_of = "2025-06-15T00:00:00Z";
    let o = report(&source, &out, &["--as-of", as_of]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .unwrap();
    let months = rows(&doc, "data-months", "data-as-of");
    let last = months.last().unwrap();
    assert_eq!(attr(*last, "data-as-of"), as_of);
    assert_eq!(months.len(), 6, "January to May, then the cut");
    let fleet = json(&replay_on("fleet", &source, &["--as-of", as_of, "--format", "json"]));
    assert_eq!(num(*last, "data-position"), fleet["position"].as_u64().unwrap());
    assert_eq!(num(*last, "data-devices"), fleet["devices"].as_u64().unwrap());
    assert!(html.contains(fleet["digest"].as_str().unwrap()));
    let findings = json(&replay_on("audit", &source, &["--as-of", as_of, "--format", "json"]));
    let heat = rows(&doc, "findings-heatmap", "data-rule");
    let total: u64 = heat.iter().map(|r| num(*r, "data-count")).sum();
    assert_eq!(total, findings.as_array().unwrap().len() as u64);
}

#[test]
fn bad_input_fails_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.plb");
    make_bundle(&source);
    let one_line = |o: &std::process::Output, needle: &str| {
        assert_eq!(code(o), 2, "{}", stderr(o));
        let err = stderr(o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("replay: ") && err.contains(needle), "{err}");
    };
    // The source itself, and a path inside a ledger folder.
    one_line(&report(&source, &source, &[]), "");
    let ledger_dir = dir.path().join("ledger");
    make_ledger(&ledger_dir);
    let before = snapshot(&ledger_dir);
    one_line(&report(&ledger_dir, &ledger_dir.join("report.html"), &[]), "inside");
    assert_eq!(snapshot(&ledger_dir), before, "nothing written into the source");
    // A folder that does not exist.
    one_line(&report(&source, &dir.path().join("missing/report.html"), &[]), "missing");
    // Before the first record (the legal fleet is recorded now, so any past time is before it).
    let out = dir.path().join("early.html");
    one_line(&report(&source, &out, &["--as-of", "2001-01-01T00:00:00Z"]), "before the first record");
    assert!(!out.exists());
    // Not a time.
    let o = report(&source, &out, &["--as-of", "yesterday"]);
    assert_eq!(code(&o), 2);
}

/// Regression test for the review of bf61956 (records folded as soon as their pairing is decided): a
/// month's counts come from each record's own recorded_at, not from when the fold reached it. In a
/// hand-made log whose append straddles a month end, a flow queued behind a replacement half (its
/// partner recorded in the next month) is counted in its own month, as `replay fleet --as-of` the month
/// end folds it.
#[test]
fn a_record_is_counted_in_the_month_of_its_recorded_at_even_behind_a_waiting_replacement() {
    use projections::testing::{day, flow, issued, replaced, stopped, write_bundle, LogBuilder};
    let mut log = LogBuilder::new();
    log.append_at(day(1), vec![issued("A", 1, "M1", None), issued("OLD", 1, "M1", None)]);
    log.append_at(day(2), vec![stopped("OLD", 2, ledger::StopReason::Upgrade, None)]);
    // One append: the replaced half and a flow recorded on 31 January, the issued half and another flow
    // recorded on 1 February (only a hand-made log can do this).
    log.append_at(
        day(30),
        vec![replaced("OLD", 30, "NEW"), flow("A", 30, 700), issued("NEW", 31, "M1", Some("OLD")), flow("A", 31, 500)],
    );
    let mut records = log.into_records();
    for r in records.iter_mut().filter(|r| r.position >= 5) {
        r.recorded_at = day(31);
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("log.plb");
    write_bundle(&bundle, &records, 7).unwrap();
    let source = ledger::Source::open(&bundle).unwrap();
    let data = replay::report::data::gather(&source, &replay::report::ReportOptions::default(), &mut |_| {}).unwrap();
    let flows: Vec<(String, u64)> = data.months.iter().map(|m| (m.label.clone(), m.flow_fen)).collect();
    assert_eq!(flows, vec![("2026-01".to_owned(), 700), ("2026-02".to_owned(), 500)]);
}
