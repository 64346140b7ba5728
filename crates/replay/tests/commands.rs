//! `replay fleet|device|audit|export|prove|consistency` end to end, over the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use ledger::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash};
use ledger::source::{hex, parse_hash};
use ledger::{AppendEvent, Ledger, Source};
use projections::testing::{activated, flag_cleared, flagged, flow, issued, stopped, write_bundle, LogBuilder};
use projections::{Cut, Options};
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};

fn json(out: &std::process::Output) -> Value {
    assert_eq!(code(out), 0, "stderr: {}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn hash(v: &Value) -> Hash {
    parse_hash(v.as_str().unwrap()).unwrap()
}

#[test]
fn fleet_json_matches_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    make_ledger(&ledger);
    let source = Source::open(&ledger).unwrap();
    let fleet = projections::rebuild(&source, Cut::Head, &Options::default()).unwrap();
    let summary = fleet.summary();
    let v = json(&replay_on("fleet", &ledger, &["--format", "json"]));
    assert_eq!(v["position"], source.head.size);
    assert_eq!(v["devices"], 13);
    assert_eq!(v["devices"], summary.total.total);
    assert_eq!(v["status"]["issued"], summary.total.issued);
    assert_eq!(v["status"]["active"], summary.total.active);
    assert_eq!(v["status"]["stopped"], summary.total.stopped);
    assert_eq!(v["status"]["replaced"], 1);
    assert_eq!(v["flagged"], 1);
    assert_eq!(v["contract_expired"], 0);
    assert_eq!(v["by_model"]["XGD-K9"]["stopped"], 3);
    assert_eq!(v["digest"], fleet.digest_hex());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for key in ["position", "devices", "status", "flagged", "contract_expired", "by_model", "digest"] {
        assert!(keys.contains(&key), "missing {key}");
    }
    // The same from a bundle.
    let bundle = dir.path().join("fleet.bundle");
    write_raw_bundle(&bundle, &bodies(&ledger));
    let b = json(&replay_on("fleet", &bundle, &["--format", "json"]));
    assert_eq!(b["digest"], v["digest"]);
}

#[test]
fn fleet_as_of_a_position_and_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogBuilder::new();
    log.append(vec![issued("SN1", 0, "LKL-A8", None)]);
    log.append(vec![issued("SN2", 5, "PAX-A920", None)]);
    log.append(vec![flow("SN1", 6, 10_000), activated("SN1", 6)]);
    log.append(vec![stopped("SN2", 20, ledger::StopReason::Violation, None)]);
    let bundle = dir.path().join("f.bundle");
    write_bundle(&bundle, log.records(), 1).unwrap();
    let at = |n: &str| json(&replay_on("fleet", &bundle, &["--format", "json", "--position", n]));
    assert_eq!(at("0")["devices"], 0);
    assert_eq!(at("1")["devices"], 1);
    assert_eq!(at("1")["position"], 1);
    assert_eq!(at("3")["status"]["active"], 0, "position 3 folds 0..3: the activation is position 3");
    assert_eq!(at("4")["status"]["active"], 1);
    assert_eq!(at("5")["status"]["stopped"], 1);
    let t = |t: &str| json(&replay_on("fleet", &bundle, &["--format", "json", "--as-of", t]));
    assert_eq!(t("2026-01-03T00:00:00Z")["devices"], 1);
    assert_eq!(t("2026-01-06T00:00:00Z")["devices"], 2, "at or before: the second issue is recorded at day 5");
    assert_eq!(t("2026-01-07T00:00:00Z")["position"], 4);
    assert_eq!(t("2025-01-01T00:00:00Z")["position"], 0);
    // Past the end, a bad time, both flags: usage errors.
    assert_eq!(code(&replay_on("fleet", &bundle, &["--position", "99"])), 2);
    assert_eq!(code(&replay_on("fleet", &bundle, &["--as-of", "yesterday"])), 2);
    assert_eq!(code(&replay_on("fleet", &bundle, &["--position", "1", "--as-of", "2026-01-03T00:00:00Z"])), 2);
    // CSV: a header, the fleet row, one row per model.
    let out = replay_on("fleet", &bundle, &["--format", "csv"]);
    let csv = stdout(&out);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "scope,model,devices,issued,active,stopped,replaced,flagged,contract_expired");
    assert_eq!(lines[1], "fleet,,2,0,1,1,0,0,0");
    assert_eq!(lines.len(), 4);
    let table = stdout(&replay_on("fleet", &bundle, &[]));
    assert!(table.contains("digest "), "{table}");
}

