//! `replay export --format parquet`: the tables read back with the parquet crate fold into the counts of
//! `replay fleet`; every file carries the provenance; bad outputs are refused and a failed export
//! leaves nothing; the docs/sql queries give in DuckDB the answers of `replay fleet` and `replay audit`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A test builds bundles and folders in the way of the export on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use log::{Event, Source, TerminalEvent};
use parquet::basic::{LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use projections::{Cut, Options};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The cut of docs/sql/status_as_of.sql.
const AS_OF: &str = "2026-01-01T00:00:00Z";

/// A simulated bundle (seven providers, 24 months) and its Parquet export.
struct Export {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    out: PathBuf,
    head: log::Head,
}

fn export() -> Export {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.plb");
    let head = sim_bundle(&bundle, 6_000, 11, None);
    let out = dir.path().join("fleet-parquet");
    let o = replay_on("export", &bundle, &["--format", "parquet", "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    Export { _dir: dir, bundle, out, head }
}

/// Every `.parquet` file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

type Row = BTreeMap<String, Field>;

/// Every row of every file of a table, by column name.
fn rows(table: &Path) -> Vec<Row> {
    let mut out = Vec::new();
    for file in files(table) {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            out.push(row.unwrap().get_column_iter().map(|(n, f)| (n.clone(), f.clone())).collect());
        }
    }
    out
}

fn string(row: &Row, column: &str) -> Option<String> {
    match row.get(column) {
        Some(Field::Str(s)) => Some(s.clone()),
        Some(Field::Null) | None => None,
        Some(other) => panic!("{column}: not a string: {other:?}"),
    }
}

fn long(row: &Row, column: &str) -> i64 {
    match row.get(column) {
        Some(Field::Long(n)) | Some(Field::TimestampMicros(n)) => *n,
        other => panic!("{column}: not a number: {other:?}"),
    }
}

fn fleet_json(bundle: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let o = replay_on("fleet", bundle, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Status counts of terminals (issued, active, stopped, replaced) by a key.
type StatusBy = BTreeMap<String, [u64; 4]>;

fn status_index(status: &str) -> usize {
    ["issued", "active", "stopped", "replaced"].iter().position(|s| *s == status).unwrap()
}

/// Folds the events table the way the lifecycle does for status: each terminal's newest status event.
fn fold_status(events: &[Row], recorded_by: Option<i64>, key: &str) -> StatusBy {
    let mut newest: BTreeMap<String, (i64, String, String)> = BTreeMap::new();
    for row in events {
        if recorded_by.is_some_and(|t| long(row, "recorded_at") > t) {
            continue;
        }
        let status = match string(row, "type").unwrap().as_str() {
            "issued" => "issued",
            "activated" => "active",
            "stopped" => "stopped",
            "replaced" => "replaced",
            _ => continue,
        };
        let device = string(row, "device").unwrap();
        let position = long(row, "position");
        if newest.get(&device).is_none_or(|(p, _, _)| *p < position) {
            newest.insert(device, (position, status.to_owned(), string(row, key).unwrap()));
        }
    }
    let mut out = StatusBy::new();
    for (_, status, key) in newest.values() {
        out.entry(key.clone()).or_default()[status_index(status)] += 1;
    }
    out
}

fn status_of(counts: &Value) -> [u64; 4] {
    ["issued", "active", "stopped", "replaced"].map(|s| counts[s].as_u64().unwrap())
}

fn summary_by_provider(bundle: &Path, cut: Cut) -> StatusBy {
    let source = Source::open(bundle).unwrap();
    let fleet = projections::rebuild(&source, cut, &Options::default()).unwrap();
    fleet.summary().by_provider.iter().map(|(p, c)| (p.clone(), [c.issued, c.active, c.stopped, c.replaced])).collect()
}

#[test]
fn the_tables_fold_into_the_counts_of_replay_fleet() {
    let e = export();
    let events = rows(&e.out.join("events"));
    let directives = rows(&e.out.join("directives"));
    // One row per record: the positions of events and directives are 0..size, each once.
    let mut positions: Vec<i64> = events.iter().chain(&directives).map(|r| long(r, "position")).collect();
    positions.sort_unstable();
    assert_eq!(positions, (0..e.head.size as i64).collect::<Vec<_>>());
    assert!(!directives.is_empty(), "the simulated fleet has directives");

    // Status per model folded from the events equals `replay fleet`'s by_model; per provider, the
    // fleet projection's by_provider; and the terminals table says the same.
    let fleet = fleet_json(&e.bundle, &[]);
    let by_model = fold_status(&events, None, "model");
    let expected: StatusBy =
        fleet["by_model"].as_object().unwrap().iter().map(|(m, c)| (m.clone(), status_of(c))).collect();
    assert_eq!(by_model, expected);
    let by_provider = fold_status(&events, None, "provider");
    assert_eq!(by_provider.len(), 7, "seven providers");
    assert_eq!(by_provider, summary_by_provider(&e.bundle, Cut::Head));
    let terminals = rows(&e.out.join("terminals"));
    assert_eq!(terminals.len() as u64, fleet["devices"].as_u64().unwrap());
    let mut from_terminals = StatusBy::new();
    for t in &terminals {
        from_terminals.entry(string(t, "provider").unwrap()).or_default()
            [status_index(&string(t, "status").unwrap())] += 1;
    }
    assert_eq!(from_terminals, by_provider);

    // As of a time: the same fold over the rows recorded by then equals `replay fleet --as-of`.
    let cut = chrono::DateTime::parse_from_rfc3339(AS_OF).unwrap().to_utc();
    let as_of = fold_status(&events, Some(cut.timestamp_micros()), "provider");
    let total = as_of.values().fold([0; 4], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]);
    assert_eq!(total, status_of(&fleet_json(&e.bundle, &["--as-of", AS_OF])["status"]));
    assert_eq!(as_of, summary_by_provider(&e.bundle, Cut::Time(cut)));

    // Every row's model and provider are its terminal's, from the issue; its partition folder names its
    // provider and month, the month in China Standard Time.
    let source = Source::open(&e.bundle).unwrap();
    let records: Vec<_> = source.records(0).map(|r| r.unwrap()).collect();
    let issued: BTreeMap<String, (String, String)> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Terminal(d) => match &d.event {
                TerminalEvent::Issued(i) => Some((d.device.to_string(), (i.model.to_string(), i.provider.to_string()))),
                _ => None,
            },
            _ => None,
        })
        .collect();
    for row in &events {
        let record = &records[long(row, "position") as usize];
        let Event::Terminal(d) = &record.event else { panic!("a directive in events") };
        assert_eq!(string(row, "device").unwrap(), d.device.as_str());
        assert_eq!(string(row, "type").unwrap(), d.event.type_name());
        assert_eq!(long(row, "occurred_at"), d.at.timestamp_micros());
        assert_eq!(long(row, "recorded_at"), record.recorded_at.timestamp_micros());
        let (model, provider) = &issued[d.device.as_str()];
        assert_eq!((&string(row, "model").unwrap(), &string(row, "provider").unwrap()), (model, provider));
        assert_eq!(string(row, "month").unwrap(), replay::columnar::month_cst(&d.at));
        if let TerminalEvent::Flow { amount_fen, .. } = &d.event {
            assert_eq!(long(row, "amount_fen"), *amount_fen as i64);
        }
    }
    for file in files(&e.out.join("events")) {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        let row: Row = reader
            .get_row_iter(None)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .get_column_iter()
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect();
        let rel = file.strip_prefix(e.out.join("events")).unwrap();
        let folders: Vec<String> = rel.parent().unwrap().iter().map(|c| c.to_string_lossy().into_owned()).collect();
        assert_eq!(
            folders,
            [
                format!("provider={}", string(&row, "provider").unwrap()),
                format!("month={}", string(&row, "month").unwrap())
            ]
        );
    }
    // The month is the calendar of UTC+8: 16:00 UTC on the last day of a month is the next month.
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-31T16:00:00Z").unwrap().to_utc();
    assert_eq!(replay::columnar::month_cst(&at), "2026-02");
    assert_eq!(replay::columnar::month_cst(&(at - chrono::TimeDelta::microseconds(1))), "2026-01");
}

#[test]
fn every_file_carries_the_provenance_and_the_schema() {
    let e = export();
    let verify = replay_on("verify", &e.bundle, &["--json"]);
    let verified: Value = serde_json::from_slice(&verify.stdout).unwrap();
    let mut tables = BTreeSet::new();
    for file in files(&e.out) {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        let meta = reader.metadata().file_metadata();
        let kv: BTreeMap<String, String> = meta
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(kv["posledger.ledger_id"], "0000000000000007", "{}", file.display());
        assert_eq!(kv["posledger.log_size"], e.head.size.to_string());
        assert_eq!(kv["posledger.merkle_root"], e.head.root_hex());
        assert_eq!(kv["posledger.merkle_root"], verified["root"].as_str().unwrap());
        assert_eq!(kv["posledger.format_version"], replay::columnar::FORMAT_VERSION);
        tables.insert(kv["posledger.table"].clone());
        let columns = match kv["posledger.table"].as_str() {
            "events" => &replay::columnar::EVENT_COLUMNS[..],
            "directives" => &replay::columnar::DIRECTIVE_COLUMNS[..],
            "directive_models" => &replay::columnar::DIRECTIVE_MODEL_COLUMNS[..],
            "terminals" => &replay::columnar::TERMINAL_COLUMNS[..],
            other => panic!("unknown table {other}"),
        };
        let schema = meta.schema_descr();
        assert_eq!(schema.num_columns(), columns.len());
        for (descr, column) in schema.columns().iter().zip(columns) {
            assert_eq!(descr.name(), column.name);
            let required = descr.self_type().get_basic_info().repetition() == Repetition::REQUIRED;
            assert_eq!(required, column.required, "{}", column.name);
            // Signed types only: INT64 (no unsigned logical type), microsecond UTC timestamps, UTF-8.
            match column.kind {
                replay::columnar::Kind::Int64 => {
                    assert_eq!(descr.physical_type(), Physical::INT64, "{}", column.name);
                    assert_eq!(descr.logical_type_ref(), None, "{}", column.name);
                }
                replay::columnar::Kind::Timestamp => {
                    assert_eq!(descr.physical_type(), Physical::INT64);
                    assert_eq!(
                        descr.logical_type_ref(),
                        Some(&LogicalType::Timestamp { is_adjusted_to_u_t_c: true, unit: TimeUnit::MICROS })
                    );
                }
                replay::columnar::Kind::Utf8 => {
                    assert_eq!(descr.physical_type(), Physical::BYTE_ARRAY);
                    assert_eq!(descr.logical_type_ref(), Some(&LogicalType::String));
                }
                _ => assert_eq!(descr.physical_type(), Physical::BOOLEAN),
            }
        }
    }
    assert_eq!(tables, ["directive_models", "directives", "events", "terminals"].map(String::from).into());
    // Named columns of the issue, with their types.
    let by_name = |name: &str| replay::columnar::EVENT_COLUMNS.iter().find(|c| c.name == name).unwrap().kind;
    for name in ["position", "version", "amount_fen"] {
        assert_eq!(by_name(name), replay::columnar::Kind::Int64);
    }
    for name in ["recorded_at", "occurred_at"] {
        assert_eq!(by_name(name), replay::columnar::Kind::Timestamp);
    }
    // Positions and times are delta-encoded: the encodings the column chunks list say so.
    let file = files(&e.out.join("events")).remove(0);
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let group = reader.metadata().row_group(0);
    let position = group.columns().iter().find(|c| c.column_path().string() == "position").unwrap();
    assert!(position.encodings().any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED));
    let provider = group.columns().iter().find(|c| c.column_path().string() == "provider").unwrap();
    assert!(provider.dictionary_page_offset().is_some(), "provider is dictionary-encoded");
}

