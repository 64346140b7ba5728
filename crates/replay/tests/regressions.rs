//! Regression tests, one per bug, named for the bug (what must now happen).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use ledger::StopReason;
use projections::testing::{contract_expired, flow, issued, stopped, write_bundle, LogBuilder};
use replay::ndjson::{parse_line, LineError};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};

const FLOW: &str = r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":100,"transactions":3}"#;

fn refusal(line: &str) -> String {
    parse_line(line).expect_err(line).to_string()
}

#[test]
fn duplicate_json_key_is_refused() {
    // The last value used to win: the line recorded 999999 fen.
    let line = FLOW.replace(r#""amount_fen":100"#, r#""amount_fen":100,"amount_fen":999999"#);
    assert_eq!(parse_line(&line), Err(LineError::DuplicateField("amount_fen".into())));
    assert_eq!(refusal(&line), "duplicate field `amount_fen`");
    // A second `device` used to move the event to another terminal.
    let moved = FLOW.replace(r#""type":"flow""#, r#""type":"flow","device":"SN2""#);
    assert_eq!(refusal(&moved), "duplicate field `device`");
    // Even with the same value twice.
    let same = FLOW.replace(r#""transactions":3"#, r#""transactions":3,"transactions":3"#);
    assert_eq!(refusal(&same), "duplicate field `transactions`");
    assert_eq!(refusal(&FLOW.replace(r#""type":"flow""#, r#""type":"flow","type":"flow""#)), "duplicate field `type`");
}

#[test]
fn duplicate_json_key_is_refused_at_every_nesting_level() {
    let issued = r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000","contract":{"id":"C1","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}"#;
    assert!(parse_line(issued).is_ok());
    let nested = issued.replace(r#""end":"2027"#, r#""end":"2028-01-01T00:00:00Z","end":"2027"#);
    assert_eq!(refusal(&nested), "duplicate field `contract.end`");
    // Inside an unknown field, and inside arrays: refused as a duplicate before anything else.
    let deep = FLOW.replace(r#""transactions":3"#, r#""transactions":3,"x":[1,{"a":{"b":1,"b":2}}]"#);
    assert_eq!(refusal(&deep), "duplicate field `x[1].a.b`");
    // A duplicate never hides the other checks of a line that has none.
    let unknown = FLOW.replace(r#""transactions":3"#, r#""transactions":3,"colour":"red""#);
    assert!(refusal(&unknown).contains("unknown field `colour`"), "{}", refusal(&unknown));
    assert!(refusal(r#"{"device":"SN1","type":"flow""#).starts_with("malformed JSON"));
}

#[test]
fn out_of_range_number_names_the_field() {
    let big = FLOW.replace(r#""transactions":3"#, r#""transactions":4294967296"#);
    assert_eq!(refusal(&big), "field `transactions` must be at most 4,294,967,295, got 4294967296");
    let max = FLOW.replace(r#""transactions":3"#, r#""transactions":4294967295"#);
    assert!(parse_line(&max).is_ok());
    let past_u64 = FLOW.replace(r#""amount_fen":100"#, r#""amount_fen":18446744073709551616"#);
    let err = refusal(&past_u64);
    assert!(err.starts_with("field `amount_fen` must be at most 18,446,744,073,709,551,615, got "), "{err}");
    let version = FLOW.replace(r#""transactions":3"#, r#""transactions":3,"expected_version":99999999999999999999"#);
    assert!(refusal(&version).starts_with("field `expected_version` must be at most"), "{}", refusal(&version));
    // Within u64 but over the flow limit: the model's limit, naming the field.
    let over = FLOW.replace(r#""amount_fen":100"#, r#""amount_fen":1000000000001"#);
    assert!(refusal(&over).contains("amount_fen"), "{}", refusal(&over));
}

#[test]
fn empty_model_list_is_refused_as_a_count() {
    let line = r#"{"type":"directive","id":"D1","at":"2026-07-01T00:00:00Z","models":[],"reason":"r"}"#;
    assert_eq!(refusal(line), "field `models` must list 1 to 10,000 model codes, got 0");
    let models: Vec<String> = (0..10_001).map(|i| format!("\"M{i}\"")).collect();
    let long = line.replace("[]", &format!("[{}]", models.join(",")));
    assert_eq!(refusal(&long), "field `models` must list 1 to 10,000 model codes, got 10,001");
}

#[test]
fn byte_order_mark_is_named() {
    assert_eq!(parse_line(&format!("\u{feff}{FLOW}")), Err(LineError::ByteOrderMark));
}

// ---- replay, the binary ----

/// Exit code 2 and one line on stderr.
fn usage_error(o: &Output) -> String {
    assert_eq!(code(o), 2, "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn export(source: &Path, out: &Path) -> Output {
    replay_on("export", source, &["--format", "ndjson", "--out", s(out)])
}

/// The NDJSON export of `source` on standard output.
fn ndjson(source: &Path) -> Vec<u8> {
    let o = replay_on("export", source, &["--format", "ndjson", "--out", "-"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    o.stdout
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().expect("mkfifo").success());
}

/// A bundle of a simulated fleet of more than 1,000 records.
fn big_bundle(path: &Path) -> u64 {
    let mut log = LogBuilder::new();
    for batch in sim::Simulator::new(&sim::Config::about_events(1_500, 100, 3)).unwrap() {
        let (at, events) = batch.unwrap().into_append().unwrap();
        log.append_at(at, events.into_iter().map(|e| e.event).collect());
        if log.records().len() >= 1_200 {
            break;
        }
    }
    assert!(log.records().len() > 1_000);
    write_bundle(path, log.records(), 7).unwrap().size
}

#[test]
fn export_to_dev_null_keeps_the_character_device() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.bundle");
    make_bundle(&bundle);
    // A private device node first (when we may make one), so that a regression replaces that one.
    let private = dir.path().join("null");
    if Command::new("mknod").arg(&private).args(["c", "1", "3"]).status().is_ok_and(|st| st.success()) {
        let o = export(&bundle, &private);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(std::fs::symlink_metadata(&private).unwrap().file_type().is_char_device());
    }
    let before = std::fs::symlink_metadata("/dev/null").unwrap();
    let o = export(&bundle, Path::new("/dev/null"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let after = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device(), "/dev/null is no longer a character device");
    assert_eq!((before.ino(), before.rdev()), (after.ino(), after.rdev()));
}

#[test]
fn export_to_a_fifo_writes_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    make_ledger(&ledger);
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = export(&ledger, &fifo);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(reader.join().unwrap(), ndjson(&ledger));
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
}

#[test]
fn export_to_a_symlink_is_refused_and_the_link_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.bundle");
    make_bundle(&bundle);
    let target = dir.path().join("precious.txt");
    std::fs::write(&target, "precious").unwrap();
    let link = dir.path().join("link.ndjson");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = usage_error(&export(&bundle, &link));
    assert!(err.starts_with(&format!("replay: {}: is a symbolic link", link.display())), "{err}");
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}

#[test]
fn export_inside_the_source_is_refused_and_the_source_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    make_ledger(&ledger);
    let bundle = dir.path().join("fleet.bundle");
    make_bundle(&bundle);
    let before = (snapshot(&ledger), snapshot(&bundle));
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(&ledger, &alias).unwrap();
    let hard = dir.path().join("hard-link.bundle");
    std::fs::hard_link(&bundle, &hard).unwrap();
    let cases = [
        (&ledger, segments(&ledger)[0].clone(), "is inside the source ledger"),
        (&ledger, ledger.join("fleet.ndjson"), "is inside the source ledger"),
        (&ledger, ledger.join("segments").join("..").join("HEAD"), "is inside the source ledger"),
        (&ledger, alias.join("segments").join("new.ndjson"), "is inside the source ledger"),
        (&bundle, bundle.clone(), "is the source bundle itself"),
        (&bundle, dir.path().join("ledger").join("..").join("fleet.bundle"), "is the source bundle itself"),
        (&bundle, hard.clone(), "is the source bundle itself"),
    ];
    for (source, out, why) in cases {
        let err = usage_error(&export(source, &out));
        assert!(err.contains(why), "{}: {err}", out.display());
        assert!((snapshot(&ledger), snapshot(&bundle)) == before, "{}: the source changed", out.display());
    }
}

#[test]
fn stale_temp_files_of_a_killed_export_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.bundle");
    make_bundle(&bundle);
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let stale = format!(".out.ndjson.tmp-{dead}");
    let kept = [format!(".out.ndjson.tmp-{live}"), format!(".other.tmp-{dead}"), format!(".out.ndjson.tmp-{dead}0x")];
    for name in std::iter::once(&stale).chain(&kept) {
        std::fs::write(dir.path().join(name), "leftover").unwrap();
    }
    let out = dir.path().join("out.ndjson");
    assert_eq!(code(&export(&bundle, &out)), 0);
    assert!(!dir.path().join(&stale).exists(), "the dead export's temporary file is still there");
    for name in &kept {
        assert_eq!(std::fs::read_to_string(dir.path().join(name)).unwrap(), "leftover", "{name}");
    }
    assert_eq!(std::fs::read(&out).unwrap(), ndjson(&bundle));
}

#[test]
fn verify_of_a_folder_that_is_not_a_ledger_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("notledger");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("thesis.tex"), "x").unwrap();
    let expected =
        format!("replay: {}: not a posledger ledger (no segments/ folder) and not a bundle\n", folder.display());
    for cmd in ["verify", "fleet", "audit"] {
        assert_eq!(usage_error(&replay_on(cmd, &folder, &[])), expected, "{cmd}");
    }
}

#[test]
fn prove_in_a_log_of_size_0_says_it_has_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.bundle");
    make_bundle(&bundle);
    let err = usage_error(&replay_on("prove", &bundle, &["--position", "5", "--size", "0"]));
    assert_eq!(err, "replay: position 5 is not in the log: the log of size 0 has no records\n");
    let err = usage_error(&replay_on("prove", &bundle, &["--position", "5", "--size", "1"]));
    assert_eq!(err, "replay: position 5 is not in the log: the log of size 1 holds position 0 only\n");
    let err = usage_error(&replay_on("prove", &bundle, &["--position", "5", "--size", "3"]));
    assert_eq!(err, "replay: position 5 is not in the log: the log of size 3 holds positions 0 to 2\n");
}

#[test]
fn counts_are_singular_for_one_and_grouped_by_thousands() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.bundle");
    let mut log = LogBuilder::new();
    log.append(vec![issued("SN1", 0, "M1", None)]);
    log.append(vec![stopped("SN1", 1, StopReason::Violation, None)]);
    log.append(vec![flow("SN1", 2, 100)]);
    write_bundle(&one, log.records(), 1).unwrap();
    let v = stdout(&replay_on("verify", &one, &[]));
    assert!(v.starts_with("verified 3 records, root "), "{v}");
    let table = stdout(&replay_on("device", &one, &["SN1"]));
    assert!(table.starts_with("terminal SN1: 3 events\n"), "{table}");
    let audit = stdout(&replay_on("audit", &one, &["--rule", "flow_after_stop"]));
    assert!(audit.ends_with("\n1 finding (flow_after_stop: 1)\n"), "{audit}");
    let o = replay_on("audit", &one, &["--rule", "flow_after_stop", "--fail-on-findings"]);
    assert_eq!(stderr(&o), "replay: 1 finding (--fail-on-findings)\n");
    let fleet = stdout(&replay_on("fleet", &one, &["--position", "1"]));
    assert!(fleet.starts_with("fleet after 1 record: 1 terminal (issued 1,"), "{fleet}");
    let single = dir.path().join("single.bundle");
    write_bundle(&single, &log.records()[..1], 1).unwrap();
    assert!(stdout(&replay_on("verify", &single, &[])).starts_with("verified 1 record, root "));
    let o = replay_on("export", &single, &["--format", "csv", "--out", s(&dir.path().join("one.csv"))]);
    assert_eq!(stderr(&o), format!("replay: exported 1 record to {}\n", dir.path().join("one.csv").display()));

    let big = dir.path().join("big.bundle");
    let size = big_bundle(&big);
    let grouped = replay::text::thousands(size);
    assert!(grouped.contains(','), "{grouped}");
    let v = stdout(&replay_on("verify", &big, &[]));
    assert!(v.starts_with(&format!("verified {grouped} records, root ")), "{v}");
    let fleet = stdout(&replay_on("fleet", &big, &[]));
    assert!(fleet.starts_with(&format!("fleet after {grouped} records: ")), "{fleet}");
    // JSON and CSV keep plain numbers.
    assert!(stdout(&replay_on("verify", &big, &["--json"])).contains(&format!("\"records\":{size},")));
    let csv = stdout(&replay_on("fleet", &big, &["--format", "csv"]));
    assert!(!csv.lines().nth(1).unwrap().contains('"'), "{csv}");
}

#[test]
fn audit_lists_events_before_issue_and_repeated_expiries() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("a.bundle");
    let mut log = LogBuilder::new();
    log.append(vec![issued("SN1", 10, "M1", None)]);
    log.append(vec![flow("SN1", 3, 500)]); // position 1: dated 7 days before the issue
    log.append(vec![contract_expired("SN1", 20)]);
    log.append(vec![contract_expired("SN1", 21)]); // position 3: already expired
    write_bundle(&bundle, log.records(), 1).unwrap();
    let o =
        replay_on("audit", &bundle, &["--format", "json", "--rule", "event_before_issue", "--rule", "repeated_expiry"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let findings: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let found: Vec<(&str, u64)> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["rule"].as_str().unwrap(), f["position"].as_u64().unwrap()))
        .collect();
    assert_eq!(found, [("event_before_issue", 1), ("repeated_expiry", 3)]);
    let table = stdout(&replay_on("audit", &bundle, &[]));
    assert!(table.contains("event_before_issue: 1") && table.contains("repeated_expiry: 1"), "{table}");
    let help = stdout(&replay(&["audit", "--help"]));
    assert!(help.contains("event_before_issue") && help.contains("repeated_expiry"), "{help}");
}