#[test]
fn device_history_with_states() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    make_ledger(&ledger);
    let v = json(&replay_on("device", &ledger, &["SN004", "--format", "json"]));
    assert_eq!(v["device"], "SN004");
    let events = v["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["issued", "flow", "flow", "activated", "stopped", "replaced"]);
    assert_eq!(events[2]["state"]["flow_fen"], 11_000);
    assert_eq!(events[3]["state"]["status"], "active");
    assert_eq!(events.last().unwrap()["state"]["status"], "replaced");
    assert_eq!(events.last().unwrap()["event"]["by"], "SN100");
    let positions: Vec<u64> = events.iter().map(|e| e["position"].as_u64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let table = stdout(&replay_on("device", &ledger, &["SN004"]));
    assert!(table.lines().count() >= 7, "{table}");
    assert!(table.contains("replaced") && table.contains("by=SN100"), "{table}");
    // Unknown terminal: exit 1 with one line; a malformed SN: usage error.
    let out = replay_on("device", &ledger, &["SN999"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("SN999"));
    assert_eq!(code(&replay_on("device", &ledger, &["bad sn!"])), 2);
}

#[test]
fn audit_findings_filters_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogBuilder::new();
    log.append(vec![issued("SN1", 0, "LKL-A8", None)]);
    log.append(vec![flow("SN1", 1, 20_000), activated("SN1", 1)]);
    log.append(vec![stopped("SN1", 2, ledger::StopReason::Violation, None)]);
    log.append(vec![flow("SN1", 3, 500)]); // flow after stop: position 4
    log.append(vec![activated("SN1", 4)]); // illegal, position 5: activation of a stopped terminal
    let bundle = dir.path().join("a.bundle");
    write_bundle(&bundle, log.records(), 1).unwrap();
    let v = json(&replay_on("audit", &bundle, &["--format", "json"]));
    let findings = v.as_array().unwrap();
    assert!(findings.iter().any(|f| f["rule"] == "flow_after_stop" && f["position"] == 4 && f["device"] == "SN1"));
    assert!(findings.iter().any(|f| f["rule"] == "illegal_transition" && f["position"] == 5));
    for f in findings {
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{f}");
        for k in ["rule", "device", "position", "detail"] {
            assert!(keys.contains(&k));
        }
    }
    let only = json(&replay_on("audit", &bundle, &["--format", "json", "--rule", "flow_after_stop"]));
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(code(&replay_on("audit", &bundle, &["--fail-on-findings"])), 1);
    assert_eq!(code(&replay_on("audit", &bundle, &[])), 0, "findings are data, not a failure");
    assert_eq!(code(&replay_on("audit", &bundle, &["--rule", "no_such_rule"])), 2);
    let csv = stdout(&replay_on("audit", &bundle, &["--format", "csv"]));
    assert_eq!(csv.lines().next().unwrap(), "position,rule,device,detail");
    assert_eq!(csv.lines().count(), findings.len() + 1);
    // A clean log with --fail-on-findings passes.
    let mut clean = LogBuilder::new();
    clean.append(vec![issued("SN1", 0, "LKL-A8", None)]);
    let clean_bundle = dir.path().join("clean.bundle");
    write_bundle(&clean_bundle, clean.records(), 1).unwrap();
    let out = replay_on("audit", &clean_bundle, &["--fail-on-findings", "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn prove_verifies_with_the_ledger_merkle_module() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let head = make_ledger(&ledger);
    let b = bodies(&ledger);
    for (position, size) in [(0u64, None), (17, None), (head.size - 1, None), (3, Some(4u64)), (20, Some(33))] {
        let mut args = vec!["--position".to_owned(), position.to_string()];
        if let Some(size) = size {
            args.push("--size".into());
            args.push(size.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = replay_on("prove", &ledger, &args);
        let v = json(&out);
        let size = size.unwrap_or(head.size);
        let text = stdout(&out);
        let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap();
        assert!(at("position") < at("size") && at("size") < at("leaf_hash") && at("leaf_hash") < at("root"));
        assert!(at("root") < at("proof"), "fields in the documented order: {text}");
        assert_eq!(v["position"], position);
        assert_eq!(v["size"], size);
        let leaf = hash(&v["leaf_hash"]);
        assert_eq!(leaf, leaf_hash(&b[position as usize]), "leaf_hash is RFC 6962's hash of the stored bytes");
        let root = hash(&v["root"]);
        let expected_root = ledger::merkle::root(&b[..size as usize].iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(root, expected_root);
        let proof: Vec<Hash> = v["proof"].as_array().unwrap().iter().map(hash).collect();
        assert!(verify_inclusion(&leaf, position as usize, size as usize, &proof, &root));
    }
    assert_eq!(code(&replay_on("prove", &ledger, &["--position", &head.size.to_string()])), 2);
    assert_eq!(code(&replay_on("prove", &ledger, &["--position", "1", "--size", "1"])), 2);
    assert_eq!(code(&replay_on("prove", &ledger, &["--position", "0", "--size", &(head.size + 1).to_string()])), 2);
}

#[test]
fn consistency_accepts_prefixes_and_refuses_other_logs() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let head = make_ledger(&ledger);
    let b = bodies(&ledger);
    let leaves: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
    for old in [1usize, 2, 7, 16, 33, head.size as usize] {
        let old_root = ledger::merkle::root(&leaves[..old]);
        let old_s = old.to_string();
        let hex_root = hex(&old_root);
        let v = json(&replay_on("consistency", &ledger, &["--old-size", &old_s, "--old-root", &hex_root, "--json"]));
        assert_eq!(v["consistent"], true);
        assert_eq!(v["size"], head.size);
        let proof: Vec<Hash> = v["proof"].as_array().unwrap().iter().map(hash).collect();
        assert!(verify_consistency(old, head.size as usize, &old_root, &head.root, &proof));
        let text = replay_on("consistency", &ledger, &["--old-size", &old_s, "--old-root", &hex_root]);
        assert_eq!(code(&text), 0);
        assert!(stdout(&text).starts_with("consistent"));
        assert_eq!(stdout(&text).lines().count(), 1 + proof.len());
    }
    // A wrong root, a size past the end, a malformed root.
    let wrong = hex(&ledger::merkle::root(&leaves[..6]));
    let out = replay_on("consistency", &ledger, &["--old-size", "7", "--old-root", &wrong]);
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out).lines().count(), 1);
    let big = (head.size + 1).to_string();
    assert_eq!(code(&replay_on("consistency", &ledger, &["--old-size", &big, "--old-root", &hex(&head.root)])), 1);
    assert_eq!(code(&replay_on("consistency", &ledger, &["--old-size", "3", "--old-root", "zz"])), 2);
}

#[test]
fn export_ndjson_round_trips_to_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let head = make_ledger(&ledger);
    let out_path = dir.path().join("fleet.ndjson");
    let out = replay_on("export", &ledger, &["--format", "ndjson", "--out", out_path.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(text.lines().count() as u64, head.size, "one line per record");
    // Line i is position i.
    let b = bodies(&ledger);
    for (i, line) in text.lines().enumerate() {
        let record = ledger::codec::decode_record(&b[i]).unwrap();
        assert_eq!(line, replay::ndjson::render(&record).unwrap());
    }
    // Append the export into an empty ledger: the same fleet digest.
    let events: Vec<AppendEvent> = text.lines().map(|l| replay::ndjson::parse_line(l).unwrap()).collect();
    let rebuilt = dir.path().join("rebuilt");
    let l = Ledger::open(&rebuilt).unwrap();
    l.append(events).unwrap();
    assert_eq!(l.close().unwrap().index_warning, None);
    let a = json(&replay_on("fleet", &ledger, &["--format", "json"]));
    let b = json(&replay_on("fleet", &rebuilt, &["--format", "json"]));
    assert_eq!(a["digest"], b["digest"]);
    assert_eq!(a, b);
    // Never into the source.
    let inside = ledger.join("export.ndjson");
    let out = replay_on("export", &ledger, &["--format", "ndjson", "--out", inside.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(!inside.exists());
}

#[test]
fn export_csv_has_a_header_and_a_row_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let head = make_ledger(&ledger);
    let out = replay_on("export", &ledger, &["--format", "csv", "--out", "-"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, head.size + 1);
    assert!(lines[0].starts_with("position,version,recorded_at,commit,event_id,type,device,at"));
    let columns = lines[0].split(',').count();
    for (i, line) in lines[1..].iter().enumerate() {
        assert!(line.starts_with(&format!("{i},")), "{line}");
        assert_eq!(line.split(',').count(), columns, "{line}");
    }
    assert!(text.contains(",directive,,"), "the directive row");
}

#[test]
fn broken_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    make_ledger(&ledger);
    for args in [vec!["export", "--format", "ndjson", "--out", "-"], vec!["fleet", "--format", "csv"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
            .arg(args[0])
            .arg(&ledger)
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte, then close the pipe (like `| head -c1`).
        let mut stdout = child.stdout.take().unwrap();
        let mut one = [0u8; 1];
        stdout.read_exact(&mut one).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        assert!(matches!(out.status.code(), Some(0)), "{args:?}: {:?} {}", out.status, stderr(&out));
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for cmd in ["verify", "fleet", "device", "audit", "export", "prove", "consistency"] {
        let out = replay(&[cmd, "--help"]);
        assert_eq!(code(&out), 0);
        assert!(stdout(&out).contains(&format!("replay {cmd} ")), "{cmd}: {}", stdout(&out));
    }
    let out = replay(&["evidence", "check", "--help"]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("replay evidence check ") && stdout(&out).contains("docs/FORMAT.md"),
        "{}",
        stdout(&out)
    );
    let out = replay(&["--help"]);
    assert_eq!(code(&out), 0);
    assert_eq!(code(&replay(&["frobnicate"])), 2);
}

#[test]
fn progress_stays_quiet_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("f.bundle");
    make_bundle(&bundle);
    for cmd in [vec!["verify"], vec!["fleet"], vec!["audit"], vec!["prove", "--position", "3"]] {
        let out = replay_on(cmd[0], &bundle, &cmd[1..]);
        assert_eq!(code(&out), 0);
        assert!(stderr(&out).is_empty(), "{cmd:?}: {}", stderr(&out));
    }
}

#[test]
fn audit_limits_are_configurable_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogBuilder::new();
    log.append(vec![issued("SN1", 0, "LKL-A8", None)]);
    log.append(vec![flow("SN1", 1, 20_000), activated("SN1", 1)]);
    log.append(vec![flagged("SN1", 2, ledger::FlagReason::CashOut)]);
    log.append(vec![flag_cleared("SN1", 12, ledger::FlagReason::CashOut)]); // open for 10 days
    log.append(vec![issued("SN2", 12, "LKL-A8", None)]);
    log.append(vec![flow("SN1", 60, 100)]); // the log ends on day 60: SN2 is 48 days old, never active
    let bundle = dir.path().join("limits.bundle");
    write_bundle(&bundle, log.records(), 1).unwrap();
    let rules = |extra: &[&str]| {
        let mut args = vec!["--format", "json", "--rule", "flag_open_too_long", "--rule", "dormant"];
        args.extend_from_slice(extra);
        let v = json(&replay_on("audit", &bundle, &args));
        let mut names: Vec<String> =
            v.as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    };
    assert!(rules(&[]).is_empty(), "defaults: 30 days for flags, 90 for dormancy");
    assert_eq!(rules(&["--flag-open-days", "5"]), vec!["flag_open_too_long"]);
    assert_eq!(rules(&["--dormant-days", "30"]), vec!["dormant"]);
    assert_eq!(code(&replay_on("audit", &bundle, &["--flag-open-days", "0"])), 2);
}