/// No temporary export folder (`.NAME.tmp-PID`) left in `dir`.
fn no_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "left behind: {name}");
    }
}

#[test]
fn bad_outputs_are_refused_and_a_failed_export_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.plb");
    make_bundle(&bundle);
    let parquet = |out: &Path| replay_on("export", &bundle, &["--format", "parquet", "--out", out.to_str().unwrap()]);

    // A folder that is not empty: refused, untouched.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "mine").unwrap();
    let o = parquet(&full);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
    // A regular file, a symbolic link, standard output, the source itself: refused.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = parquet(&file);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a folder"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    let o = parquet(&link);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    let o = parquet(Path::new("-"));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = parquet(&bundle);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // Inside a ledger folder: refused (the rule of every --out).
    let ledger = dir.path().join("ledger");
    make_ledger(&ledger);
    let before = snapshot(&ledger);
    let o = replay_on("export", &ledger, &["--format", "parquet", "--out", ledger.join("pq").to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("inside the source"), "{}", stderr(&o));
    assert_eq!(snapshot(&ledger), before);

    // An empty folder is filled.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = parquet(&empty);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(empty.join("terminals/part-0.parquet").is_file());

    // A log that fails while it is read: exit 1, no output folder, no temporary folder.
    let mut bodies = bodies(&bundle);
    let last = bodies.len() - 1;
    bodies[last] = vec![0xff; 7];
    let broken = dir.path().join("broken.plb");
    write_raw_bundle(&broken, &bodies);
    let out = dir.path().join("from-broken");
    let o = replay_on("export", &broken, &["--format", "parquet", "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!out.exists());
    no_temporaries(dir.path());
}

fn audit_positions(bundle: &Path, rule: &str) -> Vec<u64> {
    let o = replay_on("audit", bundle, &["--rule", rule, "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let findings: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    findings.iter().map(|f| f["position"].as_u64().unwrap()).collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn the_documented_sql_gives_in_duckdb_the_answers_of_replay_fleet_and_audit() {
    let e = export();
    let Some(answers) = duckdb(&e.out) else { return };

    // Fleet status by provider: the fleet projection's by_provider, and `replay fleet`'s totals.
    let status = &answers["fleet_status_by_provider"];
    let by_provider: StatusBy =
        status.iter().map(|r| (r[0].as_str().unwrap().to_owned(), [u(&r[2]), u(&r[3]), u(&r[4]), u(&r[5])])).collect();
    assert_eq!(by_provider, summary_by_provider(&e.bundle, Cut::Head));
    let fleet = fleet_json(&e.bundle, &[]);
    assert_eq!(status.iter().map(|r| u(&r[1])).sum::<u64>(), u(&fleet["devices"]));
    assert_eq!(status.iter().map(|r| u(&r[6])).sum::<u64>(), u(&fleet["flagged"]));
    assert_eq!(status.iter().map(|r| u(&r[7])).sum::<u64>(), u(&fleet["contract_expired"]));

    // As of a date: `replay fleet --as-of`.
    let cut = chrono::DateTime::parse_from_rfc3339(AS_OF).unwrap().to_utc();
    let as_of: StatusBy = answers["status_as_of"]
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), [u(&r[2]), u(&r[3]), u(&r[4]), u(&r[5])]))
        .collect();
    assert_eq!(as_of, summary_by_provider(&e.bundle, Cut::Time(cut)));
    let total = as_of.values().fold([0; 4], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]);
    assert_eq!(total, status_of(&fleet_json(&e.bundle, &["--as-of", AS_OF])["status"]));

    // Flow by provider and month: the records summed here, by the terminal's provider and the CST month.
    let source = Source::open(&e.bundle).unwrap();
    let mut provider_of = BTreeMap::new();
    let mut flow: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for record in source.records(0) {
        let Event::Terminal(d) = record.unwrap().event else { continue };
        match &d.event {
            TerminalEvent::Issued(i) => {
                provider_of.insert(d.device.to_string(), i.provider.to_string());
            }
            TerminalEvent::Flow { amount_fen, transactions } => {
                let key = (provider_of[d.device.as_str()].clone(), replay::columnar::month_cst(&d.at));
                let f = flow.entry(key).or_default();
                *f = (f.0 + 1, f.1 + amount_fen, f.2 + u64::from(*transactions));
            }
            _ => {}
        }
    }
    let sql: BTreeMap<(String, String), (u64, u64, u64)> = answers["flow_by_provider_month"]
        .iter()
        .map(|r| {
            ((r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned()), (u(&r[2]), u(&r[3]), u(&r[4])))
        })
        .collect();
    assert_eq!(sql, flow);

    // The two audit rules: one row per finding, at the finding's position.
    let expired: Vec<u64> = answers["flow_while_contract_expired"].iter().map(|r| u(&r[3])).collect();
    assert_eq!(expired, audit_positions(&e.bundle, "flow_while_contract_expired"));
    let enforcement = &answers["directive_enforcement"];
    let audit = audit_positions(&e.bundle, "directive_not_enforced");
    assert_eq!(enforcement.len(), audit.len(), "directive_not_enforced findings");
    println!(
        "DuckDB: {} providers, {} flow months, {} flows while expired, {} directive findings",
        by_provider.len(),
        sql.len(),
        expired.len(),
        audit.len()
    );
}

