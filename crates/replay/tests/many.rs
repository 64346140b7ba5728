//! Many sources at once: `replay fleet|audit|export A B ...` fold to the sum of the single-source runs
//! (each source's part is exactly its own run); the same ledger twice is refused; a damaged source
//! fails the command by name with nothing printed; one_sn_one_binding finds an SN bound in two ledgers
//! at once and not one re-issued after its first binding ended, in `replay audit` and in DuckDB SQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A test builds bundles and folders in the way of the commands on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use ledger::{Event, StopReason};
use projections::testing::{issued_full, stopped, write_bundle, LogBuilder};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn args_of<'a>(cmd: &'a str, sources: &'a [&'a Path], rest: &[&'a str]) -> Vec<String> {
    let mut args = vec![cmd.to_owned()];
    args.extend(sources.iter().map(|p| p.display().to_string()));
    args.extend(rest.iter().map(|s| (*s).to_owned()));
    args
}

fn run(cmd: &str, sources: &[&Path], rest: &[&str]) -> std::process::Output {
    let args = args_of(cmd, sources, rest);
    replay(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn json(o: &std::process::Output) -> Value {
    assert_eq!(code(o), 0, "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

struct Three {
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
}

/// Two simulated bundles of their own ledger ids and one ledger folder.
fn three() -> Three {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.plb");
    let b = dir.path().join("b.plb");
    let c = dir.path().join("c-ledger");
    sim_bundle_id(&a, 4_000, 11, None, 0xa1);
    sim_bundle_id(&b, 3_000, 12, None, 0xb2);
    make_ledger(&c);
    Three { _dir: dir, a, b, c }
}

#[test]
fn many_sources_fold_to_the_sum_of_the_single_source_runs() {
    let t = three();
    let sources = [t.a.as_path(), t.b.as_path(), t.c.as_path()];
    for extra in [&[][..], &["--as-of", "2026-01-01T00:00:00Z"][..]] {
        let mut rest = vec!["--format", "json"];
        rest.extend(extra);
        let singles: Vec<Value> = sources.iter().map(|s| json(&run("fleet", &[s], &rest))).collect();
        let many = json(&run("fleet", &sources, &rest));
        let total = &many["total"];
        assert_eq!(n(&total["sources"]), 3);
        for key in ["position", "devices", "flagged", "contract_expired"] {
            assert_eq!(n(&total[key]), singles.iter().map(|s| n(&s[key])).sum::<u64>(), "{key}");
        }
        for status in ["issued", "active", "stopped", "replaced"] {
            let sum: u64 = singles.iter().map(|s| n(&s["status"][status])).sum();
            assert_eq!(n(&total["status"][status]), sum, "{status}");
        }
        let mut by_model: BTreeMap<String, u64> = BTreeMap::new();
        for s in &singles {
            for (model, c) in s["by_model"].as_object().unwrap() {
                *by_model.entry(model.clone()).or_default() += n(&c["active"]);
            }
        }
        let many_by_model: BTreeMap<String, u64> =
            total["by_model"].as_object().unwrap().iter().map(|(m, c)| (m.clone(), n(&c["active"]))).collect();
        assert_eq!(many_by_model, by_model);
        // Each source's part is its own single-source report, with its name, size and root beside it.
        let parts = many["sources"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        for ((part, single), path) in parts.iter().zip(&singles).zip(&sources) {
            let mut part = part.as_object().unwrap().clone();
            assert_eq!(part.remove("source").unwrap(), path.display().to_string());
            let ledger_id = part.remove("ledger_id").unwrap();
            assert_eq!(ledger_id.as_str().unwrap().len(), 16);
            let size = part.remove("size").unwrap();
            let root = part.remove("root").unwrap();
            let verified = json(&replay(&["verify", path.to_str().unwrap(), "--json"]));
            assert_eq!(size, verified["records"]);
            assert_eq!(root, verified["root"]);
            assert_eq!(Value::Object(part), *single, "{}", path.display());
        }
        assert_eq!(parts[0]["ledger_id"], "00000000000000a1");
        assert_eq!(parts[1]["ledger_id"], "00000000000000b2");
    }
    // Table and CSV: every source named, with its digest; CSV rows of `all` then of each ledger.
    let table = run("fleet", &sources, &[]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("fleet of 3 sources after "), "{text}");
    for s in &sources {
        let single = json(&run("fleet", &[s], &["--format", "json"]));
        assert!(text.contains(single["digest"].as_str().unwrap()), "{text}");
    }
    let csv = run("fleet", &sources, &["--format", "csv"]);
    assert_eq!(code(&csv), 0);
    let csv = stdout(&csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("source,scope,model,devices"));
    assert!(lines[1].starts_with("all,fleet,,"));
    assert!(lines.iter().any(|l| l.starts_with("00000000000000b2,fleet,,")));
    // One source is the single-source command, byte for byte (no part, no total).
    assert_eq!(run("fleet", &[&t.a], &[]).stdout, replay_on("fleet", &t.a, &[]).stdout);
    // --position counts one ledger's records: refused with several.
    assert_eq!(code(&run("fleet", &sources, &["--position", "10"])), 2);
    // Audit: each source's findings are its own single-source findings, with its ledger id.
    let many = json(&run("audit", &sources, &["--format", "json"]));
    let fleets = json(&run("fleet", &sources, &["--format", "json"]));
    let mut mine = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let single = json(&run("audit", &[s], &["--format", "json"]));
        let ledger = fleets["sources"][i]["ledger_id"].clone();
        let of_it: Vec<Value> = many
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["ledger_id"] == ledger && f["rule"] != "one_sn_one_binding")
            .map(|f| {
                let mut f = f.as_object().unwrap().clone();
                f.remove("ledger_id");
                Value::Object(f)
            })
            .collect();
        assert_eq!(Value::Array(of_it), single, "{}", s.display());
        mine.push(single);
    }
    assert!(mine.iter().any(|f| !f.as_array().unwrap().is_empty()), "the simulated fleets have findings");
}

#[test]
fn the_same_ledger_twice_is_refused() {
    let t = three();
    let copy = t.a.with_file_name("a-copy.plb");
    std::fs::copy(&t.a, &copy).unwrap();
    let out = t.a.with_file_name("out");
    for (cmd, rest) in [
        ("fleet", vec![]),
        ("audit", vec![]),
        ("export", vec!["--format", "parquet", "--out", out.to_str().unwrap()]),
        ("export", vec!["--format", "csv", "--out", "-"]),
    ] {
        for pair in [[t.a.as_path(), t.a.as_path()], [t.a.as_path(), copy.as_path()]] {
            let o = run(cmd, &[pair[0], t.b.as_path(), pair[1]], &rest);
            assert_eq!(code(&o), 2, "{cmd}: {}", stderr(&o));
            assert!(o.stdout.is_empty(), "{cmd}: {}", stdout(&o));
            assert!(stderr(&o).contains("same ledger (ledger id 00000000000000a1)"), "{}", stderr(&o));
        }
    }
    assert!(!out.exists());
    // NDJSON is one ledger's append stream.
    let o = run("export", &[&t.a, &t.b], &["--format", "ndjson", "--out", "-"]);
    assert_eq!(code(&o), 2);
    assert!(o.stdout.is_empty());
}

#[test]
fn a_damaged_second_source_fails_the_command_by_name_and_prints_nothing() {
    let t = three();
    let mut damaged_bodies = bodies(&t.b);
    let mid = damaged_bodies.len() / 2;
    damaged_bodies[mid] = vec![0xff; 7];
    let damaged = t.b.with_file_name("damaged.plb");
    write_raw_bundle(&damaged, &damaged_bodies);
    let out = t.a.with_file_name("out");
    let csv = t.a.with_file_name("out.csv");
    for (cmd, rest) in [
        ("fleet", vec![]),
        ("fleet", vec!["--format", "json"]),
        ("audit", vec![]),
        ("export", vec!["--format", "parquet", "--out", out.to_str().unwrap()]),
        // To a file, all or nothing (to standard output rows stream, as with one source).
        ("export", vec!["--format", "csv", "--out", csv.to_str().unwrap()]),
    ] {
        let o = run(cmd, &[&t.a, &damaged, &t.c], &rest);
        assert_eq!(code(&o), 1, "{cmd}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{cmd} printed: {}", stdout(&o));
        let err = stderr(&o);
        let name = format!("source 2 of 3 ({}, ledger 000000000000002a)", damaged.display());
        assert!(err.contains(&name), "{cmd}: {err}");
        assert!(err.contains(&format!("position {mid}")), "{cmd}: {err}");
    }
    assert!(!out.exists() && !csv.exists());
    let left: Vec<_> = std::fs::read_dir(t.a.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 4, "no temporaries left: {left:?}");
}

fn bundle(path: &Path, ledger_id: u64, appends: Vec<Vec<Event>>) {
    let mut log = LogBuilder::new();
    for events in appends {
        log.append(events);
    }
    write_bundle(path, log.records(), ledger_id).unwrap();
}

fn issue(sn: &str, day: i64, provider: &str) -> Vec<Event> {
    vec![issued_full(sn, day, "LKL-A8", provider, "310000", "M1", None)]
}

/// Two acquirers' ledgers: SN1 bound in both at once (B issued it on day 5 while A's was live), SN4
/// likewise the other way round (A on day 2, B's stopped only on day 3); SN2 re-issued by B on day 20
/// after A stopped it on day 10, and SN5 re-issued by B on the very day A stopped it: no findings.
fn acquirers(dir: &Path) -> (PathBuf, PathBuf) {
    let a = dir.join("acquirer-a.plb");
    let b = dir.join("acquirer-b.plb");
    bundle(
        &a,
        0xa,
        vec![
            issue("SN1", 0, "acq-a"),                              // 0
            issue("SN2", 0, "acq-a"),                              // 1
            issue("SN5", 0, "acq-a"),                              // 2
            issue("SN4", 2, "acq-a"),                              // 3
            vec![stopped("SN5", 4, StopReason::Violation, None)],  // 4
            vec![stopped("SN2", 10, StopReason::Violation, None)], // 5
        ],
    );
    bundle(
        &b,
        0xb,
        vec![
            issue("SN4", 0, "acq-b"),                             // 0
            issue("SN3", 1, "acq-b"),                             // 1
            vec![stopped("SN4", 3, StopReason::Violation, None)], // 2
            issue("SN5", 4, "acq-b"),                             // 3
            issue("SN1", 5, "acq-b"),                             // 4
            issue("SN2", 20, "acq-b"),                            // 5
        ],
    );
    (a, b)
}

/// (device, ledger, position, other ledger, other position) of each one_sn_one_binding finding.
type Pair = (String, String, u64, String, u64);

fn pairs(findings: &Value) -> Vec<Pair> {
    let mut out: Vec<Pair> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "one_sn_one_binding")
        .map(|f| {
            (
                f["device"].as_str().unwrap().to_owned(),
                f["ledger_id"].as_str().unwrap().to_owned(),
                n(&f["position"]),
                f["other_ledger_id"].as_str().unwrap().to_owned(),
                n(&f["other_position"]),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn one_sn_one_binding_finds_an_sn_bound_in_two_ledgers_at_once_and_not_one_reissued_after() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = acquirers(dir.path());
    let (la, lb) = ("000000000000000a".to_owned(), "000000000000000b".to_owned());
    let expected: Vec<Pair> =
        vec![("SN1".into(), lb.clone(), 4, la.clone(), 0), ("SN4".into(), la.clone(), 3, lb.clone(), 0)];
    let found = json(&run("audit", &[&a, &b], &["--rule", "one_sn_one_binding", "--format", "json"]));
    assert_eq!(pairs(&found), expected);
    assert_eq!(found.as_array().unwrap().len(), 2, "only the rule asked for");
    // The evidence: both ledgers, positions and times.
    let sn1 = found.as_array().unwrap().iter().find(|f| f["device"] == "SN1").unwrap();
    let detail = sn1["detail"].as_str().unwrap();
    for part in [&lb, &la, "2026-01-06T00:00:00Z", "2026-01-01T00:00:00Z", "issued at position 0", "not stopped"] {
        assert!(detail.contains(part), "{part}: {detail}");
    }
    let sn4 = found.as_array().unwrap().iter().find(|f| f["device"] == "SN4").unwrap();
    assert!(sn4["detail"].as_str().unwrap().contains("to 2026-01-04T00:00:00Z"), "{}", sn4["detail"]);
    // Whatever the order of the sources; and among all rules, as data (exit 0).
    assert_eq!(pairs(&json(&run("audit", &[&b, &a], &["--format", "json"]))), expected);
    let o = run("audit", &[&a, &b], &["--fail-on-findings"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("one_sn_one_binding: 2"), "{}", stdout(&o));
    let csv = stdout(&run("audit", &[&a, &b], &["--rule", "one_sn_one_binding", "--format", "csv"]));
    assert!(csv.starts_with("position,rule,device,detail,ledger_id,other_ledger_id,other_position\n"), "{csv}");
    // One source has nothing to compare.
    let one = json(&run("audit", &[&a], &["--rule", "one_sn_one_binding", "--format", "json"]));
    assert_eq!(one, Value::Array(vec![]));

    // The same rule in DuckDB SQL (docs/sql/one_sn_one_binding.sql) on the two ledgers' Parquet export.
    let out = dir.path().join("both-parquet");
    let o = run("export", &[&a, &b], &["--format", "parquet", "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for table in ["events", "directives", "directive_models", "terminals"] {
        for ledger in [&la, &lb] {
            assert!(out.join(table).join(format!("source={ledger}")).is_dir(), "{table} {ledger}");
        }
    }
    let Some(answers) = duckdb(&out) else { return };
    let mut sql: Vec<Pair> = answers["one_sn_one_binding"]
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
                n(&r[2]),
                r[5].as_str().unwrap().to_owned(),
                n(&r[6]),
            )
        })
        .collect();
    sql.sort();
    assert_eq!(sql, expected);
    // The other queries see both ledgers: fleet status by provider sums the two.
    let providers: BTreeMap<String, u64> =
        answers["fleet_status_by_provider"].iter().map(|r| (r[0].as_str().unwrap().to_owned(), n(&r[1]))).collect();
    assert_eq!(providers, BTreeMap::from([("acq-a".to_owned(), 4), ("acq-b".to_owned(), 5)]));
}
