//! The first on-disk format must keep reading, forever: records are kept for years (AML law: 10 years).
//!
//! `tests/fixtures/v1/ledger/` is a small ledger folder written by posledger with the first format
//! (segment file format 1, record format byte 1, bincode 2 bodies): its segment files and HEAD, without the
//! sled index (derived, rebuilt on open). It was generated once by `generate_v1_fixture` below:
//!
//! ```text
//! POSLEDGER_WRITE_FIXTURE=1 cargo test --test backward_compatibility generate_v1_fixture -- --ignored
//! ```
//!
//! Generation is deterministic (fixed events, fixed recorded_at times through `append_at`), except for the
//! random ledger id in the segment headers, which the Merkle root does not cover. DO NOT regenerate it
//! to make a failing test pass: a failure here means this build cannot read logs that already exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use ledger::lifecycle::{ContractState, Status};
use ledger::source::{hex, SEGMENTS_DIR};
use ledger::{
    AppendEvent, Contract, ContractId, Event, EventId, FlagReason, Ledger, Options, Source, StopReason, StreamId,
    TerminalEvent, Text,
};
use std::path::{Path, PathBuf};

/// The head root of the fixture, as generated. It must never change: it is the Merkle root over the record
/// bodies exactly as the first format wrote them, so any change to how old records read (or hash) shows here.
const V1_ROOT: &str = "bd7c05822b90ed1ee8ccbe735d56b24e5b5b7e19f51830f793c34267c224bb94";
/// Records in the fixture.
const V1_SIZE: u64 = 33;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/ledger")
}

/// recorded_at of the `n`th append of the fixture.
fn rec(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0).unwrap() + Duration::minutes(n)
}

fn with_id(mut e: AppendEvent, id: &str) -> AppendEvent {
    e.event_id = Some(EventId::parse(id).unwrap());
    e
}

fn expecting(mut e: AppendEvent, version: u64) -> AppendEvent {
    e.expected_version = Some(version);
    e
}

/// Writes the fixture's history: every event type, replacement pairs, a directive with its stops,
/// event ids and expected versions, over several sealed segments and a live one.
fn write_history(ledger: &Ledger) {
    let appends: Vec<Vec<AppendEvent>> = vec![
        vec![
            with_id(issued("LKL0001", "LKL-A8"), "evt-0001"),
            issued("LKL0002", "LKL-A8"),
            issued("SFT0001", "SFT-P2"),
        ],
        vec![expecting(flow("LKL0001", 6_000), 1), flow("LKL0002", 12_345), flow("SFT0001", 99)],
        vec![flow("LKL0001", 4_000), activated("LKL0001"), activated("LKL0002")],
        vec![flagged("LKL0001", FlagReason::CashOut), flagged("SFT0001", FlagReason::CodeJumping)],
        vec![dev(
            "LKL0001",
            6,
            TerminalEvent::FlagCleared { reason: FlagReason::CashOut, note: Text::parse("investigated: ok").unwrap() },
        )],
        vec![dev("SFT0001", 7, TerminalEvent::ContractExpired)],
        vec![dev(
            "SFT0001",
            8,
            TerminalEvent::ContractRenewed {
                contract: Contract { id: ContractId::parse("C2").unwrap(), start: t(8), end: t(8 + 365) },
            },
        )],
        vec![stopped("LKL0002", StopReason::Violation)],
        vec![replaced("LKL0002", "LKL0003"), issued_with("LKL0003", "LKL-A8", Some("LKL0002"))],
        vec![flow("LKL0002", 500)], // flow on a replaced terminal: an observation, recorded
    ];
    for (n, events) in appends.into_iter().enumerate() {
        ledger.append_at(events, Some(rec(n as i64))).unwrap();
    }
    let outcome = ledger.stop_models(directive("D-2026-07", &["LKL-A8", "RYX-9"]), Some(rec(20))).unwrap();
    assert_eq!(outcome.stopped.len(), 2);
    for i in 0..12 {
        ledger.append_at(vec![flow("SFT0001", 1_000 + i)], Some(rec(30 + i as i64))).unwrap();
    }
}