/// A simulated fleet with a recall nobody enforced: after the simulated months, a directive lists the
/// three models issued most, with a deadline a week later, and no terminal is stopped for
/// it; flows a month after the deadline carry the log's end past it.
fn unenforced_recall(path: &Path) -> log::Head {
    use projections::testing::{day, directive, flow};
    let mut log = sim_log(6_000, 11, None);
    // The three models issued most.
    let mut issued: BTreeMap<String, usize> = BTreeMap::new();
    for r in log.records() {
        if let Event::Terminal(d) = &r.event {
            if let TerminalEvent::Issued(i) = &d.event {
                *issued.entry(i.model.to_string()).or_default() += 1;
            }
        }
    }
    let mut models: Vec<(usize, String)> = issued.into_iter().map(|(m, n)| (n, m)).collect();
    models.sort_by(|x, y| y.cmp(x));
    let models: Vec<&str> = models.iter().take(3).map(|(_, m)| m.as_str()).collect();
    let device = log
        .records()
        .iter()
        .find_map(|r| match &r.event {
            Event::Terminal(d) => Some(d.device.to_string()),
            _ => None,
        })
        .unwrap();
    let last = log.records().last().unwrap().recorded_at;
    let n = (last - day(0)).num_days() + 2;
    log.append(vec![directive("D-TEST-UNENFORCED", n, &models, Some(n + 7))]);
    log.append(vec![flow(&device, n + 40, 1_000)]);
    projections::testing::write_bundle(path, log.records(), 9).unwrap()
}

