//! Helpers for the end-to-end tests of the `replay` binary: build ledgers and bundles, run the binary,
//! tamper with bytes, snapshot files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ledger::codec::{decode_record, encode_record};
use ledger::merkle::Frontier;
use ledger::segment::{push_frame, FileKind, Header, Trailer};
use ledger::{AppendEvent, Durability, Event, FlagReason, Head, Ledger, Options, Record, Source, StopReason};
use projections::testing::{activated, directive, flag_cleared, flagged, flow, issued, issued_full, replaced, stopped};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// Runs `replay` with `args`.
pub fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay")).args(args).output().expect("run replay")
}

/// Runs `replay` with a path argument first after the subcommand.
pub fn replay_on(cmd: &str, source: &Path, rest: &[&str]) -> Output {
    let mut args = vec![cmd.to_owned(), source.display().to_string()];
    args.extend(rest.iter().map(|s| (*s).to_owned()));
    Command::new(env!("CARGO_BIN_EXE_replay")).args(&args).output().expect("run replay")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The appends of a small, legal fleet: 12 terminals over 4 models, flows, activations, flags, a
/// stop, a replacement and a directive with the stops it causes.
pub fn legal_appends() -> Vec<Vec<Event>> {
    let models = ["LKL-A8", "PAX-A920", "NLD-N5", "XGD-K9"];
    let mut appends = Vec::new();
    for i in 0..12 {
        let sn = format!("SN{i:03}");
        let model = models[i % models.len()];
        let region = if i % 2 == 0 { "310000" } else { "440300" };
        appends.push(vec![issued_full(&sn, 1, model, "lakala", region, "M001", None)]);
    }
    for i in 0..12 {
        let sn = format!("SN{i:03}");
        appends.push(vec![flow(&sn, 2, 6_000), flow(&sn, 3, 5_000)]);
        if i % 3 != 0 {
            appends.push(vec![activated(&sn, 4)]);
        }
    }
    appends.push(vec![flagged("SN001", 5, FlagReason::CashOut)]);
    appends.push(vec![flagged("SN002", 5, FlagReason::Relocation)]);
    appends.push(vec![flag_cleared("SN002", 6, FlagReason::Relocation)]);
    appends.push(vec![stopped("SN004", 7, StopReason::Violation, None)]);
    appends.push(vec![replaced("SN004", 8, "SN100"), issued("SN100", 8, "LKL-A8", Some("SN004"))]);
    let mut recall = vec![directive("D-2026-01", 9, &["XGD-K9"], Some(30))];
    for i in [3, 7, 11] {
        recall.push(stopped(&format!("SN{i:03}"), 9, StopReason::ModelRecall, Some("D-2026-01")));
    }
    appends.push(recall);
    appends.push(vec![flow("SN100", 10, 20_000), activated("SN100", 11)]);
    appends
}

/// Creates a ledger folder at `dir` holding [`legal_appends`], with small segments so that it has
/// several sealed segments and a live one. Returns its head.
pub fn make_ledger(dir: &Path) -> Head {
    let options = Options { durability: Durability::Durable, segment_max_bytes: 1_500, faults: None };
    let ledger = Ledger::open_with(dir, options).unwrap();
    for events in legal_appends() {
        ledger.append(events.into_iter().map(AppendEvent::from).collect()).unwrap();
    }
    let head = ledger.head();
    assert_eq!(ledger.close().unwrap().index_warning, None);
    head
}

/// The record bodies of a source, as stored.
pub fn bodies(source: &Path) -> Vec<Vec<u8>> {
    let source = Source::open(source).unwrap();
    let mut frames = source.frames(0, source.head.size);
    let mut out = Vec::new();
    while let Some((_, body, _)) = frames.next_frame().unwrap() {
        out.push(body.to_vec());
    }
    out
}

/// Writes record bodies as a bundle with a correct header, CRCs and trailer (a well-formed file
/// whatever the bodies say: the tampering tests use it to forge consistent-looking files).
pub fn write_raw_bundle(path: &Path, bodies: &[Vec<u8>]) -> Head {
    let mut bytes = Header { kind: FileKind::Bundle, seq: 0, first_position: 0, ledger_id: 42 }.encode().to_vec();
    let mut frontier = Frontier::new();
    for body in bodies {
        push_frame(&mut bytes, body);
        frontier.push_leaf(body);
    }
    Trailer::new(bodies.len() as u64, &frontier).encode(&mut bytes);
    std::fs::write(path, bytes).unwrap();
    Head { size: frontier.size(), root: frontier.root() }
}

/// Re-encodes a body after changing its record.
pub fn reencode(body: &[u8], change: impl FnOnce(&mut Record)) -> Vec<u8> {
    let mut record = decode_record(body).unwrap();
    change(&mut record);
    let mut out = Vec::new();
    encode_record(&record, &mut out).unwrap();
    out
}

/// A bundle of the legal fleet at `path` (through a temporary ledger folder). Returns its head.
pub fn make_bundle(path: &Path) -> Head {
    let dir = tempfile::tempdir().unwrap();
    make_ledger(dir.path());
    write_raw_bundle(path, &bodies(dir.path()))
}

/// A bundle of a simulated fleet (seven providers, 24 months, flows, flags, contract expiries,
/// directives and their stops) of about `events` records, cut at `max_records` when given. Returns its
/// head.
pub fn sim_bundle(path: &Path, events: u64, seed: u64, max_records: Option<usize>) -> Head {
    sim_bundle_id(path, events, seed, max_records, 7)
}

/// [`sim_bundle`] with its own ledger id (a many-source command refuses two sources of one ledger id).
pub fn sim_bundle_id(path: &Path, events: u64, seed: u64, max_records: Option<usize>, ledger_id: u64) -> Head {
    let log = sim_log(events, seed, max_records);
    projections::testing::write_bundle(path, log.records(), ledger_id).unwrap()
}

/// The records of a simulated fleet, to extend before writing.
pub fn sim_log(events: u64, seed: u64, max_records: Option<usize>) -> projections::testing::LogBuilder {
    let mut log = projections::testing::LogBuilder::new();
    for batch in sim::Simulator::new(&sim::Config::about_events(events, 100, seed)).unwrap() {
        let (at, events) = batch.unwrap().into_append().unwrap();
        log.append_at(at, events.into_iter().map(|e| e.event).collect());
        if max_records.is_some_and(|max| log.records().len() >= max) {
            break;
        }
    }
    log
}

/// Every file under `root` with its bytes and modification time.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else {
            out.insert(path.clone(), (std::fs::read(&path).unwrap(), meta.modified().unwrap()));
        }
    }
    out
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Makes every file and folder under `root` read-only (mode a-w).
pub fn make_read_only(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(root).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            make_read_only(&entry.unwrap().path());
        }
    }
    let mode = meta.permissions().mode() & !0o222;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives write permission back (so the temporary folder can be removed).