fn fixture_options() -> Options {
    Options { segment_max_bytes: 600, ..Options::default() }
}

/// Writes the fixture. Run once, by hand (see the module docs); never in CI.
#[test]
#[ignore = "writes tests/fixtures/v1; run by hand only when creating the fixture"]
fn generate_v1_fixture() {
    if std::env::var_os("POSLEDGER_WRITE_FIXTURE").is_none() {
        return;
    }
    let out = fixture_dir();
    assert!(!out.exists(), "{} exists: the v1 fixture must never be regenerated", out.display());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let ledger = Ledger::open_with(&dir, fixture_options()).unwrap();
    write_history(&ledger);
    let head = ledger.head();
    assert_eq!(ledger.close().unwrap().index_warning, None);
    std::fs::create_dir_all(out.join(SEGMENTS_DIR)).unwrap();
    for entry in std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join(SEGMENTS_DIR).join(entry.file_name())).unwrap();
    }
    std::fs::copy(dir.join(ledger::source::HEAD_FILE), out.join(ledger::source::HEAD_FILE)).unwrap();
    println!("v1 fixture: {} records, root {}", head.size, head.root_hex());
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                files.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Writing the same history today gives the same root: the encoding of new records has not drifted
/// from the first format (a drift would not break reading, but would be a silent format change).
#[test]
fn the_same_history_written_today_has_the_v1_root() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(tmp.path(), fixture_options()).unwrap();
    write_history(&ledger);
    assert_eq!(ledger.head().size, V1_SIZE);
    assert_eq!(ledger.head().root_hex(), V1_ROOT, "records written today encode differently from format v1");
}