#[test]
fn directive_enforcement_in_duckdb_finds_the_terminals_of_replay_audit_when_there_are_some() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("recall.plb");
    unenforced_recall(&bundle);
    let out = dir.path().join("recall-parquet");
    let o = replay_on("export", &bundle, &["--format", "parquet", "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = replay_on("audit", &bundle, &["--rule", "directive_not_enforced", "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let findings: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let mut audit: Vec<String> = findings.iter().map(|f| f["device"].as_str().unwrap().to_owned()).collect();
    audit.sort();
    let planted = findings.iter().filter(|f| f["detail"].as_str().unwrap().contains("D-TEST-UNENFORCED")).count();
    assert!(planted >= 5, "the unenforced recall has findings: {findings:?}");
    let Some(answers) = duckdb(&out) else { return };
    let rows = &answers["directive_enforcement"];
    let mut sql: Vec<String> = rows.iter().map(|r| r[3].as_str().unwrap().to_owned()).collect();
    sql.sort();
    assert_eq!(sql, audit, "the same terminals, one row per finding");
    let of_planted = rows.iter().filter(|r| r[0] == "D-TEST-UNENFORCED").count();
    assert_eq!(of_planted, planted);
    println!(
        "directive_not_enforced: {} findings ({planted} of the planted recall), in SQL and in replay audit",
        audit.len()
    );
}

#[test]
fn a_many_source_export_has_a_source_level_and_each_file_its_own_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.plb"), dir.path().join("b.plb"));
    let heads = [sim_bundle_id(&a, 3_000, 11, None, 0xa1), sim_bundle_id(&b, 2_000, 12, None, 0xb2)];
    let out = dir.path().join("both");
    let o = replay(&[
        "export",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--format",
        "parquet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for (ledger, head, path) in [("00000000000000a1", &heads[0], &a), ("00000000000000b2", &heads[1], &b)] {
        let single = dir.path().join(format!("single-{ledger}"));
        let o = replay_on("export", path, &["--format", "parquet", "--out", single.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        for table in ["events", "directives", "directive_models", "terminals"] {
            let part = out.join(table).join(format!("source={ledger}"));
            // The source's part is its single-source table, file for file.
            let mine: Vec<PathBuf> = files(&part).iter().map(|f| f.strip_prefix(&part).unwrap().to_owned()).collect();
            let its: Vec<PathBuf> = files(&single.join(table))
                .iter()
                .map(|f| f.strip_prefix(single.join(table)).unwrap().to_owned())
                .collect();
            assert_eq!(mine, its, "{table}");
            assert_eq!(rows(&part).len(), rows(&single.join(table)).len(), "{table}");
            for file in files(&part) {
                let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
                let kv: BTreeMap<String, String> = reader
                    .metadata()
                    .file_metadata()
                    .key_value_metadata()
                    .unwrap()
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                    .collect();
                assert_eq!(kv["posledger.ledger_id"], ledger);
                assert_eq!(kv["posledger.log_size"], head.size.to_string());
                assert_eq!(kv["posledger.merkle_root"], head.root_hex());
            }
        }
    }
}

#[test]
fn the_same_log_gives_the_same_files_byte_for_byte() {
    // 7 providers x 24 months: more partitions than the 64 files open at once, so the end of the export
    // closes and splits files; which ones must not depend on a hash map's order.
    let e = export();
    let again = e.out.with_file_name("again");
    let o = replay_on("export", &e.bundle, &["--format", "parquet", "--out", again.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (first, second) = (files(&e.out), files(&again));
    assert_eq!(first.len(), second.len());
    assert!(first.len() > 64, "{} files", first.len());
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.strip_prefix(&e.out).unwrap(), b.strip_prefix(&again).unwrap());
        assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "{} differs", a.display());
    }
}