pub fn make_writable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(root).unwrap();
    let mode = meta.permissions().mode() | 0o200;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            make_writable(&entry.unwrap().path());
        }
    }
}

/// The segment files of a ledger folder, in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    ledger::source::list_segments(dir).unwrap()
}

/// Runs docs/sql/*.sql on an export in DuckDB (scripts/sql-check.py): the answers by query, or `None`
/// when POSLEDGER_SKIP_DUCKDB=1 says to skip.
pub fn duckdb(out: &Path) -> Option<BTreeMap<String, Vec<Vec<serde_json::Value>>>> {
    if std::env::var("POSLEDGER_SKIP_DUCKDB").is_ok_and(|v| v == "1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED: the DuckDB SQL test (POSLEDGER_SKIP_DUCKDB=1); docs/sql/*.sql were NOT run !!!!!!!!\n"
        );
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new("python3")
        .arg(root.join("scripts/sql-check.py"))
        .args(["duckdb", out.to_str().unwrap(), root.join("docs/sql").to_str().unwrap(), "--json"])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "DuckDB run failed (install it with `python3 -m pip install duckdb`, as .ci/run does, or set POSLEDGER_SKIP_DUCKDB=1 to skip):\n{}",
        stderr(&o)
    );
    let all: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    Some(all.into_iter().map(|(q, v)| (q, serde_json::from_value(v["rows"].clone()).unwrap())).collect())
}
