//! The operator CLI end to end, through the built `posledger` binary: every subcommand, each kind of bad
//! input (refused with `FILE:LINE:` and exit 1, leaving the head root unchanged), idempotent retries,
//! simulator determinism, directives, the demo, and the NDJSON round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::{ok, posledger, s, stderr};

use ledger::lifecycle::Status;
use ledger::{Ledger, Sn, Source};
use posledger::fleet::fleet_summary;
use posledger::sim::{self, Config};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The head via `posledger head --json`: (size, root).
fn head(dir: &Path) -> (u64, String) {
    let out = ok(posledger(&["head", "--dir", s(dir), "--json"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let root = v["root"].as_str().unwrap().to_owned();
    assert_eq!(root.len(), 64);
    assert!(root.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    (v["size"].as_u64().unwrap(), root)
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

fn issued(sn: &str, model: &str) -> String {
    format!(
        r#"{{"device":"{sn}","type":"issued","at":"2026-01-05T08:00:00Z","model":"{model}","merchant":"M001","provider":"lakala","region":"310000","contract":{{"id":"C-{sn}","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}}}"#
    )
}

fn flow(sn: &str, fen: u64) -> String {
    format!(r#"{{"device":"{sn}","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":{fen},"transactions":3}}"#)
}

fn plain(sn: &str, kind: &str) -> String {
    format!(r#"{{"device":"{sn}","type":"{kind}","at":"2026-01-07T08:00:00Z"}}"#)
}

fn stopped(sn: &str, reason: &str) -> String {
    format!(r#"{{"device":"{sn}","type":"stopped","at":"2026-02-01T08:00:00Z","reason":"{reason}"}}"#)
}

/// A ledger with one active terminal T1, one issued T2.
fn base_ledger(dir: &Path) -> PathBuf {
    let ledger = dir.join("ledger");
    let input = write(
        dir,
        "base.ndjson",
        &[issued("T1", "LKL-A8"), flow("T1", 10_000), plain("T1", "activated"), issued("T2", "PAX-A920")],
    );
    let out = ok(posledger(&["append", "--dir", s(&ledger), s(&input)]));
    assert!(out.contains("appended 4 events"), "{out}");
    ledger
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in ["demo", "simulate", "append", "stop-models", "export", "head", "evidence"] {
        let out = ok(posledger(&[sub, "--help"]));
        assert!(out.contains("Example"), "{sub} --help lacks an example:\n{out}");
    }
    assert!(ok(posledger(&["--help"])).contains("demo"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(posledger(&["append"]).status.code(), Some(2), "missing --dir");
    assert_eq!(posledger(&["frobnicate"]).status.code(), Some(2));
    let missing = dir.path().join("nothing");
    let o = posledger(&["head", "--dir", s(&missing)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nothing"), "{}", stderr(&o));
    let o = posledger(&["append", "--dir", s(&dir.path().join("l")), s(&dir.path().join("no-such.ndjson"))]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn append_then_head_and_export_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = base_ledger(dir.path());
    let lines = vec![
        format!(r#"{{"device":"T1","type":"flagged","at":"2026-01-08T00:00:00Z","reason":"cash_out","note":"odd"}}"#),
        format!(
            r#"{{"device":"T1","type":"flag_cleared","at":"2026-01-09T00:00:00Z","reason":"cash_out","note":"ok"}}"#
        ),
        format!(
            r#"{{"device":"T1","type":"contract_renewed","at":"2026-12-01T00:00:00Z","contract":{{"id":"C2","start":"2027-01-01T00:00:00Z","end":"2028-01-01T00:00:00Z"}}}}"#
        ),
        stopped("T1", "upgrade"),
        format!(r#"{{"device":"T1","type":"replaced","at":"2026-02-01T08:00:00Z","by":"T3"}}"#),
        format!(
            r#"{{"device":"T3","type":"issued","at":"2026-02-01T08:00:00Z","model":"PAX-A920","merchant":"M001","provider":"lakala","region":"310000","contract":{{"id":"C3","start":"2026-02-01T00:00:00Z","end":"2027-02-01T00:00:00Z"}},"replaces":"T1"}}"#
        ),
        plain("T2", "contract_expired"),
    ];
    let input = write(dir.path(), "more.ndjson", &lines);
    let out = ok(posledger(&["append", "--dir", s(&ledger), s(&input)]));
    assert!(out.contains("appended 7 events"), "{out}");
    let (size, root) = head(&ledger);
    assert_eq!(size, 11);
    let plain_head = ok(posledger(&["head", "--dir", s(&ledger)]));
    assert!(plain_head.contains(&root) && plain_head.contains("size 11"), "{plain_head}");

    let bundle = dir.path().join("out.plb");
    let out = ok(posledger(&["export", "--dir", s(&ledger), "--out", s(&bundle)]));
    assert!(out.contains("exported 11 records") && out.contains(&root), "{out}");
    let source = Source::open(&bundle).unwrap();
    assert_eq!(source.kind, ledger::segment::FileKind::Bundle);
    assert_eq!((source.head.size, source.head.root_hex()), (size, root.clone()));
    // Every record frame is copied byte for byte.
    let ledger_source = Source::open(&ledger).unwrap();
    let (mut a, mut b) = (ledger_source.frames(0, size), source.frames(0, size));
    while let Some((pa, fa, _)) = a.next_frame().unwrap() {
        let fa = fa.to_vec();
        let (pb, fb, _) = b.next_frame().unwrap().unwrap();
        assert_eq!((pa, fa.as_slice()), (pb, fb));
    }
    // No temporary file is left beside the bundle.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");

    let db = Ledger::open(&ledger).unwrap();
    assert_eq!(db.terminal(&Sn::parse("T1").unwrap()).unwrap().unwrap().1.status, Status::Replaced);
    assert_eq!(db.terminal(&Sn::parse("T3").unwrap()).unwrap().unwrap().1.status, Status::Issued);
}

#[test]
fn append_reads_stdin_and_creates_a_missing_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("fresh").join("ledger");
    let mut child = Command::new(env!("CARGO_BIN_EXE_posledger"))
        .args(["append", "--dir", s(&ledger), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = format!("{}\n\n{}\n", issued("S1", "LKL-A8"), flow("S1", 1));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = ok(child.wait_with_output().unwrap());
    assert!(out.contains("appended 2 events"), "{out}");
    assert_eq!(head(&ledger).0, 2);
}

#[test]
fn every_kind_of_bad_input_is_refused_with_file_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = base_ledger(dir.path());
    let before = head(&ledger);
    let good = issued("NEW1", "LKL-A8");
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", r#"{"device":"T1","type":"flow""#.into(), "malformed JSON"),
        ("not an object", "[1,2]".into(), "expected a JSON object"),
        ("unknown type", r#"{"device":"T1","type":"teleported","at":"2026-01-01T00:00:00Z"}"#.into(), "unknown type"),
        ("missing field", r#"{"device":"T1","type":"flow","at":"2026-01-01T00:00:00Z","amount_fen":5}"#.into(), "missing field `transactions`"),
        ("unknown field", r#"{"device":"T1","type":"activated","at":"2026-01-01T00:00:00Z","colour":"red"}"#.into(), "unknown field `colour`"),
        ("bad SN", r#"{"device":"T 1!","type":"activated","at":"2026-01-01T00:00:00Z"}"#.into(), "field `device`"),
        ("wrong type", r#"{"device":"T1","type":"flow","at":"2026-01-01T00:00:00Z","amount_fen":"50","transactions":1}"#.into(), "field `amount_fen` must be"),
        ("bad time", r#"{"device":"T1","type":"activated","at":"last tuesday"}"#.into(), "RFC 3339"),
        ("illegal decision", plain("T2", "activated"), "illegal activated on terminal T2"),
        ("unknown terminal", plain("GHOST", "activated"), "never issued"),
        ("duplicate issue", issued("T1", "LKL-A8"), "already issued"),
        ("unpaired replacement", r#"{"device":"T1","type":"replaced","at":"2026-02-01T00:00:00Z","by":"T9"}"#.into(), "illegal replaced"),
        ("wrong expected version", r#"{"device":"T1","type":"flow","at":"2026-01-01T00:00:00Z","amount_fen":5,"transactions":1,"expected_version":7}"#.into(), "wrong expected_version: terminal T1 holds 3 events, the line expects 7"),
        ("contract ends before it starts", r#"{"device":"T1","type":"contract_renewed","at":"2026-01-01T00:00:00Z","contract":{"id":"C9","start":"2027-01-01T00:00:00Z","end":"2026-01-01T00:00:00Z"}}"#.into(), "must end after it starts"),
    ];
    for (what, bad, needle) in cases {
        // The bad line is line 3 (line 2 is blank): the good line before it must not be appended either.
        let input = write(dir.path(), "bad.ndjson", &[good.clone(), String::new(), bad]);
        let o = posledger(&["append", "--dir", s(&ledger), s(&input)]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        let prefix = format!("{}:3: ", input.display());
        assert!(err.starts_with(&prefix), "{what}: stderr does not start with {prefix:?}: {err}");
        assert!(err.contains(needle), "{what}: {err:?} lacks {needle:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err:?}");
        assert_eq!(head(&ledger), before, "{what}: the ledger changed");
    }
    // An over-long line is refused without reading it whole.
    let long = format!(
        r#"{{"device":"T1","type":"flagged","at":"2026-01-01T00:00:00Z","reason":"other","note":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let input = write(dir.path(), "long.ndjson", &[long]);
    let o = posledger(&["append", "--dir", s(&ledger), s(&input)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(":1: line is longer than"), "{}", stderr(&o));
    assert_eq!(head(&ledger), before);
}

#[test]
fn event_id_makes_a_retry_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = base_ledger(dir.path());
    let lines = vec![
        r#"{"device":"T1","type":"flow","at":"2026-03-01T00:00:00Z","amount_fen":700,"transactions":2,"event_id":"settle-0301-T1"}"#.to_owned(),
        r#"{"device":"T2","type":"flow","at":"2026-03-01T00:00:00Z","amount_fen":900,"transactions":1,"event_id":"settle-0301-T2"}"#.to_owned(),
    ];
    let input = write(dir.path(), "settle.ndjson", &lines);
    assert!(ok(posledger(&["append", "--dir", s(&ledger), s(&input)])).contains("appended 2 events"));
    let after = head(&ledger);
    let out = ok(posledger(&["append", "--dir", s(&ledger), s(&input)]));
    assert!(out.contains("appended 0 events (2 already present"), "{out}");
    assert_eq!(head(&ledger), after);
    // The same id for a different event is refused.
    let conflict = write(dir.path(), "conflict.ndjson", &[lines[0].replace("700", "701")]);
    let o = posledger(&["append", "--dir", s(&ledger), s(&conflict)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(":1: event_id settle-0301-T1 was already used"), "{}", stderr(&o));
    assert_eq!(head(&ledger), after);
}

#[test]
fn a_directive_stops_exactly_the_running_terminals_of_its_models() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let lines = vec![
        issued("A1", "M-A"),
        issued("A2", "M-A"),
        flow("A2", 20_000),
        plain("A2", "activated"),
        issued("A3", "M-A"),
        stopped("A3", "merchant_request"),
        issued("B1", "M-B"),
        issued("C1", "M-C"),
    ];
    let input = write(dir.path(), "fleet.ndjson", &lines);
    ok(posledger(&["append", "--dir", s(&ledger), s(&input)]));
    let models = dir.path().join("recalled.txt");
    std::fs::write(&models, "# certificates revoked\nM-A\n\nM-B\nM-Z\n").unwrap();
    let args = ["stop-models", "--dir", s(&ledger), "--directive", "D-2026-07", "--models", s(&models)];
    let with_reason = |extra: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend_from_slice(&["--reason", "certificates revoked"]);
        v.extend_from_slice(extra);
        posledger(&v)
    };
    let out = ok(with_reason(&["--deadline", "2026-08-01T00:00:00Z"]));
    assert!(out.contains("stopped 3 terminals of 3 models"), "{out}");
    let after = head(&ledger);
    assert_eq!(after.0, lines.len() as u64 + 4);
    {
        let db = Ledger::open(&ledger).unwrap();
        let status = |sn: &str| db.terminal(&Sn::parse(sn).unwrap()).unwrap().unwrap().1.status;
        assert_eq!(
            [status("A1"), status("A2"), status("A3"), status("B1"), status("C1")],
            [Status::Stopped, Status::Stopped, Status::Stopped, Status::Stopped, Status::Issued]
        );
        // A3 was already stopped: its stream holds no second stop.
        assert_eq!(db.terminal(&Sn::parse("A3").unwrap()).unwrap().unwrap().0, 2);
    }
    // The same directive id again: exit 1, nothing written.
    let o = with_reason(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("directive D-2026-07 was already recorded"), "{}", stderr(&o));
    assert_eq!(head(&ledger), after);
    // A bad model code names its line.
    std::fs::write(&models, "M-A\nnot a model\n").unwrap();
    let o =
        posledger(&["stop-models", "--dir", s(&ledger), "--directive", "D-2", "--models", s(&models), "--reason", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with(&format!("{}:2: ", models.display())), "{}", stderr(&o));
    assert_eq!(head(&ledger), after);
}

#[test]
fn simulate_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let out = ok(posledger(&["simulate", "--dir", s(&path), "--devices", "300", "--seed", seed, "--months", "6"]));
        assert!(out.contains("simulated"), "{out}");
        head(&path)
    };
    let a = run("a", "7");
    let b = run("b", "7");
    let c = run("c", "8");
    assert_eq!(a, b, "same arguments, same root");
    assert_ne!(a.1, c.1, "another seed, another fleet");
    // Simulating into a ledger that holds records is refused.
    let o =
        posledger(&["simulate", "--dir", s(&dir.path().join("a")), "--devices", "300", "--seed", "7", "--months", "6"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already holds"), "{}", stderr(&o));
}

#[test]
fn the_simulated_fleet_has_what_the_audits_need() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { devices: 2_000, months: 24, seed: 3, ..Config::default() };
    let db = Ledger::open(dir.path()).unwrap();
    let report = sim::run(&db, &config, &mut |_| {}).unwrap();
    assert_eq!(report.events, db.head().size);
    assert_eq!(report.directive.as_ref().map(|d| d.as_str()), Some("D-2026-03"));
    assert!(report.stopped_by_directive > 50, "{report:?}");
    assert!(report.missed_directive > 0 || report.stopped_late == 0, "{report:?}");
    assert!(report.flows_after_stop > 0, "{report:?}");
    assert!(report.flows_on_expired_contract > 0, "{report:?}");
    assert!(report.dormant > 100, "{report:?}");
    assert!(report.replacements > 20, "{report:?}");
    assert!(report.renewals > 0 && report.expiries > 0, "{report:?}");
    let summary = fleet_summary(&db.source(), &mut |_| {}).unwrap();
    assert_eq!(summary.illegal, 0);
    assert_eq!(summary.directives, 1);
    let activated = (report.activated as f64) / (report.terminals as f64);
    assert!((0.78..0.92).contains(&activated), "activated share {activated}");
    assert!(summary.by_provider.len() >= 5);
    // Without a ledger, the simulator yields exactly the records the ledger holds.
    let generated: Vec<_> = sim::generate(&config).unwrap().into_iter().flat_map(|(_, events)| events).collect();
    let logged: Vec<_> = db.source().records(0).map(|r| r.unwrap().event).collect();
    assert_eq!(generated.len(), logged.len());
    assert!(generated.iter().zip(&logged).all(|(g, l)| g.event == *l));
}

#[test]
fn an_ndjson_export_appended_into_a_fresh_ledger_rebuilds_the_same_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    ok(posledger(&["simulate", "--dir", s(&original), "--devices", "400", "--seed", "11", "--months", "18"]));
    let source = Source::open(&original).unwrap();
    let lines: Vec<String> = source.records(0).map(|r| replay::ndjson::render(&r.unwrap()).unwrap()).collect();
    for kind in replay::ndjson::TYPES {
        assert!(lines.iter().any(|l| l.contains(&format!("\"type\":\"{kind}\""))), "the simulation has no {kind}");
    }
    let input = write(dir.path(), "export.ndjson", &lines);
    let copy = dir.path().join("copy");
    let out = ok(posledger(&["append", "--dir", s(&copy), s(&input)]));
    let appended = replay::text::count(lines.len() as u64, "event", "events");
    assert!(out.contains(&format!("appended {appended}\n")), "{out}");
    let a = fleet_summary(&source, &mut |_| {}).unwrap();
    let b = fleet_summary(&Source::open(&copy).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(a, b);
    // And the events themselves are the same, in the same order.
    let events = |p: &Path| -> Vec<_> { Source::open(p).unwrap().records(0).map(|r| r.unwrap().event).collect() };
    assert_eq!(events(&original), events(&copy));
}

#[test]
fn demo_runs_twice_and_refuses_a_foreign_folder() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    for _ in 0..2 {
        let out = ok(posledger(&["demo", "--dir", s(&demo), "--devices", "300", "--months", "6", "--seed", "5"]));
        for needle in [
            "events",
            "head root",
            "issued",
            "active",
            "replay verify",
            "replay audit",
            "replay fleet",
            "replay device",
        ] {
            assert!(out.contains(needle), "demo output lacks {needle}:\n{out}");
        }
        let bundle = demo.join("bundle.plb");
        assert_eq!(Source::open(&bundle).unwrap().head, Source::open(&demo).unwrap().head);
        // The audit report, written into the demo folder, and its path printed.
        let report = demo.join("report.html");
        assert!(out.contains(&report.display().to_string()), "demo output lacks the report's path:\n{out}");
        assert!(std::fs::read_to_string(&report).unwrap().contains(r#"id="chart-fleet""#));
    }
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "precious").unwrap();
    let o = posledger(&["demo", "--dir", s(&foreign), "--devices", "10", "--months", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a folder the demo made"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(foreign.join("thesis.tex")).unwrap(), "precious");
}

#[test]
fn a_broken_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_posledger"))
        .args(["demo", "--dir", s(&dir.path().join("d")), "--devices", "200", "--months", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn the_examples_in_docs_ndjson_are_a_valid_input() {
    let dir = tempfile::tempdir().unwrap();
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/NDJSON.md")).unwrap();
    let lines: Vec<String> = doc.lines().filter(|l| l.starts_with('{')).map(str::to_owned).collect();
    assert!(lines.len() >= 10, "docs/NDJSON.md lost its examples");
    let input = write(dir.path(), "doc.ndjson", &lines);
    let out = ok(posledger(&["append", "--dir", s(&dir.path().join("l")), s(&input)]));
    assert!(out.contains(&format!("appended {} events", lines.len())), "{out}");
}

/// The default demo's fleet (about 1.96 million events, under the 2,000,000-line append limit) rendered
/// as NDJSON and appended through the binary in one atomic append. Slow: run with
/// `cargo test --release --test cli -- --ignored`.
#[test]
#[ignore]
fn the_full_demo_fleet_round_trips_through_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let options = ledger::Options { durability: ledger::Durability::Relaxed, ..Default::default() };
    let db = Ledger::open_with(&original, options).unwrap();
    let started = std::time::Instant::now();
    let report = sim::run(&db, &Config::default(), &mut |_| {}).unwrap();
    assert_eq!(db.close().unwrap().index_warning, None);
    assert!(report.events < ledger::MAX_APPEND_EVENTS as u64, "{} events", report.events);
    let source = Source::open(&original).unwrap();
    let path = dir.path().join("fleet.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for record in source.records(0) {
        writeln!(file, "{}", replay::ndjson::render(&record.unwrap()).unwrap()).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    eprintln!("simulated and rendered {} events in {:.1?}", report.events, started.elapsed());
    let started = std::time::Instant::now();
    let copy = dir.path().join("copy");
    ok(posledger(&["append", "--dir", s(&copy), s(&path)]));
    eprintln!("appended {} NDJSON lines in {:.1?}", report.events, started.elapsed());
    let a = fleet_summary(&source, &mut |_| {}).unwrap();
    let b = fleet_summary(&Source::open(&copy).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(a, b);
}
