//! `posledger evidence` as an operator runs it (docs/CLI.md): a terminal stopped by `stop-models`
//! gets a file holding its records, the directive and an inclusion proof each against the ledger's
//! latest signed checkpoint (or `--checkpoint FILE`), which `replay::evidence::check` verifies without
//! the ledger; an unknown terminal is exit 1, a ledger without checkpoint or an `--out` inside it exit 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::{ok, posledger, s, stderr};
use posledger::tlog::keyfile;
use std::path::Path;

const EVENTS: &str = r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000","contract":{"id":"C1","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}
{"device":"SN2","type":"issued","at":"2026-01-05T08:00:00Z","model":"PAX-A920","merchant":"M002","provider":"lakala","region":"310000","contract":{"id":"C2","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}
{"device":"SN1","type":"flow","at":"2026-01-06T20:00:00Z","amount_fen":12000,"transactions":3}
{"device":"SN2","type":"flow","at":"2026-01-06T20:00:00Z","amount_fen":500,"transactions":1}
{"device":"SN1","type":"activated","at":"2026-01-07T09:00:00Z"}
"#;

fn append(dir: &Path, name: &str, lines: &str) {
    let file = dir.parent().unwrap().join(name);
    std::fs::write(&file, lines).unwrap();
    ok(posledger(&["append", "--dir", s(dir), s(&file)]));
}

#[test]
fn evidence_of_a_terminal_stopped_by_stop_models_verifies_without_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    append(&dir, "a.ndjson", EVENTS);
    let models = tmp.path().join("models.txt");
    std::fs::write(&models, "LKL-A8\n").unwrap();
    ok(posledger(&[
        "stop-models",
        "--dir",
        s(&dir),
        "--directive",
        "D-2026-03",
        "--models",
        s(&models),
        "--reason",
        "certificates revoked",
    ]));

    // No checkpoint yet: exit 2, saying how to sign one.
    let out = tmp.path().join("SN1.evidence");
    let o = posledger(&["evidence", "--dir", s(&dir), "--device", "SN1", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("posledger checkpoint"), "{}", stderr(&o));

    let key = tmp.path().join("log.key");
    ok(posledger(&["key", "generate", "--name", "acquirer.example/posledger/ev", "--out", s(&key)]));
    ok(posledger(&["checkpoint", "--dir", s(&dir), "--key", s(&key)]));
    // Records after the checkpoint are not in the evidence: it is proven against the checkpoint.
    append(&dir, "b.ndjson", "{\"device\":\"SN1\",\"type\":\"flow\",\"at\":\"2026-03-02T00:00:00Z\",\"amount_fen\":100,\"transactions\":1}\n");

    let said = ok(posledger(&["evidence", "--dir", s(&dir), "--device", "SN1", "--out", s(&out)]));
    assert!(said.contains("4 records, with directive D-2026-03 at position 5"), "{said}");
    assert!(said.contains("checkpoint of 7 records"), "{said}");
    let vkey = keyfile::load_verifier_key(&format!("{}.vkey", s(&key))).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let checked = posledger::replay::evidence::check(&bytes, &vkey, &[], 0).unwrap();
    let kinds: Vec<(&str, &str)> =
        checked.report.events.iter().map(|e| (e.kind, e.state.as_ref().unwrap().status)).collect();
    assert_eq!(kinds, [("issued", "issued"), ("flow", "issued"), ("activated", "active"), ("stopped", "stopped")]);
    assert_eq!(checked.directives.len(), 1);
    assert_eq!(checked.directives[0].position, 5);
    // Nothing of SN2 (whose model the directive did not list).
    let parsed = posledger::replay::evidence::Evidence::parse(&bytes).unwrap();
    let positions: Vec<u64> = parsed.entries.iter().map(|e| e.position).collect();
    assert_eq!(positions, [0, 2, 4, 5, 6]);

    // --checkpoint FILE: an earlier checkpoint file of this ledger is used as given.
    let cp = std::fs::read_dir(dir.join("checkpoints")).unwrap().next().unwrap().unwrap().path();
    let again = tmp.path().join("again.evidence");
    ok(posledger(&["evidence", "--dir", s(&dir), "--device", "SN1", "--out", s(&again), "--checkpoint", s(&cp)]));
    assert_eq!(std::fs::read(&again).unwrap(), bytes, "the same checkpoint gives the same bytes");

    // SN2's evidence holds its own records only.
    let sn2 = tmp.path().join("SN2.evidence");
    ok(posledger(&["evidence", "--dir", s(&dir), "--device", "SN2", "--out", s(&sn2)]));
    let parsed = posledger::replay::evidence::Evidence::parse(&std::fs::read(&sn2).unwrap()).unwrap();
    assert_eq!(parsed.entries.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 3]);

    // An unknown terminal: exit 1, naming it; nothing written.
    let nope = tmp.path().join("NOPE.evidence");
    let o = posledger(&["evidence", "--dir", s(&dir), "--device", "NOPE1", "--out", s(&nope)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("terminal NOPE1 does not appear"), "{}", stderr(&o));
    assert!(!nope.exists());
    // An --out inside the ledger: exit 2.
    let inside = dir.join("SN1.evidence");
    let o = posledger(&["evidence", "--dir", s(&dir), "--device", "SN1", "--out", s(&inside)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!inside.exists());
}