#[test]
fn v1_fixture_opens_and_reads() {
    let fixture = fixture_dir();
    let untouched = snapshot(&fixture);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    copy_dir(&fixture, &dir);
    let ledger = Ledger::open(&dir).unwrap();
    let head = ledger.head();
    assert_eq!(head.size, V1_SIZE);
    assert_eq!(head.root_hex(), V1_ROOT);
    assert_eq!(ledger.root_at(head.size).unwrap(), head.root);

    // Every record decodes, positions are dense, recorded_at is what append_at gave.
    let records: Vec<_> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len() as u64, V1_SIZE);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.position, i as u64);
    }
    // Known values.
    let first = &records[0];
    assert_eq!(first.event_id.as_ref().map(|id| id.as_str()), Some("evt-0001"));
    assert_eq!(first.recorded_at, rec(0));
    assert!(!first.commit && records[2].commit, "the first append is three records, committed by the third");
    match &first.event {
        Event::Terminal(d) => {
            assert_eq!(d.device.as_str(), "LKL0001");
            assert_eq!(d.at, t(0));
            let TerminalEvent::Issued(issued) = &d.event else { panic!("{:?}", d.event) };
            assert_eq!(issued.model.as_str(), "LKL-A8");
            assert_eq!(issued.merchant.as_str(), "M001");
            assert_eq!(issued.provider.as_str(), "lakala");
            assert_eq!(issued.region.to_string(), "310000");
            assert_eq!((issued.contract.start, issued.contract.end), (t(0), t(365)));
            assert_eq!(issued.replaces, None);
        }
        other => panic!("{other:?}"),
    }
    match &records[4].event {
        Event::Terminal(d) => {
            assert_eq!(d.device.as_str(), "LKL0002");
            assert_eq!(d.event, TerminalEvent::Flow { amount_fen: 12_345, transactions: 1 });
        }
        other => panic!("{other:?}"),
    }
    let directive = records
        .iter()
        .find_map(|r| match &r.event {
            Event::Directive(d) => Some((r.position, d.clone())),
            Event::Terminal(_) => None,
        })
        .unwrap();
    assert_eq!(directive.1.id.as_str(), "D-2026-07");
    assert_eq!(directive.1.models.len(), 2);
    assert_eq!(directive.1.deadline, Some(t(20)));
    assert_eq!(records[directive.0 as usize].recorded_at, rec(20));
    let last = records.last().unwrap();
    assert!(last.commit);
    assert_eq!(last.recorded_at, rec(41));

    // The folded state, from an index rebuilt from the old log.
    let state = |s: &str| ledger.terminal(&sn(s)).unwrap().unwrap();
    assert_eq!(state("LKL0001").1.status, Status::Stopped, "stopped by the directive");
    assert_eq!(state("LKL0001").1.flow_fen, 10_000);
    assert!(state("LKL0001").1.flags.is_empty());
    assert_eq!(state("LKL0002").1.status, Status::Replaced);
    assert_eq!(state("LKL0002").1.flow_fen, 12_845);
    assert_eq!(state("LKL0003").1.status, Status::Stopped, "the replacement was stopped by the directive");
    let sft = state("SFT0001");
    assert_eq!((sft.1.status, sft.1.contract), (Status::Issued, ContractState::Current));
    assert!(sft.1.flags.contains(FlagReason::CodeJumping));
    assert_eq!(sft.0, 17, "SFT0001 stream: issue, flow, flag, expiry, renewal and 12 flows");
    assert_eq!(ledger.read_stream(&StreamId::Directives).unwrap().len(), 1);
    assert_eq!(ledger.read_stream(&StreamId::Terminal(sn("SFT0001"))).unwrap().len() as u64, sft.0);

    // Proofs over old records verify.
    let proof = ledger.inclusion_proof(3, head.size).unwrap();
    let mut frames = ledger.frames(3, 4);
    let (_, body, _) = frames.next_frame().unwrap().unwrap();
    assert_eq!(body[0], ledger::codec::RECORD_FORMAT_V1);
    assert!(ledger::merkle::verify_inclusion(
        &ledger::merkle::leaf_hash(body),
        3,
        head.size as usize,
        &proof,
        &head.root
    ));

    // The old log goes on: new records follow the old ones.
    let a = ledger.append(vec![flow("SFT0001", 1)]).unwrap();
    assert_eq!(a.positions, vec![V1_SIZE]);
    let proof = ledger.consistency_proof(V1_SIZE, V1_SIZE + 1).unwrap();
    let new_root = ledger.head().root;
    assert!(ledger::merkle::verify_consistency(V1_SIZE as usize, V1_SIZE as usize + 1, &head.root, &new_root, &proof));
    drop(ledger);
    assert_eq!(snapshot(&fixture), untouched, "the fixture was modified");
}

/// Read-only, in place: `Source` reads the committed fixture folder itself and writes nothing to it.
#[test]
fn v1_fixture_reads_in_place_with_source() {
    let fixture = fixture_dir();
    let untouched = snapshot(&fixture);
    let source = Source::open(&fixture).unwrap();
    assert_eq!(source.head.size, V1_SIZE);
    assert_eq!(hex(&source.head.root), V1_ROOT);
    assert_eq!(source.published_head, Some(source.head), "the fixture's HEAD file is the log's head");
    assert!(source.torn.is_none());
    assert!(source.files.len() >= 3, "the fixture holds sealed segments and a live one");
    let records: Vec<_> = source.records(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len() as u64, V1_SIZE);
    let mut frames = source.frames(0, V1_SIZE);
    let mut leaves = Vec::new();
    while let Some((_, body, _)) = frames.next_frame().unwrap() {
        assert_eq!(ledger::codec::decode_record(body).unwrap(), records[leaves.len()]);
        leaves.push(body.to_vec());
    }
    let refs: Vec<&[u8]> = leaves.iter().map(Vec::as_slice).collect();
    assert_eq!(hex(&ledger::merkle::root(&refs)), V1_ROOT);
    // Every segment starts with the magic and file format 1.
    for file in &source.files {
        let bytes = std::fs::read(&file.path).unwrap();
        assert_eq!(&bytes[0..8], b"POSLEDGR");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
    }
    assert_eq!(snapshot(&fixture), untouched, "Source wrote to the fixture");
}
